"""``hubctl`` acting as one clinic: move referrals through their lifecycle, update plans, handle alerts.

Every command here publishes on the clinic's own public subject with the clinic's own
credentials, exactly as :class:`~referral_hub.client.ClinicClient` (or a clinic on plain
NATS) would, then waits for the hub's answer in that clinic's inbox and prints it: the
confirmation, or the typed rejection in plain words. Nothing here reads hub-side state, so
it works with a clinic's key alone.

Referral and alert ids may be shortened to any unambiguous prefix (like git's short
hashes); the prefix is resolved against the clinic's own inbox, which names every referral
and alert the clinic is a party to, with the patient each is about.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final, TypeAlias, TypeVar

from referral_hub.cli import sealing_keys as sealing_cli
from referral_hub.cli.clinic_registry import TIMEZONE_ENV, parse_when, registered_clinic, zone_of
from referral_hub.cli.commands import UsageError, out, require_clinic
from referral_hub.client import ClinicClient, InboxItem, new_id, utc_now
from referral_hub.contracts.alerts import (
    AlertAck,
    AlertAcknowledged,
    AlertRaise,
    AlertRaised,
    AlertResolve,
    AlertResolved,
    Severity,
    TriggerKind,
)
from referral_hub.contracts.base import ClinicalFlags, Message, Modality
from referral_hub.contracts.plans import PlanUpdate, PlanUpdated
from referral_hub.contracts.referrals import (
    ConsultNote,
    ReferralAccept,
    ReferralCancel,
    ReferralCancelConfirm,
    ReferralClose,
    ReferralCommand,
    ReferralComplete,
    ReferralDecline,
    ReferralEvent,
    ReferralForward,
    ReferralInterimNote,
    ReferralNoShow,
    ReferralOverride,
    ReferralRequest,
    ReferralSchedule,
    ReferralState,
    ReferralTransitioned,
    Urgency,
)
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.errors import HubError

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # noqa: SLF001 - argparse has no public name for it
Common = Callable[[argparse.ArgumentParser], None]
Known = TypeVar("Known")

ACTOR_ENV: Final = "HUB_ACTOR"
SHORT: Final = 8
"""Characters of an id the CLI prints, as the hub's own screens do."""
MIN_PREFIX: Final = 4
DEFAULT_WAIT: Final = 10.0
MODALITIES: Final = [m.value for m in Modality]
MODALITY_HELP: Final = "the kind of care: " + ", ".join(MODALITIES)

PLAIN_WORDS: Final[dict[str, str]] = {
    RejectionCode.UNKNOWN_REFERRAL: "the hub knows no such referral between this clinic and another",
    RejectionCode.WRONG_PARTY: "this step belongs to the other clinic on the referral",
    RejectionCode.INVALID_TRANSITION: "the referral is not in a state where this step is allowed",
    RejectionCode.REFERRAL_CLOSED: "the referral is already finished",
    RejectionCode.PATIENT_MISMATCH: "the patient does not match the referral's patient",
    RejectionCode.STALE_PLAN_VERSION: "the plan version must be the next one after the version the hub holds",
    RejectionCode.NOT_ON_CARE_TEAM: "this clinic is not on the patient's care team",
    RejectionCode.NO_CARE_TEAM: "the patient has no care team yet (a referral must be accepted first)",
    RejectionCode.UNKNOWN_ALERT: "the hub knows no such alert for this clinic",
    RejectionCode.ALERT_NOT_ACTIVE: "the alert is no longer active",
    RejectionCode.INVALID_ALERT: "the alert is not valid as given",
    RejectionCode.UNKNOWN_MEMBER: "that member is not on this clinic's roster",
    RejectionCode.UNKNOWN_CLINIC: "that clinic is not registered",
    RejectionCode.INVALID_RECIPIENT: "that clinic cannot receive this referral",
    RejectionCode.UNKNOWN_PAGE: "the hub knows no such page for this clinic",
    RejectionCode.PAGE_NOT_OPEN: "the page was already acknowledged or resolved",
    RejectionCode.RATE_LIMITED: "the clinic is sending too fast; send again in a moment",
}


class RejectedError(HubError):
    """The hub refused the command; nothing changed."""


