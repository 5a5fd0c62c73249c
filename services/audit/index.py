"""A rebuildable query index of the audit log, in SQLite.

The AUDIT stream stays the only truth: the index is derived from it, caught up
incrementally from the last entry it holds, and can be deleted and rebuilt at any time
(``hubctl audit query --rebuild``). It makes filtered queries fast on millions of entries
without adding a database server. Each row keeps the entry's stored JSON, so a query answer
is the entry itself, not a copy of some of its fields.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec
from nats.js import JetStreamContext

from referral_hub.audit.adapters import ForeignLog, OnForeign, read_chain
from referral_hub.contracts.audit import AuditEntry
from referral_hub.runtime.jetstream import streams

BATCH: Final = 5000
FILE_MODE: Final = 0o600
SCHEMA_VERSION: Final = 2
"""Bumped when the table changes; an index of another version is dropped and rebuilt from the stream."""
FULL_ID_LENGTH: Final = 36
COLUMNS: Final = ("referral_id", "patient_ref", "clinic", "member", "message_type")
_decoder: Final = msgspec.json.Decoder(AuditEntry)
_SCHEMA: Final = (
    """
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    occurred_at TEXT NOT NULL,
    referral_id TEXT NOT NULL,
    patient_ref TEXT NOT NULL,
    clinic TEXT NOT NULL,
    member TEXT NOT NULL,
    message_type TEXT NOT NULL,
    entry BLOB NOT NULL,
    source_message_id TEXT NOT NULL DEFAULT '',
    refusal_code TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS refusals ON entries (source_message_id) WHERE refusal_code != '';
"""
    + "".join(f"CREATE INDEX IF NOT EXISTS by_{column} ON entries ({column}, occurred_at);\n" for column in COLUMNS)
    + "CREATE INDEX IF NOT EXISTS by_time ON entries (occurred_at);\n"
)


def _utc(moment: datetime) -> str:
    """One textual form for every instant, so SQLite orders them by time."""
    return moment.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class AuditFilter:
    """What ``hubctl audit query`` and ``export`` select; empty fields match everything."""

    referral_id: str = ""
    patient_ref: str = ""
    clinic: str = ""
    member: str = ""
    message_type: str = ""
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 1000


class AuditIndex:
    """The SQLite file at ``path``; created on first use."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the index, readable and writable by its owner only.

        It holds every entry it indexes (patient references, clinics, members): the file is
        made mode 0600 before SQLite opens it, and an older, wider one is narrowed; SQLite gives
        its journal the database file's mode.
        """
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE))
        path.chmod(FILE_MODE)
        self._db = sqlite3.connect(path)
        if self._db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            self._db.executescript(f"DROP TABLE IF EXISTS entries; PRAGMA user_version = {SCHEMA_VERSION};")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Release the file."""
        self._db.close()

    def last_index(self) -> int:
        """The newest entry the index holds; 0 when empty."""
        row = self._db.execute("SELECT COALESCE(MAX(idx), 0) FROM entries").fetchone()
        return int(row[0])

    def add(self, entries: Iterable[AuditEntry]) -> int:
        """Index ``entries`` (already verified or not: the index is never the evidence)."""
        rows = [
            (
                e.index,
                _utc(e.occurred_at),
                e.referral_id,
                e.patient_ref,
                e.clinic,
                e.member,
                e.message_type,
                msgspec.json.encode(e),
                e.source_message_id,
                e.rejection_code if e.source_stream == streams.HUB_DEADLETTER else "",
            )
            for e in entries
        ]
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    async def catch_up(self, js: JetStreamContext, foreign: OnForeign | None = None) -> int:
        """Index every entry appended since the last one held; returns how many were added.

        Reads by direct gets (no consumer). A foreign message (not an audit entry) is not
        indexed; it goes to ``foreign``, or is logged and counted (:class:`ForeignLog`).
        """
        added = 0
        batch: list[AuditEntry] = []
        skip = foreign or ForeignLog()
        async for entry in read_chain(js, batch=BATCH, start=self.last_index() + 1, foreign=skip):
            batch.append(entry)
            if len(batch) >= BATCH:
                added += self.add(batch)
                batch = []
        return added + self.add(batch)

    def refusals(self, message_ids: Iterable[str]) -> dict[str, str]:
        """The refusal code of each of ``message_ids`` the hub refused (its dead letter says so)."""
        wanted = sorted(set(message_ids))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT source_message_id, refusal_code FROM entries WHERE refusal_code != '' AND source_message_id IN ({marks})"  # noqa: S608, E501 - only placeholders are interpolated
            found.update(self._db.execute(sql, chunk).fetchall())
        return found

    def query(self, where: AuditFilter) -> Iterator[AuditEntry]:
        """Matching entries, oldest first, at most ``where.limit``."""
        clauses: list[str] = []
        params: list[str] = []
        for column in COLUMNS:
            value = getattr(where, column)
            if column == "referral_id" and 0 < len(value) < FULL_ID_LENGTH:
                # A short id, as the hub prints them: every referral whose id starts so.
                clauses.append("referral_id >= ? AND referral_id < ?")
                params.extend((value, value[:-1] + chr(ord(value[-1]) + 1)))
            elif value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if where.since is not None:
            clauses.append("occurred_at >= ?")
            params.append(_utc(where.since))
        if where.until is not None:
            clauses.append("occurred_at < ?")
            params.append(_utc(where.until))
        condition = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT entry FROM entries {condition} ORDER BY idx LIMIT ?"  # noqa: S608 - column names are ours; values are bound
        for (blob,) in self._db.execute(sql, [*params, where.limit]):
            yield _decoder.decode(blob)
