"""Every field a clinic types into a referral command reaches the other clinic, on every surface it reads.

A property over every command's own fields (what each contract adds to ``ReferralCommand``):
each value, whatever its characters, is found in what the other party reads: ``hubctl referral
show``, ``hubctl inbox``, the portal's referral page (the real templates) and the gateway's FHIR
resources (Task, ServiceRequest, Communication, each valid for ``fhir.resources``). The
commands go through the referrals domain and its announcements, so the path is the hub's own.
A field added to a command later fails :func:`test_the_property_covers_every_command_field`
until it is given a value here and a place on every surface. The sealed patient details are the
one exception: the hub's own code cannot open them, so they are followed by the sealing tests
(tests/test_sealing.py, tests/portal/test_portal_patient.py, tests/gateway/test_patient_resource.py).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referral_hub.cli.commands import describe_item
from referral_hub.client import InboxItem, new_id
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.referrals import (
    REFERRAL_COMMANDS,
    Coding,
    ConsultNote,
    ExternalIdentifier,
    ReferralAccept,
    ReferralCancel,
    ReferralCancelConfirm,
    ReferralClose,
    ReferralCommand,
    ReferralComplete,
    ReferralDecline,
    ReferralForward,
    ReferralInterimNote,
    ReferralNoShow,
    ReferralOverride,
    ReferralRequest,
    ReferralSchedule,
    ReferralState,
    Urgency,
)
from referral_hub.gateway import communications, task_commands, task_views
from referral_hub.portal import forms, referral_views
from referral_hub.portal.app import template_environment
from referral_hub.portal.domain import local_time
from referral_hub.portal.web import Member, page_context
from referral_hub.referrals import domain, wording
from referral_hub.runtime.jetstream.registry_cache import load_registry_file

CLINICS = {clinic.id: clinic for clinic in load_registry_file().clinics}
SENDER, RECIPIENT, THIRD = "harbor-pt", "lotus-acu", "riverside-wellness"
RECEIVED = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
TEMPLATES = template_environment()
BASE_FIELDS = frozenset(f.name for f in msgspec.structs.fields(ReferralCommand))
SEALED_FIELDS = frozenset({"patient_details"})
"""Fields only the parties' keys open: not text any surface of the hub's code can show."""

# Text as clinics type it: any letters, digits, punctuation (HTML's specials included) and spaces.
typed = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters="\u2028\u2029"),
    min_size=1,
    max_size=24,
).map(lambda text: f"«{text.strip()}»")
listed = typed.filter(lambda text: "," not in text)
"""A list entry: the portal's forms take lists comma or newline separated, so an entry holds neither."""
icd10 = st.sampled_from(("M54.5", "G44.2", "M79.1", "R51"))
appointments = st.datetimes(
    min_value=datetime(2026, 12, 8),  # noqa: DTZ001 - hypothesis bounds are naive; timezones= gives UTC
    max_value=datetime(2030, 1, 1),  # noqa: DTZ001 - as above
    timezones=st.just(UTC),
).map(lambda at: at.replace(second=0, microsecond=0))


@dataclass(frozen=True)
class Typed:
    """What the clinics type, command by command: only each command's own fields."""

    values: dict[type[ReferralCommand], dict[str, Any]]


@st.composite
def typed_fields(draw: st.DrawFn) -> Typed:
    return Typed(
        {
            ReferralRequest: {
                "recipient_clinic": RECIPIENT,
                "modality": Modality.ACUPUNCTURE,
                "urgency": draw(st.sampled_from(Urgency)),
                "reason": draw(typed),
                "icd10_codes": tuple(draw(st.lists(icd10, min_size=1, max_size=2, unique=True))),
                "clinical_flags": ClinicalFlags(
                    conditions=tuple(draw(st.lists(listed, min_size=1, max_size=2))),
                    medications=tuple(draw(st.lists(listed, min_size=1, max_size=2))),
                ),
                "requested_techniques": tuple(draw(st.lists(listed, min_size=1, max_size=3))),
                "note": draw(typed),
                "service_codings": (
                    Coding(system="http://example.org/services", code=draw(typed), display=draw(typed)),
                ),
                "identifiers": (ExternalIdentifier(system="urn:example:orders", value=draw(typed)),),
            },
            ReferralAccept: {"note": draw(typed)},
            ReferralDecline: {"reason_code": draw(typed), "reason_text": draw(typed)},
            ReferralSchedule: {
                "appointment_at": (at := draw(appointments)),
                "appointment_end": at + timedelta(minutes=draw(st.integers(15, 180))),
            },
            ReferralNoShow: {},
            ReferralInterimNote: {"note": draw(typed)},
            ReferralComplete: {
                "outcome": ConsultNote(
                    visits=draw(st.integers(0, 1000)),
                    techniques=tuple(draw(st.lists(listed, min_size=1, max_size=3))),
                    response=draw(typed),
                    recommendations=draw(typed),
                )
            },
            ReferralClose: {},
            ReferralCancel: {"reason_code": draw(typed), "reason_text": draw(typed)},
            ReferralCancelConfirm: {},
            ReferralForward: {"to_clinic": THIRD, "reason": draw(typed)},
            ReferralOverride: {"reason": draw(typed)},
        }
    )