@dataclass(frozen=True)
class KnownReferral:
    """What the clinic's inbox says about one referral: enough to address a command to it."""

    referral_id: uuid.UUID
    patient_ref: str
    state: str
    referring_clinic: str
    recipient_clinic: str


@dataclass(frozen=True)
class KnownAlert:
    """What the clinic's inbox says about one alert."""

    alert_id: uuid.UUID
    patient_ref: str
    raised_by: str
    trigger: str
    active: bool


def short(value: uuid.UUID | str) -> str:
    """The short form of an id, as printed everywhere on screen."""
    return str(value)[:SHORT]


def referrals_in(items: Sequence[InboxItem]) -> dict[uuid.UUID, KnownReferral]:
    """Every referral the inbox mentions, at the latest state it shows."""
    known: dict[uuid.UUID, KnownReferral] = {}
    for item in items:
        message = item.message
        if isinstance(message, ReferralEvent):
            known[message.referral_id] = KnownReferral(
                message.referral_id,
                message.patient_ref,
                message.state,
                message.referring_clinic,
                message.recipient_clinic,
            )
    return known


def alerts_in(items: Sequence[InboxItem]) -> dict[uuid.UUID, KnownAlert]:
    """Every alert the inbox mentions, and whether it is still active."""
    known: dict[uuid.UUID, KnownAlert] = {}
    for item in items:
        message = item.message
        if isinstance(message, AlertRaised):
            known[message.alert_id] = KnownAlert(
                message.alert_id, message.patient_ref, message.raised_by, message.trigger, active=True
            )
        elif isinstance(message, AlertResolved) and message.alert_id in known:
            was = known[message.alert_id]
            known[message.alert_id] = KnownAlert(
                was.alert_id, was.patient_ref, was.raised_by, was.trigger, active=False
            )
    return known


def resolve_prefix(text: str, known: Mapping[uuid.UUID, Known], what: str, clinic_id: str) -> Known:
    """The one ``what`` whose id starts with ``text``; a clear error when none or several do."""
    wanted = text.strip().lower()
    if len(wanted) < MIN_PREFIX:
        msg = f"{what} id {text!r} is too short: give at least {MIN_PREFIX} characters"
        raise UsageError(msg)
    matches = [key for key in known if str(key).startswith(wanted)]
    if not matches:
        msg = f"no {what} {text!r} in the inbox of {clinic_id}; see 'hubctl inbox --clinic {clinic_id}'"
        raise UsageError(msg)
    if len(matches) > 1:
        candidates = ", ".join(sorted(str(key) for key in matches))
        msg = f"{what} id {text!r} is ambiguous in the inbox of {clinic_id}; it could be: {candidates}"
        raise UsageError(msg)
    return known[matches[0]]


async def actor_of(args: argparse.Namespace, clinic_id: str) -> str:
    """Who the message names as acting: ``--actor``, ``$HUB_ACTOR``, else the clinic's first member.

    The hub refuses an actor who is not on the clinic's roster, and a clinic's key may not
    read the registry: there the clinic names its member, and is told so at once rather
    than after a timeout.
    """
    chosen: str | None = getattr(args, "actor", None) or os.environ.get(ACTOR_ENV)
    if chosen:
        return chosen
    clinic = await registered_clinic(args, clinic_id)
    if clinic is not None and clinic.members:
        return clinic.members[0].id
    msg = (
        f"name the member acting for {clinic_id} with --actor MEMBER (or set {ACTOR_ENV}); "
        "a clinic's own key cannot read the hub's registry"
    )
    raise UsageError(msg)


def parse_day(text: str | None) -> date:
    """An ISO 8601 date, or today."""
    if not text:
        return utc_now().date()
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        msg = f"not an ISO 8601 date: {text!r} (for example 2026-12-01)"
        raise UsageError(msg) from exc


async def read_inbox(client: ClinicClient) -> list[InboxItem]:
    """The whole inbox, as the clinic's own reads return it."""
    return [item async for item in client.inbox()]


