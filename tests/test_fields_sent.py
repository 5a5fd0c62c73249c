"""Every field a clinic can type reaches the command it sends, from the CLI and from the portal's forms.

The other half of ``test_fields_reach_recipient``: there each command's own fields must reach
the other clinic's surfaces; here each must be typeable on the surfaces a clinic sends from.
The values come from the same strategy, so a new contract field fails both until it is wired.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import msgspec
from hypothesis import given, settings

from referral_hub.cli import clinic as clinic_cli
from referral_hub.cli.main import build_parser
from referral_hub.contracts.referrals import REFERRAL_COMMANDS, ReferralCommand, ReferralRequest, ReferralSchedule
from referral_hub.portal import forms
from referral_hub.portal.domain import local_time

from .test_fields_reach_recipient import BASE_FIELDS, RECIPIENT, SEALED_FIELDS, SENDER, THIRD, Typed, typed_fields

FHIR_ONLY: frozenset[str] = frozenset({"service_codings", "identifiers", "appointment_end"})
"""What only a FHIR client sends (its own codings and identifiers, an appointment's end): the
command line and the portal's forms offer them nowhere, so they are left out here and followed
through the gateway in tests/test_fields_reach_recipient.py and tests/gateway/test_conformance.py."""

CLI_VERB = {
    "ReferralAccept": "accept",
    "ReferralDecline": "decline",
    "ReferralSchedule": "schedule",
    "ReferralNoShow": "no-show",
    "ReferralInterimNote": "note",
    "ReferralComplete": "complete",
    "ReferralClose": "close",
    "ReferralCancel": "cancel",
    "ReferralCancelConfirm": "cancel-confirm",
    "ReferralForward": "forward",
    "ReferralOverride": "override",
}


def _own(command: ReferralCommand) -> dict[str, Any]:
    skipped = BASE_FIELDS | SEALED_FIELDS | FHIR_ONLY
    return {name: value for name, value in msgspec.structs.asdict(command).items() if name not in skipped}


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    """What a clinic types on the command line or in a form: all but the FHIR-only fields."""
    return {name: value for name, value in values.items() if name not in FHIR_ONLY}


def _cli_options(verb: str, values: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for name, value in values.items():
        if name == "note":
            argv += ["--text" if verb == "note" else "--note", value]
        elif name in {"reason_code", "reason_text"}:
            argv += [f"--{name.replace('_', '-')}", value]
        elif name == "reason":
            argv += ["--reason", value]
        elif name == "appointment_at":
            argv += ["--at", value.isoformat()]
        elif name == "to_clinic":
            argv += ["--to", value]
        elif name == "outcome":
            argv += ["--visits", str(value.visits), "--response", value.response]
            argv += ["--recommendations", value.recommendations]
            for technique in value.techniques:
                argv += ["--technique", technique]
    return argv


def _request_argv(values: dict[str, Any]) -> list[str]:
    argv = ["refer", "--to", values["recipient_clinic"], "--patient", "pt-fields-0001", "--modality"]
    argv += [values["modality"].value, "--reason", values["reason"], "--urgency", values["urgency"].value]
    argv += ["--icd10", *values["icd10_codes"], "--note", values["note"]]
    for flag, items in (
        ("--technique", values["requested_techniques"]),
        ("--condition", values["clinical_flags"].conditions),
        ("--medication", values["clinical_flags"].medications),
    ):
        for item in items:
            argv += [flag, item]
    return argv


def _base(clinic: str) -> dict[str, object]:
    return {
        "message_id": uuid4(),
        "occurred_at": "2026-12-07T15:00:00+00:00",
        "sender_clinic": clinic,
        "actor": "front.desk",
        "correlation_id": uuid4(),
    }


@settings(max_examples=10, deadline=None)
@given(values=typed_fields())
def test_every_field_can_be_typed_into_hubctl(values: Typed) -> None:
    parser = build_parser()
    for cls in REFERRAL_COMMANDS:
        own = _typed(values.values[cls])
        if cls is ReferralRequest:
            args = parser.parse_args(_request_argv(own))
            command: ReferralCommand = clinic_cli.referral_request(args, _base(SENDER))
        else:
            verb = CLI_VERB[cls.__name__]
            args = parser.parse_args(["referral", verb, "abc", *_cli_options(verb, own)])
            args.zone = None
            known = clinic_cli.KnownReferral(uuid4(), "pt-fields-0001", "requested", SENDER, RECIPIENT)  # type: ignore[arg-type]
            build = clinic_cli.STEPS[verb][1]
            command = build(args, known, {**_base(RECIPIENT), "referral_id": known.referral_id, "patient_ref": "pt-x1"})
        assert _own(command) == own, cls.__name__


def _form(values: dict[str, Any], zone: str) -> dict[str, str]:
    form: dict[str, str] = {}
    for name, value in values.items():
        if name == "appointment_at":
            form[name] = local_time(value, zone)[:16].replace(" ", "T")
        elif name == "outcome":
            form |= {
                "visits": str(value.visits),
                "techniques": "\n".join(value.techniques),
                "response": value.response,
                "recommendations": value.recommendations,
            }
        else:
            form[name] = value
    return form


@settings(max_examples=10, deadline=None)
@given(values=typed_fields())
def test_every_step_field_can_be_typed_into_the_portal(values: Typed) -> None:
    actor = forms.Actor(RECIPIENT, "front.desk", "America/New_York")
    for cls in REFERRAL_COMMANDS:
        if cls is ReferralRequest:
            continue
        step = next(name for name, kind in forms.TRANSITION_COMMANDS.items() if kind is cls)
        wanted = _typed(values.values[cls])
        if step in forms.REASON_CODES:  # the portal offers its reasons as a list; the code is one of them
            wanted["reason_code"] = next(iter(forms.REASON_CODES[step]))
        form = _form(wanted, actor.zone)
        result = forms.transition(step, form, actor, uuid4(), "pt-fields-0001", forward_to=frozenset({THIRD}))
        assert result.message is not None, (cls.__name__, result.errors)
        assert isinstance(result.message, cls)
        if cls is ReferralSchedule:
            assert result.message.appointment_at == wanted["appointment_at"]
            continue
        assert _own(result.message) == wanted, cls.__name__


@settings(max_examples=10, deadline=None)
@given(values=typed_fields())
def test_every_request_field_can_be_typed_into_the_portal(values: Typed) -> None:
    own = _typed(values.values[ReferralRequest])
    form = {
        "recipient": f"{own['recipient_clinic']}|{own['modality'].value}",
        "patient_ref": "pt-fields-0001",
        "modality": own["modality"].value,
        "urgency": own["urgency"].value,
        "reason": own["reason"],
        "icd10_codes": ", ".join(own["icd10_codes"]),
        "conditions": "\n".join(own["clinical_flags"].conditions),
        "medications": "\n".join(own["clinical_flags"].medications),
        "techniques": "\n".join(own["requested_techniques"]),
        "note": own["note"],
    }
    result = forms.new_referral(
        form, forms.Actor(SENDER, "front.desk", "America/New_York"), {RECIPIENT: ("acupuncture",)}
    )

    assert result.message is not None, result.errors
    assert isinstance(result.message, ReferralRequest)
    assert _own(result.message) == own
