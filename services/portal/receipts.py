"""Audit receipts for a clinic's own inbox messages: the entry, its inclusion proof, the signed checkpoint.

The receipt is the one ``hubctl audit prove`` writes (``contracts.audit.AuditReceipt``),
made by the same functions (``audit.checkpoints.make_receipt``) from the same reads
(``audit.adapters``), so ``hubctl audit check-proof`` checks it offline against the hub's
pinned verifier key. The audit log lives in the ``AUDIT`` account, which only the
read-only ``auditor`` key reads (direct gets, nothing created on the server): the portal
opens that connection for one download and closes it. A clinic is served only the entry
recording the delivery of a message to its own inbox, which the caller has already found
in that inbox.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Final
from uuid import UUID

import nats
import nats.errors

from referral_hub.audit.adapters import ForeignMessage, read_chain, read_checkpoints
from referral_hub.audit.checkpoints import key_chain, make_receipt, receipt_fault, signature_fault
from referral_hub.audit.note import VerifierKey
from referral_hub.cli.audit_keys import NoVerifierKeyError, pinned_key
from referral_hub.client import silence_nats_error_log
from referral_hub.contracts.audit import AuditCheckpoint, AuditEntry, AuditReceipt
from referral_hub.portal.adapters import PortalError
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.jetstream import streams

RECEIPT_TIMEOUT: Final = 30.0
"""The longest one receipt's reads may take."""


class ReceiptUnavailableError(PortalError):
    """No receipt can be given now; the message says why in plain words."""


def portal_verifier_key() -> VerifierKey | None:
    """The hub's pinned audit verifier key, from where every ``hubctl audit`` command looks; ``None`` if unpinned.

    ``$HUB_AUDIT_VERIFIER_KEY``, ``$HUB_AUDIT_VERIFIER_KEY_FILE``, else ``audit-verifier.pub``
    in the credentials directory (``hubctl up`` writes it there).
    """
    creds_dir = os.environ.get(credentials.CREDS_DIR_ENV, "").strip()
    args = argparse.Namespace(verifier_key=None, creds_dir=Path(creds_dir) if creds_dir else None)
    try:
        return pinned_key(args)
    except NoVerifierKeyError:
        return None


def _delivery_entry(entries: list[AuditEntry], clinic: str, message_id: UUID) -> AuditEntry | None:
    """The entry recording the delivery of ``message_id`` to ``clinic``'s inbox."""
    wanted = str(message_id)
    return next(
        (
            entry
            for entry in entries
            if (entry.source_stream, entry.clinic, entry.source_message_id) == (streams.CLINIC_IN, clinic, wanted)
        ),
        None,
    )


def choose_receipt(
    entries: list[AuditEntry], checkpoints: list[AuditCheckpoint], clinic: str, message_id: UUID, pinned: VerifierKey
) -> AuditReceipt:
    """The receipt of the delivery of ``message_id`` to ``clinic``, against the first trusted checkpoint covering it.

    As ``hubctl audit prove`` judges: the checkpoints must be a key chain from the pinned
    key, and the checkpoint used must be signed by it. The receipt is checked as the
    offline checker will check it before it is handed out.
    """
    _, fault = key_chain(checkpoints, pinned)
    if fault is not None:
        msg = f"The audit log's checkpoints are not signed by the hub's pinned key ({fault.reason}); ask the operator."
        raise ReceiptUnavailableError(msg)
    entry = _delivery_entry(entries, clinic, message_id)
    covering = [c for c in checkpoints if entry is not None and c.tree_size >= entry.index]
    signed = [c for c in covering if not signature_fault(c, pinned)]
    if entry is None or not signed:
        msg = (
            "No signed audit checkpoint covers this message yet. The hub signs one every few minutes; "
            "download the receipt again later."
        )
        raise ReceiptUnavailableError(msg)
    receipt = make_receipt(entries, entry.index, signed[0])
    problem = receipt_fault(receipt, pinned)
    if problem:
        msg = f"The audit log gave a receipt that does not check ({problem}); ask the operator."
        raise ReceiptUnavailableError(msg)
    return receipt


def _foreign(_message: ForeignMessage) -> None:
    """A foreign message in the audit log is left out, as ``hubctl audit prove`` leaves it out."""


async def receipt_for(nats_url: str, clinic: str, message_id: UUID, pinned: VerifierKey) -> AuditReceipt:
    """Read the log as the ``auditor`` up to its newest checkpoint and cut the receipt."""
    try:
        connection = await nats.connect(
            server_urls(nats_url),
            name="portal-receipts",
            connect_timeout=5,
            max_reconnect_attempts=0,
            error_cb=silence_nats_error_log,
            **credentials.for_hub_user(permissions.AUDITOR).connect_options(),
        )
    except (nats.errors.Error, OSError) as exc:
        msg = "The audit log cannot be reached now; try again in a moment."
        raise ReceiptUnavailableError(msg) from exc
    try:
        js = connection.jetstream()
        checkpoints = await read_checkpoints(js, foreign=_foreign)
        size = checkpoints[-1].tree_size if checkpoints else 0
        entries = [entry async for entry in read_chain(js, count=size, foreign=_foreign)] if size else []
    except (nats.errors.Error, TimeoutError) as exc:
        msg = "The audit log cannot be read now; try again in a moment."
        raise ReceiptUnavailableError(msg) from exc
    finally:
        with contextlib.suppress(nats.errors.Error):
            await connection.close()
    return choose_receipt(entries, checkpoints, clinic, message_id, pinned)
