"""The referral lifecycle, care teams, plans and timers against a real nats-server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referral_hub.client import InboxItem, new_id, utc_now
from referral_hub.contracts.base import Modality
from referral_hub.contracts.codec import decode_hub_message
from referral_hub.contracts.inbox import InboxHeartbeat
from referral_hub.contracts.plans import CareTeamChanged, PlanUpdate, PlanUpdated
from referral_hub.contracts.referrals import (
    ReferralForward,
    ReferralOverdue,
    ReferralRequested,
    ReferralState,
    ReferralTransitioned,
)
from referral_hub.contracts.rejections import Rejection, RejectionCode
from referral_hub.referrals import app as referrals_app
from referral_hub.referrals import handlers as referrals_handlers
from referral_hub.referrals.adapters import careteam_store, referral_store
from referral_hub.referrals.careteam import team_key
from referral_hub.referrals.domain import SlaPolicy
from referral_hub.referrals.handlers import TimerSweeper
from referral_hub.runtime.jetstream.registry_cache import RegistryCache, load_registry_file
from referral_hub.runtime.messaging.ack_policy import Effects

from .conftest import start_services
from .helpers import RunningHub, referral_request, wait_idle
from .lifecycle_model import TRANSITIONS, command, model_step

SENDER, RECIPIENT = "harbor-pt", "lotus-acu"


async def step(
    hub: RunningHub, transition: str, clinic: str, referral_id: UUID, patient_ref: str = "pt-0001"
) -> InboxItem:
    client = await hub.clinic(clinic)
    return await client.send_and_confirm(command(transition, clinic, referral_id, patient_ref))


async def requested(hub: RunningHub, **overrides: object) -> UUID:
    request = referral_request(**overrides)
    answer = await (await hub.clinic(str(overrides.get("sender", SENDER)))).send_and_confirm(request)
    assert isinstance(answer.message, ReferralRequested)
    return request.referral_id


async def inbox(hub: RunningHub, clinic: str) -> list[InboxItem]:
    return [item async for item in (await hub.clinic(clinic)).inbox()]


async def test_full_lifecycle_closes_the_loop_for_the_sender(hub: RunningHub) -> None:
    referral_id = await requested(hub)
    for transition, clinic in [
        ("accept", RECIPIENT),
        ("schedule", RECIPIENT),
        ("interim_note", RECIPIENT),
        ("complete", RECIPIENT),
        ("close", SENDER),
    ]:
        answer = await step(hub, transition, clinic, referral_id)
        assert isinstance(answer.message, ReferralTransitioned), answer.message
    await wait_idle(hub.connection)

    seen = [i.message for i in await inbox(hub, SENDER) if isinstance(i.message, ReferralTransitioned)]
    assert [(m.transition, m.bser_status) for m in seen] == [
        ("accept", "3.0"),
        ("schedule", "5.1.1"),
        ("interim_note", "5.1.1"),
        ("complete", "5.1.4"),
        ("close", "7.0"),
    ]
    assert seen[3].outcome is not None
    assert seen[3].outcome.visits == 6
    stored = await (await referral_store(hub.connection.jetstream())).load(str(referral_id))
    assert stored is not None
    assert stored[0].state == ReferralState.CLOSED


async def test_every_inbox_is_numbered_without_gaps(hub: RunningHub) -> None:
    referral_id = await requested(hub)
    await step(hub, "accept", RECIPIENT, referral_id)
    await step(hub, "close", RECIPIENT, referral_id)
    await step(hub, "schedule", RECIPIENT, referral_id)
    await wait_idle(hub.connection)

    for clinic in (SENDER, RECIPIENT):
        numbers = [item.event_number for item in await inbox(hub, clinic)]
        assert numbers == list(range(1, len(numbers) + 1)), clinic
    assert any(isinstance(item.message, Rejection) for item in await inbox(hub, RECIPIENT))


async def test_inbox_replays_from_an_event_number(hub: RunningHub) -> None:
    referral_id = await requested(hub)
    await step(hub, "accept", RECIPIENT, referral_id)
    await step(hub, "schedule", RECIPIENT, referral_id)
    await wait_idle(hub.connection)

    replayed = [item.event_number async for item in (await hub.clinic(SENDER)).inbox(since=3)]

    assert replayed[0] == 3
    assert replayed == list(range(3, 3 + len(replayed)))


async def test_sender_cancel_after_scheduling_waits_for_the_recipient(hub: RunningHub) -> None:
    referral_id = await requested(hub)
    await step(hub, "accept", RECIPIENT, referral_id)
    await step(hub, "schedule", RECIPIENT, referral_id)

    asked = await step(hub, "cancel", SENDER, referral_id)
    confirmed = await step(hub, "cancel_confirm", RECIPIENT, referral_id)

    assert isinstance(asked.message, ReferralTransitioned)
    assert (asked.message.state, asked.message.bser_status) == ("cancel_requested", "5.2")
    assert isinstance(confirmed.message, ReferralTransitioned)
    assert (confirmed.message.state, confirmed.message.bser_status) == ("cancelled", "5.1.3")


@pytest.mark.parametrize(
    ("setup", "transition", "clinic", "patient_ref", "code"),
    [
        ([], "close", RECIPIENT, "pt-0001", RejectionCode.WRONG_PARTY),
        ([], "schedule", RECIPIENT, "pt-0001", RejectionCode.INVALID_TRANSITION),
        ([], "accept", RECIPIENT, "pt-other", RejectionCode.PATIENT_MISMATCH),
        ([("decline", RECIPIENT)], "interim_note", RECIPIENT, "pt-0001", RejectionCode.REFERRAL_CLOSED),
    ],
)
async def test_refused_transition_changes_nothing_and_names_the_state(
    hub: RunningHub,
    setup: list[tuple[str, str]],
    transition: str,
    clinic: str,
    patient_ref: str,
    code: RejectionCode,
) -> None:
    referral_id = await requested(hub)
    for name, actor in setup:
        await step(hub, name, actor, referral_id)
    store = await referral_store(hub.connection.jetstream())
    before = await store.load(str(referral_id))

    answer = await step(hub, transition, clinic, referral_id, patient_ref)

    assert isinstance(answer.message, Rejection)
    assert answer.message.code == code
    assert before is not None
    assert answer.message.current_state == before[0].state
    assert await store.load(str(referral_id)) == before


async def test_forward_reaches_the_third_clinic_and_keeps_the_sender_informed(hub: RunningHub) -> None:
    referral_id = await requested(hub)
    forward = ReferralForward(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic=RECIPIENT,
        actor="raj.patel",
        correlation_id=new_id(),
        referral_id=referral_id,
        patient_ref="pt-0001",
        to_clinic="riverside-wellness",
        reason="Closer to home",
    )
    await (await hub.clinic(RECIPIENT)).send_and_confirm(forward)
    await wait_idle(hub.connection)

    third = [i.message for i in await inbox(hub, "riverside-wellness")]
    told = [i.message for i in await inbox(hub, SENDER) if isinstance(i.message, ReferralTransitioned)]
    assert len(third) == 1
    assert isinstance(third[0], ReferralRequested)
    assert third[0].recipient_clinic == "riverside-wellness"
    assert [(m.transition, m.forwarded_to) for m in told] == [("forward", "riverside-wellness")]


def plan(clinic: str, version: int, patient_ref: str = "pt-team") -> PlanUpdate:
    actors = {"lotus-acu": "raj.patel", "summit-chiro": "tom.nguyen", "harbor-pt": "ben.okafor"}
    return PlanUpdate(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic=clinic,
        actor=actors[clinic],
        correlation_id=new_id(),
        patient_ref=patient_ref,
        modality=Modality.ACUPUNCTURE,
        plan_version=version,
        goals=("Fewer headache days",),
        frequency="weekly",
        techniques=("needling",),
        effective_date=utc_now().date(),
    )


async def test_a_plan_reaches_every_member_its_author_included_and_a_joiner_learns_the_whole_team(
    hub: RunningHub,
) -> None:
    massage = "kneadwell-massage"
    first = await requested(hub, patient_ref="pt-team")
    await step(hub, "accept", RECIPIENT, first, "pt-team")
    answers = [
        await (await hub.clinic(clinic)).send_and_confirm(plan(clinic, version))
        for clinic, version in [(SENDER, 1), (RECIPIENT, 1), (RECIPIENT, 2)]
    ]
    confirmed = [(a.message.plan_clinic, a.message.plan_version) for a in answers if isinstance(a.message, PlanUpdated)]
    assert confirmed == [(SENDER, 1), (RECIPIENT, 1), (RECIPIENT, 2)]
    stale = await (await hub.clinic(RECIPIENT)).send_and_confirm(plan(RECIPIENT, 2))
    assert isinstance(stale.message, Rejection)
    assert stale.message.code == RejectionCode.STALE_PLAN_VERSION

    second = await requested(hub, recipient_clinic=massage, modality=Modality.MASSAGE, patient_ref="pt-team")
    await step(hub, "accept", massage, second, "pt-team")
    await wait_idle(hub.connection)

    team = await (await careteam_store(hub.connection.jetstream())).load(team_key("pt-team"))
    assert team is not None
    since = {m.clinic: m.since for m in team[0].members}
    assert set(since) == {SENDER, RECIPIENT, massage}
    assert since[SENDER] == since[RECIPIENT] < since[massage]

    def team_changes(items: list[InboxItem]) -> list[tuple[str, str, datetime | None]]:
        return [(m.clinic, m.change, m.since) for m in (i.message for i in items) if isinstance(m, CareTeamChanged)]

    def plans(items: list[InboxItem]) -> list[tuple[str, int]]:
        return [(m.plan_clinic, m.plan_version) for m in (i.message for i in items) if isinstance(m, PlanUpdated)]

    joiner = await inbox(hub, massage)
    assert team_changes(joiner) == [(c, "joined", since[c]) for c in (massage, SENDER, RECIPIENT)]
    assert plans(joiner) == [(SENDER, 1), (RECIPIENT, 2)]
    assert [i.event_number for i in joiner] == list(range(1, len(joiner) + 1))
    for clinic in (SENDER, RECIPIENT):
        items = await inbox(hub, clinic)
        assert team_changes(items) == [(c, "joined", since[c]) for c in (SENDER, RECIPIENT, massage)], clinic
        assert plans(items) == [(SENDER, 1), (RECIPIENT, 1), (RECIPIENT, 2)], clinic


async def test_stale_plan_version_is_rejected_naming_the_current_one(hub: RunningHub) -> None:
    referral_id = await requested(hub, patient_ref="pt-team")
    await step(hub, "accept", RECIPIENT, referral_id, "pt-team")
    acupuncturist = await hub.clinic(RECIPIENT)
    await acupuncturist.send(plan(RECIPIENT, 1))
    await wait_idle(hub.connection)

    answer = await acupuncturist.send_and_confirm(plan(RECIPIENT, 1))

    assert isinstance(answer.message, Rejection)
    assert answer.message.code == RejectionCode.STALE_PLAN_VERSION
    assert answer.message.current_version == 1


async def test_a_clinic_off_the_care_team_cannot_publish_a_plan(hub: RunningHub) -> None:
    referral_id = await requested(hub, patient_ref="pt-team")
    await step(hub, "accept", RECIPIENT, referral_id, "pt-team")

    answer = await (await hub.clinic("summit-chiro")).send_and_confirm(plan("summit-chiro", 1))

    assert isinstance(answer.message, Rejection)
    assert answer.message.code == RejectionCode.NOT_ON_CARE_TEAM


async def test_overdue_timer_fires_once_with_an_injected_clock(hub: RunningHub) -> None:
    referral_id = await requested(hub)
    js = hub.connection.jetstream()
    later = datetime.now(UTC) + timedelta(hours=73)
    sweeper = TimerSweeper(await referral_store(js), Effects(hub.connection), SlaPolicy(), lambda: later)

    assert await sweeper.sweep_once() == 1
    assert await sweeper.sweep_once() == 0
    await wait_idle(hub.connection)

    for clinic in (SENDER, RECIPIENT):
        overdue = [i.message for i in await inbox(hub, clinic) if isinstance(i.message, ReferralOverdue)]
        assert [m.referral_id for m in overdue] == [referral_id]


async def test_timers_survive_a_restart_because_they_live_in_the_referral(hub: RunningHub) -> None:
    referral_id = await requested(hub)
    js = hub.connection.jetstream()
    later = datetime.now(UTC) + timedelta(hours=73)
    first = TimerSweeper(await referral_store(js), Effects(hub.connection), SlaPolicy(), lambda: datetime.now(UTC))
    assert await first.sweep_once() == 0

    restarted = TimerSweeper(await referral_store(js), Effects(hub.connection), SlaPolicy(), lambda: later)

    assert await restarted.sweep_once() == 1
    stored = await (await referral_store(js)).load(str(referral_id))
    assert stored is not None
    assert stored[0].overdue_notified is True


async def test_two_replicas_serialise_conflicting_transitions(hub: RunningHub) -> None:
    tasks, stop, _ = await start_services(hub.url, {"referrals-2": referrals_app.create_app})
    try:
        referral_ids = [await requested(hub, patient_ref=f"pt-race-{n}") for n in range(8)]
        recipient = await hub.clinic(RECIPIENT)
        racing = [
            (command("accept", RECIPIENT, rid, f"pt-race-{n}"), command("decline", RECIPIENT, rid, f"pt-race-{n}"))
            for n, rid in enumerate(referral_ids)
        ]
        await asyncio.gather(*(recipient.send(c) for pair in racing for c in pair))
        await wait_idle(hub.connection, timeout=30)
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    store = await referral_store(hub.connection.jetstream())
    rejections = [i.message for i in await inbox(hub, RECIPIENT) if isinstance(i.message, Rejection)]
    for (accept, decline), referral_id in zip(racing, referral_ids, strict=True):
        stored = await store.load(str(referral_id))
        assert stored is not None
        referral = stored[0]
        assert len(referral.history) == 2
        winner = referral.history[1].message_id
        loser = decline.message_id if winner == accept.message_id else accept.message_id
        assert winner in {accept.message_id, decline.message_id}
        assert [r.offending_message_id for r in rejections].count(str(loser)) == 1


async def test_heartbeat_reports_the_newest_event_number(hub: RunningHub) -> None:
    await requested(hub)
    await wait_idle(hub.connection)
    registry = RegistryCache()
    for clinic in load_registry_file().clinics:
        registry.apply(f"clinic.{clinic.id}", msgspec.json.encode(clinic))
    subscription = await hub.connection.subscribe("clinic.harbor-pt.heartbeat")

    await referrals_handlers.send_heartbeats(hub.connection, registry, Effects(hub.connection), utc_now())

    beat = decode_hub_message((await subscription.next_msg(timeout=5)).data)
    assert isinstance(beat, InboxHeartbeat)
    assert (beat.clinic, beat.last_event_number) == (SENDER, 1)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(TRANSITIONS), st.sampled_from(["S", "R"])), min_size=1, max_size=6))
async def test_real_hub_follows_the_reference_model(hub: RunningHub, steps: list[tuple[str, str]]) -> None:
    referral_id = await requested(hub)
    model = "requested"
    accepted: dict[str, list[UUID]] = {SENDER: [], RECIPIENT: []}
    for transition, party in steps:
        clinic, other = (SENDER, RECIPIENT) if party == "S" else (RECIPIENT, SENDER)
        answer = await step(hub, transition, clinic, referral_id)
        expected = model_step(model, transition, party)
        if expected is None:
            assert isinstance(answer.message, Rejection), (model, transition, party)
            continue
        assert isinstance(answer.message, ReferralTransitioned), (model, transition, party, answer.message)
        model = expected
        assert answer.message.state == model
        accepted[other].append(answer.message.message_id)
    await wait_idle(hub.connection)

    stored = await (await referral_store(hub.connection.jetstream())).load(str(referral_id))
    assert stored is not None
    assert stored[0].state == model
    for clinic, event_ids in accepted.items():
        received = [
            i.message.message_id
            for i in await inbox(hub, clinic)
            if isinstance(i.message, ReferralTransitioned) and i.message.referral_id == referral_id
        ]
        assert [e for e in received if e in event_ids] == event_ids


async def test_pipelined_commands_for_one_referral_apply_in_stream_order(hub: RunningHub) -> None:
    referrals = [referral_request(patient_ref=f"pt-pipe-{n}") for n in range(10)]
    steps = [("accept", RECIPIENT), ("schedule", RECIPIENT), ("complete", RECIPIENT), ("close", SENDER)]
    sender, recipient = await hub.clinic(SENDER), await hub.clinic(RECIPIENT)

    for request in referrals:
        await sender.send(request)
        for transition, clinic in steps:
            client = sender if clinic == SENDER else recipient
            await client.send(command(transition, clinic, request.referral_id, request.patient_ref))
    await wait_idle(hub.connection, timeout=30)

    store = await referral_store(hub.connection.jetstream())
    for request in referrals:
        stored = await store.load(str(request.referral_id))
        assert stored is not None
        assert [item.transition for item in stored[0].history] == ["request", "accept", "schedule", "complete", "close"]
    assert not [i for i in await inbox(hub, RECIPIENT) if isinstance(i.message, Rejection)]
