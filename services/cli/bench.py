"""``hubctl bench referrals``: the hub's lifecycle throughput beside raw nats-py, same run.

Everything runs against one fresh embedded nats-server with the hub's own settings
(file storage, ``sync_interval: always``), so the ratios compare like with like. The
services run as separate processes, as in a deployment; this process only drives load.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from referral_hub.cli.bench_sealing import Sealer, keyed_registry
from referral_hub.cli.up import ServiceProcess, start_service, stop_services, wait_ready
from referral_hub.client import ClinicClient
from referral_hub.contracts.referrals import (
    ReferralCommand,
)
from referral_hub.contracts.registry import Clinic, Registry
from referral_hub.demo.traffic import LIFECYCLE, demo_referral, lifecycle_command
from referral_hub.errors import HubError
from referral_hub.runtime.broker.embedded import SYNC_ALWAYS, EmbeddedCluster, EmbeddedNats, free_port, free_ports
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.jetstream import streams, subjects, topology
from referral_hub.runtime.jetstream.provision import provision
from referral_hub.runtime.jetstream.registry_cache import load_registry_file, store_registry
from referral_hub.runtime.messaging.admission import BURST_ENV, RATE_ENV

WORKERS: Final = 48
UNLIMITED_CLINIC_RATE: Final = {RATE_ENV: "1000000", BURST_ENV: "1000000"}
"""The per-clinic admission limit guards a shared hub from one clinic; five demo clinics
driving the whole hub flat out would hit it, and this benchmark measures the hub."""
STEP_TIMEOUT_SECONDS: Final = 30.0
SETTLE_TIMEOUT_SECONDS: Final = 60.0


@dataclass
class Baseline:
    """Raw nats-py rates on the same server."""

    js_publish_per_s: float
    kv_put_per_s: float
    kv_put_server_cpu_ms: float = 0.0
    """nats-server CPU per raw KV put, measured over the puts (0 when not asked for)."""


async def _rate(duration: float, operation: Callable[[int], Awaitable[object]]) -> float:
    count = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < duration:
        await operation(count)
        count += 1
    return count / elapsed


async def measure_baseline(
    connection: Client, duration: float, replicas: int = 1, server_cpu: Callable[[], float] | None = None
) -> Baseline:
    """Sequential JetStream publish-with-ack, and sequential KV put, each for ``duration``, on ``replicas`` copies.

    With ``server_cpu`` (the server's CPU seconds so far) it also measures what one KV put costs
    the server, the unit ``server_cpu_ratio`` divides a transition's cost by.
    """
    js = connection.jetstream()
    await js.add_stream(
        api.StreamConfig(
            name="BENCH_BASELINE", subjects=["bench.baseline"], storage=api.StorageType.FILE, num_replicas=replicas
        )
    )
    kv = await js.create_key_value(
        config=api.KeyValueConfig(bucket="bench-baseline", storage=api.StorageType.FILE, replicas=replicas)
    )
    payload = b"x" * 600
    publish = await _rate(duration, lambda _n: js.publish("bench.baseline", payload))
    cpu_before = server_cpu() if server_cpu else 0.0
    put = await _rate(duration, lambda n: kv.put(f"key-{n % 1000}", payload))
    put_cpu_ms = (server_cpu() - cpu_before) * 1000 / (put * duration) if server_cpu and put else 0.0
    await js.delete_stream("BENCH_BASELINE")
    await js.delete_key_value("bench-baseline")
    return Baseline(js_publish_per_s=publish, kv_put_per_s=put, kv_put_server_cpu_ms=put_cpu_ms)


class RejectedError(HubError):
    """The hub refused a benchmark message: the figures would not describe what was asked for."""


@dataclass
class Answers:
    """Resolves each sent command when the hub's answer reaches the actor's inbox.

    A rejection of a command resolves its waiter with :class:`RejectedError`, naming the
    code: a benchmark that only waited for the expected answer would wait out its timeout
    and report nothing about why (a per-clinic rate limit did exactly that once).
    """

    waiting: dict[str, tuple[str, asyncio.Future[float]]] = field(default_factory=dict)

    def expect(self, message_id: str, clinic: str) -> asyncio.Future[float]:
        """A future for the moment ``clinic`` receives the answer to ``message_id``."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[message_id] = (clinic, future)
        return future

    async def listen(self, nats_url: str) -> Client:
        """A connection that reads every inbox as stored, from now on, into :meth:`on_inbox`.

        A JetStream consumer, as clinics read their inboxes: a core subscription would also
        see a message the server then refuses (a lost numbering race), before it is stored.
        """
        listener = await nats.connect(server_urls(nats_url))
        await listener.jetstream().subscribe(
            subjects.CLINIC_IN_ALL,
            stream=streams.CLINIC_IN,
            cb=self.on_inbox,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
        )
        return listener

    async def on_inbox(self, raw: Msg) -> None:
        """Callback for every stored inbox message: resolve whoever waited for it."""
        answer = msgspec.json.decode(raw.data, type=_Answer)
        cause = answer.offending_message_id if answer.type == "rejection" else answer.causation_id
        entry = self.waiting.get(cause)
        if entry is None or entry[1].done():
            return
        if answer.type == "rejection":
            entry[1].set_exception(RejectedError(f"the hub rejected {cause}: {answer.code}: {answer.reason}"))
        elif entry[0] == raw.subject.split(".")[1]:
            entry[1].set_result(time.perf_counter())
        else:
            return
        del self.waiting[cause]


class _Answer(msgspec.Struct):
    type: str = ""
    causation_id: str = ""
    offending_message_id: str = ""
    code: str = ""
    reason: str = ""


@dataclass
class LoadResult:
    """What the load phase measured."""

    transitions: int
    seconds: float
    request_to_inbox_ms: list[float]


async def drive(  # noqa: PLR0913 - the load's shape, each with a default but the target
    nats_url: str,
    clinics: list[Clinic],
    duration: float,
    *,
    seed: int = 7,
    workers: int = WORKERS,
    sealer: Sealer | None = None,
) -> LoadResult:
    """Run whole lifecycles (request ... close) from ``workers`` concurrent clinics for ``duration``.

    With ``sealer``, every request carries sealed patient details the recipient side opens.
    """
    rng = random.Random(seed)  # noqa: S311 - load shape, not security
    clients = {clinic.id: await ClinicClient.connect(nats_url, clinic.id) for clinic in clinics}
    answers = Answers()
    listener = await answers.listen(nats_url)
    transitions = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def send(clinic: Clinic, command: ReferralCommand, answered_by: str) -> float:
        future = answers.expect(str(command.message_id), answered_by)
        started = time.perf_counter()
        await clients[clinic.id].send(command)
        return await asyncio.wait_for(future, STEP_TIMEOUT_SECONDS) - started

    async def worker() -> None:
        nonlocal transitions
        while time.perf_counter() < deadline:
            sender, recipient = rng.sample(clinics, 2)
            request = demo_referral(sender, recipient, rng)
            if sealer is not None:
                request = sealer.seal(request)
            latencies.append(await send(sender, request, recipient.id) * 1000)
            if sealer is not None:
                sealer.open(request)
            transitions += 1
            for step in LIFECYCLE:
                clinic, command = lifecycle_command(step, request, sender, recipient)
                await send(clinic, command, clinic.id)
                transitions += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    await listener.drain()
    for client in clients.values():
        await client.close()
    return LoadResult(transitions, elapsed, latencies)


def significant(value: float, digits: int = 3) -> float:
    """``value`` to ``digits`` significant figures: a ratio of 0.0375 keeps its third digit, as 3.75 does."""
    return float(f"{value:.{digits}g}")


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (inclusive method), 0 for no values."""
    if len(values) < 2:  # noqa: PLR2004 - quantiles needs two points
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


@dataclass(frozen=True)
class BenchServer:
    """A benchmark's own nats-server (or cluster), its scratch directory, and its processes' CPU time."""

    url: str
    scratch: Path
    pids: tuple[int, ...]

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server processes have used so far (Linux ``/proc``)."""
        return sum(process_cpu_seconds(pid) for pid in self.pids)


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds a live process has used, user plus system, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    user, system = int(fields[11]), int(fields[12])  # utime and stime, fields 14 and 15 of proc(5)
    return (user + system) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def bench_server(sync_interval: str, cluster: int = 1) -> AsyncIterator[BenchServer]:
    """A fresh embedded nats-server (or ``cluster`` of them) with the hub's settings, and a scratch directory."""
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as scratch:
        server: EmbeddedNats | EmbeddedCluster = (
            EmbeddedCluster(
                Path(scratch),
                size=cluster,
                port=free_ports(cluster),
                monitor_port=free_ports(cluster),
                cluster_port=free_ports(cluster),
                sync_interval=sync_interval,
            )
            if cluster > 1
            else EmbeddedNats(Path(scratch), port=free_port(), monitor_port=free_port(), sync_interval=sync_interval)
        )
        server.start()
        nodes = server.nodes if isinstance(server, EmbeddedCluster) else [server]
        try:
            yield BenchServer(server.url, Path(scratch), tuple(node.process.pid for node in nodes if node.process))
        finally:
            server.stop()


async def start_hub(
    url: str, scratch: Path, registry: Registry, env: dict[str, str] | None = None, *, stream_replicas: int = 1
) -> list[ServiceProcess]:
    """Provision, load ``registry`` and start the three services as processes, as in a deployment."""
    connection = await nats.connect(server_urls(url))
    await provision(connection.jetstream(), replicas=stream_replicas)
    await store_registry(connection.jetstream(), registry)
    await connection.drain()
    log_dir = scratch / "logs"
    log_dir.mkdir(exist_ok=True)
    services = [start_service(name, url, free_port(), log_dir, env) for name in ("referrals", "notifications", "audit")]
    try:
        await asyncio.gather(*(wait_ready(service) for service in services))
    except BaseException:
        stop_services(services)
        raise
    return services


@dataclass(frozen=True)
class ServerCost:
    """What the load cost the nats-server: the evidence for what this machine can reach at all."""

    settle_s: float
    """From the end of the load until every hub consumer had caught up (-1: it did not, in time)."""
    stored_messages: int
    cpu_seconds: float
    stored_by_stream: dict[str, int] = field(default_factory=dict)
    """What each stream (a KV bucket is a stream) stored during the load."""


async def settle(connection: Client) -> float:
    """Seconds until no hub consumer has anything pending or unacknowledged; -1 if not within a minute."""
    js = connection.jetstream()
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < SETTLE_TIMEOUT_SECONDS:
        behind = 0
        for spec in topology.CONSUMERS:
            info = await js.consumer_info(spec.stream, spec.durable)
            behind += (info.num_pending or 0) + (info.num_ack_pending or 0)
        if not behind:
            return elapsed
        await asyncio.sleep(0.1)
    return -1.0


async def stored_messages(connection: Client) -> int:
    """Messages in every stream and KV bucket of the server."""
    return sum((await stored_by_stream(connection)).values())


async def stored_by_stream(connection: Client) -> dict[str, int]:
    """Messages in each stream and KV bucket of the server, by stream name."""
    return {info.config.name or "": info.state.messages for info in await connection.jetstream().streams_info()}


async def bench_referrals(duration: float, sync_interval: str = SYNC_ALWAYS) -> dict[str, object]:
    """The whole benchmark; returns the figures under their published names."""
    async with bench_server(sync_interval) as server:
        connection = await nats.connect(server.url)
        baseline = await measure_baseline(connection, max(duration / 4, 2.0), server_cpu=server.cpu_seconds)
        registry, keys = keyed_registry(load_registry_file(), server.scratch / "sealing-keys")
        services = await start_hub(server.url, server.scratch, registry, UNLIMITED_CLINIC_RATE)
        try:
            stored_before, cpu_before = await stored_by_stream(connection), server.cpu_seconds()
            load = await drive(server.url, list(registry.clinics), duration)
            settle_s = await settle(connection)
            stored_after = await stored_by_stream(connection)
            by_stream = {name: n - stored_before.get(name, 0) for name, n in stored_after.items()}
            cost = ServerCost(
                settle_s,
                sum(by_stream.values()),
                server.cpu_seconds() - cpu_before,
                {k: v for k, v in by_stream.items() if v},
            )
            sealer = Sealer(keys, {clinic.id: clinic for clinic in registry.clinics})
            sealed = await drive(server.url, list(registry.clinics), duration, sealer=sealer)
            await settle(connection)
        finally:
            stop_services(services)
            await connection.drain()
    return figures(load, baseline, cost, sync_interval) | sealed_figures(sealed, sealer.crypto_ms)


def sealed_figures(load: LoadResult, crypto_ms: list[float]) -> dict[str, float | str]:
    """The phase with patient details: its throughput and latency, and what sealing and opening cost of it."""
    p50 = percentile(load.request_to_inbox_ms, 0.50)
    seal_open = percentile(crypto_ms, 0.50)
    return {
        "details_transitions_per_s": round(load.transitions / load.seconds, 1),
        "details_p50_ms": round(p50, 2),
        "details_p99_ms": round(percentile(load.request_to_inbox_ms, 0.99), 2),
        "seal_open_ms_p50": round(seal_open, 3),
        "seal_open_ms_p99": round(percentile(crypto_ms, 0.99), 3),
        "seal_open_share_of_transition": significant(seal_open / p50) if p50 else 0.0,
    }


def figures(load: LoadResult, baseline: Baseline, cost: ServerCost, sync_interval: str) -> dict[str, object]:
    """The published figures, with the server-side cost per transition and the ceiling it implies.

    ``server_ceiling_transitions_per_s`` is the rate at which nats-server alone would keep
    every core of this machine busy, at the CPU it spent per transition in this run: no
    hub on this machine can go faster, whatever the services do.
    """
    rate = load.transitions / load.seconds
    cpu_per_transition = cost.cpu_seconds / load.transitions
    ceiling = (os.cpu_count() or 1) / cpu_per_transition
    return {
        "transitions_per_s": round(rate, 1),
        "p50_ms": round(percentile(load.request_to_inbox_ms, 0.50), 2),
        "p99_ms": round(percentile(load.request_to_inbox_ms, 0.99), 2),
        "baseline_kv_put_per_s": round(baseline.kv_put_per_s, 1),
        "baseline_js_publish_per_s": round(baseline.js_publish_per_s, 1),
        "ratio_vs_kv_put": significant(rate / baseline.kv_put_per_s),
        "referrals": len(load.request_to_inbox_ms),
        "seconds": round(load.seconds, 2),
        "sync_interval": sync_interval,
        "settle_s": round(cost.settle_s, 2),
        "stored_messages_per_transition": round(cost.stored_messages / load.transitions, 2),
        "stored_per_transition": round(cost.stored_messages / load.transitions, 2),
        "stored_per_transition_by_stream": {
            name: round(n / load.transitions, 2) for name, n in sorted(cost.stored_by_stream.items())
        },
        "server_cpu_ms_per_transition": round(cpu_per_transition * 1000, 3),
        "baseline_kv_put_server_cpu_ms": round(baseline.kv_put_server_cpu_ms, 4),
        "server_cpu_ratio": significant(cpu_per_transition * 1000 / baseline.kv_put_server_cpu_ms)
        if baseline.kv_put_server_cpu_ms
        else 0.0,
        "cores": os.cpu_count() or 1,
        "server_ceiling_transitions_per_s": round(ceiling, 1),
        "ceiling_ratio_vs_kv_put": significant(ceiling / baseline.kv_put_per_s),
    }
