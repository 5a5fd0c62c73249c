"""Contraindication alerts on a patient's care team, as pure functions.

A clinic on the team raises an alert; every clinic on the team gets it at once, and a
clinic that joins later gets it when it joins, for as long as the alert is in force.
Members acknowledge, and only the raising clinic resolves. Every outcome is derived from
the stored team, so a redelivered command re-derives the same messages under the same ids.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from referral_hub.contracts.alerts import (
    SEVERITY_RANK,
    AlertAck,
    AlertAcknowledged,
    AlertRaise,
    AlertRaised,
    AlertResolve,
    AlertResolved,
    Severity,
)
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.referrals.careteam import (
    RESOLVED_ALERTS_KEPT,
    AckRecord,
    AlertRecord,
    CareTeam,
    TeamChanged,
    remember,
)
from referral_hub.runtime.messaging.outgoing import Announcement, echo
from referral_hub.runtime.messaging.refusals import Refusal


def _no_team(team: CareTeam | None) -> Refusal | None:
    if team is None or not team.active_clinics():
        return Refusal(RejectionCode.NO_CARE_TEAM, "this patient has no care team, so there is nobody to alert")
    return None


def _not_member(team: CareTeam, clinic: str) -> Refusal | None:
    if team.member(clinic) is None:
        return Refusal(RejectionCode.NOT_ON_CARE_TEAM, f"{clinic!r} is not on this patient's care team")
    return None


def _check_window(command: AlertRaise, at: datetime) -> Refusal | None:
    if not command.modalities:
        return Refusal(RejectionCode.INVALID_ALERT, "an alert must name at least one affected modality")
    start, end = command.valid_from, command.valid_until
    if start is not None and end is not None and end <= start:
        return Refusal(RejectionCode.INVALID_ALERT, "valid_until must be later than valid_from")
    if end is not None and end <= at:
        return Refusal(RejectionCode.INVALID_ALERT, f"valid_until {end.isoformat()} is already over")
    return None


def raise_alert(team: CareTeam | None, command: AlertRaise, at: datetime) -> TeamChanged | Refusal:
    """Record the alert and fan it out to the whole team; a re-raise updates it in place."""
    refusal = _no_team(team) or _check_window(command, at)
    if refusal is not None or team is None:
        return refusal or Refusal(RejectionCode.NO_CARE_TEAM, "no care team")
    refusal = _not_member(team, command.sender_clinic)
    if refusal is not None:
        return refusal
    existing = team.alert(command.alert_id)
    if existing is None:
        record = AlertRecord(raised=command, raised_at=at, recipients=team.active_clinics())
    elif existing.raised.sender_clinic != command.sender_clinic:
        return Refusal(
            RejectionCode.WRONG_PARTY,
            f"alert {command.alert_id} was raised by {existing.raised.sender_clinic!r}; only it may re-raise it",
        )
    elif not existing.active(at):
        return Refusal(RejectionCode.ALERT_NOT_ACTIVE, f"alert {command.alert_id} is resolved or expired")
    else:
        record = msgspec.structs.replace(existing, raised=command, recipients=team.active_clinics())
    updated = _with_alert(team, record, command.message_id, at)
    return TeamChanged(updated, [raised_announcement(record)])


def _with_alert(team: CareTeam, record: AlertRecord, message_id: UUID, at: datetime) -> CareTeam:
    others = [a for a in team.alerts if a.raised.alert_id != record.raised.alert_id]
    inactive = [a for a in others if not a.active(at)]
    kept = [a for a in others if a.active(at) or a in inactive[-RESOLVED_ALERTS_KEPT:]]
    return msgspec.structs.replace(team, alerts=(*kept, record), applied=remember(team, message_id))


def _replace_alert(team: CareTeam, record: AlertRecord, message_id: UUID) -> CareTeam:
    alerts = tuple(record if a.raised.alert_id == record.raised.alert_id else a for a in team.alerts)
    return msgspec.structs.replace(team, alerts=alerts, applied=remember(team, message_id))


def raised_event(record: AlertRecord, recipients: tuple[str, ...], role: str) -> AlertRaised:
    """A copy of the alert for ``recipients``; ``role`` keeps copies' ids distinct."""
    command = record.raised
    return AlertRaised(
        **echo(command, role),
        alert_id=command.alert_id,
        patient_ref=command.patient_ref,
        raised_by=command.sender_clinic,
        trigger_kind=command.trigger_kind,
        trigger=command.trigger,
        modalities=command.modalities,
        techniques=command.techniques,
        severity=command.severity,
        body_site=command.body_site,
        valid_from=command.valid_from,
        valid_until=command.valid_until,
        note=command.note,
        recipients=recipients,
        raised_at=record.raised_at,
    )


def raised_announcement(record: AlertRecord) -> Announcement:
    """The alert as fanned out when raised (or re-raised)."""
    return Announcement(raised_event(record, record.recipients, "alert-raised"), "alert.raised", record.recipients)


def late_joiner_announcements(team: CareTeam, referral_id: UUID) -> list[Announcement]:
    """Copies owed to the clinics that joined through ``referral_id``, derived from the stored team."""
    joined = {m.clinic for m in team.members if m.referral_id == referral_id and m.active}
    return [
        Announcement(raised_event(record, (clinic,), f"alert-late-{clinic}"), "alert.raised", (clinic,))
        for record in team.alerts
        for clinic in record.late_joiners
        if clinic in joined
    ]


