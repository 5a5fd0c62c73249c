"""``hubctl bench load``: a realistic mixed load from many clinics at an offered rate.

Open loop, as clinics behave: a message leaves every ``1/rate`` seconds whether or not the hub
has kept up, so a hub that falls behind shows it as latency and consumer lag instead of
quietly slowing the load down. The mix is patient stories: a referral request, then accept,
schedule, complete and close, with a contraindication alert to the care team after accept.
Each message is timed from send until the other party's inbox receives the hub's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import nats
import structlog
from nats.aio.client import Client

from referral_hub.cli import plots
from referral_hub.cli.bench import Answers, RejectedError, bench_server, measure_baseline, percentile, start_hub
from referral_hub.cli.up import stop_services, stream_replicas
from referral_hub.client import ClinicClient
from referral_hub.contracts.base import Message, Modality
from referral_hub.contracts.referrals import ReferralRequest
from referral_hub.contracts.registry import Clinic, Member, Registry, Role
from referral_hub.demo.traffic import LIFECYCLE, demo_alert, demo_referral, lifecycle_command
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.jetstream import topology

ANSWER_TIMEOUT_SECONDS: Final = 30.0
LAG_SAMPLE_SECONDS: Final = 1.0
P99_TARGET_MS: Final = 100.0
SUSTAINED_SHARE: Final = 0.95
"""A rate is sustained when at least this share of what was offered was answered in time."""
log = structlog.get_logger(__name__)
FLOWS: Final = ("referral.request", "referral.transition", "alert.raise")
QUANTILES: Final = (("p50", 0.5), ("p99", 0.99))
LAGGING: Final = (topology.REFERRALS_INTAKE, topology.NOTIFICATIONS_EVENTS, topology.AUDIT_CONSUMERS[0])


def load_registry(count: int) -> Registry:
    """``count`` synthetic clinics, the four modalities in turn, each with a lead and a therapist."""
    modalities = list(Modality)
    return Registry(
        clinics=tuple(
            Clinic(
                id=f"clinic-{n:03d}",
                name=f"Load clinic {n}",
                modalities=(modalities[n % len(modalities)],),
                members=(
                    Member(id=f"lead-{n:03d}", name=f"Lead {n}", role=Role.CLINICAL_LEAD),
                    Member(id=f"therapist-{n:03d}", name=f"Therapist {n}", role=Role.THERAPIST),
                ),
            )
            for n in range(count)
        )
    )


@dataclass
class Story:
    """One patient's referral, step by step; ``position`` is the next step to send."""

    request: ReferralRequest
    sender: Clinic
    recipient: Clinic
    position: int = 0

    def next_message(self) -> tuple[str, Clinic, Message, str]:
        """(flow, sending clinic, message, clinic whose inbox answers) of the next step."""
        steps = ("request", "accept", "alert", *LIFECYCLE[1:])
        step = steps[self.position]
        if step == "request":
            return "referral.request", self.sender, self.request, self.recipient.id
        if step == "alert":
            return "alert.raise", self.sender, demo_alert(self.sender, self.request.patient_ref), self.recipient.id
        actor, command = lifecycle_command(step, self.request, self.sender, self.recipient)
        other = self.sender if actor.id == self.recipient.id else self.recipient
        return "referral.transition", actor, command, other.id

    @property
    def finished(self) -> bool:
        """Whether every step was sent."""
        return self.position >= len(LIFECYCLE) + 2


@dataclass
class RateResult:
    """What one offered rate produced."""

    offered_per_s: float
    answered: int = 0
    late_or_lost: int = 0
    rejected: int = 0
    """Refused by the hub (the reason is logged): the stories are valid, so any is a finding."""
    seconds: float = 0.0
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {flow: [] for flow in FLOWS})
    lag: list[int] = field(default_factory=list)
    """Messages waiting or unacknowledged on the hub's busiest consumers, once a second."""

    @property
    def achieved_per_s(self) -> float:
        """Answered messages per second."""
        return self.answered / self.seconds if self.seconds else 0.0

    def quantile_ms(self, flow: str, fraction: float) -> float:
        """One flow's latency quantile, rounded to 0.1 ms."""
        return round(percentile(self.latencies_ms[flow], fraction), 1)

    @property
    def p99_ms(self) -> float:
        """The worst flow's p99 request-to-inbox latency."""
        return max((percentile(values, 0.99) for values in self.latencies_ms.values() if values), default=0.0)

    async def record(self, flow: str, answered: asyncio.Future[float], started: float) -> bool:
        """Wait for one answer and count it: answered (with its latency), late or lost, or rejected."""
        try:
            self.latencies_ms[flow].append((await asyncio.wait_for(answered, ANSWER_TIMEOUT_SECONDS) - started) * 1000)
        except TimeoutError:
            self.late_or_lost += 1
            return False
        except RejectedError as exc:
            self.rejected += 1
            log.warning("benchmark message rejected", reason=str(exc))
            return False
        self.answered += 1
        return True

    @property
    def sustained(self) -> bool:
        """Kept up: nothing refused, nearly everything answered, p99 under the target, no backlog left at the end."""
        return (
            self.rejected == 0
            and self.answered >= SUSTAINED_SHARE * self.offered_per_s * self.seconds
            and self.p99_ms < P99_TARGET_MS
            and (not self.lag or self.lag[-1] < self.offered_per_s)
        )


