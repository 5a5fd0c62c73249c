"""``hubctl roster show`` and ``hubctl roster set``: a clinic's members, channels, rotation, hours and intake.

``roster set`` changes only what its file names: a member listed without ``channels`` keeps
the channels the registry holds, a file without ``oncall`` keeps the rotation, and so on
(``"oncall": null`` removes it). Members the file does not list are removed, since listing
members is how a roster says who works there; every change is printed as a diff, and
``--dry-run`` prints it without storing. ``roster show --json`` prints a file that ``roster set``
takes back unchanged, so the usual edit is show, change, set.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from referral_hub.cli.commands import UsageError, out, require_clinic
from referral_hub.cli.paging_commands import clinic_record, refuse_roster, store_clinic_record
from referral_hub.contracts.base import MemberId, ShortText
from referral_hub.contracts.registry import ChannelKind, Clinic, ContactChannel, Member, Role, Rotation, WorkingHours
from referral_hub.notifications import oncall


class MemberEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A member as a roster file gives it; a field left out keeps the registry's value."""

    id: MemberId
    name: ShortText | msgspec.UnsetType = msgspec.UNSET
    role: Role | msgspec.UnsetType = msgspec.UNSET
    channels: tuple[ContactChannel, ...] | msgspec.UnsetType = msgspec.UNSET


class RosterFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The part of a clinic's registry record it maintains itself; a field left out is kept."""

    members: tuple[MemberEntry, ...] | msgspec.UnsetType = msgspec.UNSET
    oncall: Rotation | msgspec.UnsetType | None = msgspec.UNSET
    working_hours: WorkingHours | msgspec.UnsetType = msgspec.UNSET
    intake_channels: tuple[ContactChannel, ...] | msgspec.UnsetType = msgspec.UNSET
    timezone: ShortText | msgspec.UnsetType = msgspec.UNSET


def _kept(value: object, current: object) -> object:
    return current if value is msgspec.UNSET else value


def _member(entry: MemberEntry, current: Member | None) -> Member:
    if current is None:
        if entry.name is msgspec.UNSET or entry.role is msgspec.UNSET:
            msg = f"new member {entry.id!r} needs a name and a role"
            raise UsageError(msg)
        return Member(id=entry.id, name=entry.name, role=entry.role, channels=_kept(entry.channels, ()))  # type: ignore[arg-type]
    return msgspec.structs.replace(
        current,
        name=_kept(entry.name, current.name),
        role=_kept(entry.role, current.role),
        channels=_kept(entry.channels, current.channels),
    )


def merged(clinic: Clinic, roster: RosterFile, now: datetime) -> Clinic:
    """``clinic`` with what ``roster`` names changed and everything else kept; lapsed overrides dropped."""
    members = clinic.members
    if roster.members is not msgspec.UNSET:
        ids = [entry.id for entry in roster.members]
        if len(set(ids)) != len(ids):
            msg = "the roster file lists a member twice"
            raise UsageError(msg)
        current = {m.id: m for m in clinic.members}
        members = tuple(_member(entry, current.get(entry.id)) for entry in roster.members)
    return msgspec.structs.replace(
        clinic,
        members=members,
        oncall=_kept(roster.oncall, clinic.oncall),
        working_hours=_kept(roster.working_hours, clinic.working_hours),
        intake_channels=_kept(roster.intake_channels, clinic.intake_channels),
        timezone=_kept(roster.timezone, clinic.timezone) or clinic.timezone,
        oncall_overrides=tuple(o for o in clinic.oncall_overrides if o.ends_at > now),
    )


def _channels(channels: tuple[ContactChannel, ...]) -> str:
    return ", ".join(f"{c.kind}:{c.address}" for c in channels) or "no channel"


def _rotation(rotation: Rotation | None) -> str:
    if rotation is None:
        return "none"
    return (
        f"{', '.join(rotation.members)} from {rotation.starts_on}, "
        f"{rotation.shift_days}-day shifts handing off at {rotation.handoff}"
    )


def _hours(hours: WorkingHours) -> str:
    days = "".join("MTWTFSS"[day] if day in hours.weekdays else "-" for day in range(7))
    return f"{hours.start}-{hours.end} {days}"


def changes(old: Clinic, new: Clinic) -> list[str]:
    """What ``roster set`` changes, one line each: ``+`` added, ``-`` removed, ``~`` changed."""
    lines: list[str] = []
    before, after = {m.id: m for m in old.members}, {m.id: m for m in new.members}
    lines.extend(
        f"- member {mid} ({before[mid].role}; {_channels(before[mid].channels)})"
        for mid in before.keys() - after.keys()
    )
    for mid, member in after.items():
        was = before.get(mid)
        if was is None:
            lines.append(f"+ member {mid} ({member.role}; {_channels(member.channels)})")
        elif was != member:
            fields = [
                f"{name} {getattr(was, name)!s} -> {getattr(member, name)!s}"
                for name in ("name", "role")
                if getattr(was, name) != getattr(member, name)
            ]
            if was.channels != member.channels:
                fields.append(f"channels {_channels(was.channels)} -> {_channels(member.channels)}")
            lines.append(f"~ member {mid}: {'; '.join(fields)}")
    for what, shown_old, shown_new in (
        ("rotation", _rotation(old.oncall), _rotation(new.oncall)),
        ("working hours", _hours(old.working_hours), _hours(new.working_hours)),
        ("intake", _channels(old.intake_channels), _channels(new.intake_channels)),
        ("time zone", old.timezone, new.timezone),
    ):
        if shown_old != shown_new:
            lines.append(f"~ {what}: {shown_old} -> {shown_new}")
    return sorted(lines, key=lambda line: (line[2:].split(" ")[0] != "member", line[2:]))


