"""Admission of a clinic submission: everything that can be checked without domain state.

Shared by every service that reads ``clinic.<id>.out.>``: the sending clinic's rate, the
size, the subject, the encoding, the contract and version, the sender's identity (the
subject, which the broker authenticates, must agree with the payload) and that the actor is
a member of the sending clinic.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Self

from referral_hub.contracts.base import ContractError, message_type
from referral_hub.contracts.codec import (
    ClinicCommand,
    MalformedJsonError,
    SchemaViolationError,
    UnknownTypeError,
    UnsupportedVersionError,
    decode_command,
)
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.runtime.jetstream.subjects import OutSubject, parse_clinic_out
from referral_hub.runtime.messaging.incoming import Incoming
from referral_hub.runtime.messaging.refusals import Refusal

MAX_COMMAND_BYTES: Final = 64 * 1024
"""The largest submission the hub takes. A referral with its reason and notes is a few KiB;
anything near this is a mistake or an attack, and is refused (``message_too_large``)
before it is decoded. The CLINIC_OUT stream stores up to ``topology.CLINIC_OUT_MAX_MSG_BYTES``
so that the refused message is kept whole for operators; beyond that the server refuses the
publish itself, and the sender gets the error at once."""
RATE_ENV: Final = "HUB_CLINIC_RATE_PER_SECOND"
BURST_ENV: Final = "HUB_CLINIC_RATE_BURST"

ClinicLookup = Callable[[str], Clinic | None]
DECODE_REFUSALS: Final[dict[type[ContractError], RejectionCode]] = {
    MalformedJsonError: RejectionCode.MALFORMED_JSON,
    UnsupportedVersionError: RejectionCode.UNSUPPORTED_VERSION,
    UnknownTypeError: RejectionCode.UNKNOWN_MESSAGE_TYPE,
    SchemaViolationError: RejectionCode.SCHEMA_VIOLATION,
}


@dataclass(frozen=True)
class Admitted:
    """A submission that passed every check that does not depend on referral state."""

    command: ClinicCommand
    sender: Clinic


@dataclass(frozen=True)
class RateLimit:
    """How many submissions per second one clinic may send, sustained, and in a burst."""

    per_second: float = 50.0
    burst: float = 500.0

    @classmethod
    def from_environment(cls) -> Self:
        """``HUB_CLINIC_RATE_PER_SECOND`` and ``HUB_CLINIC_RATE_BURST``, else the defaults."""
        default = cls()
        return cls(
            per_second=float(os.environ.get(RATE_ENV, default.per_second)),
            burst=float(os.environ.get(BURST_ENV, default.burst)),
        )


@dataclass
class _Bucket:
    tokens: float
    at: datetime


@dataclass
class RateLimiter:
    """A token bucket per clinic, on the broker's clock: the time each submission was stored.

    Stored time, not handling time, so a backlog drained after an outage is judged by how
    fast the clinic sent it, not by how fast the hub caught up. Only a message's first
    delivery spends a token: a redelivery (after a crash) must reach the same decision as
    the first attempt, which was admitted. Each replica keeps its own buckets, so N
    replicas admit up to N times the rate; the limit guards the hub's capacity, not a quota.
    """

    limit: RateLimit = field(default_factory=RateLimit.from_environment)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def allows(self, clinic_id: str, at: datetime, *, first_attempt: bool = True) -> bool:
        """Spend a token of ``clinic_id`` for a message stored ``at``; ``False`` when none is left."""
        bucket = self._buckets.get(clinic_id)
        if bucket is None:
            bucket = self._buckets[clinic_id] = _Bucket(self.limit.burst, at)
        elapsed = (at - bucket.at).total_seconds()
        if elapsed > 0:
            bucket.tokens = min(self.limit.burst, bucket.tokens + elapsed * self.limit.per_second)
            bucket.at = at
        if not first_attempt:
            return True
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True


def admit_delivery(delivery: Incoming, lookup: ClinicLookup, limiter: RateLimiter) -> Admitted | Refusal:
    """The sending clinic's rate, then everything :func:`admit` checks."""
    out = parse_clinic_out(delivery.subject)
    if out is not None and not limiter.allows(out.clinic_id, delivery.stored_at, first_attempt=delivery.attempt <= 1):
        limit = limiter.limit
        return Refusal(
            RejectionCode.RATE_LIMITED,
            f"clinic {out.clinic_id!r} sent more than {limit.per_second:g} messages/s "
            f"(burst {limit.burst:g}); resend this one later",
        )
    return admit(delivery.subject, delivery.data, lookup)


def admit(subject: str, data: bytes, lookup: ClinicLookup) -> Admitted | Refusal:
    """Check subject, size, encoding, contract, version, sender identity and actor membership.

    The sender's identity is the clinic id in the subject, which the broker authenticates;
    the payload's ``sender_clinic`` must agree with it.
    """
    out = parse_clinic_out(subject)
    if out is None:
        return Refusal(RejectionCode.INVALID_SUBJECT, f"{subject!r} is not clinic.<clinic_id>.out.<type>")
    if len(data) > MAX_COMMAND_BYTES:
        return Refusal(
            RejectionCode.MESSAGE_TOO_LARGE, f"{len(data)} bytes is over the hub's limit of {MAX_COMMAND_BYTES}"
        )
    try:
        command = decode_command(data)
    except ContractError as exc:
        return Refusal(DECODE_REFUSALS[type(exc)], str(exc))
    return _check_identity(command, out, lookup)


def _check_identity(command: ClinicCommand, out: OutSubject, lookup: ClinicLookup) -> Admitted | Refusal:
    declared = message_type(type(command))
    if declared != out.message_type:
        return Refusal(
            RejectionCode.SUBJECT_TYPE_MISMATCH,
            f"subject says {out.message_type!r} but the payload is {declared!r}",
        )
    if command.sender_clinic != out.clinic_id:
        return Refusal(
            RejectionCode.SENDER_MISMATCH,
            f"payload sender_clinic {command.sender_clinic!r} is not the authenticated clinic {out.clinic_id!r}",
        )
    sender = lookup(out.clinic_id)
    if sender is None:
        return Refusal(RejectionCode.UNKNOWN_CLINIC, f"clinic {out.clinic_id!r} is not registered")
    if not sender.has_member(command.actor):
        return Refusal(RejectionCode.UNKNOWN_MEMBER, f"{command.actor!r} is not a member of {sender.id!r}")
    return Admitted(command, sender)
