"""The pure rules behind the gateway's FHIR conformance: negotiation, dates, searches, versions, round trips."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from referral_hub.contracts.referrals import (
    ConsultNote,
    ReferralRequested,
    ReferralState,
    ReferralTransitioned,
    Urgency,
)
from referral_hub.gateway import fhir_search, negotiation, task_commands, task_views
from referral_hub.gateway.outcomes import FhirError
from referral_hub.gateway.routes.server import capability_statement
from referral_hub.gateway.task_commands import Envelope
from referral_hub.gateway.web import GatewaySettings

from .fhir_helpers import LOCAL_ID_SYSTEM, new_task, valid

AT = datetime(2026, 12, 7, 10, 30, 15, tzinfo=UTC)
BASE = "http://gw.example/fhir"
ID_KEY = bytes(range(32))


def view_of(task: dict[str, object], *steps: tuple[str, ReferralState, dict[str, object]]) -> task_views.TaskView:
    """A clinic's folded view of the referral ``task`` makes, after ``steps``."""
    command = task_commands.referral_request(Envelope("harbor-pt", "maria.lopez", AT, ID_KEY), task)
    requested = ReferralRequested(
        message_id=uuid.uuid4(),
        occurred_at=AT,
        sender_clinic="harbor-pt",
        actor="maria.lopez",
        correlation_id=command.correlation_id,
        causation_id=command.message_id,
        referral_id=command.referral_id,
        patient_ref=command.patient_ref,
        state=ReferralState.REQUESTED,
        referring_clinic="harbor-pt",
        recipient_clinic=command.recipient_clinic,
        modality=command.modality,
        urgency=Urgency.ROUTINE,
        reason=command.reason,
        note=command.note,
        service_codings=command.service_codings,
        identifiers=command.identifiers,
    )
    referrals = task_views.ClinicReferrals("harbor-pt")
    referrals.apply(requested, 1)
    for number, (transition, state, extra) in enumerate(steps, start=2):
        referrals.apply(
            ReferralTransitioned(
                message_id=uuid.uuid4(),
                occurred_at=AT + timedelta(minutes=number),
                sender_clinic="lotus-acu",
                actor="raj.patel",
                correlation_id=command.correlation_id,
                referral_id=command.referral_id,
                patient_ref=command.patient_ref,
                state=state,
                referring_clinic="harbor-pt",
                recipient_clinic=command.recipient_clinic,
                transition=transition,
                **extra,  # type: ignore[arg-type]
            ),
            number,
        )
    return referrals.by_referral[command.referral_id]


# --- Negotiation -------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", ["application/fhir+xml", "application/xml", "text/xml", "text/html"])
def test_an_accept_without_json_is_refused(accept: str) -> None:
    assert negotiation.negotiate("/fhir/Task", "", accept).refusal


@pytest.mark.parametrize(
    "accept",
    ["application/fhir+json", "application/json", "*/*", "application/fhir+xml, application/fhir+json;q=0.5"],
)
def test_an_accept_with_json_is_served(accept: str) -> None:
    assert negotiation.negotiate("/fhir/Task", "", accept) == negotiation.Negotiated(query="", accept=accept)


def test_json_at_quality_zero_is_not_json() -> None:
    assert negotiation.negotiate("/fhir/Task", "", "application/fhir+xml, application/fhir+json;q=0").refusal


@pytest.mark.parametrize("value", ["xml", "application/fhir+xml", "text/turtle"])
def test_a_format_other_than_json_is_refused(value: str) -> None:
    assert negotiation.negotiate("/fhir/Task", f"_format={value}", "application/fhir+json").refusal


def test_format_json_becomes_the_accept_and_leaves_the_query() -> None:
    decided = negotiation.negotiate("/fhir/Task", "owner=lotus-acu&_format=json&status=requested", "text/xml")
    assert decided == negotiation.Negotiated(query="owner=lotus-acu&status=requested", accept="application/fhir+json")


def test_a_binary_is_served_in_its_own_type() -> None:
    assert not negotiation.negotiate("/fhir/Binary/abc", "", "application/pdf").refusal


def test_a_binary_in_fhir_xml_is_refused() -> None:
    assert negotiation.negotiate("/fhir/Binary/abc", "", "application/fhir+xml").refusal


@pytest.mark.parametrize(("accept", "wanted"), [("application/fhir+json", True), ("*/*", False), (None, False)])
def test_only_fhir_json_asks_a_binary_for_the_resource(accept: str | None, wanted: bool) -> None:  # noqa: FBT001 - a parameter of the table
    assert negotiation.wants_resource(accept) is wanted


# --- Dates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026", datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("2026-12-07", datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC)),
        ("2026-12-07T10:30:15Z", AT, AT + timedelta(seconds=1)),
        ("2026-12-07T10:30:15.5Z", AT.replace(microsecond=500000), AT.replace(microsecond=500001)),
    ],
)
def test_a_date_value_covers_its_precision(text: str, start: datetime, end: datetime) -> None:
    assert fhir_search.date_range(text, "date") == (start, end)


def test_a_date_without_prefix_is_that_day_for_audit_events() -> None:
    assert fhir_search.audit_date_bounds({"date": ["2026-12-07"]}) == (
        datetime(2026, 12, 7, tzinfo=UTC),
        datetime(2026, 12, 8, tzinfo=UTC),
    )


def test_gt_a_day_starts_after_that_day() -> None:
    assert fhir_search.audit_date_bounds({"date": ["gt2026-12-07"]}) == (datetime(2026, 12, 8, tzinfo=UTC), None)


