"""Referral and care-team state in JetStream KV, with revision compare-and-set on every write."""

from __future__ import annotations

from nats.js import JetStreamContext

from referral_hub.referrals.careteam import CareTeam
from referral_hub.referrals.domain import Referral
from referral_hub.runtime.jetstream.kvstore import ConcurrentUpdateError, KvStore
from referral_hub.runtime.jetstream.topology import CARETEAMS_KV, REFERRALS_KV

__all__ = ["ConcurrentUpdateError", "KvStore", "careteam_store", "referral_store"]


async def referral_store(js: JetStreamContext, cache_size: int = 0) -> KvStore[Referral]:
    """Referrals, keyed by referral id."""
    return KvStore(await js.key_value(REFERRALS_KV), Referral, cache_size)


async def careteam_store(js: JetStreamContext, cache_size: int = 0) -> KvStore[CareTeam]:
    """Care teams, keyed by :func:`team_key` of the patient."""
    return KvStore(await js.key_value(CARETEAMS_KV), CareTeam, cache_size)