def acknowledge(team: CareTeam | None, command: AlertAck, at: datetime, sender: Clinic) -> TeamChanged | Refusal:
    """A member of a care-team clinic has seen the alert; the team learns who, and when."""
    refusal = _no_team(team)
    if refusal is not None or team is None:
        return refusal or Refusal(RejectionCode.NO_CARE_TEAM, "no care team")
    refusal = _not_member(team, command.sender_clinic)
    if refusal is not None:
        return refusal
    if not sender.has_member(command.member):
        return Refusal(RejectionCode.UNKNOWN_MEMBER, f"{command.member!r} is not a member of {sender.id!r}")
    record = team.alert(command.alert_id)
    if record is None:
        return Refusal(RejectionCode.UNKNOWN_ALERT, f"no alert {command.alert_id} for this patient")
    if not record.active(at):
        return Refusal(RejectionCode.ALERT_NOT_ACTIVE, f"alert {command.alert_id} is resolved or expired")
    ack = AckRecord(message_id=command.message_id, member=command.member, clinic=command.sender_clinic, at=at)
    updated = _replace_alert(team, msgspec.structs.replace(record, acks=(*record.acks, ack)), command.message_id)
    return TeamChanged(updated, [_acknowledged_announcement(updated, command)])


def _acknowledged_announcement(team: CareTeam, command: AlertAck) -> Announcement:
    event = AlertAcknowledged(
        **echo(command, "alert-acknowledged"),
        alert_id=command.alert_id,
        patient_ref=command.patient_ref,
        member=command.member,
        member_clinic=command.sender_clinic,
    )
    return Announcement(event, "alert.acknowledged", team.active_clinics())


def resolve(team: CareTeam | None, command: AlertResolve, at: datetime) -> TeamChanged | Refusal:
    """The raising clinic withdraws its alert; the team is told.

    A clinic that neither raised the alert nor is on the team gets the same answer as for an
    alert id nobody uses: alert ids reach clinics outside the team in minimal screening flags,
    and the refusal must not confirm the alert or name its raiser.
    """
    record = team.alert(command.alert_id) if team is not None else None
    if (
        team is None
        or record is None
        or (record.raised.sender_clinic != command.sender_clinic and team.member(command.sender_clinic) is None)
    ):
        return Refusal(RejectionCode.UNKNOWN_ALERT, f"no alert {command.alert_id} for this patient")
    if record.raised.sender_clinic != command.sender_clinic:
        return Refusal(
            RejectionCode.WRONG_PARTY,
            f"alert {command.alert_id} was raised by {record.raised.sender_clinic!r}; only it may resolve it",
        )
    if record.resolved is not None:
        return Refusal(RejectionCode.ALERT_NOT_ACTIVE, f"alert {command.alert_id} is already resolved")
    resolved = msgspec.structs.replace(record, resolved=command, resolved_at=at)
    updated = _replace_alert(team, resolved, command.message_id)
    return TeamChanged(updated, [_resolved_announcement(updated, command)])


def _resolved_announcement(team: CareTeam, command: AlertResolve) -> Announcement:
    event = AlertResolved(
        **echo(command, "alert-resolved"),
        alert_id=command.alert_id,
        patient_ref=command.patient_ref,
        reason=command.reason,
    )
    return Announcement(event, "alert.resolved", team.active_clinics())


def replay(team: CareTeam, command: AlertRaise | AlertAck | AlertResolve) -> list[Announcement]:
    """The announcements of an alert command that was already applied (for a redelivery)."""
    record = team.alert(command.alert_id)
    if record is None:
        return []
    if isinstance(command, AlertRaise):
        return [raised_announcement(record)] if record.raised.message_id == command.message_id else []
    if isinstance(command, AlertAck):
        return [_acknowledged_announcement(team, command)]
    if record.resolved is not None and record.resolved.message_id == command.message_id:
        return [_resolved_announcement(team, command)]
    return []


class AckView(msgspec.Struct, frozen=True, kw_only=True):
    """Who acknowledged an alert first, per member, and when."""

    member: str
    clinic: str
    at: datetime


class AlertView(msgspec.Struct, frozen=True, kw_only=True):
    """An alert as ``hubctl alerts`` shows it."""

    alert_id: UUID
    status: str
    severity: Severity
    trigger_kind: str
    trigger: str
    modalities: tuple[str, ...]
    techniques: tuple[str, ...]
    body_site: str
    raised_by: str
    raised_at: datetime
    valid_until: datetime | None
    acknowledged_by: tuple[AckView, ...]


def _status(record: AlertRecord, at: datetime) -> str:
    if record.resolved is not None:
        return "resolved"
    return "active" if record.active(at) else "expired"


def view(team: CareTeam, at: datetime, *, include_inactive: bool = False) -> list[AlertView]:
    """The patient's alerts in force at ``at`` (or all kept ones), most severe first."""
    shown = [r for r in team.alerts if include_inactive or r.active(at)]
    shown.sort(key=lambda r: (-SEVERITY_RANK[r.raised.severity], r.raised_at))
    views = []
    for record in shown:
        first: dict[str, AckRecord] = {}
        for ack in record.acks:
            first.setdefault(f"{ack.clinic}/{ack.member}", ack)
        raised = record.raised
        views.append(
            AlertView(
                alert_id=raised.alert_id,
                status=_status(record, at),
                severity=raised.severity,
                trigger_kind=raised.trigger_kind,
                trigger=raised.trigger,
                modalities=tuple(raised.modalities),
                techniques=raised.techniques,
                body_site=raised.body_site,
                raised_by=raised.sender_clinic,
                raised_at=record.raised_at,
                valid_until=raised.valid_until,
                acknowledged_by=tuple(AckView(member=a.member, clinic=a.clinic, at=a.at) for a in first.values()),
            )
        )
    return views
