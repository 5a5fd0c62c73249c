"""The Subscription rules of ``gateway.subscriptions``, pure: focus, failures, headers and endpoints."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest

from referral_hub.client import InboxItem, utc_now
from referral_hub.contracts.alerts import AlertRaised
from referral_hub.contracts.base import Message
from referral_hub.contracts.plans import CareTeamChanged, PlanUpdated
from referral_hub.contracts.screening import ScreeningFlagged
from referral_hub.gateway import care, rest_hooks, subscriptions
from referral_hub.gateway.adapters import ClinicLink
from referral_hub.gateway.outcomes import FhirError
from referral_hub.gateway.subscriptions import MAX_BACKOFF_SECONDS, TOPIC_URL, SubscriptionRecord
from referral_hub.gateway.task_views import ClinicReferrals

from .fhir_helpers import valid

BASE = "https://hub.example.org/fhir"
PATIENT = "pt-focus-01"
ENVELOPE = {
    "message_id": str(uuid.uuid4()),
    "occurred_at": utc_now().isoformat(),
    "sender_clinic": "harbor-pt",
    "actor": "ana.ruiz",
    "correlation_id": str(uuid.uuid4()),
    "event_number": 7,
}
FLAG_ID, ALERT_ID = uuid.uuid4(), uuid.uuid4()


def item(kind: type[Message], **fields: Any) -> InboxItem:
    return InboxItem(1, "inbox", msgspec.convert({**ENVELOPE, **fields}, kind))


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (
            item(CareTeamChanged, patient_ref=PATIENT, clinic="lotus-acu", change="joined", modality="acupuncture"),
            f"CareTeam/{care.resource_id('CareTeam', PATIENT)}",
        ),
        (
            item(
                PlanUpdated,
                patient_ref=PATIENT,
                plan_clinic="lotus-acu",
                modality="acupuncture",
                plan_version=2,
                effective_date="2026-12-01",
            ),
            f"CarePlan/{care.care_plan_id(PATIENT, 'lotus-acu')}",
        ),
        (
            item(
                ScreeningFlagged,
                flag_id=str(FLAG_ID),
                patient_ref=PATIENT,
                screened="plan",
                modality="massage",
                matches=[],
                highest_severity="caution",
            ),
            f"DetectedIssue/{FLAG_ID}",
        ),
        (
            item(
                AlertRaised,
                alert_id=str(ALERT_ID),
                patient_ref=PATIENT,
                raised_by="harbor-pt",
                trigger_kind="medication",
                trigger="warfarin",
                modalities=["massage"],
                severity="relative",
            ),
            f"Flag/{ALERT_ID}",
        ),
    ],
    ids=["care-team", "plan", "screening", "alert"],
)
def test_care_events_carry_the_focus_the_gateway_serves(message: InboxItem, path: str) -> None:
    assert subscriptions.focus(message, BASE) == f"{BASE}/{path}"
    record = SubscriptionRecord(id="s1", clinic="harbor-pt", endpoint="https://r.example.org/", status="active")
    status = subscriptions.status_parameters(record, BASE, "event-notification", [(message, utc_now())])
    (event,) = [p for p in status["parameter"] if p["name"] == "notification-event"]
    assert {"name": "focus", "valueReference": {"reference": f"{BASE}/{path}"}} in event["part"]


def test_full_resource_payloads_carry_the_care_resource_each_event_is_about() -> None:
    """Folded as the gateway folds a clinic's inbox; each focus URL maps to that resource, never a Task."""
    events = [
        item(CareTeamChanged, patient_ref=PATIENT, clinic="harbor-pt", change="joined", modality="physical_therapy"),
        item(
            PlanUpdated,
            patient_ref=PATIENT,
            plan_clinic="harbor-pt",
            modality="physical_therapy",
            plan_version=1,
            effective_date="2026-12-01",
        ),
        item(
            AlertRaised,
            alert_id=str(ALERT_ID),
            patient_ref=PATIENT,
            raised_by="harbor-pt",
            trigger_kind="medication",
            trigger="warfarin",
            modalities=["massage"],
            severity="relative",
        ),
    ]
    records = care.CareRecords("harbor-pt")
    for event in events:
        records.apply(event.message)
    link = cast("ClinicLink", SimpleNamespace(referrals=ClinicReferrals("harbor-pt"), care=records))

    found = rest_hooks.focus_resources(link, events, BASE)

    assert list(found) == [subscriptions.focus(event, BASE) for event in events]
    for url, resource in found.items():
        valid(resource)
        assert url.endswith(f"/{resource['resourceType']}/{resource['id']}")


def test_a_failing_endpoint_stays_in_error_and_is_retried_with_a_capped_back_off() -> None:
    record = SubscriptionRecord(id="s1", clinic="harbor-pt", endpoint="https://r.example.org/", status="active")
    for _ in range(100):
        record = subscriptions.after_failure(record, 1000.0)
        assert record.status == "error"
        assert 0 < record.retry_at - 1000.0 <= MAX_BACKOFF_SECONDS
    assert record.retry_at - 1000.0 == MAX_BACKOFF_SECONDS
    assert record.error == subscriptions.DELIVERY_FAILED


def resource(endpoint: str, headers: list[str] | None = None) -> dict[str, Any]:
    channel = {"type": "rest-hook", "endpoint": endpoint, "header": headers or []}
    return {"resourceType": "Subscription", "criteria": TOPIC_URL, "channel": channel}


@pytest.mark.parametrize("header", ["Authorization: Bearer x", "X-Receiver-Key: abc", "x-api-key: 1"])
def test_authorization_and_extension_headers_are_kept(header: str) -> None:
    record = subscriptions.parse(resource("https://r.example.org/", [header]), "harbor-pt", "s1", 0)
    assert record.headers == (header.replace(": ", ": ", 1),)


@pytest.mark.parametrize(
    "header",
    ["Content-Length: 0", "content-length: 0", "Host: x", "Transfer-Encoding: chunked", "Upgrade: h2c", "TE: x"],
)
def test_framing_and_hop_by_hop_headers_are_refused(header: str) -> None:
    with pytest.raises(FhirError) as refused:
        subscriptions.parse(resource("https://r.example.org/", [header]), "harbor-pt", "s1", 0)
    assert refused.value.status == 422


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "0.0.0.0",  # noqa: S104 - an address to refuse, nothing binds to it
        "100.64.0.1",
        "224.0.0.1",
    ],
)
def test_non_public_addresses_are_not_public(address: str) -> None:
    assert not subscriptions.public_address(address)


def test_a_public_address_is_public() -> None:
    assert subscriptions.public_address("93.184.216.34")
    assert subscriptions.public_address("2606:2800:220:1:248:1893:25c8:1946")


def test_the_development_flag_allows_plain_http_to_loopback() -> None:
    record = subscriptions.parse(resource("http://127.0.0.1:9/"), "harbor-pt", "s1", 0, allow_private=True)
    assert record.endpoint == "http://127.0.0.1:9/"
    with pytest.raises(FhirError):
        subscriptions.parse(resource("http://127.0.0.1:9/"), "harbor-pt", "s1", 0)