async def exchange(client: ClinicClient, message: Message, wait: float) -> InboxItem:
    """Send ``message`` and return the hub's answer; a rejection becomes :class:`RejectedError`."""
    receipt, answer = await client.send_and_wait(message, wait)
    if answer is None:
        msg = (
            f"sent (stored as #{receipt.sequence}) but the hub has not answered within {wait:.0f}s; "
            f"it will: watch 'hubctl inbox --clinic {client.clinic_id} --follow'"
        )
        raise HubError(msg)
    if isinstance(answer.message, Rejection):
        raise RejectedError(plain_rejection(answer.message))
    return answer


def plain_rejection(rejection: Rejection) -> str:
    """A rejection in plain words, with its code for scripts and searching the docs."""
    words = PLAIN_WORDS.get(rejection.code, "the hub refused it")
    state = f" (the referral is {rejection.current_state})" if rejection.current_state else ""
    version = f" (the hub holds version {rejection.current_version})" if rejection.current_version else ""
    return f"rejected ({rejection.code}): {words}{state}{version}: {rejection.reason}"


def next_steps(referral: KnownReferral, clinic_id: str) -> list[str]:
    """The commands that make sense now, for this clinic's side of the referral."""
    recipient = clinic_id == referral.recipient_clinic
    state = ReferralState(referral.state)
    if recipient:
        verbs = {
            ReferralState.REQUESTED: ["accept", "decline --reason-code CODE", "forward --to CLINIC"],
            ReferralState.NEEDS_REVIEW: ["override --reason WHY", "decline --reason-code CODE"],
            ReferralState.ACCEPTED: ["schedule --at TIME", "note --text TEXT", "cancel --reason-code CODE"],
            ReferralState.SCHEDULED: ["complete --visits N", "no-show", "schedule --at TIME", "note --text TEXT"],
            ReferralState.NO_SHOW: ["schedule --at TIME", "cancel --reason-code CODE"],
            ReferralState.CANCEL_REQUESTED: ["cancel-confirm"],
        }.get(state, [])
    else:
        verbs = {
            ReferralState.REQUESTED: ["cancel --reason-code CODE"],
            ReferralState.NEEDS_REVIEW: ["cancel --reason-code CODE"],
            ReferralState.ACCEPTED: ["cancel --reason-code CODE"],
            ReferralState.SCHEDULED: ["cancel --reason-code CODE"],
            ReferralState.NO_SHOW: ["cancel --reason-code CODE"],
            ReferralState.COMPLETED: ["close"],
        }.get(state, [])
    commands = [
        f"hubctl referral {verb.split()[0]} {short(referral.referral_id)} --clinic {clinic_id}"
        + (" " + " ".join(verb.split()[1:]) if len(verb.split()) > 1 else "")
        for verb in verbs
    ]
    commands.append(f"hubctl referral show {short(referral.referral_id)}")
    return commands


def print_next(commands: Sequence[str]) -> None:
    """The follow-up commands, one a line."""
    if commands:
        out("next:")
        for command in commands:
            out(f"  {command}")


Builder = Callable[[argparse.Namespace, KnownReferral, dict[str, object]], ReferralCommand]


def _accept(args: argparse.Namespace, _: KnownReferral, base: dict[str, object]) -> ReferralCommand:
    return ReferralAccept(**base, note=args.note)  # type: ignore[arg-type]


def _decline(args: argparse.Namespace, _: KnownReferral, base: dict[str, object]) -> ReferralCommand:
    return ReferralDecline(**base, reason_code=args.reason_code, reason_text=args.reason_text)  # type: ignore[arg-type]


def _schedule(args: argparse.Namespace, _: KnownReferral, base: dict[str, object]) -> ReferralCommand:
    return ReferralSchedule(**base, appointment_at=parse_when(args.at, args.zone))  # type: ignore[arg-type]


def _no_show(_args: argparse.Namespace, _: KnownReferral, base: dict[str, object]) -> ReferralCommand:
    return ReferralNoShow(**base)  # type: ignore[arg-type]


def _complete(args: argparse.Namespace, _: KnownReferral, base: dict[str, object]) -> ReferralCommand:
    outcome = ConsultNote(
        visits=args.visits,
        techniques=tuple(args.technique),
        response=args.response,
        recommendations=args.recommendations,
    )
    return ReferralComplete(**base, outcome=outcome)  # type: ignore[arg-type]


