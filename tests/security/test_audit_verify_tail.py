"""Someone who holds the audit store rewrites it; ``hubctl audit verify`` says so without being asked to look.

Two histories that passed before: a chain whose checkpoint stream was recreated empty (every
entry is then "not signed yet", however old), and a log cut short together with its
checkpoints, re-signed with the hub's own key (only the checkpoint a clinic kept shows the
cut, and the verifier read it only when told ``--witness``). Now the first is UNSIGNED, and the
second fails against the clinic's kept checkpoint, found where the clinic keeps it. The
pure judgement of the log's end is checked on its own: truncated, unsigned, or in time.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from referral_hub.audit.checkpoints import load_key, make_checkpoint, new_key_seed
from referral_hub.audit.domain import chain
from referral_hub.cli.audit_verify import (
    SIGNING_GRACE,
    WITNESS_FILE,
    WITNESS_FILE_ENV,
    Tail,
    checkpoint_interval,
    tail_fault,
    witness_file,
)
from referral_hub.cli.commands import UsageError
from referral_hub.contracts.audit import AuditEntry
from referral_hub.runtime.broker.embedded import EmbeddedNats
from tests.audit_logs import AT, chained, store
from tests.helpers import hubctl

KEY = load_key(new_key_seed()).current
INTERVAL = timedelta(seconds=60)


def spread(entries: list[AuditEntry], step: timedelta) -> list[AuditEntry]:
    """``entries`` recorded ``step`` apart, re-chained: a history as long as a real hub's."""
    made: list[AuditEntry] = []
    for offset, entry in enumerate(entries):
        at = AT + step * offset
        unchained = msgspec.structs.replace(entry, recorded_at=at, occurred_at=at)
        made.append(chain(unchained, entry.index, made[-1].entry_hash if made else entries[0].prev_hash))
    return made


def test_a_log_that_ends_before_its_stream_does_is_truncated() -> None:
    [entry] = chained(1)

    fault = tail_fault(Tail(None, entry, stream_last_sequence=5), 1, INTERVAL)

    assert fault is not None
    assert fault.startswith("audit log TRUNCATED")


def test_entries_unsigned_for_longer_than_the_interval_are_unsigned() -> None:
    first, *_, newest = spread(chained(4), INTERVAL)

    fault = tail_fault(Tail(first, newest, stream_last_sequence=4), 4, INTERVAL)

    assert fault is not None
    assert fault.startswith("audit log UNSIGNED: entries 1 to 4")


def test_entries_unsigned_within_the_interval_and_its_grace_are_not_signed_yet() -> None:
    first, newest = spread(chained(2), INTERVAL + SIGNING_GRACE)

    assert tail_fault(Tail(first, newest, stream_last_sequence=2), 2, INTERVAL) is None


async def test_a_chain_whose_checkpoints_were_removed_fails_verification(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_AUDIT_VERIFIER_KEY", str(KEY.verifier))
    await store(nats_server.url, spread(chained(12), timedelta(minutes=5)), [])

    verified = await hubctl("audit", "verify", "--nats-url", nats_server.url)

    assert verified.status == 1, verified.stdout
    assert "audit log UNSIGNED: entries 1 to 12" in verified.stderr


async def test_a_log_cut_short_and_re_signed_fails_against_the_checkpoint_the_clinic_keeps(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    genuine = chained(6)
    kept = tmp_path / WITNESS_FILE
    kept.write_text(json.dumps({"note": make_checkpoint(genuine, None, KEY, AT).note}) + "\n")
    monkeypatch.setenv("HUB_AUDIT_VERIFIER_KEY", str(KEY.verifier))
    monkeypatch.setenv(WITNESS_FILE_ENV, str(kept))
    await store(nats_server.url, genuine[:3], [make_checkpoint(genuine[:3], None, KEY, AT)])

    verified = await hubctl("audit", "verify", "--nats-url", nats_server.url)

    assert verified.status == 1, verified.stdout
    assert "audit log REWRITTEN" in verified.stderr


def test_the_witness_file_a_clinic_keeps_in_its_credentials_directory_is_read_unless_declined(tmp_path: Path) -> None:
    (tmp_path / WITNESS_FILE).write_text("")

    found = witness_file(argparse.Namespace(creds_dir=tmp_path, witness=None, no_witness=False))
    declined = witness_file(argparse.Namespace(creds_dir=tmp_path, witness=None, no_witness=True))
    elsewhere = witness_file(argparse.Namespace(creds_dir=tmp_path / "none", witness=None, no_witness=False))

    assert (found, declined, elsewhere) == (tmp_path / WITNESS_FILE, None, None)


def test_a_checkpoint_interval_that_is_not_a_positive_number_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_AUDIT_CHECKPOINT_SECONDS", "a minute")

    with pytest.raises(UsageError, match="not a number of seconds"):
        checkpoint_interval(argparse.Namespace(checkpoint_seconds=None))
    with pytest.raises(UsageError, match="positive"):
        checkpoint_interval(argparse.Namespace(checkpoint_seconds=0.0))