PATHS: dict[str, tuple[tuple[type[ReferralCommand], str], ...]] = {
    "completed": (
        (ReferralAccept, RECIPIENT),
        (ReferralSchedule, RECIPIENT),
        (ReferralInterimNote, RECIPIENT),
        (ReferralNoShow, RECIPIENT),
        (ReferralSchedule, RECIPIENT),
        (ReferralComplete, RECIPIENT),
        (ReferralClose, SENDER),
    ),
    "declined": ((ReferralDecline, RECIPIENT),),
    "forwarded": ((ReferralAccept, RECIPIENT), (ReferralForward, RECIPIENT)),
    "cancel handshake": (
        (ReferralAccept, RECIPIENT),
        (ReferralSchedule, RECIPIENT),
        (ReferralCancel, SENDER),
        (ReferralCancelConfirm, RECIPIENT),
    ),
    "held": ((ReferralOverride, RECIPIENT),),
}


@dataclass
class Run:
    """A referral walked through one path: the hub's record and each clinic's inbox."""

    referral: domain.Referral
    inboxes: dict[str, list[InboxItem]]
    sent: list[tuple[ReferralCommand, str]]
    """Each command with the clinic on the other side, the one that must see it."""


def _envelope(clinic: str, referral_id: Any) -> dict[str, Any]:
    return {
        "message_id": new_id(),
        "occurred_at": RECEIVED,
        "sender_clinic": clinic,
        "actor": "front.desk",
        "correlation_id": new_id(),
        "referral_id": referral_id,
        "patient_ref": "pt-fields-0001",
    }


def _deliver(run: Run, referral: domain.Referral, step: domain.HistoryItem) -> None:
    for announcement in domain.announcements(referral, step):
        for clinic in announcement.clinics:
            inbox = run.inboxes.setdefault(clinic, [])
            message = msgspec.structs.replace(announcement.event, event_number=len(inbox) + 1)  # type: ignore[call-arg]
            inbox.append(InboxItem(len(inbox) + 1, f"clinic.{clinic}.in.{announcement.event_type}", message))  # type: ignore[arg-type]


def walk(path: str, values: Typed) -> Run:
    referral_id = new_id()
    request = ReferralRequest(**_envelope(SENDER, referral_id), **values.values[ReferralRequest])
    decision = domain.decide(request, None, CLINICS.get, RECEIVED, domain.SlaPolicy())
    assert isinstance(decision, domain.Changed)
    referral, step = decision.referral, decision.step
    if path == "held":
        step = msgspec.structs.replace(step, state=ReferralState.NEEDS_REVIEW)
        referral = msgspec.structs.replace(referral, state=ReferralState.NEEDS_REVIEW, history=(step,))
    run = Run(referral, {}, [(request, RECIPIENT)])
    _deliver(run, referral, step)
    for cls, clinic in PATHS[path]:
        other = referral.referring_clinic if clinic == referral.recipient_clinic else referral.recipient_clinic
        command = cls(**_envelope(clinic, referral_id), **values.values[cls])
        decision = domain.decide(command, referral, CLINICS.get, RECEIVED, domain.SlaPolicy())
        assert isinstance(decision, domain.Changed), decision
        referral = decision.referral
        _deliver(run, referral, decision.step)
        run.sent.append((command, other))
    run.referral = referral
    return run


# --- Surfaces: the text a clinic reads on each -------------------------------------------------


def _page_text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]*>", " ", markup))


def _fhir_strings(resource: Any) -> Iterator[str]:
    if isinstance(resource, dict):
        typed_value = [v for k, v in resource.items() if k.startswith("value") and not isinstance(v, (dict, list))]
        if isinstance(resource.get("type"), dict) and "text" in resource["type"] and typed_value:
            yield f"{resource['type']['text']}: {typed_value[0]}"  # a Task output, as "visits: 3"
        for value in resource.values():
            yield from _fhir_strings(value)
    elif isinstance(resource, list):
        for value in resource:
            yield from _fhir_strings(value)
    elif isinstance(resource, str):
        yield resource