def _close(_args: argparse.Namespace, _: KnownReferral, base: dict[str, object]) -> ReferralCommand:
    return ReferralClose(**base)  # type: ignore[arg-type]


def _cancel(args: argparse.Namespace, _: KnownReferral, base: dict[str, object]) -> ReferralCommand:
    return ReferralCancel(**base, reason_code=args.reason_code, reason_text=args.reason_text)  # type: ignore[arg-type]


def _cancel_confirm(_args: argparse.Namespace, _: KnownReferral, base: dict[str, object]) -> ReferralCommand:
    return ReferralCancelConfirm(**base)  # type: ignore[arg-type]


def _forward(args: argparse.Namespace, _: KnownReferral, base: dict[str, object]) -> ReferralCommand:
    return ReferralForward(**base, to_clinic=args.to, reason=args.reason)  # type: ignore[arg-type]


def _override(args: argparse.Namespace, _: KnownReferral, base: dict[str, object]) -> ReferralCommand:
    return ReferralOverride(**base, reason=args.reason)  # type: ignore[arg-type]


def _note(args: argparse.Namespace, _: KnownReferral, base: dict[str, object]) -> ReferralCommand:
    return ReferralInterimNote(**base, note=args.text)  # type: ignore[arg-type]


def _base(clinic_id: str, actor: str, **fields: object) -> dict[str, object]:
    return {
        "message_id": new_id(),
        "occurred_at": utc_now(),
        "sender_clinic": clinic_id,
        "actor": actor,
        "correlation_id": new_id(),
        **fields,
    }


def referral_step(build: Builder) -> Callable[[argparse.Namespace], object]:
    """A ``hubctl referral VERB ID`` command that sends what ``build`` makes."""

    async def run(args: argparse.Namespace) -> int:
        clinic_id = require_clinic(args)
        client = await ClinicClient.connect(args.nats_url, clinic_id)
        try:
            items = await read_inbox(client)
            referral = resolve_prefix(args.referral_id, referrals_in(items), "referral", clinic_id)
            base = _base(
                clinic_id,
                await actor_of(args, clinic_id),
                referral_id=referral.referral_id,
                patient_ref=referral.patient_ref,
            )
            # A time without an offset is read in the clinic's zone, looked up only when one is given.
            args.zone = await zone_of(args, clinic_id) if getattr(args, "at", None) else None
            command = await sealing_cli.resealed_forward(args.nats_url, items, build(args, referral, base))
            answer = await exchange(client, command, args.wait)
        finally:
            await client.close()
        message = answer.message
        if isinstance(message, ReferralEvent):
            now = KnownReferral(
                message.referral_id,
                message.patient_ref,
                message.state,
                message.referring_clinic,
                message.recipient_clinic,
            )
            step = message.transition if isinstance(message, ReferralTransitioned) else args.referral_command
            out(
                f"referral {short(now.referral_id)} is now {now.state} ({step} by {clinic_id}; "
                f"{now.referring_clinic} -> {now.recipient_clinic}, patient {now.patient_ref})"
            )
            print_next(next_steps(now, clinic_id))
        else:
            out(f"referral {short(referral.referral_id)}: the hub answered {type(message).__name__}")
        return 0

    return run


STEPS: Final[dict[str, tuple[str, Builder]]] = {
    "accept": ("take the referral on (both clinics join the patient's care team)", _accept),
    "decline": ("refuse the referral, with a coded reason", _decline),
    "schedule": ("book or re-book the first appointment", _schedule),
    "no-show": ("the patient missed the appointment", _no_show),
    "complete": ("finish the episode and report the outcome", _complete),
    "close": ("acknowledge the outcome (the referring clinic), closing the loop", _close),
    "cancel": ("cancel (after scheduling, a referring clinic's cancel is a request)", _cancel),
    "cancel-confirm": ("confirm the referring clinic's cancellation request", _cancel_confirm),
    "forward": ("pass the referral on to a third clinic", _forward),
    "override": ("release a referral screening held for review, saying why it is safe", _override),
    "note": ("send an interim consult note", _note),
}