@pytest.mark.parametrize("criterion", ["sa2026-12-07", "ap2026-12-07", "ne2026-12-07", "2026-13"])
def test_an_unserved_date_is_400(criterion: str) -> None:
    with pytest.raises(FhirError) as refused:
        fhir_search.audit_date_bounds({"date": [criterion]})
    assert refused.value.status == 400


# --- Task search and round trip ----------------------------------------------------------------


def ordered() -> dict[str, object]:
    task = new_task(local_id="R-77")
    task["code"] = {"coding": [{"system": "urn:referral-hub:modality", "code": "acupuncture"}, {"code": "x1"}]}
    task["note"] = [{"text": "mornings only"}]
    return task


def test_search_by_the_clients_identifier() -> None:
    view = view_of(ordered())
    assert fhir_search.search_tasks([view], {"identifier": [f"{LOCAL_ID_SYSTEM}|R-77"]}) == [view]


def test_search_by_the_clients_identifier_in_another_system_finds_nothing() -> None:
    assert fhir_search.search_tasks([view_of(ordered())], {"identifier": ["urn:other|R-77"]}) == []


def test_search_by_owner_identifier() -> None:
    view = view_of(ordered())
    assert fhir_search.search_tasks([view], {"owner:identifier": ["urn:referral-hub:clinic|lotus-acu"]}) == [view]
    assert fhir_search.search_tasks([view], {"owner:identifier": ["urn:referral-hub:clinic|harbor-pt"]}) == []


def test_search_by_last_updated_without_prefix_is_that_day() -> None:
    view = view_of(ordered())
    assert fhir_search.search_tasks([view], {"_lastUpdated": ["2026-12-07"]}) == [view]
    assert fhir_search.search_tasks([view], {"_lastUpdated": ["2026-12-08"]}) == []


def test_a_task_returns_what_its_client_sent() -> None:
    task = valid(task_views.task_resource(view_of(ordered())))
    assert task["identifier"][2:] == [{"system": LOCAL_ID_SYSTEM, "value": "R-77"}]
    assert task["code"]["coding"] == [{"system": "urn:referral-hub:modality", "code": "acupuncture"}, {"code": "x1"}]
    assert task["note"] == [{"text": "mornings only"}]


def test_a_task_names_its_service_request_by_server_id() -> None:
    view = view_of(ordered())
    service_request = valid(task_views.service_request_resource(view))
    task = valid(task_views.task_resource(view))
    assert task["basedOn"][0]["reference"] == task["focus"]["reference"] == f"ServiceRequest/{service_request['id']}"


def test_schedule_and_completion_read_back_as_written() -> None:
    start, end = AT + timedelta(days=3), AT + timedelta(days=3, minutes=45)
    outcome = ConsultNote(visits=6, techniques=("dry needling",), response="better", recommendations="rest")
    view = view_of(
        ordered(),
        ("accept", ReferralState.ACCEPTED, {}),
        ("schedule", ReferralState.SCHEDULED, {"appointment_at": start, "appointment_end": end}),
        ("complete", ReferralState.COMPLETED, {"outcome": outcome}),
    )
    task = valid(task_views.task_resource(view))
    assert task["executionPeriod"] == {"start": start.isoformat(), "end": end.isoformat()}
    completion = task_commands.transition_command(
        "complete", Envelope("lotus-acu", "raj.patel", AT, ID_KEY), view, task
    )
    assert msgspec.structs.asdict(completion)["outcome"] == outcome


def test_a_schedule_command_keeps_the_periods_end() -> None:
    view = view_of(ordered(), ("accept", ReferralState.ACCEPTED, {}))
    period = {"start": "2026-12-10T09:00:00+01:00", "end": "2026-12-10T09:45:00+01:00"}
    command = task_commands.transition_command(
        "schedule", Envelope("lotus-acu", "raj.patel", AT, ID_KEY), view, {"executionPeriod": period}
    )
    assert msgspec.structs.asdict(command)["appointment_end"] == datetime.fromisoformat(period["end"])


# --- Versions and transactions -----------------------------------------------------------------


def test_an_earlier_version_is_the_task_as_it_stood() -> None:
    view = view_of(ordered(), ("accept", ReferralState.ACCEPTED, {}))
    first = task_views.at_version(view, 1)
    assert first is not None
    assert valid(task_views.task_resource(first))["status"] == "requested"
    assert task_views.at_version(view, 3) is None
    assert task_views.at_version(view, 0) is None


def test_a_transaction_response_keeps_the_request_order_with_locations() -> None:
    view = view_of(ordered())
    bundle = valid(task_views.transaction_response(view, 201, BASE, ["ServiceRequest", "Task"]))
    service_request, task = (entry["resource"] for entry in bundle["entry"])
    assert [entry["response"]["location"] for entry in bundle["entry"]] == [
        f"ServiceRequest/{service_request['id']}/_history/1",
        f"Task/{task['id']}/_history/1",
    ]
    assert task["basedOn"][0]["reference"] == f"ServiceRequest/{service_request['id']}"


def test_the_capability_statement_names_vread_and_update_create() -> None:
    statement = valid(capability_statement(GatewaySettings(nats_url="nats://x")))
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {"code": "vread"} in resources["Task"]["interaction"]
    assert {"code": "read"} in resources["Communication"]["interaction"]
    assert resources["CarePlan"]["updateCreate"] is True
