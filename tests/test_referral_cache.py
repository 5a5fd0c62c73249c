"""Two handlers with their own caches over one KV bucket: a stale cache never causes a wrong answer."""

from __future__ import annotations

from nats.aio.client import Client

from referral_hub.contracts.referrals import ReferralState
from referral_hub.referrals.adapters import referral_store

from .helpers import intake_delivery, intake_handler, referral_request
from .lifecycle_model import command


async def test_a_replica_with_a_stale_cache_still_applies_a_valid_command(provisioned: Client) -> None:
    replica_a, replica_b = await intake_handler(provisioned), await intake_handler(provisioned)
    request = referral_request()
    assert (await replica_a(intake_delivery(request, 1))).outcome == "accepted"
    assert (
        await replica_b(intake_delivery(command("accept", "lotus-acu", request.referral_id), 2))
    ).outcome == "accepted"

    scheduled = await replica_a(intake_delivery(command("schedule", "lotus-acu", request.referral_id), 3))

    assert scheduled.outcome == "accepted"
    stored = await (await referral_store(provisioned.jetstream())).load(str(request.referral_id))
    assert stored is not None
    assert stored[0].state == ReferralState.SCHEDULED
    assert [item.transition for item in stored[0].history] == ["request", "accept", "schedule"]


async def test_a_replica_with_a_stale_cache_loses_the_race_cleanly(provisioned: Client) -> None:
    replica_a, replica_b = await intake_handler(provisioned), await intake_handler(provisioned)
    request = referral_request()
    await replica_a(intake_delivery(request, 1))
    await replica_b(intake_delivery(command("decline", "lotus-acu", request.referral_id), 2))

    late_accept = await replica_a(intake_delivery(command("accept", "lotus-acu", request.referral_id), 3))

    assert late_accept.outcome == "rejected"
    assert late_accept.log_fields is not None
    assert late_accept.log_fields["rejection_code"] == "referral_closed"