def _clinic_options(parser: argparse.ArgumentParser, common: Common) -> None:
    common(parser)
    parser.add_argument(
        "--actor",
        help=f"member id acting (default: ${ACTOR_ENV}, else the clinic's first member); recorded in the audit log",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT,
        help="seconds to wait for the hub's answer in the clinic's inbox (default: %(default)s)",
    )


def add_referral_steps(referral_sub: Subparsers, common: Common) -> None:
    """``hubctl referral accept|decline|...``: one subcommand per lifecycle step."""
    for verb, (summary, build) in STEPS.items():
        parser = referral_sub.add_parser(verb, help=summary)
        _clinic_options(parser, common)
        parser.add_argument("referral_id", help="the referral id, or any unambiguous prefix of it (like 5842930d)")
        if verb == "accept":
            parser.add_argument("--note", default="", help="a note for the referring clinic")
        if verb in {"decline", "cancel"}:
            parser.add_argument(
                "--reason-code", required=True, help="coded reason, for example no_capacity or patient_request"
            )
            parser.add_argument("--reason-text", default="", help="free-text detail")
        if verb == "schedule":
            parser.add_argument(
                "--at", required=True, help="appointment time, ISO 8601; without an offset, the clinic's local time"
            )
            parser.add_argument(
                "--timezone",
                help=f"IANA zone of a time without an offset (default: ${TIMEZONE_ENV}, else the clinic's)",
            )
        if verb == "complete":
            parser.add_argument("--visits", type=int, required=True, help="how many visits the episode took")
            parser.add_argument("--technique", action="append", default=[], help="a technique used (repeatable)")
            parser.add_argument("--response", default="", help="how the patient responded")
            parser.add_argument("--recommendations", default="", help="recommendations for the referring clinic")
        if verb == "forward":
            parser.add_argument("--to", required=True, help="the clinic to pass it to")
            parser.add_argument("--reason", default="", help="why")
        if verb == "override":
            parser.add_argument("--reason", required=True, help="why treatment is safe despite the screening match")
        if verb == "note":
            parser.add_argument("--text", required=True, help="the note")
        parser.set_defaults(run=referral_step(build))


def add_commands(sub: Subparsers, common: Common) -> None:
    """``hubctl plan update`` and ``hubctl alert raise|ack|resolve``."""
    plan = sub.add_parser("plan", help="a clinic's treatment plan for a shared patient")
    plan_sub = plan.add_subparsers(dest="plan_command", required=True, metavar="PLAN_COMMAND")
    update = plan_sub.add_parser("update", help="publish a new version of --clinic's plan to the care team")
    _clinic_options(update, common)
    update.add_argument("--patient", required=True, help="the pseudonymous patient_ref")
    update.add_argument("--modality", required=True, choices=MODALITIES, help=MODALITY_HELP)
    update.add_argument(
        "--version", type=int, required=True, help="the new version: 1 for a first plan, else the current one plus 1"
    )
    update.add_argument("--goal", action="append", default=[], help="a treatment goal (repeatable)")
    update.add_argument("--frequency", default="", help="for example '2x/week for 6 weeks'")
    update.add_argument("--technique", action="append", default=[], help="a technique (repeatable)")
    update.add_argument("--precaution", action="append", default=[], help="a precaution (repeatable)")
    update.add_argument("--effective", help="ISO 8601 date the plan takes effect (default: today, UTC)")
    update.set_defaults(run=plan_update)

    alert = sub.add_parser("alert", help="contraindication alerts to a patient's care team")
    alert_sub = alert.add_subparsers(dest="alert_command", required=True, metavar="ALERT_COMMAND")
    raise_ = alert_sub.add_parser("raise", help="warn the patient's care team")
    _clinic_options(raise_, common)
    raise_.add_argument("--patient", required=True, help="the pseudonymous patient_ref")
    raise_.add_argument(
        "--kind",
        choices=[k.value for k in TriggerKind],
        default="condition",
        help="what it is about (default: %(default)s)",
    )
    raise_.add_argument("--trigger", required=True, help="the condition, medication or event, for example apixaban")
    raise_.add_argument(
        "--modality",
        action="append",
        required=True,
        choices=MODALITIES,
        help="a kind of care it concerns (repeatable): " + ", ".join(MODALITIES),
    )
    raise_.add_argument(
        "--severity",
        choices=[s.value for s in Severity],
        required=True,
        help="absolute stops treatment, relative modifies it, local avoids a site, caution informs",
    )
    raise_.add_argument("--technique", action="append", default=[], help="a technique it concerns (repeatable)")
    raise_.add_argument("--body-site", default="", help="for local alerts: the site to avoid")
    raise_.add_argument("--until", help="ISO 8601 end of validity; without an offset, the clinic's local time")
    raise_.add_argument(
        "--timezone", help=f"IANA zone of a time without an offset (default: ${TIMEZONE_ENV}, else the clinic's)"
    )
    raise_.add_argument("--note", default="", help="detail for the care team")
    raise_.set_defaults(run=alert_raise)

    ack = alert_sub.add_parser("ack", help="a member of --clinic has seen the alert")
    _clinic_options(ack, common)
    ack.add_argument("alert_id", help="the alert id, or any unambiguous prefix of it")
    ack.add_argument("--member", required=True, help="the member who has seen it")
    ack.set_defaults(run=alert_ack)

    resolve = alert_sub.add_parser("resolve", help="withdraw an alert --clinic raised")
    _clinic_options(resolve, common)
    resolve.add_argument("alert_id", help="the alert id, or any unambiguous prefix of it")
    resolve.add_argument("--reason", default="", help="why it no longer applies")
    resolve.set_defaults(run=alert_resolve)


