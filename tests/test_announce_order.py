"""A referral's announcements reach every inbox in lifecycle order across failed inbox stores (decision 0002).

Against a real nats-server: the referrals intake handler and the real effects, with the
clinic inboxes refusing every store for a while, as when the CLINIC_IN leader is lost.
"""

from __future__ import annotations

import asyncio

import msgspec
import nats.errors
import pytest
from nats.aio.client import Client

from referral_hub.contracts.referrals import ReferralCommand
from referral_hub.referrals.handlers import IntakeHandler
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.jetstream.batching import GroupCommit, Pending
from referral_hub.runtime.messaging.ack_policy import Effects
from referral_hub.runtime.messaging.inbox_writer import InboxWriter
from referral_hub.runtime.messaging.incoming import Incoming
from referral_hub.runtime.messaging.outgoing import ToInbox

from .helpers import intake_delivery, intake_handler, referral_request
from .lifecycle_model import command

SENDER, RECIPIENT = "harbor-pt", "lotus-acu"
LIFECYCLE = ["accept", "schedule", "complete", "close"]


class InboxOutage(InboxWriter):
    """The real inbox writer, except that while ``down`` every store times out before reaching the server."""

    down = False

    async def deliver(self, delivery: ToInbox) -> int:
        if self.down:
            raise nats.errors.TimeoutError
        return await super().deliver(delivery)


class OutageEffects(Effects):
    """The real effects over an inbox writer that can be taken down."""

    def __init__(self, connection: Client) -> None:
        super().__init__(connection)
        self.inbox = self.writer = InboxOutage(connection)


class _Transition(msgspec.Struct):
    referral_id: str = ""
    transition: str = ""
    event_number: int = 0


async def transitions(connection: Client, clinic: str, referral_id: str) -> list[str]:
    """The referral's transitions in ``clinic``'s inbox, in stored order; event numbers checked gap-free."""
    subscription = await connection.jetstream().subscribe(subjects.clinic_inbox(clinic), ordered_consumer=True)
    found, numbers = [], []
    try:
        while True:
            message = await subscription.next_msg(timeout=1.0)
            item = msgspec.json.decode(message.data, type=_Transition)
            numbers.append(item.event_number)
            if item.referral_id == referral_id and item.transition:
                found.append(item.transition)
    except nats.errors.TimeoutError:
        pass
    finally:
        await subscription.unsubscribe()
    assert numbers == list(range(1, len(numbers) + 1))
    return found


async def handle(intake: IntakeHandler, effects: Effects, delivery: Incoming) -> bool:
    """What ``handle_one`` does with a delivery: decide, store the outputs, then count the step as announced."""
    handled = await intake(delivery)
    try:
        await effects.apply(handled.outgoing)
    except nats.errors.TimeoutError:
        return False
    if handled.on_stored is not None:
        handled.on_stored()
    return True


def redelivered(message: ReferralCommand, sequence: int) -> Incoming:
    first = intake_delivery(message, sequence)
    return Incoming(first.subject, first.data, {}, first.stream, first.sequence, first.stored_at, attempt=2)


async def test_two_steps_in_a_row_whose_copies_failed_still_reach_the_inboxes_before_the_next_one(
    provisioned: Client,
) -> None:
    intake = await intake_handler(provisioned)
    effects = OutageEffects(provisioned)
    request = referral_request(SENDER, RECIPIENT)
    steps = {name: command(name, SENDER if name == "close" else RECIPIENT, request.referral_id) for name in LIFECYCLE}
    assert await handle(intake, effects, intake_delivery(request, 1))
    assert await handle(intake, effects, intake_delivery(steps["accept"], 2))

    effects.writer.down = True  # the inbox stream's leader is lost: states are saved, copies are not stored
    assert not await handle(intake, effects, intake_delivery(steps["schedule"], 3))
    assert not await handle(intake, effects, intake_delivery(steps["complete"], 4))
    effects.writer.down = False
    assert await handle(intake, effects, intake_delivery(steps["close"], 5))  # sent once complete was saved
    assert await handle(intake, effects, redelivered(steps["schedule"], 3))  # after its nak delay or ack wait
    assert await handle(intake, effects, redelivered(steps["complete"], 4))

    referral_id = str(request.referral_id)
    assert await transitions(provisioned, SENDER, referral_id) == ["accept", "schedule", "complete", "close"]
    assert await transitions(provisioned, RECIPIENT, referral_id) == ["accept", "schedule", "complete", "close"]


async def test_writes_queued_behind_a_failed_batch_fail_with_it() -> None:
    stored: list[str] = []

    async def commit(_key: str, batch: list[Pending[str, int]]) -> None:
        await asyncio.sleep(0)
        if batch[0].item == "first":
            raise nats.errors.TimeoutError
        stored.extend(pending.item for pending in batch)
        for pending in batch:
            pending.done.set_result(len(stored))

    group: GroupCommit[str, str, int] = GroupCommit(commit, max_batch=1)
    first = asyncio.ensure_future(group.submit("inbox", "first"))
    second = asyncio.ensure_future(group.submit("inbox", "second"))

    outcomes = await asyncio.gather(first, second, return_exceptions=True)

    assert [type(outcome) for outcome in outcomes] == [nats.errors.TimeoutError] * 2
    assert stored == []
    assert await group.submit("inbox", "third") == 1
    assert stored == ["third"]


@pytest.mark.parametrize("replica", ["same", "other"])
async def test_a_redelivered_step_behind_stored_successors_adds_nothing_to_the_inboxes(
    provisioned: Client, replica: str
) -> None:
    intake = await intake_handler(provisioned)
    effects = OutageEffects(provisioned)
    request = referral_request(SENDER, RECIPIENT)
    accept, schedule = (command(name, RECIPIENT, request.referral_id) for name in ("accept", "schedule"))
    for sequence, step in enumerate((request, accept, schedule), start=1):
        assert await handle(intake, effects, intake_delivery(step, sequence))
    again = intake if replica == "same" else await intake_handler(provisioned)

    assert await handle(again, effects, redelivered(accept, 2))

    referral_id = str(request.referral_id)
    assert await transitions(provisioned, SENDER, referral_id) == ["accept", "schedule"]
