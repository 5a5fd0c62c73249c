"""Who is on call, who escalation reaches, and whether a clinic is in working hours: pure functions.

Rotations hand off at a wall-clock time in the clinic's own time zone, so a daylight-saving
change moves the hand-off with the clinic's clock rather than by an hour. An override
covering the moment wins over the rotation; the latest-starting one wins over others.

A roster that cannot be followed (a time zone the hub does not know, hours that never begin,
a rotation naming strangers: :func:`~referral_hub.contracts.registry.roster_problems`) is
refused where it is set, but one may be stored anyway. :func:`page_targets` and
:func:`routine_deferral` then work around it rather than fail: an absolute page goes to every
member on every channel, another page to the clinical leads, a routine notification at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import msgspec

from referral_hub.contracts.registry import ChannelKind, Clinic, Member, Role, roster_problems


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def local_time(clinic: Clinic, at: datetime) -> datetime:
    """``at`` on the clinic's wall clock."""
    return at.astimezone(ZoneInfo(clinic.timezone))


def on_call(clinic: Clinic, at: datetime) -> str | None:
    """The member on call at ``at``: an override, else the rotation, else the first clinical lead."""
    covering = [o for o in clinic.oncall_overrides if o.starts_at <= at < o.ends_at]
    if covering:
        return max(covering, key=lambda o: o.starts_at).member
    rotation = clinic.oncall
    if rotation is not None and rotation.members:
        local = local_time(clinic, at)
        shift_date = local.date() if local.time() >= _clock(rotation.handoff) else local.date() - timedelta(days=1)
        shifts = max((shift_date - rotation.starts_on).days, 0) // rotation.shift_days
        return rotation.members[shifts % len(rotation.members)]
    leads = [m.id for m in clinic.members if m.role is Role.CLINICAL_LEAD]
    return leads[0] if leads else (clinic.members[0].id if clinic.members else None)


def escalation_targets(clinic: Clinic, level: int, at: datetime) -> list[Member]:
    """Level 0 the on-call member, level 1 the clinical leads, level 2 and on every member."""
    by_id = {m.id: m for m in clinic.members}
    if level == 0:
        member_id = on_call(clinic, at)
        return [by_id[member_id]] if member_id in by_id else []
    if level == 1:
        leads = [m for m in clinic.members if m.role is Role.CLINICAL_LEAD]
        return leads or list(clinic.members)
    return list(clinic.members)


def in_working_hours(clinic: Clinic, at: datetime) -> bool:
    """Whether routine notifications go out now rather than waiting for the digest."""
    local = local_time(clinic, at)
    hours = clinic.working_hours
    return local.weekday() in hours.weekdays and _clock(hours.start) <= local.time() < _clock(hours.end)


def next_working_start(clinic: Clinic, at: datetime) -> datetime:
    """The next moment working hours begin (``at`` itself if they are under way)."""
    if in_working_hours(clinic, at):
        return at
    local = local_time(clinic, at)
    start = _clock(clinic.working_hours.start)
    for days in range(8):
        day = local.date() + timedelta(days=days)
        candidate = datetime.combine(day, start, tzinfo=local.tzinfo)
        if candidate > local and day.weekday() in clinic.working_hours.weekdays:
            return candidate.astimezone(at.tzinfo)
    return at


@dataclass(frozen=True)
class Targets:
    """Whom a page level reaches, and how."""

    members: list[Member]
    every_channel: bool = False
    """Every one of each member's channels at once, rather than the first that works."""
    problems: tuple[str, ...] = ()
    """Why the roster could not be followed; empty when it was."""


def page_targets(clinic: Clinic, level: int, at: datetime, *, absolute: bool) -> Targets:
    """Whom escalation level ``level`` pages, even when the clinic's roster cannot be followed.

    With a broken roster nobody can say who is on call: an absolute page goes to every member
    on every channel (the safety floor), any other page to the clinical leads (level 1's
    targets, which need no clock).
    """
    problems = tuple(roster_problems(clinic))
    if not problems:
        try:
            return Targets(escalation_targets(clinic, level, at))
        except Exception as exc:  # noqa: BLE001 - the floor must hold even for a problem the checks missed
            problems = (f"on-call could not be worked out: {exc!r}",)
    if absolute:
        return Targets(list(clinic.members), every_channel=True, problems=problems)
    return Targets(escalation_targets(clinic, max(level, 1), at), problems=problems)


def routine_deferral(clinic: Clinic, at: datetime) -> tuple[datetime | None, tuple[str, ...]]:
    """When a routine notification goes out (``None``: now), and why the roster was not followed, if it was not.

    Outside working hours it waits for the next start; with hours or a time zone that cannot
    be read it goes out at once, since late is worse than early.
    """
    problems = tuple(roster_problems(clinic))
    if not problems:
        try:
            return (None if in_working_hours(clinic, at) else next_working_start(clinic, at)), ()
        except Exception as exc:  # noqa: BLE001 - the floor must hold even for a problem the checks missed
            problems = (f"working hours could not be worked out: {exc!r}",)
    return None, problems


def unreachable_on_call(clinic: Clinic, at: datetime, working: frozenset[ChannelKind]) -> list[str]:
    """Members who may be paged as on call from ``at`` on but have no channel of a ``working`` kind.

    That is every member of the rotation, every override not yet over, and, without a
    rotation, the member paged in its place. A page to one of them reaches nobody, so the
    hub says so before a page does (``hubctl status``, ``hubctl roster set``, a metric).
    """
    candidates = {o.member for o in clinic.oncall_overrides if o.ends_at > at}
    if clinic.oncall is not None:
        candidates |= set(clinic.oncall.members)
    else:
        fallback = on_call(msgspec.structs.replace(clinic, oncall_overrides=()), at)
        candidates |= {fallback} if fallback else set()
    by_id = {m.id: m for m in clinic.members}
    return sorted(
        member_id
        for member_id in candidates
        if member_id in by_id and not any(channel.kind in working for channel in by_id[member_id].channels)
    )
