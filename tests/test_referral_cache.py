"""Two handlers with their own caches over one KV bucket: a stale cache never causes a wrong answer."""

from __future__ import annotations

import msgspec
from nats.aio.client import Client

from referral_hub.client import utc_now
from referral_hub.contracts.codec import encode
from referral_hub.contracts.referrals import ReferralCommand, ReferralState
from referral_hub.referrals.adapters import careteam_store, referral_store
from referral_hub.referrals.domain import SlaPolicy
from referral_hub.referrals.handlers import IntakeHandler
from referral_hub.runtime.handling import Delivery
from referral_hub.runtime.registry import RegistryCache, load_registry_file

from .helpers import referral_request
from .lifecycle_model import command


def delivery(message: ReferralCommand, sequence: int) -> Delivery:
    subject = f"clinic.{message.sender_clinic}.out.{message.__struct_config__.tag}"
    return Delivery(subject, encode(message), {}, "CLINIC_OUT", sequence, utc_now(), attempt=1)


async def handler(provisioned: Client) -> IntakeHandler:
    registry = RegistryCache()
    for clinic in load_registry_file().clinics:
        registry.apply(f"clinic.{clinic.id}", msgspec.json.encode(clinic))
    js = provisioned.jetstream()
    return IntakeHandler(await referral_store(js, 100), await careteam_store(js), registry, SlaPolicy())


async def test_a_replica_with_a_stale_cache_still_applies_a_valid_command(provisioned: Client) -> None:
    replica_a, replica_b = await handler(provisioned), await handler(provisioned)
    request = referral_request()
    assert (await replica_a(delivery(request, 1))).outcome == "accepted"
    assert (await replica_b(delivery(command("accept", "lotus-acu", request.referral_id), 2))).outcome == "accepted"

    scheduled = await replica_a(delivery(command("schedule", "lotus-acu", request.referral_id), 3))

    assert scheduled.outcome == "accepted"
    stored = await (await referral_store(provisioned.jetstream())).load(str(request.referral_id))
    assert stored is not None
    assert stored[0].state == ReferralState.SCHEDULED
    assert [item.transition for item in stored[0].history] == ["request", "accept", "schedule"]


async def test_a_replica_with_a_stale_cache_loses_the_race_cleanly(provisioned: Client) -> None:
    replica_a, replica_b = await handler(provisioned), await handler(provisioned)
    request = referral_request()
    await replica_a(delivery(request, 1))
    await replica_b(delivery(command("decline", "lotus-acu", request.referral_id), 2))

    late_accept = await replica_a(delivery(command("accept", "lotus-acu", request.referral_id), 3))

    assert late_accept.outcome == "rejected"
    assert late_accept.log_fields is not None
    assert late_accept.log_fields["rejection_code"] == "referral_closed"