async def plan_update(args: argparse.Namespace) -> int:
    """``hubctl plan update``: a new plan version, fanned out to the care team."""
    clinic_id = require_clinic(args)
    message = PlanUpdate(
        **_base(clinic_id, await actor_of(args, clinic_id)),  # type: ignore[arg-type]
        patient_ref=args.patient,
        modality=Modality(args.modality),
        plan_version=args.version,
        goals=tuple(args.goal),
        frequency=args.frequency,
        techniques=tuple(args.technique),
        precautions=tuple(args.precaution),
        effective_date=parse_day(args.effective),
    )
    client = await ClinicClient.connect(args.nats_url, clinic_id)
    try:
        answer = await exchange(client, message, args.wait)
    finally:
        await client.close()
    # The hub confirms to the author with the team's own plan.updated, as it stored it.
    stored = answer.message
    if not isinstance(stored, PlanUpdated):
        msg = f"the hub answered the plan update with {type(stored).__name__}, not plan.updated"
        raise HubError(msg)
    goals = "; ".join(stored.goals) or "no goals"
    out(
        f"plan v{stored.plan_version} of {stored.plan_clinic} for {stored.patient_ref} stored by the hub "
        f"and sent to the care team (inbox #{answer.event_number}): {goals}"
    )
    print_next(
        [
            (
                f"hubctl plan update --clinic {clinic_id} --patient {args.patient} --modality {args.modality} "
                f"--version {args.version + 1} ..."
            ),
            f"hubctl careteam show {args.patient}",
        ]
    )
    return 0


async def alert_raise(args: argparse.Namespace) -> int:
    """``hubctl alert raise``: warn the patient's care team."""
    clinic_id = require_clinic(args)
    message = AlertRaise(
        **_base(clinic_id, await actor_of(args, clinic_id)),  # type: ignore[arg-type]
        alert_id=new_id(),
        patient_ref=args.patient,
        trigger_kind=TriggerKind(args.kind),
        trigger=args.trigger,
        modalities=tuple(Modality(m) for m in args.modality),
        techniques=tuple(args.technique),
        severity=Severity(args.severity),
        body_site=args.body_site,
        valid_until=parse_when(args.until, await zone_of(args, clinic_id)) if args.until else None,
        note=args.note,
    )
    client = await ClinicClient.connect(args.nats_url, clinic_id)
    try:
        answer = await exchange(client, message, args.wait)
    finally:
        await client.close()
    shown = short(message.alert_id)
    team = ""
    if isinstance(answer.message, AlertRaised) and answer.message.recipients:
        team = f" to {', '.join(answer.message.recipients)}"
    out(f"{args.severity} alert {shown} raised by {clinic_id} for {args.patient}{team}: {args.trigger}")
    print_next(
        [
            f"hubctl alerts --patient {args.patient}",
            f"hubctl alert resolve {shown} --clinic {clinic_id} --reason WHY",
        ]
    )
    return 0


