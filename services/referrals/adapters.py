"""Referral state in JetStream KV, with revision compare-and-set on every write."""

from __future__ import annotations

from typing import Final
from uuid import UUID

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from referral_hub.errors import HubError
from referral_hub.referrals.domain import Referral
from referral_hub.runtime.topology import REFERRALS_KV

_decoder: Final = msgspec.json.Decoder(Referral)


class ConcurrentUpdateError(HubError):
    """Another writer changed the referral between our read and our write.

    The handler lets this propagate, so the command is redelivered and decided again
    against the state that won: two replicas never silently overwrite each other.
    """


class ReferralStore:
    """Load and save referrals by id; ``revision`` is the KV revision a save must match."""

    def __init__(self, kv: KeyValue) -> None:
        """Wrap the referrals bucket."""
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> ReferralStore:
        """Bind to the provisioned bucket."""
        return cls(await js.key_value(REFERRALS_KV))

    async def load(self, referral_id: UUID) -> tuple[Referral, int] | None:
        """The stored referral and its revision, or ``None``."""
        try:
            entry = await self._kv.get(str(referral_id))
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return _decoder.decode(entry.value), entry.revision

    async def save(self, referral: Referral, revision: int | None) -> int:
        """Create (``revision=None``) or compare-and-set update; returns the new revision."""
        key = str(referral.referral_id)
        value = msgspec.json.encode(referral)
        try:
            if revision is None:
                return await self._kv.create(key, value)
            return await self._kv.update(key, value, last=revision)
        except KeyWrongLastSequenceError as exc:
            msg = f"referral {key} changed concurrently"
            raise ConcurrentUpdateError(msg) from exc
