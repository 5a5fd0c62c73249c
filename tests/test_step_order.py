"""A step re-announces the step before it unless this process stored all of that step's outputs."""

from __future__ import annotations

from nats.aio.client import Client

from referral_hub.contracts.referrals import ReferralCommand
from referral_hub.referrals.handlers import IntakeHandler
from referral_hub.runtime.messaging.ack_policy import Handled
from referral_hub.runtime.messaging.outgoing import ToInbox

from .helpers import intake_delivery, intake_handler, referral_request
from .lifecycle_model import command

SENDER, RECIPIENT = "harbor-pt", "lotus-acu"


def inbox_causes(handled: Handled) -> list[str]:
    """The command each inbox copy answers, in the order the copies are stored."""
    return [str(item.message.causation_id) for item in handled.outgoing if isinstance(item, ToInbox)]


async def scheduled_then_completed(intake: IntakeHandler) -> tuple[ReferralCommand, Handled, ReferralCommand]:
    """A referral taken to scheduled with every output stored, then completed; and its close, not yet handled."""
    request = referral_request(SENDER, RECIPIENT)
    steps = [
        request,
        command("accept", RECIPIENT, request.referral_id),
        command("schedule", RECIPIENT, request.referral_id),
    ]
    for sequence, step in enumerate(steps, start=1):
        handled = await intake(intake_delivery(step, sequence))
        assert handled.on_stored is not None
        handled.on_stored()
    complete = command("complete", RECIPIENT, request.referral_id)
    completed = await intake(intake_delivery(complete, len(steps) + 1))
    return complete, completed, command("close", SENDER, request.referral_id)


async def test_a_step_whose_outputs_were_not_all_stored_is_announced_again_before_the_next_one(
    provisioned: Client,
) -> None:
    intake = await intake_handler(provisioned)
    complete, _completed_but_never_stored, close = await scheduled_then_completed(intake)

    closed = await intake(intake_delivery(close, 5))

    assert inbox_causes(closed) == [str(complete.message_id)] * 2 + [str(close.message_id)] * 2


async def test_a_step_whose_outputs_were_all_stored_is_not_announced_again(provisioned: Client) -> None:
    intake = await intake_handler(provisioned)
    _complete, completed, close = await scheduled_then_completed(intake)
    assert completed.on_stored is not None
    completed.on_stored()

    closed = await intake(intake_delivery(close, 5))

    assert inbox_causes(closed) == [str(close.message_id)] * 2
