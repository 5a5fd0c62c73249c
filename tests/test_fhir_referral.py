"""`hubctl referral show --fhir`: the Bundle checked by an independent FHIR model and by the Bundle rules.

fhir.resources 8 (the pydantic 2 line) ships R5, R4B and STU3 models and no R4 (4.0.1) ones, so
the Bundle is validated with its R4B (4.3.0) models: R4B is R4 with a few unrelated modules
revised; Bundle, ServiceRequest and Task are the same. Code bindings are not checked by
fhir.resources, so the required ones the export uses are checked here against the R4 value
sets, and the BSeR display texts against the BSeR IG's CodeSystem ``TaskBusinessStatusCS``
(STU2, the one with the 5.1.x codes the hub uses).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from referral_hub.contracts.referrals import ReferralState
from referral_hub.contracts.registry import Clinic
from referral_hub.referrals import domain, fhir_task, lifecycle
from referral_hub.runtime.jetstream.registry_cache import load_registry_file

from .helpers import RunningHub, hubctl, referral_request
from .lifecycle_model import command

CLINICS = {clinic.id: clinic for clinic in load_registry_file().clinics}
RECEIVED = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
SENDER, RECIPIENT = "harbor-pt", "lotus-acu"
R, S = RECIPIENT, SENDER
WALKS: dict[str, tuple[tuple[str, str], ...]] = {
    "requested": (),
    "accepted": (("accept", R),),
    "declined": (("decline", R),),
    "scheduled": (("accept", R), ("schedule", R)),
    "no_show": (("accept", R), ("schedule", R), ("no_show", R)),
    "completed": (("accept", R), ("schedule", R), ("complete", R)),
    "closed": (("accept", R), ("schedule", R), ("complete", R), ("close", S)),
    "cancel_requested": (("accept", R), ("schedule", R), ("cancel", S)),
    "cancelled": (("cancel", S),),
    "cancelled_after_scheduling": (("accept", R), ("schedule", R), ("cancel", R)),
}
BSER_SYSTEM = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
BSER_DISPLAYS = {
    # Transcribed from the BSeR IG's CodeSystem TaskBusinessStatusCS (2.0.0, STU2).
    "2.0": "Service Request Created",
    "3.0": "Service Request Accepted",
    "4.0": "Service Request Declined",
    "5.1.1": "Service Request Event Scheduled",
    "5.1.2": "Scheduled Service Request Event Unattended",
    "5.1.3": "Scheduled Service Request Event Cancelled",
    "5.1.4": "Service Request Event Completed",
    "5.2": "Service Request Cancellation Requested",
    "6.0": "Service Request Fulfillment Cancelled",
    "7.0": "Service Request Fulfillment Completed",
}
REQUIRED_BINDINGS = {
    # FHIR R4 value sets of the required bindings the export fills in.
    ("Bundle", "type"): {
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
    },
    ("ServiceRequest", "status"): {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
    ("ServiceRequest", "intent"): {
        "proposal",
        "plan",
        "directive",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    },
    ("ServiceRequest", "priority"): {"routine", "urgent", "asap", "stat"},
    ("Task", "status"): {
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    },
    ("Task", "intent"): {
        "unknown",
        "proposal",
        "plan",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    },
}


def _lookup(clinic_id: str) -> Clinic | None:
    return CLINICS.get(clinic_id)


def walked(name: str, **overrides: object) -> domain.Referral:
    decision = domain.decide(referral_request(**overrides), None, _lookup, RECEIVED, domain.SlaPolicy())
    assert isinstance(decision, domain.Changed)
    referral = decision.referral
    for transition, clinic in WALKS[name]:
        built = command(transition, clinic, referral.referral_id, referral.patient_ref)
        decision = domain.decide(built, referral, _lookup, RECEIVED, domain.SlaPolicy())
        assert isinstance(decision, domain.Changed), decision
        referral = decision.referral
    return referral


def exported(referral: domain.Referral) -> dict[str, Any]:
    """The bundle exactly as `hubctl referral show --fhir` prints it: through JSON."""
    document: dict[str, Any] = json.loads(json.dumps(fhir_task.bundle(referral), indent=2))
    return document


def references(node: object) -> Iterator[str]:
    """Every ``Reference.reference`` anywhere in a resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def empty_elements(node: object, path: str = "") -> Iterator[str]:
    """Where the JSON breaks FHIR's rule that no element is empty (ele-1): [], {}, "" or null."""
    if node in ([], {}, "", None):
        yield path or "/"
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from empty_elements(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from empty_elements(item, f"{path}/{index}")


def real_uuid(text: str) -> uuid.UUID:
    """``text`` as an RFC 4122 UUID in canonical form; ValueError if it is not one."""
    parsed = uuid.UUID(text)
    if str(parsed) != text or parsed.variant != uuid.RFC_4122 or parsed.version not in {1, 3, 4, 5, 6, 7, 8}:
        msg = f"{text!r} is not a canonical RFC 4122 UUID"
        raise ValueError(msg)
    return parsed


@pytest.mark.parametrize("name", sorted(WALKS))
def test_the_referral_bundle_is_valid_fhir_whose_references_resolve_inside_it(name: str) -> None:
    bundle = exported(walked(name, icd10_codes=()))

    model = Bundle.model_validate(bundle)
    ServiceRequest.model_validate(bundle["entry"][0]["resource"])
    Task.model_validate(bundle["entry"][1]["resource"])
    assert [type(entry.resource).__name__ for entry in model.entry] == ["ServiceRequest", "Task"]
    full_urls = [entry["fullUrl"] for entry in bundle["entry"]]
    assert len(set(full_urls)) == len(full_urls)
    for entry in bundle["entry"]:
        unresolved = [ref for ref in references(entry["resource"]) if ref not in full_urls]
        assert unresolved == [], f"{entry['resource']['resourceType']} refers outside the bundle: {unresolved}"
    task = bundle["entry"][1]["resource"]
    service_request_url = full_urls[0]
    assert [ref["reference"] for ref in task["basedOn"]] == [service_request_url]
    assert task["focus"]["reference"] == service_request_url
    assert list(empty_elements(bundle)) == []
    for (resource_type, field), allowed in REQUIRED_BINDINGS.items():
        for resource in (bundle, *(entry["resource"] for entry in bundle["entry"])):
            if resource["resourceType"] == resource_type:
                assert resource[field] in allowed, (resource_type, field, resource[field])


@pytest.mark.parametrize("name", sorted(WALKS))
def test_every_full_url_is_an_rfc_4122_uuid_urn_and_stable(name: str) -> None:
    referral = walked(name)
    bundle = exported(referral)

    ids = set()
    for entry in bundle["entry"]:
        prefix, _, text = entry["fullUrl"].partition("urn:uuid:")
        assert prefix == "", entry["fullUrl"]
        ids.add(real_uuid(text))
    assert len(ids) == len(bundle["entry"])
    assert exported(referral) == bundle, "exporting the same referral twice names its resources alike"
    assert {entry["resource"]["id"] for entry in bundle["entry"]} == {str(value) for value in ids}


def test_different_referrals_get_different_resource_uuids() -> None:
    first, second = exported(walked("accepted")), exported(walked("accepted"))

    first_urls = {entry["fullUrl"] for entry in first["entry"]}
    second_urls = {entry["fullUrl"] for entry in second["entry"]}
    assert first_urls.isdisjoint(second_urls)
    for url in first_urls | second_urls:
        real_uuid(url.removeprefix("urn:uuid:"))


@pytest.mark.parametrize("name", sorted(WALKS))
def test_the_business_status_carries_the_official_bser_display(name: str) -> None:
    bundle = exported(walked(name))

    (coding,) = bundle["entry"][1]["resource"]["businessStatus"]["coding"]
    assert coding["system"] == BSER_SYSTEM
    assert coding["display"] == BSER_DISPLAYS[coding["code"]]


def test_every_state_exports_an_official_bser_code_and_display() -> None:
    referral = walked("accepted")
    for state in ReferralState:
        bundle = exported(msgspec.structs.replace(referral, state=state))
        (coding,) = bundle["entry"][1]["resource"]["businessStatus"]["coding"]
        assert coding["code"] == lifecycle.STATUS[state].bser_code
        assert coding["display"] == BSER_DISPLAYS[coding["code"]], state


def test_a_referral_cancelled_after_scheduling_exports_what_its_event_announced() -> None:
    referral = walked("cancelled_after_scheduling")

    (coding,) = exported(referral)["entry"][1]["resource"]["businessStatus"]["coding"]
    assert (coding["code"], coding["display"]) == ("5.1.3", BSER_DISPLAYS["5.1.3"])
    assert exported(referral)["entry"][1]["resource"]["status"] == "cancelled"


def test_icd10_codes_become_codings_and_their_absence_no_empty_list() -> None:
    coded = exported(walked("requested", icd10_codes=("G44.2", "M54.2")))
    bare = exported(walked("requested", icd10_codes=()))

    (reason,) = coded["entry"][0]["resource"]["reasonCode"]
    assert [coding["code"] for coding in reason["coding"]] == ["G44.2", "M54.2"]
    (reason,) = bare["entry"][0]["resource"]["reasonCode"]
    assert "coding" not in reason
    assert reason["text"]


async def test_hubctl_prints_a_bundle_that_validates_and_resolves(hub: RunningHub) -> None:
    request = referral_request(SENDER, RECIPIENT)
    await (await hub.clinic(SENDER)).send_and_confirm(request)

    shown = await hubctl("referral", "show", str(request.referral_id), "--fhir", "--nats-url", hub.url)

    assert shown.status == 0, shown.stderr
    bundle = json.loads(shown.stdout)
    Bundle.model_validate(bundle)
    full_urls = {entry["fullUrl"] for entry in bundle["entry"]}
    assert {ref for entry in bundle["entry"] for ref in references(entry["resource"])} <= full_urls
    for url in full_urls:
        real_uuid(url.removeprefix("urn:uuid:"))
    (coding,) = bundle["entry"][1]["resource"]["businessStatus"]["coding"]
    assert (coding["code"], coding["display"]) == ("2.0", "Service Request Created")