def roster_lines(clinic: Clinic, now: datetime) -> list[str]:
    """``roster show``: every member with role and channels, the rotation, overrides, hours, intake, and reach."""
    lines = [f"roster of {clinic.id} ({clinic.name}; {clinic.timezone})", "members"]
    lines.extend(f"  {m.id:<20} {m.role:<14} {_channels(m.channels)}" for m in clinic.members)
    lines.append(f"rotation         {_rotation(clinic.oncall)}")
    lines.extend(
        f"override         {o.member} {o.starts_at.isoformat(timespec='minutes')}.."
        f"{o.ends_at.isoformat(timespec='minutes')}{' ' + o.reason if o.reason else ''}"
        for o in clinic.oncall_overrides
        if o.ends_at > now
    )
    lines.append(f"working hours    {_hours(clinic.working_hours)}")
    lines.append(f"intake           {_channels(clinic.intake_channels)}")
    lines.extend(reach_warnings(clinic, now))
    return lines


def reach_warnings(clinic: Clinic, now: datetime) -> list[str]:
    """A warning for each on-call member no channel reaches."""
    return [
        f"WARNING: {member} can be on call but has no contact channel; a page to them reaches nobody"
        for member in oncall.unreachable_on_call(clinic, now, frozenset(ChannelKind))
    ]


def as_file(clinic: Clinic) -> RosterFile:
    """The clinic's roster as a file ``roster set`` takes back unchanged."""
    return RosterFile(
        members=tuple(MemberEntry(id=m.id, name=m.name, role=m.role, channels=m.channels) for m in clinic.members),
        oncall=clinic.oncall,
        working_hours=clinic.working_hours,
        intake_channels=clinic.intake_channels,
        timezone=clinic.timezone,
    )


async def roster_show(args: argparse.Namespace) -> int:
    """``hubctl roster show --clinic X [--json]``."""
    clinic = await clinic_record(args.nats_url, require_clinic(args))
    if args.json:
        out(msgspec.json.format(msgspec.json.encode(as_file(clinic))).decode())
        return 0
    for line in roster_lines(clinic, datetime.now(UTC)):
        out(line)
    return 0


def _read(path: Path) -> RosterFile:
    try:
        return msgspec.json.decode(path.read_bytes(), type=RosterFile)
    except (OSError, msgspec.DecodeError) as exc:
        msg = f"cannot use roster file {path}: {exc}"
        raise UsageError(msg) from exc


async def roster_set(args: argparse.Namespace) -> int:
    """``hubctl roster set --clinic X --file roster.json [--dry-run]``: change what the file names, show the diff."""
    clinic = await clinic_record(args.nats_url, require_clinic(args))
    now = datetime.now(UTC)
    updated = merged(clinic, _read(args.file), now)
    refuse_roster(updated)
    diff = changes(clinic, updated)
    for line in diff or ["no change"]:
        out(line)
    if not args.dry_run and diff:
        await store_clinic_record(args.nats_url, updated, "roster.set", f"{len(diff)} changes")
    verb = "would change" if args.dry_run else "changed"
    rotation = "set" if updated.oncall else "none"
    out(f"roster of {clinic.id}: {len(updated.members)} members, rotation {rotation}; {verb} {len(diff)}")
    for warning in reach_warnings(updated, now):
        out(warning)
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: object) -> None:
    """``hubctl roster show`` and ``hubctl roster set``."""
    roster = sub.add_parser("roster", help="a clinic's members, channels, rotation, hours and intake")
    roster_sub = roster.add_subparsers(dest="roster_command", required=True, metavar="ROSTER_COMMAND")
    show = roster_sub.add_parser("show", help="members with their channels, rotation, overrides, hours, intake")
    common(show)  # type: ignore[operator]
    show.add_argument("--json", action="store_true", help="as a roster file 'roster set --file' takes back")
    show.set_defaults(run=roster_show)
    set_ = roster_sub.add_parser("set", help="change what a roster file names; keep the rest; print the diff")
    common(set_)  # type: ignore[operator]
    set_.add_argument("--file", type=Path, required=True, help="roster JSON: members, oncall, working_hours, ...")
    set_.add_argument("--dry-run", action="store_true", help="print the diff, store nothing")
    set_.set_defaults(run=roster_set)
