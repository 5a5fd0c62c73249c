"""``hubctl`` commands for rosters, on-call, silences and pages.

Rosters and on-call data live in the clinic's registry record (KV, followed live by every
service); silences live in the notifications state bucket. Every change is also published
as an ``admin.changed`` domain event, so the audit log records who changed what.
"""

from __future__ import annotations

import argparse
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NoKeysError

from referral_hub.cli.commands import UsageError, connect, fetch_registry, out, require_clinic
from referral_hub.cli.screen import page_severity
from referral_hub.client import ClinicClient, new_id, utc_now
from referral_hub.contracts.alerts import Severity
from referral_hub.contracts.base import Modality
from referral_hub.contracts.codec import encode
from referral_hub.contracts.paging import AdminChanged, PageAck, PageAcknowledged
from referral_hub.contracts.registry import (
    Clinic,
    OnCallOverride,
    override_problems,
    roster_problems,
)
from referral_hub.contracts.rejections import Rejection
from referral_hub.notifications import oncall
from referral_hub.notifications.adapters import SILENCE_PREFIX
from referral_hub.notifications.page_rules import MAX_SILENCE, Page, Silence, SilenceError, check_silence
from referral_hub.runtime.jetstream import subjects, topology
from referral_hub.runtime.jetstream.registry_cache import store_clinic
from referral_hub.runtime.jetstream.streams import MSG_ID_HEADER
from referral_hub.runtime.messaging.refusals import HUB_SENDER

OPERATOR = "hubctl"
MAX_OVERRIDE: Final = timedelta(days=366)
"""The longest on-call override: longer cover belongs in the rotation."""


def parse_time(text: str | None, zone: str = "UTC") -> datetime:
    """An ISO 8601 timestamp, or now; one that names no zone is a wall-clock time in ``zone``.

    On-call times are given as the clinic lives them: ``--until 2026-12-01T18:00`` for a
    clinic in New York means 18:00 there, not 18:00 UTC.
    """
    if not text:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"not an ISO 8601 time: {text!r}"
        raise UsageError(msg) from exc
    if parsed.tzinfo:
        return parsed
    try:
        return parsed.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    except (LookupError, ValueError, OSError) as exc:
        msg = f"cannot read {text!r} in time zone {zone!r}: {exc}"
        raise UsageError(msg) from exc


def parse_duration(text: str, longest: timedelta) -> timedelta:
    """``90m``, ``2h`` or ``1d``: more than nothing, and no longer than ``longest``."""
    units = {"m": 60.0, "h": 3600.0, "d": 86400.0}
    try:
        seconds = float(text[:-1]) * units[text[-1]]
    except (IndexError, KeyError, ValueError) as exc:
        msg = f"not a duration like 90m, 2h or 1d: {text!r}"
        raise UsageError(msg) from exc
    if not math.isfinite(seconds) or seconds <= 0:
        msg = f"a duration must be more than nothing, like 90m, 2h or 1d: {text!r}"
        raise UsageError(msg)
    if seconds > longest.total_seconds():
        msg = f"{text!r} is longer than the longest allowed, {_days(longest)}"
        raise UsageError(msg)
    return timedelta(seconds=seconds)


def _days(span: timedelta) -> str:
    return f"{span.days} days" if span.days else str(span)


def refuse_roster(clinic: Clinic) -> None:
    """A roster the hub could not page with is refused here, before it reaches the registry."""
    problems = roster_problems(clinic)
    if problems:
        msg = f"the roster of {clinic.id} cannot be used: {'; '.join(problems)}"
        raise UsageError(msg)


async def clinic_record(nats_url: str, clinic_id: str) -> Clinic:
    """The clinic's registry record, read with the operator's key; a clear error if it is not registered."""
    connection = await connect(nats_url)
    try:
        clinics = {clinic.id: clinic for clinic in await fetch_registry(connection)}
    finally:
        await connection.drain()
    if clinic_id not in clinics:
        msg = f"clinic {clinic_id!r} is not registered"
        raise UsageError(msg)
    return clinics[clinic_id]


