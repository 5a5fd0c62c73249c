"""Encoding and decoding of hub messages, with errors precise enough to become rejections.

Decoding happens in two steps. A lenient peek reads only ``type`` and ``schema_version``
so that a bad tag or a future version gets its own rejection code instead of a generic
schema error; then the strict decoder checks the whole message against its contract.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final, TypeAlias, TypeVar

import msgspec

from referral_hub.contracts.alerts import (
    AlertAck,
    AlertAcknowledged,
    AlertRaise,
    AlertRaised,
    AlertResolve,
    AlertResolved,
)
from referral_hub.contracts.audit import CheckpointWitnessed
from referral_hub.contracts.base import CONTRACT_VERSION, ContractError, Message, message_type
from referral_hub.contracts.inbox import InboxHeartbeat
from referral_hub.contracts.paging import (
    AdminChanged,
    DeliveryReceipt,
    NotificationQueued,
    PageAck,
    PageAcknowledged,
    PageSuppressed,
    PageTriggered,
)
from referral_hub.contracts.plans import CareTeamChanged, CareTeamLeave, PlanUpdate, PlanUpdated
from referral_hub.contracts.referrals import (
    REFERRAL_COMMANDS,
    REFERRAL_EVENTS,
    ReferralAccept,
    ReferralCancel,
    ReferralCancelConfirm,
    ReferralClose,
    ReferralCloseReminder,
    ReferralComplete,
    ReferralDecline,
    ReferralForward,
    ReferralInterimNote,
    ReferralNoShow,
    ReferralOverdue,
    ReferralOverride,
    ReferralRequest,
    ReferralRequested,
    ReferralSchedule,
    ReferralTransitioned,
)
from referral_hub.contracts.rejections import Rejection
from referral_hub.contracts.screening import ScreeningDispute, ScreeningDisputed, ScreeningFlagged

ClinicCommand: TypeAlias = (
    ReferralRequest
    | ReferralAccept
    | ReferralDecline
    | ReferralSchedule
    | ReferralNoShow
    | ReferralInterimNote
    | ReferralComplete
    | ReferralClose
    | ReferralCancel
    | ReferralCancelConfirm
    | ReferralForward
    | ReferralOverride
    | PlanUpdate
    | CareTeamLeave
    | AlertRaise
    | AlertAck
    | AlertResolve
    | PageAck
    | ScreeningDispute
)
"""Everything a clinic may publish on ``clinic.<id>.out.<type>``."""

HubMessage: TypeAlias = (
    ReferralRequested
    | ReferralTransitioned
    | ReferralOverdue
    | ReferralCloseReminder
    | PlanUpdated
    | CareTeamChanged
    | AlertRaised
    | AlertAcknowledged
    | AlertResolved
    | Rejection
    | InboxHeartbeat
    | NotificationQueued
    | PageTriggered
    | PageAcknowledged
    | DeliveryReceipt
    | ScreeningFlagged
    | ScreeningDisputed
    | PageSuppressed
    | AdminChanged
    | CheckpointWitnessed
)
"""Everything the hub delivers to inboxes or records as a domain event."""

COMMAND_TYPES: Final[tuple[type[Message], ...]] = (
    *REFERRAL_COMMANDS,
    PlanUpdate,
    CareTeamLeave,
    AlertRaise,
    AlertAck,
    AlertResolve,
    PageAck,
    ScreeningDispute,
)
HUB_MESSAGE_TYPES: Final[tuple[type[Message], ...]] = (
    *REFERRAL_EVENTS,
    PlanUpdated,
    CareTeamChanged,
    AlertRaised,
    AlertAcknowledged,
    AlertResolved,
    Rejection,
    InboxHeartbeat,
    NotificationQueued,
    PageTriggered,
    PageAcknowledged,
    DeliveryReceipt,
    ScreeningFlagged,
    ScreeningDisputed,
    PageSuppressed,
    AdminChanged,
    CheckpointWitnessed,
)
COMMAND_TAGS: Final = frozenset(message_type(t) for t in COMMAND_TYPES)


class MalformedJsonError(ContractError):
    """The bytes are not a JSON object."""


class UnknownTypeError(ContractError):
    """The ``type`` tag is missing or names no contract."""


class UnsupportedVersionError(ContractError):
    """The message claims a schema version newer than this code."""


class SchemaViolationError(ContractError):
    """The message does not satisfy its contract."""


class _Peek(msgspec.Struct):
    type: str = ""
    schema_version: int = CONTRACT_VERSION


T = TypeVar("T")
NESTED_TOO_DEEPLY: Final = "the document nests deeper than the hub decodes"
UNDECODABLE: Final = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)
"""What decoding bytes from outside may raise. Two of them are no ``DecodeError``, and each
stalled a consumer (a message never acknowledged) until the hostile-input fuzz test found it:
- msgspec (like Python's json) recurses per nesting level, so a document nested a few
  thousand levels deep raises ``RecursionError``;
- invalid UTF-8 inside a JSON string (a CESU-8 surrogate, say) raises ``UnicodeDecodeError``."""


def lenient_decode(data: bytes, kind: type[T]) -> T | None:
    """Decode what can be read of untrusted bytes as ``kind``; ``None`` if nothing can.

    For readers that must not fail on bad input (ordering keys, refusal ids, audit facts).
    """
    try:
        return msgspec.json.decode(data, type=kind)
    except UNDECODABLE:
        return None


_peek_decoder: Final = msgspec.json.Decoder(_Peek)
_command_decoder: Final[msgspec.json.Decoder[ClinicCommand]] = msgspec.json.Decoder(ClinicCommand)
_hub_message_decoder: Final[msgspec.json.Decoder[HubMessage]] = msgspec.json.Decoder(HubMessage)
_encoder: Final = msgspec.json.Encoder()


@contextlib.contextmanager
def _refusing_bad_input() -> Iterator[None]:
    """Turn whatever msgspec raises on bytes from outside into the contract error it means."""
    try:
        yield
    except RecursionError as exc:
        raise SchemaViolationError(NESTED_TOO_DEEPLY) from exc
    except UnicodeDecodeError as exc:
        msg = f"not UTF-8: {exc.reason} at byte {exc.start}"
        raise MalformedJsonError(msg) from exc
    except msgspec.ValidationError as exc:
        raise SchemaViolationError(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise MalformedJsonError(str(exc)) from exc


def peek_type(data: bytes) -> str:
    """The ``type`` tag of a JSON message, checked for well-formedness and version only."""
    with _refusing_bad_input():
        peek = _peek_decoder.decode(data)
    if peek.schema_version > CONTRACT_VERSION or peek.schema_version < 1:
        msg = f"schema_version {peek.schema_version} is not supported (this hub speaks 1..{CONTRACT_VERSION})"
        raise UnsupportedVersionError(msg)
    return peek.type


def decode_command(data: bytes) -> ClinicCommand:
    """Decode what a clinic published, raising a :class:`ContractError` subclass on refusal."""
    tag = peek_type(data)
    if tag not in COMMAND_TAGS:
        msg = f"unknown message type {tag!r}" if tag else "the message has no 'type' field"
        raise UnknownTypeError(msg)
    with _refusing_bad_input():
        return _command_decoder.decode(data)


def decode_hub_message(data: bytes) -> HubMessage:
    """Decode an inbox delivery or a domain event."""
    try:
        return _hub_message_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise SchemaViolationError(str(exc)) from exc


def encode(message: msgspec.Struct) -> bytes:
    """Canonical JSON bytes for any contract."""
    return _encoder.encode(message)
