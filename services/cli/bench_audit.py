"""``hubctl bench audit``: append, verify and query rates beside raw nats-py, same server, same run.

- append: entries per second through the chain writer (durable, chained, one writer), with
  many appends in flight, as the audit consumers produce them; baseline: raw
  ``publish_async`` of the same bytes to a plain stream;
- verify: entries per second through ``read_chain`` (JetStream batched direct gets, no
  consumer, as operators read the log) and the full chain check; baseline, as before the
  reader changed: an ordered consumer reading the same stream and SHA-256 chaining the raw
  bytes. ``direct_read_hash_per_s`` is the reader alone (``runtime.jetstream.directget``, SHA-256
  chaining the raw bytes), so what decoding and checking cost is visible;
- query: p99 latency of filtered queries on the rebuildable index over ``--entries`` entries.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import msgspec
import nats
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from referral_hub.audit.adapters import ChainWriter, read_chain
from referral_hub.audit.domain import GENESIS_HASH, ChainVerifier, chain
from referral_hub.audit.index import AuditFilter, AuditIndex
from referral_hub.cli.bench import bench_server, percentile
from referral_hub.contracts.audit import AuditEntry
from referral_hub.runtime.broker.embedded import SYNC_ALWAYS
from referral_hub.runtime.jetstream import directget, streams, subjects
from referral_hub.runtime.jetstream.provision import provision
from referral_hub.runtime.jetstream.streams import MSG_ID_HEADER

IN_FLIGHT: Final = 512
VERIFY_BATCH: Final = 10_000
"""Messages per direct get when verifying, as ``hubctl audit verify`` asks."""
QUERIES: Final = 300
CLINICS: Final = tuple(f"clinic-{n:02d}" for n in range(50))
START: Final = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic(n: int, rng: random.Random) -> AuditEntry:
    """An unchained entry shaped like a real one, with ids drawn from realistic pools."""
    return AuditEntry(
        index=0,
        recorded_at=START + timedelta(seconds=n),
        occurred_at=START + timedelta(seconds=n),
        service="hub",
        action=rng.choice(("submit", "deliver", "event")),
        message_type=rng.choice(("referral.request", "referral.accept", "alert.raise", "plan.update")),
        subject="hub.event.bench",
        clinic=rng.choice(CLINICS),
        member=f"member-{rng.randrange(500)}",
        referral_id=f"ref-{rng.randrange(200_000)}",
        patient_ref=f"pt-{rng.randrange(100_000)}",
        source_message_id=f"m-{n}",
        source_stream="HUB_EVENTS",
        source_sequence=n,
        payload_sha256="0" * 64,
        prev_hash="",
    )


async def raw_publish_rate(js: JetStreamContext, payload: bytes, seconds: float) -> float:
    """Baseline: ``publish_async`` to a plain file stream, as fast as acks come back."""
    await js.add_stream(api.StreamConfig(name="BENCH_RAW", subjects=["bench.raw"], storage=api.StorageType.FILE))
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(IN_FLIGHT):
            await js.publish_async("bench.raw", payload)
        await js.publish_async_completed()
        count += IN_FLIGHT
    rate = count / (time.perf_counter() - started)
    await js.delete_stream("BENCH_RAW")
    return rate


async def append_rate(connection: Client, seconds: float, rng: random.Random) -> tuple[float, int]:
    """Entries per second through the chain writer with ``IN_FLIGHT`` appends outstanding."""
    writer = ChainWriter(connection)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        await asyncio.gather(
            *(writer.append(synthetic(count + i, rng), f"bench:{count + i}") for i in range(IN_FLIGHT))
        )
        count += IN_FLIGHT
    return count / (time.perf_counter() - started), count


async def fill(js: JetStreamContext, start: int, total: int, rng: random.Random) -> None:
    """Grow the chain to ``total`` entries fast: chained here, published pipelined (setup, not measured)."""
    last = await js.get_last_msg(streams.AUDIT, subjects.AUDIT_ENTRY)
    prev = msgspec.json.decode(last.data or b"", type=AuditEntry).entry_hash if last.data else GENESIS_HASH
    for index in range(start + 1, total + 1):
        entry = chain(synthetic(index, rng), index, prev)
        prev = entry.entry_hash
        await js.publish_async(
            subjects.AUDIT_ENTRY, msgspec.json.encode(entry), headers={MSG_ID_HEADER: f"fill:{index}"}
        )
        if index % 4000 == 0:
            await js.publish_async_completed()
    await js.publish_async_completed()


async def raw_read_hash_rate(js: JetStreamContext, total: int) -> float:
    """Baseline: an ordered consumer reading every stored entry and SHA-256 chaining the raw bytes."""
    subscription = await js.subscribe(subjects.AUDIT_ENTRY, ordered_consumer=True, pending_msgs_limit=100_000)
    digest, started = b"", time.perf_counter()
    for _ in range(total):
        raw = await subscription.next_msg(timeout=10)
        digest = hashlib.sha256(digest + raw.data).digest()
    elapsed = time.perf_counter() - started
    await subscription.unsubscribe()
    return total / elapsed


async def direct_read_hash_rate(js: JetStreamContext, total: int) -> float:
    """The reader alone: batched direct gets of every stored entry, SHA-256 chaining the raw bytes."""
    digest, read, started = b"", 0, time.perf_counter()
    async for _, _, data in directget.read_stream(js, streams.AUDIT, subject=subjects.AUDIT_ENTRY, batch=VERIFY_BATCH):
        digest = hashlib.sha256(digest + data).digest()
        read += 1
    elapsed = time.perf_counter() - started
    if read != total:
        msg = f"the direct-get reader read {read} of {total} entries"
        raise RuntimeError(msg)
    return total / elapsed


async def bench_audit(entries: int, seconds: float = 5.0, sync_interval: str = SYNC_ALWAYS) -> dict[str, float | str]:
    """The whole benchmark; returns the figures under their published names."""
    rng = random.Random(5)  # noqa: S311 - load shape, not security
    async with bench_server(sync_interval) as server:
        url, scratch = server.url, server.scratch
        connection = await nats.connect(url)
        js = connection.jetstream()
        await provision(js)
        sample = msgspec.json.encode(chain(synthetic(0, rng), 1, GENESIS_HASH))
        baseline_publish = await raw_publish_rate(js, sample, seconds)
        appended, count = await append_rate(connection, seconds, rng)
        await fill(js, count, max(entries, count), rng)
        total = max(entries, count)
        baseline_read = await raw_read_hash_rate(js, total)
        direct_read = await direct_read_hash_rate(js, total)
        started = time.perf_counter()
        verifier, fault = ChainVerifier(), None
        async for entry in read_chain(js, batch=VERIFY_BATCH):
            fault = fault or verifier.add(entry)
        verified = verifier.count
        verify_rate = verified / (time.perf_counter() - started)
        index = AuditIndex(Path(scratch) / "index.sqlite")
        await index.catch_up(js)
        await connection.drain()
    latencies = []
    for _ in range(QUERIES):
        where = rng.choice(
            (
                AuditFilter(referral_id=f"ref-{rng.randrange(200_000)}"),
                AuditFilter(patient_ref=f"pt-{rng.randrange(100_000)}"),
                AuditFilter(clinic=rng.choice(CLINICS), limit=100),
                AuditFilter(
                    member=f"member-{rng.randrange(500)}", since=START, until=START + timedelta(days=3), limit=100
                ),
            )
        )
        started = time.perf_counter()
        list(index.query(where))
        latencies.append((time.perf_counter() - started) * 1000)
    index.close()
    return {
        "entries": total,
        "append_per_s": round(appended, 1),
        "baseline_publish_per_s": round(baseline_publish, 1),
        "append_ratio": round(appended / baseline_publish, 3),
        "verify_per_s": round(verify_rate, 1),
        "baseline_read_hash_per_s": round(baseline_read, 1),
        "verify_ratio": round(verify_rate / baseline_read, 3),
        "direct_read_hash_per_s": round(direct_read, 1),
        "query_p99_ms": round(percentile(latencies, 0.99), 2),
        "verified": fault is None and verified == total,
        "sync_interval": sync_interval,
    }