async def store_clinic_record(nats_url: str, clinic: Clinic, change: str, detail: str) -> None:
    """Write the clinic's registry record and record the change for the audit log."""
    connection = await connect(nats_url)
    try:
        await store_clinic(connection.jetstream(), clinic)
        await _record_change(connection.jetstream(), change, clinic.id, detail)
    finally:
        await connection.drain()


async def _record_change(js: JetStreamContext, change: str, clinic: str, detail: str) -> None:
    event = AdminChanged(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic=HUB_SENDER,
        actor=OPERATOR,
        correlation_id=new_id(),
        change=change,
        clinic=clinic,
        detail=detail[:200],
    )
    await js.publish(
        subjects.domain_event("admin.changed"), encode(event), headers={MSG_ID_HEADER: str(event.message_id)}
    )


async def oncall_show(args: argparse.Namespace) -> int:
    """``hubctl oncall --clinic X [--at TIME]``: who is on call then, and who escalation reaches."""
    clinic = await clinic_record(args.nats_url, require_clinic(args))
    at = parse_time(args.at, clinic.timezone)
    refuse_roster(clinic)
    member = oncall.on_call(clinic, at)
    local = oncall.local_time(clinic, at)
    out(f"{clinic.id} at {local.isoformat(timespec='minutes')} ({clinic.timezone}): on call {member or 'nobody'}")
    for level in range(3):
        names = ", ".join(m.id for m in oncall.escalation_targets(clinic, level, at)) or "nobody"
        out(f"  escalation level {level}: {names}")
    return 0


async def oncall_override(args: argparse.Namespace) -> int:
    """``hubctl oncall override --clinic X --member M --from T --until T``."""
    clinic = await clinic_record(args.nats_url, require_clinic(args))
    if not clinic.has_member(args.member):
        msg = f"{args.member!r} is not a member of {clinic.id!r}"
        raise UsageError(msg)
    starts, ends = parse_time(args.start, clinic.timezone), parse_time(args.until, clinic.timezone)
    if ends <= starts:
        msg = "--until must be later than --from"
        raise UsageError(msg)
    if ends - starts > MAX_OVERRIDE:
        msg = f"an override may last at most {_days(MAX_OVERRIDE)}; longer cover belongs in the rotation"
        raise UsageError(msg)
    override = OnCallOverride(member=args.member, starts_at=starts, ends_at=ends, reason=args.reason)
    problems = override_problems(clinic, override)
    if problems:
        raise UsageError("; ".join(problems))
    now = utc_now()
    kept = tuple(o for o in clinic.oncall_overrides if o.ends_at > now)
    updated = msgspec.structs.replace(clinic, oncall_overrides=(*kept, override))
    refuse_roster(updated)
    await store_clinic_record(
        args.nats_url,
        updated,
        "oncall.override",
        f"{args.member} on call {starts.isoformat(timespec='minutes')}..{ends.isoformat(timespec='minutes')}",
    )
    local = ZoneInfo(clinic.timezone)
    out(
        f"{args.member} covers on-call for {clinic.id} from {starts.astimezone(local).isoformat(timespec='minutes')} "
        f"until {ends.astimezone(local).isoformat(timespec='minutes')} ({clinic.timezone})"
    )
    return 0


