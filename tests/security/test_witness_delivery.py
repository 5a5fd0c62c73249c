"""Signed checkpoints reach every clinic's inbox on the secured hub, and the audit key can do no more.

The audit service lives in its own account. Witnessing gives it exactly one way into the hub
account's clinic inboxes: storing ``clinic.<id>.in.audit.checkpoint.witnessed``, numbered by
the inbox writer, with the two reads that numbering needs. A clinic reads the copies with its
own key like any other inbox message. A stolen audit key still cannot store any other
message type in an inbox, nor read the hub's other streams.
"""

from __future__ import annotations

from functools import partial

import pytest
import pytest_asyncio

from referral_hub.audit import app as audit_app
from referral_hub.audit.adapters import read_checkpoints
from referral_hub.audit.checkpoints import new_key_seed
from referral_hub.contracts.audit import AuditCheckpoint, CheckpointWitnessed
from referral_hub.runtime.broker import permissions
from referral_hub.runtime.jetstream import streams, subjects
from tests.helpers import eventually, referral_request

from .hostile import AttackedHub, describe_all, report, service_factories

pytestmark = pytest.mark.asyncio(loop_scope="module")

SENDER, RECIPIENT = "harbor-pt", "lotus-acu"
SERVICE_FACTORIES = {
    **service_factories(),
    "audit": partial(
        audit_app.create_app,
        signing_key=new_key_seed(),
        checkpoints=audit_app.CheckpointPolicy(entries=3, seconds=3600, poll_seconds=0.05),
        witness_inboxes=True,
    ),
}
"""The secured hub's services, with an audit service that signs and witnesses every few entries."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def first_checkpoint(secured_hub: AttackedHub) -> AuditCheckpoint:
    """Traffic enough for a signed checkpoint; the first one, read as the auditor."""
    client = await secured_hub.clinic(SENDER)
    for _ in range(2):
        await client.send_and_confirm(referral_request(SENDER, RECIPIENT))

    async def signed() -> list[AuditCheckpoint]:
        return await read_checkpoints(secured_hub.auditor.jetstream())

    return (await eventually(signed, timeout=30))[0]


async def witnessed_copies(hub: AttackedHub, clinic: str) -> list[CheckpointWitnessed]:
    """The checkpoints in ``clinic``'s inbox, read with the clinic's own key."""
    client = await hub.clinic(clinic)
    return [item.message async for item in client.inbox() if isinstance(item.message, CheckpointWitnessed)]


@pytest.mark.parametrize("clinic", ["harbor-pt", "lotus-acu", "summit-chiro", "kneadwell-massage"])
async def test_every_clinic_reads_the_signed_checkpoint_in_its_own_inbox(
    secured_hub: AttackedHub, first_checkpoint: AuditCheckpoint, clinic: str
) -> None:
    async def delivered() -> list[CheckpointWitnessed]:
        return await witnessed_copies(secured_hub, clinic)

    copies = await eventually(delivered, timeout=20)
    report(
        f"audit (secured): checkpoint 1 delivered to {clinic}'s inbox",
        "a numbered inbox message holding the signed note",
        f"{len(copies)} copies; first: checkpoint {copies[0].checkpoint_index}, event {copies[0].event_number}",
    )

    assert (copies[0].clinic, copies[0].checkpoint_index) == (clinic, 1)
    assert copies[0].note == first_checkpoint.note
    assert copies[0].event_number > 0


@pytest.mark.parametrize(
    "subject",
    [
        subjects.clinic_in(RECIPIENT, "referral.requested"),
        subjects.clinic_in(RECIPIENT, "audit.checkpoint.forged"),
        subjects.clinic_heartbeat(RECIPIENT),
        subjects.clinic_out(SENDER, "referral.request"),
        f"{permissions.HUB_API_PREFIX}.STREAM.MSG.GET.{streams.CLINIC_OUT}",
        f"{permissions.HUB_API_PREFIX}.STREAM.MSG.GET.{streams.HUB_EVENTS}",
        f"{permissions.HUB_API_PREFIX}.DIRECT.GET.{streams.CLINIC_IN}",
    ],
)
async def test_the_audit_key_stores_no_other_inbox_message_and_reads_no_other_stream(
    secured_hub: AttackedHub, first_checkpoint: AuditCheckpoint, subject: str
) -> None:
    assert first_checkpoint.checkpoint_index == 1
    hostile = await secured_hub.hostile_user("audit")

    outcomes = [await hostile.attempt(subject, b'{"seq": 1}')]
    report(f"audit key: publish {subject}", "refused", describe_all(outcomes))

    assert all(outcome.refused for outcome in outcomes), describe_all(outcomes)
