"""Who is on call, who escalation reaches, and whether a clinic is in working hours: pure functions.

Rotations hand off at a wall-clock time in the clinic's own time zone, so a daylight-saving
change moves the hand-off with the clinic's clock rather than by an hour. An override
covering the moment wins over the rotation; the latest-starting one wins over others.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from referral_hub.contracts.registry import Clinic, Member, Role


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