async def silence_add(args: argparse.Namespace) -> int:
    """``hubctl silence add --clinic X --for 2h --reason R``: Alertmanager-style, always expiring."""
    clinic = await clinic_record(args.nats_url, require_clinic(args))
    now = utc_now()
    silence = Silence(
        silence_id=new_id(),
        clinic=clinic.id,
        starts_at=now,
        ends_at=now + parse_duration(args.duration, MAX_SILENCE),
        created_by=args.by,
        reason=args.reason,
        patient_ref=args.patient or "",
        modality=Modality(args.modality) if args.modality else None,
        severities=tuple(Severity(s) for s in (args.severity or ("relative", "local", "caution"))),
    )
    try:
        check_silence(silence, now)
    except SilenceError as exc:
        raise UsageError(str(exc)) from exc
    connection = await connect(args.nats_url)
    try:
        js = connection.jetstream()
        kv = await js.key_value(topology.NOTIFY_STATE_KV)
        await kv.put(f"{SILENCE_PREFIX}{silence.silence_id}", msgspec.json.encode(silence))
        await _record_change(js, "silence.add", clinic.id, f"{silence.silence_id} until {silence.ends_at.isoformat()}")
    finally:
        await connection.drain()
    out(f"silence {silence.silence_id} for {clinic.id} until {silence.ends_at.isoformat(timespec='minutes')}")
    return 0


async def page_ack(args: argparse.Namespace) -> int:
    """``hubctl page ack PAGE_ID --member M --clinic X``: stops the escalation."""
    clinic_id = require_clinic(args)
    page_id = await _page_id(args.nats_url, args.page_id, clinic_id)
    client = await ClinicClient.connect(args.nats_url, clinic_id)
    try:
        answer = await client.send_and_confirm(
            PageAck(
                message_id=new_id(),
                occurred_at=utc_now(),
                sender_clinic=clinic_id,
                actor=args.member,
                correlation_id=new_id(),
                page_id=page_id,
                member=args.member,
            )
        )
    finally:
        await client.close()
    if isinstance(answer.message, Rejection):
        msg = f"page ack refused: {answer.message.code}: {answer.message.reason}"
        raise UsageError(msg)
    assert isinstance(answer.message, PageAcknowledged)  # noqa: S101 - the only other answer the hub gives
    out(f"page {page_id} acknowledged by {args.member}; escalation stopped")
    return 0


async def _page_id(nats_url: str, text: str, clinic_id: str) -> uuid.UUID:
    """A full page id, or the one open page of ``clinic_id`` whose id starts with ``text`` (as the hub prints it).

    A short id is looked up in the pages bucket with the operator's key, which the machine
    running the hub holds; a clinic elsewhere uses the full id from its page.
    """
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    wanted = text.strip().lower()
    pages = [p for p in await _pages(nats_url) if p.intent.clinic == clinic_id and str(p.page_id).startswith(wanted)]
    if len(pages) == 1:
        return pages[0].page_id
    if not pages or not wanted:
        msg = f"no page {text!r} for {clinic_id}; see 'hubctl pages --all'"
        raise UsageError(msg)
    msg = f"page id {text!r} is ambiguous for {clinic_id}; it could be: {', '.join(str(p.page_id) for p in pages)}"
    raise UsageError(msg)


async def _pages(nats_url: str) -> list[Page]:
    connection = await connect(nats_url)
    try:
        return await all_pages(connection)
    finally:
        await connection.drain()


async def all_pages(connection: Client) -> list[Page]:
    """Every page in the pages bucket, read with the operator's connection."""
    kv = await connection.jetstream().key_value(topology.PAGES_KV)
    try:
        keys = await kv.keys()
    except NoKeysError:
        keys = []
    return [msgspec.json.decode((await kv.get(key)).value or b"{}", type=Page) for key in keys]


async def pages_list(args: argparse.Namespace) -> int:
    """``hubctl pages [--all] [--json]``: pages, newest first."""
    pages = await _pages(args.nats_url)
    shown = sorted((p for p in pages if args.all or p.status == "open"), key=lambda p: p.opened_at, reverse=True)
    for page in shown:
        if args.json:
            out(msgspec.json.encode(page).decode())
            continue
        acked = f" by {page.acked_by} {page.acked_at:%H:%M}" if page.acked_at else ""
        out(
            f"{page.page_id}  {page.status:<12}{acked} {page_severity(page.intent.severity):<27} "
            f"{page.intent.clinic:<20} "
            f"level {page.level} cycle {page.cycle}  {page.intent.summary[:80]}"
        )
    if not shown and not args.json:
        out("no open pages" if not args.all else "no pages")
    return 0