def surfaces(run: Run, clinic: str) -> dict[str, str]:
    """What ``clinic`` reads about the referral: CLI, inbox, portal page, FHIR resources."""
    items = run.inboxes[clinic]
    zone = CLINICS[clinic].timezone
    view = referral_views.referral_view(items, run.referral.referral_id, clinic, zone)
    assert view is not None
    member = Member(clinic=CLINICS[clinic], member="front.desk", token="")
    context = page_context(
        member,
        view=view,
        patient=None,
        documents=[],
        reasons=forms.REASON_CODES,
        forward_choices=[(THIRD, THIRD)],
        refused="",
        errors={},
        document_error="",
        csrf_input="",
    )
    page = TEMPLATES.get_template("referral.html").render(context)
    folded = task_views.ClinicReferrals(clinic)
    for item in items:
        folded.apply(item.message, item.event_number)
    task_view = folded.by_referral[run.referral.referral_id]
    task = task_views.task_resource(task_view)
    service_request = task_views.service_request_resource(task_view)
    notes = communications.communications(task_view)
    Task.model_validate(task)
    ServiceRequest.model_validate(service_request)
    for note in notes:
        Communication.model_validate(note)
    return {
        "referral show": "\n".join(wording.referral_lines(run.referral)),
        "inbox": "\n".join(describe_item(item) for item in items),
        "portal": _page_text(page),
        "fhir": "\n".join(_fhir_strings([task, service_request, notes])),
    }


def expected(value: Any, surface: str, zone: str) -> list[str]:  # noqa: PLR0911 - one return per kind of value
    """The strings that show ``value`` on ``surface``."""
    if isinstance(value, ConsultNote):
        visits = f"visits: {value.visits}" if surface == "fhir" else f"{value.visits} visits"
        return [visits, *value.techniques, value.response, value.recommendations]
    if isinstance(value, ClinicalFlags):
        return [*value.conditions, *value.medications]
    if isinstance(value, tuple) and value and isinstance(value[0], Coding):
        return [text for coding in value for text in (coding.code, coding.display)]
    if isinstance(value, tuple) and value and isinstance(value[0], ExternalIdentifier):
        return [identifier.value for identifier in value]
    if isinstance(value, tuple):
        return [str(v) for v in value]
    if isinstance(value, datetime):
        return [local_time(value, zone) if surface == "portal" else value.isoformat()]
    if isinstance(value, Modality):
        return [value.value.replace("_", " ") if surface in {"portal", "fhir"} else value.value]
    return [str(value)]


def _own_fields(command: ReferralCommand) -> dict[str, Any]:
    return {
        name: getattr(command, name)
        for name in msgspec.structs.asdict(command)
        if name not in BASE_FIELDS | SEALED_FIELDS
    }


@settings(max_examples=1, deadline=None)
@given(values=typed_fields())
def test_the_property_covers_every_command_field(values: Typed) -> None:
    for cls in REFERRAL_COMMANDS:
        own = {f.name for f in msgspec.structs.fields(cls)} - BASE_FIELDS - SEALED_FIELDS
        assert set(values.values[cls]) == own, cls.__name__
    walked = {cls for path in PATHS.values() for cls, _ in path} | {ReferralRequest}
    assert walked == set(REFERRAL_COMMANDS)


@pytest.mark.parametrize("path", sorted(PATHS))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=typed_fields())
def test_every_typed_field_reaches_the_other_clinic_on_every_surface(path: str, values: Typed) -> None:
    run = walk(path, values)
    seen = {clinic: surfaces(run, clinic) for clinic in {other for _, other in run.sent}}
    for command, other in run.sent:
        for name, value in _own_fields(command).items():
            if value in ("", ()):
                continue
            for surface, text in seen[other].items():
                for wanted in expected(value, surface, CLINICS[other].timezone):
                    assert wanted in text, f"{type(command).__name__}.{name} {wanted!r} missing from {surface}"


@settings(max_examples=3, deadline=None)
@given(values=typed_fields())
def test_the_accept_note_is_on_the_fhir_task(values: Typed) -> None:
    run = walk("forwarded", values)
    folded = task_views.ClinicReferrals(SENDER)
    for item in run.inboxes[SENDER]:
        folded.apply(item.message, item.event_number)
    task = task_views.task_resource(folded.by_referral[run.referral.referral_id])
    note = values.values[ReferralAccept]["note"]
    assert f"accept: {note}" in [entry["text"] for entry in task["note"]]


@settings(max_examples=3, deadline=None)
@given(values=typed_fields())
def test_the_inbox_line_of_a_request_names_its_techniques(values: Typed) -> None:
    run = walk("declined", values)
    line = describe_item(run.inboxes[RECIPIENT][0])
    assert all(technique in line for technique in values.values[ReferralRequest]["requested_techniques"])


@settings(max_examples=3, deadline=None)
@given(values=typed_fields())
def test_a_fhir_accept_sends_the_note_it_adds(values: Typed) -> None:
    """A FHIR client accepts by sending the Task back with a new ``note``; that note is the accept's."""
    run = walk("declined", values)
    folded = task_views.ClinicReferrals(RECIPIENT)
    requested = run.inboxes[RECIPIENT][0]
    folded.apply(requested.message, requested.event_number)
    view = folded.by_referral[run.referral.referral_id]
    wanted = {**task_views.task_resource(view), "status": "accepted", "note": [{"text": "Happy to see her"}]}
    envelope = task_commands.Envelope(RECIPIENT, "raj.patel", RECEIVED, bytes(range(32)))
    command = task_commands.transition_command("accept", envelope, view, wanted)
    assert isinstance(command, ReferralAccept)
    assert command.note == "Happy to see her"
