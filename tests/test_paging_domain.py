"""The pure notifications core: on-call, routing, dedup, silences, inhibition, escalation, quiet hours."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from referral_hub.client import new_id
from referral_hub.contracts.alerts import AlertRaised, Severity, TriggerKind
from referral_hub.contracts.base import Modality
from referral_hub.contracts.paging import PageAck
from referral_hub.contracts.registry import (
    Clinic,
    Member,
    OnCallOverride,
    Registry,
    Role,
    RosterError,
    Rotation,
    WorkingHours,
    known_timezones,
    roster_problems,
    timezone_problem,
)
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.notifications import oncall, page_rules
from referral_hub.notifications.domain import NotifyIntent, route
from referral_hub.notifications.page_rules import (
    EscalationPolicy,
    OpenAbsolute,
    PageIntent,
    PageStatus,
    PatientRecord,
    Silence,
    SilenceError,
)
from referral_hub.runtime.jetstream.registry_cache import RegistryFileError, load_registry_file

NOON = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)  # 12:00 in New York
CLINIC = Clinic(
    id="harbor-pt",
    name="Harbor PT",
    modalities=(Modality.PHYSICAL_THERAPY,),
    timezone="America/New_York",
    members=(
        Member(id="ana.ruiz", name="Ana", role=Role.CLINICAL_LEAD),
        Member(id="ben.okafor", name="Ben", role=Role.THERAPIST),
        Member(id="cy.diaz", name="Cy", role=Role.THERAPIST),
    ),
    oncall=Rotation(members=("ben.okafor", "cy.diaz"), starts_on=date(2026, 11, 24), handoff="08:00", shift_days=1),
    working_hours=WorkingHours(start="08:00", end="18:00", weekdays=(0, 1, 2, 3, 4)),
)
POLICY = EscalationPolicy(delays=(timedelta(minutes=5), timedelta(minutes=5), timedelta(minutes=10)), repeats=1)


def new_york(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC) + timedelta(hours=5)


def test_the_rotation_hands_off_at_the_clinics_local_time() -> None:
    assert oncall.on_call(CLINIC, new_york(25, 7, 59)) == "ben.okafor"
    assert oncall.on_call(CLINIC, new_york(25, 8, 0)) == "cy.diaz"


def test_an_override_covers_the_rotation_while_it_lasts() -> None:
    covered = CLINIC.__class__(
        **{
            **{f: getattr(CLINIC, f) for f in CLINIC.__struct_fields__},
            "oncall_overrides": (
                OnCallOverride(member="ana.ruiz", starts_at=new_york(25, 9), ends_at=new_york(25, 13), reason="swap"),
            ),
        }
    )

    assert oncall.on_call(covered, new_york(25, 10)) == "ana.ruiz"
    assert oncall.on_call(covered, new_york(25, 13)) == "cy.diaz"


def test_escalation_reaches_on_call_then_leads_then_everyone() -> None:
    assert [m.id for m in oncall.escalation_targets(CLINIC, 0, NOON)] == ["cy.diaz"]
    assert [m.id for m in oncall.escalation_targets(CLINIC, 1, NOON)] == ["ana.ruiz"]
    assert [m.id for m in oncall.escalation_targets(CLINIC, 2, NOON)] == ["ana.ruiz", "ben.okafor", "cy.diaz"]


def test_working_hours_follow_the_clinics_clock_and_week() -> None:
    saturday = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)

    assert oncall.in_working_hours(CLINIC, NOON)
    assert not oncall.in_working_hours(CLINIC, new_york(25, 19))
    assert not oncall.in_working_hours(CLINIC, saturday)
    assert oncall.next_working_start(CLINIC, saturday) == new_york(30, 8)


def intent(severity: Severity = Severity.RELATIVE, **overrides: object) -> PageIntent:
    fields: dict[str, object] = {
        "source": "alert",
        "source_id": new_id(),
        "clinic": "harbor-pt",
        "patient_ref": "pt-0001",
        "severity": severity,
        "modalities": (Modality.MASSAGE,),
        "about_message_id": new_id(),
        "summary": "apixaban",
        "notify_clinics": ("harbor-pt", "lotus-acu"),
        "source_at": NOON,
    }
    fields.update(overrides)
    return PageIntent(**fields)  # type: ignore[arg-type]


def test_a_re_raised_alert_updates_the_open_page_without_paging_again() -> None:
    first = intent()
    opened = page_rules.open_page(None, first, NOON, POLICY, None)

    again = page_rules.open_page(opened.page, first, NOON + timedelta(minutes=1), POLICY, None)

    assert (opened.outcome, opened.deliver) == ("paged", True)
    assert (again.outcome, again.deliver) == ("deduplicated", False)
    assert again.page.page_id == opened.page.page_id


def test_raising_an_open_page_to_absolute_pages_again() -> None:
    first = intent(Severity.RELATIVE)
    opened = page_rules.open_page(None, first, NOON, POLICY, None)
    upgraded = PageIntent(**{**{f: getattr(first, f) for f in first.__struct_fields__}, "severity": Severity.ABSOLUTE})

    again = page_rules.open_page(opened.page, upgraded, NOON, POLICY, None)

    assert (again.outcome, again.deliver) == ("repaged", True)


def test_a_silence_keeps_a_relative_page_from_paging_but_records_it() -> None:
    opened = page_rules.open_page(None, intent(), NOON, POLICY, ("silenced", new_id()))

    assert (opened.outcome, opened.deliver, opened.page.status) == ("silenced", False, PageStatus.SUPPRESSED)


@pytest.mark.parametrize("suppression", [("silenced", new_id()), ("inhibited", None)])
def test_nothing_lowers_the_safety_floor_of_an_absolute_page(suppression: tuple[str, object]) -> None:
    opened = page_rules.open_page(None, intent(Severity.ABSOLUTE), NOON, POLICY, suppression)  # type: ignore[arg-type]

    assert (opened.outcome, opened.deliver, opened.page.status) == ("paged", True, PageStatus.OPEN)


def test_a_silence_never_matches_an_absolute_page() -> None:
    silence = Silence(
        silence_id=new_id(),
        clinic="harbor-pt",
        ends_at=NOON + timedelta(hours=1),
        created_by="ana.ruiz",
        reason="maintenance",
        severities=(Severity.RELATIVE, Severity.ABSOLUTE),
    )

    assert not silence.matches(intent(Severity.ABSOLUTE), NOON)
    assert silence.matches(intent(Severity.RELATIVE), NOON)
    with pytest.raises(SilenceError, match="absolute"):
        page_rules.check_silence(silence, NOON)


def test_a_silence_must_expire() -> None:
    forever = Silence(
        silence_id=new_id(), clinic="harbor-pt", ends_at=NOON + timedelta(days=365), created_by="x", reason="r"
    )

    with pytest.raises(SilenceError, match="at most"):
        page_rules.check_silence(forever, NOON)


def test_an_open_absolute_alert_inhibits_relative_pages_for_the_same_modality_only() -> None:
    record = PatientRecord(absolute=(OpenAbsolute(alert_id=new_id(), modalities=(Modality.MASSAGE,)),))

    assert record.inhibits(intent(Severity.RELATIVE))
    assert not record.inhibits(intent(Severity.RELATIVE, modalities=(Modality.ACUPUNCTURE,)))
    assert not record.inhibits(intent(Severity.ABSOLUTE))


def test_an_unacknowledged_page_escalates_through_every_level_then_repeats_then_stops() -> None:
    page = page_rules.open_page(None, intent(), NOON, POLICY, None).page
    steps = []
    now = NOON
    while page.next_at is not None:
        now = page.next_at
        escalated = page_rules.escalate(page, now, POLICY)
        assert escalated is not None
        page = escalated
        steps.append((page.cycle, page.level))

    assert steps == [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 2)]
    assert page_rules.escalate(page, now + timedelta(hours=1), POLICY) is None


def test_nothing_escalates_before_its_delay() -> None:
    page = page_rules.open_page(None, intent(), NOON, POLICY, None).page

    assert page_rules.escalate(page, NOON + timedelta(minutes=4), POLICY) is None


def ack(clinic: str = "harbor-pt", member: str = "ben.okafor") -> PageAck:
    return PageAck(
        message_id=new_id(),
        occurred_at=NOON,
        sender_clinic=clinic,
        actor=member,
        correlation_id=new_id(),
        page_id=new_id(),
        member=member,
    )


def test_an_acknowledgement_stops_the_escalation() -> None:
    page = page_rules.open_page(None, intent(), NOON, POLICY, None).page

    acked = page_rules.acknowledge(page, ack(), CLINIC, NOON + timedelta(minutes=2))

    assert not isinstance(acked, page_rules.AckRefused)
    assert (acked.status, acked.acked_by, acked.next_at) == (PageStatus.ACKNOWLEDGED, "ben.okafor", None)
    assert page_rules.escalate(acked, NOON + timedelta(hours=1), POLICY) is None


def test_only_the_paged_clinics_members_acknowledge() -> None:
    page = page_rules.open_page(None, intent(), NOON, POLICY, None).page

    theirs = ack("lotus-acu", "raj.patel")
    other_clinic = page_rules.acknowledge(page, theirs, CLINIC, NOON)
    stranger = page_rules.acknowledge(page, ack(member="raj.patel"), CLINIC, NOON)
    missing = page_rules.acknowledge(None, theirs, CLINIC, NOON)

    assert isinstance(other_clinic, page_rules.AckRefused)
    assert isinstance(missing, page_rules.AckRefused)
    assert (other_clinic.code, other_clinic.reason) == (missing.code, missing.reason)
    assert CLINIC.id not in other_clinic.reason
    assert isinstance(stranger, page_rules.AckRefused)
    assert stranger.code == RejectionCode.UNKNOWN_MEMBER


def alert_raised(severity: Severity) -> AlertRaised:
    return AlertRaised(
        message_id=new_id(),
        occurred_at=NOON,
        sender_clinic="lotus-acu",
        actor="raj.patel",
        correlation_id=new_id(),
        alert_id=new_id(),
        patient_ref="pt-0001",
        raised_by="lotus-acu",
        trigger_kind=TriggerKind.MEDICATION,
        trigger="apixaban",
        modalities=(Modality.MASSAGE,),
        severity=severity,
        recipients=("harbor-pt", "lotus-acu", "kneadwell-massage"),
    )


def test_a_relative_alert_pages_every_other_care_team_clinic() -> None:
    intents = route(alert_raised(Severity.RELATIVE))

    assert sorted(i.clinic for i in intents if isinstance(i, PageIntent)) == ["harbor-pt", "kneadwell-massage"]


def test_a_caution_alert_only_notifies_intake() -> None:
    intents = route(alert_raised(Severity.CAUTION))

    assert not [i for i in intents if isinstance(i, PageIntent)]
    assert sorted(i.clinic for i in intents if isinstance(i, NotifyIntent)) == ["harbor-pt", "kneadwell-massage"]


# --- Rosters the hub can page with, and paging around one it cannot -----------------------------


def with_(clinic: Clinic = CLINIC, **changes: object) -> Clinic:
    return msgspec.structs.replace(clinic, **changes)


def override(member: str = "ana.ruiz", starts: datetime = NOON, ends: datetime = NOON + timedelta(hours=4)):
    return OnCallOverride(member=member, starts_at=starts, ends_at=ends)


BROKEN = {
    "unknown zone": (with_(timezone="America/New_Yrok"), "unknown time zone 'America/New_Yrok'"),
    "a path as a zone": (with_(timezone="../../etc/passwd"), "unknown time zone '../../etc/passwd'"),
    "a zone only some hosts have": (with_(timezone="localtime"), "unknown time zone 'localtime'"),
    "hand-off past midnight": (
        with_(oncall=msgspec.structs.replace(CLINIC.oncall, handoff="24:00")),
        "hand-off time '24:00' is not a 24-hour HH:MM time",
    ),
    "no-day shifts": (with_(oncall=msgspec.structs.replace(CLINIC.oncall, shift_days=0)), "not 0"),
    "a stranger on the rotation": (
        with_(oncall=msgspec.structs.replace(CLINIC.oncall, members=("ben.okafor", "zed.x"))),
        "the rotation names people who are not members: zed.x",
    ),
    "hours ending before they begin": (
        with_(working_hours=WorkingHours(start="18:00", end="08:00")),
        "working hours must begin before they end on the same day, not 18:00 to 08:00",
    ),
    "hours that are no time": (with_(working_hours=WorkingHours(end="8pm")), "working hours end '8pm'"),
    "no working day": (with_(working_hours=WorkingHours(weekdays=())), "working hours name no weekday"),
    "an eighth weekday": (with_(working_hours=WorkingHours(weekdays=(0, 7))), "not [0, 7]"),
    "an override ending before it starts": (
        with_(oncall_overrides=(override(ends=NOON - timedelta(hours=1)),)),
        "the on-call override for 'ana.ruiz' ends before it starts",
    ),
    "an override without a zone": (
        with_(oncall_overrides=(override(starts=NOON.replace(tzinfo=None)),)),
        "has a time without a time zone",
    ),
    "a stranger covering": (with_(oncall_overrides=(override("zed.x"),)), "names 'zed.x', who is not a member"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_roster_the_hub_could_not_page_with_is_named_for_what_is_wrong(case: str) -> None:
    clinic, expected = BROKEN[case]

    problems = roster_problems(clinic)

    assert roster_problems(CLINIC) == []
    assert len(problems) == 1
    assert expected in problems[0]


def test_every_zone_the_hub_accepts_loads_and_comes_from_the_pinned_tzdata() -> None:
    zones = known_timezones()

    assert {"UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata"} <= zones
    assert "localtime" not in zones
    assert [zone for zone in sorted(zones) if timezone_problem(zone) is not None] == []


def test_a_registry_file_with_a_broken_roster_is_refused_as_it_is_read(tmp_path: Path) -> None:
    registry = {
        "clinics": [msgspec.to_builtins(CLINIC), msgspec.to_builtins(with_(id="lotus-acu", timezone="Mars/Olympus"))]
    }
    path = tmp_path / "registry.json"
    path.write_bytes(msgspec.json.encode(registry))

    with pytest.raises(RosterError, match=r"clinic 'lotus-acu': unknown time zone 'Mars/Olympus'"):
        msgspec.json.decode(path.read_bytes(), type=Registry)
    with pytest.raises(RegistryFileError, match="is invalid: clinic 'lotus-acu': unknown time zone"):
        load_registry_file(path)
    assert issubclass(RosterError, msgspec.ValidationError)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_roster_pages_an_absolute_alert_to_everyone_on_every_channel(case: str) -> None:
    clinic, _ = BROKEN[case]

    for level in range(3):
        absolute = oncall.page_targets(clinic, level, NOON, absolute=True)
        relative = oncall.page_targets(clinic, level, NOON, absolute=False)
        assert ([m.id for m in absolute.members], absolute.every_channel) == (
            ["ana.ruiz", "ben.okafor", "cy.diaz"],
            True,
        )
        assert absolute.problems
        assert [m.id for m in relative.members] == (
            ["ana.ruiz"] if level < 2 else ["ana.ruiz", "ben.okafor", "cy.diaz"]
        )
        assert not relative.every_channel
    assert oncall.routine_deferral(clinic, datetime(2026, 11, 28, 17, 0, tzinfo=UTC))[0] is None


def test_a_sound_roster_is_paged_as_it_says() -> None:
    saturday = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)

    assert oncall.page_targets(CLINIC, 0, NOON, absolute=True) == oncall.Targets(
        oncall.escalation_targets(CLINIC, 0, NOON)
    )
    assert oncall.routine_deferral(CLINIC, saturday) == (new_york(30, 8), ())
    assert oncall.routine_deferral(CLINIC, NOON) == (None, ())


def test_a_silence_stored_without_a_time_zone_is_read_as_utc_not_a_crash() -> None:
    naive = Silence(
        silence_id=new_id(),
        clinic="harbor-pt",
        starts_at=(NOON - timedelta(hours=1)).replace(tzinfo=None),
        ends_at=(NOON + timedelta(hours=1)).replace(tzinfo=None),
        created_by="x",
        reason="r",
    )

    assert naive.matches(intent(Severity.RELATIVE), NOON)
    assert not naive.matches(intent(Severity.RELATIVE), NOON + timedelta(hours=2))
    with pytest.raises(SilenceError, match="must name their time zone"):
        page_rules.check_silence(naive, NOON)


def test_a_silence_must_start_before_it_ends() -> None:
    backwards = Silence(
        silence_id=new_id(),
        clinic="harbor-pt",
        starts_at=NOON + timedelta(hours=2),
        ends_at=NOON + timedelta(hours=1),
        created_by="x",
        reason="r",
    )

    with pytest.raises(SilenceError, match="must start before it ends"):
        page_rules.check_silence(backwards, NOON)