async def consumer_lag(connection: Client) -> int:
    """Pending plus unacknowledged messages over the consumers that fall behind first."""
    js = connection.jetstream()
    total = 0
    for spec in LAGGING:
        info = await js.consumer_info(spec.stream, spec.durable)
        total += (info.num_pending or 0) + (info.num_ack_pending or 0)
    return total


async def offer(url: str, clinics: list[Clinic], rate: float, duration: float, seed: int = 11) -> RateResult:
    """Offer ``rate`` messages per second for ``duration`` seconds and time every answer."""
    rng = random.Random(seed)  # noqa: S311 - load shape, not security
    result = RateResult(offered_per_s=rate)
    clients = {clinic.id: await ClinicClient.connect(url, clinic.id) for clinic in clinics}
    answers = Answers()
    listener = await answers.listen(url)
    ready: deque[Story] = deque()
    running: set[asyncio.Task[None]] = set()

    async def send(story: Story) -> None:
        flow, clinic, message, answered_by = story.next_message()
        answered = answers.expect(str(message.message_id), answered_by)
        started = time.perf_counter()
        await clients[clinic.id].send(message)
        if not await result.record(flow, answered, started):
            return
        story.position += 1
        if not story.finished:
            ready.append(story)

    async def sample_lag() -> None:
        while True:
            await asyncio.sleep(LAG_SAMPLE_SECONDS)
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                result.lag.append(await consumer_lag(listener))

    sampler = asyncio.create_task(sample_lag())
    started = time.perf_counter()
    sent = 0
    try:
        while (now := time.perf_counter()) - started < duration:
            await asyncio.sleep(max(0.0, started + sent / rate - now))
            if ready:
                story = ready.popleft()
            else:
                sender, recipient = rng.sample(clinics, 2)
                story = Story(demo_referral(sender, recipient, rng), sender, recipient)
            task = asyncio.create_task(send(story))
            running.add(task)
            task.add_done_callback(running.discard)
            sent += 1
        result.seconds = time.perf_counter() - started
        if running:
            await asyncio.wait(running)
    finally:
        sampler.cancel()
        await listener.drain()
        for client in clients.values():
            await client.close()
    return result


@dataclass
class LoadReport:
    """Every rate's result, with the raw baseline measured on the same server in the same run."""

    nats_nodes: int
    clinics: int
    sync_interval: str
    baseline_js_publish_per_s: float
    baseline_kv_put_per_s: float
    results: list[RateResult]

    @property
    def max_sustained_rate_per_s(self) -> float:
        """The highest offered rate the hub kept up with (0 if none)."""
        return max((r.offered_per_s for r in self.results if r.sustained), default=0.0)

    def figures(self) -> dict[str, object]:
        """The report as JSON-ready figures."""
        return {
            "nats_nodes": self.nats_nodes,
            "clinics": self.clinics,
            "sync_interval": self.sync_interval,
            "baseline_js_publish_per_s": round(self.baseline_js_publish_per_s, 1),
            "baseline_kv_put_per_s": round(self.baseline_kv_put_per_s, 1),
            "max_sustained_rate_per_s": self.max_sustained_rate_per_s,
            "rates": [
                {
                    "offered_per_s": r.offered_per_s,
                    "achieved_per_s": round(r.achieved_per_s, 1),
                    "late_or_lost": r.late_or_lost,
                    "rejected": r.rejected,
                    "sustained": r.sustained,
                    **{f"{flow}_{name}_ms": r.quantile_ms(flow, q) for flow in FLOWS for name, q in QUANTILES},
                    "lag_per_s": r.lag,
                }
                for r in self.results
            ],
        }

    def plot(self) -> plots.LatencyPlot:
        """p50 and p99 per flow against the offered rates, beside this run's raw baseline."""
        return plots.LatencyPlot(
            heading=(
                f"hubctl bench load: {self.clinics} clinics, {self.nats_nodes} NATS node(s), sync {self.sync_interval}"
            ),
            offered_per_s=tuple(r.offered_per_s for r in self.results),
            achieved_per_s=tuple(r.achieved_per_s for r in self.results),
            curves=tuple(
                plots.Curve(
                    label=flow,
                    p50_ms=tuple(r.quantile_ms(flow, 0.5) for r in self.results),
                    p99_ms=tuple(r.quantile_ms(flow, 0.99) for r in self.results),
                )
                for flow in FLOWS
            ),
            baseline_js_publish_per_s=self.baseline_js_publish_per_s,
            baseline_kv_put_per_s=self.baseline_kv_put_per_s,
        )


async def bench_load(
    clinics: int, rates: list[float], duration: float, sync_interval: str, cluster: int = 1
) -> LoadReport:
    """Every offered rate in turn against one hub; the highest sustained one, and the raw baseline."""
    registry = load_registry(clinics)
    async with bench_server(sync_interval, cluster) as server:
        url, scratch = server.url, server.scratch
        connection = await nats.connect(server_urls(url))
        replicas = stream_replicas(cluster)
        baseline = await measure_baseline(connection, 3.0, replicas)
        await connection.drain()
        services = await start_hub(url, scratch, registry, stream_replicas=replicas)
        try:
            results = [await offer(url, list(registry.clinics), rate, duration) for rate in rates]
        finally:
            stop_services(services)
    return LoadReport(cluster, clinics, sync_interval, baseline.js_publish_per_s, baseline.kv_put_per_s, results)
