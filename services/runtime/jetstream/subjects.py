"""Subject names. General namespace first, identifiers last, and never PHI in a subject.

Public, clinic-facing (v1):
  ``clinic.<clinic_id>.out.<type>``  what a clinic sends; the broker authenticates the clinic id.
  ``clinic.<clinic_id>.in.<type>``   what the hub delivers to a clinic's inbox.
  ``clinic.<clinic_id>.heartbeat``   the newest inbox event number, every few seconds (not stored).
  ``hub.inbox.<clinic_id>.read``     a request: the clinic's inbox messages after an event number.
Internal:
  ``hub.event.<type>``               domain events, after the hub accepted a command.
  ``hub.deadletter.<service>``       refused or unprocessable messages, kept whole.
  ``audit.entry``                    the hash-chained audit log (one subject: one chain).
"""

from __future__ import annotations

from typing import Final, NamedTuple

CLINIC_OUT_ALL: Final = "clinic.*.out.>"
CLINIC_IN_ALL: Final = "clinic.*.in.>"
EVENTS_ALL: Final = "hub.event.>"
DEADLETTER_ALL: Final = "hub.deadletter.>"
MAX_DELIVERIES_ADVISORIES: Final = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"
"""Where the server announces a message that exhausted its consumer's MaxDeliver."""
AUDIT_ENTRY: Final = "audit.entry"
AUDIT_CHECKPOINT: Final = "audit.checkpoint"

_CLINIC_PREFIX: Final = "clinic"
_MIN_OUT_TOKENS: Final = 4


class OutSubject(NamedTuple):
    """A parsed ``clinic.<clinic_id>.out.<type>`` subject."""

    clinic_id: str
    message_type: str


def clinic_out(clinic_id: str, message_type: str) -> str:
    """Where ``clinic_id`` publishes a message of ``message_type``."""
    return f"{_CLINIC_PREFIX}.{clinic_id}.out.{message_type}"


def clinic_in(clinic_id: str, message_type: str) -> str:
    """Where the hub delivers a message of ``message_type`` to ``clinic_id``."""
    return f"{_CLINIC_PREFIX}.{clinic_id}.in.{message_type}"


def clinic_inbox(clinic_id: str) -> str:
    """Every inbox subject of one clinic."""
    return f"{_CLINIC_PREFIX}.{clinic_id}.in.>"


def parse_clinic_out(subject: str) -> OutSubject | None:
    """Split an out subject into the authenticated clinic and the message type."""
    tokens = subject.split(".")
    if len(tokens) < _MIN_OUT_TOKENS or tokens[0] != _CLINIC_PREFIX or tokens[2] != "out":
        return None
    return OutSubject(clinic_id=tokens[1], message_type=".".join(tokens[3:]))


def clinic_heartbeat(clinic_id: str) -> str:
    """Where the hub announces a clinic's newest inbox event number (core NATS, not stored)."""
    return f"{_CLINIC_PREFIX}.{clinic_id}.heartbeat"


def inbox_read(clinic_id: str) -> str:
    """Where ``clinic_id`` asks for its inbox messages after an event number (request-reply, core NATS)."""
    return f"hub.inbox.{clinic_id}.read"


INBOX_READ_ALL: Final = "hub.inbox.*.read"


def parse_inbox_read(subject: str) -> str | None:
    """The clinic an inbox read request was sent for, or ``None`` for any other subject."""
    tokens = subject.split(".")
    if len(tokens) != 4 or tokens[:2] != ["hub", "inbox"] or tokens[3] != "read":  # noqa: PLR2004 - hub.inbox.<id>.read
        return None
    return tokens[2]


def domain_event(message_type: str) -> str:
    """The internal subject of a domain event."""
    return f"hub.event.{message_type}"


def deadletter(service: str) -> str:
    """Where ``service`` parks messages it refused or could not process."""
    return f"hub.deadletter.{service}"