async def _alert_command(
    args: argparse.Namespace, make: Callable[[str, KnownAlert], Message]
) -> tuple[str, KnownAlert, InboxItem]:
    clinic_id = require_clinic(args)
    client = await ClinicClient.connect(args.nats_url, clinic_id)
    try:
        alert = resolve_prefix(args.alert_id, alerts_in(await read_inbox(client)), "alert", clinic_id)
        answer = await exchange(client, make(clinic_id, alert), args.wait)
    finally:
        await client.close()
    return clinic_id, alert, answer


async def alert_ack(args: argparse.Namespace) -> int:
    """``hubctl alert ack ALERT --member M``: this member has seen it."""

    def make(clinic_id: str, alert: KnownAlert) -> Message:
        return AlertAck(
            **_base(clinic_id, args.actor or args.member),  # type: ignore[arg-type]
            alert_id=alert.alert_id,
            patient_ref=alert.patient_ref,
            member=args.member,
        )

    clinic_id, alert, answer = await _alert_command(args, make)
    by = answer.message.member if isinstance(answer.message, AlertAcknowledged) else args.member
    out(f"alert {short(alert.alert_id)} ({alert.trigger}, {alert.patient_ref}) acknowledged by {by} ({clinic_id})")
    print_next([f"hubctl alerts --patient {alert.patient_ref}"])
    return 0


async def alert_resolve(args: argparse.Namespace) -> int:
    """``hubctl alert resolve ALERT``: the raising clinic withdraws it."""
    actor = await actor_of(args, require_clinic(args))

    def make(clinic_id: str, alert: KnownAlert) -> Message:
        return AlertResolve(
            **_base(clinic_id, actor),  # type: ignore[arg-type]
            alert_id=alert.alert_id,
            patient_ref=alert.patient_ref,
            reason=args.reason,
        )

    clinic_id, alert, _ = await _alert_command(args, make)
    out(f"alert {short(alert.alert_id)} ({alert.trigger}, {alert.patient_ref}) resolved by {clinic_id}")
    print_next([f"hubctl alerts --patient {alert.patient_ref} --all"])
    return 0


def referral_request(args: argparse.Namespace, base: dict[str, object]) -> ReferralRequest:
    """The ``referral.request`` ``hubctl refer``'s options describe, every field the contract takes."""
    return ReferralRequest(
        **base,  # type: ignore[arg-type]
        referral_id=new_id(),
        patient_ref=args.patient,
        recipient_clinic=args.to,
        modality=Modality(args.modality),
        urgency=Urgency(args.urgency),
        reason=args.reason,
        icd10_codes=tuple(args.icd10),
        clinical_flags=ClinicalFlags(conditions=tuple(args.condition), medications=tuple(args.medication)),
        requested_techniques=tuple(args.technique),
        note=args.note,
    )


async def refer(args: argparse.Namespace) -> int:
    """``hubctl refer``: send a referral and report what the hub made of it.

    Screening may hold a referral for review (``needs_review``) instead of passing it on:
    the outcome printed is the state the hub answered with, never an assumed one.
    """
    clinic_id = require_clinic(args)
    request = referral_request(args, _base(clinic_id, await actor_of(args, clinic_id)))
    request = await sealing_cli.sealed_request(args.nats_url, request, sealing_cli.details_from_args(args))
    client = await ClinicClient.connect(args.nats_url, clinic_id)
    try:
        answer = await exchange(client, request, args.wait)
    finally:
        await client.close()
    message = answer.message
    state = message.state if isinstance(message, ReferralEvent) else ReferralState.REQUESTED
    held = (
        " (held by screening for the recipient's review: it must override or decline)"
        if state == ReferralState.NEEDS_REVIEW
        else ""
    )
    out(f"referral {request.referral_id} {state}: {clinic_id} -> {args.to}{held} (message {request.message_id})")
    print_next(
        next_steps(
            KnownReferral(request.referral_id, args.patient, state, clinic_id, args.to),
            clinic_id,
        )
    )
    return 0
