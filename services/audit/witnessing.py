"""Every signed checkpoint, delivered to every clinic's inbox as a numbered inbox message.

The clinics are the log's witnesses (``audit.witness``): a checkpoint a clinic holds cannot be
unsigned by whoever later rewrites the hub's store. The audit service delivers each one it
publishes as a :class:`~referral_hub.contracts.audit.CheckpointWitnessed` to
``clinic.<id>.in.audit.checkpoint.witnessed``, numbered like every other inbox message
(``runtime.messaging.inbox_writer``: gap-free per clinic, enforced by the server), to every clinic in the
registry. Delivery is best effort: a checkpoint that did not reach an inbox is logged, and
the next one covers everything it did (a consistency proof from any later checkpoint
covers the earlier tree).

From the audit account, under authorization, this uses exactly what ``runtime.broker.permissions``
grants the ``audit`` user for it (:data:`NEEDED_FROM_HUB`): storing that one message type in
any inbox, and single-message reads of the inbox heads and the registry.
"""

from __future__ import annotations

import asyncio
from typing import Final

import structlog
from nats.aio.client import Client

from referral_hub.audit.checkpoints import checkpoint_hash
from referral_hub.contracts.audit import AuditCheckpoint, CheckpointWitnessed
from referral_hub.contracts.base import message_type
from referral_hub.runtime.broker import credentials
from referral_hub.runtime.jetstream import directget, streams, subjects, topology
from referral_hub.runtime.messaging.ids import derived_id
from referral_hub.runtime.messaging.inbox_writer import InboxWriter
from referral_hub.runtime.messaging.outgoing import ToInbox
from referral_hub.runtime.messaging.refusals import HUB_SENDER

WITNESSED: Final = message_type(CheckpointWitnessed)
"""The inbox message type (and subject suffix) of a witnessed checkpoint."""
ACTOR: Final = "audit"
REGISTRY_STREAM: Final = f"KV_{topology.REGISTRY_KV}"
_REGISTRY_KEYS: Final = f"$KV.{topology.REGISTRY_KV}.clinic."
NEEDED_FROM_HUB: Final = (
    subjects.clinic_in("*", WITNESSED),
    f"STREAM.MSG.GET.{streams.CLINIC_IN}",
    f"STREAM.MSG.GET.{REGISTRY_STREAM}",
)
"""What the audit account must import from the hub account (the last two under ``$JS.HUB.API``)."""
log = structlog.get_logger(__name__)


def witnessed(checkpoint: AuditCheckpoint, clinic: str) -> CheckpointWitnessed:
    """The inbox copy of ``checkpoint`` for ``clinic``; its id is derived, so a repeat is de-duplicated."""
    seed = f"audit-checkpoint/{checkpoint_hash(checkpoint)}"
    return CheckpointWitnessed(
        message_id=derived_id(seed, f"witness/{clinic}"),
        occurred_at=checkpoint.created_at,
        sender_clinic=HUB_SENDER,
        actor=ACTOR,
        correlation_id=derived_id(seed, "correlation"),
        clinic=clinic,
        checkpoint_index=checkpoint.checkpoint_index,
        tree_size=checkpoint.tree_size,
        root_hash=checkpoint.merkle_root,
        note=checkpoint.note,
    )


class _HubInboxWriter(InboxWriter):
    """The inbox writer, reading inbox heads through the hub account's JetStream API (``prefix``)."""

    def __init__(self, connection: Client, prefix: str) -> None:
        super().__init__(connection)
        self._js = connection.jetstream(prefix=prefix)


async def registered_clinics(connection: Client, prefix: str) -> list[str]:
    """Every clinic in the registry bucket, read through its leader one key revision at a time."""
    latest: dict[str, bytes] = {}
    sequence = 1
    while True:
        stored = await directget.leader_get(
            connection, REGISTRY_STREAM, {"seq": sequence, "next_by_subj": f"{_REGISTRY_KEYS}>"}, prefix=prefix
        )
        if stored is None:
            break
        latest[stored.subject.removeprefix(_REGISTRY_KEYS)] = stored.data
        sequence = stored.sequence + 1
    return sorted(clinic for clinic, record in latest.items() if record)


class InboxWitnesses:
    """Delivers checkpoints to every registered clinic's inbox."""

    def __init__(self, connection: Client, prefix: str | None = None) -> None:
        """Reach the hub's streams through ``prefix`` (default: as the audit service does)."""
        self._nc = connection
        self._prefix = prefix or credentials.hub_api_prefix("audit")
        self._writer = _HubInboxWriter(connection, self._prefix)

    async def deliver(self, checkpoint: AuditCheckpoint) -> list[str]:
        """Deliver ``checkpoint`` to every clinic; returns the clinics that got it."""
        clinics = await registered_clinics(self._nc, self._prefix)
        numbers = await asyncio.gather(
            *(
                self._writer.deliver(
                    ToInbox(
                        clinic,
                        WITNESSED,
                        witnessed(checkpoint, clinic),
                        f"audit-checkpoint/{checkpoint_hash(checkpoint)}/witness/{clinic}",
                    )
                )
                for clinic in clinics
            ),
            return_exceptions=True,
        )
        delivered = [clinic for clinic, number in zip(clinics, numbers, strict=True) if isinstance(number, int)]
        failed = [clinic for clinic, number in zip(clinics, numbers, strict=True) if isinstance(number, BaseException)]
        if failed:
            log.warning(
                "a signed checkpoint did not reach some clinic inboxes; the next checkpoint covers it",
                checkpoint=checkpoint.checkpoint_index,
                clinics=failed,
            )
        return delivered
