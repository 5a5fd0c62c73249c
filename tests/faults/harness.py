"""Fault injection on real processes: the hub's services as child processes, steady clinic traffic, and a checker.

The checker follows Jepsen's queue checker: every command a clinic had acknowledged by
JetStream is accounted for in what every party received, in the referral and care-team
state, in the pages and in the audit log. Each expected delivery is ok, lost or
duplicated; the suite demands 0 lost and 0 duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import nats
import nats.errors
from nats.aio.client import Client

from referral_hub.audit.domain import verify
from referral_hub.cli.up import ServiceProcess, start_service, wait_ready
from referral_hub.client import ClinicClient, HubFullError
from referral_hub.contracts.alerts import AlertRaised
from referral_hub.contracts.base import Message, Modality
from referral_hub.contracts.plans import PlanUpdated
from referral_hub.contracts.referrals import ReferralRequested, ReferralState, ReferralTransitioned
from referral_hub.contracts.rejections import Rejection
from referral_hub.notifications.page_rules import page_id_for
from referral_hub.referrals.adapters import careteam_store, referral_store
from referral_hub.referrals.careteam import team_key
from referral_hub.runtime.broker import credentials
from referral_hub.runtime.broker.embedded import EmbeddedCluster, EmbeddedNats, free_port
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.jetstream import streams, topology
from referral_hub.runtime.jetstream.kvstore import KvStore
from tests.helpers import alert_raise, audit_entries, referral_request, wait_idle
from tests.lifecycle_model import MEMBERS, command
from tests.test_lifecycle import plan

SERVICES = ("referrals", "notifications", "audit")
SENDERS = ("harbor-pt", "summit-chiro", "kneadwell-massage")
RECIPIENT = "lotus-acu"
LIFECYCLE = ("accept", "schedule", "complete", "close")
RESEND_PAUSE_SECONDS = 0.2
SETTLE_SECONDS = 180.0


@dataclass
class HubProcesses:
    """A nats-server (or a cluster) and the services as separate processes, each killable with SIGKILL.

    Processes are named by instance: ``referrals``, and ``referrals-2`` for a second replica
    sharing its durable consumers.
    """

    server: EmbeddedNats | EmbeddedCluster
    log_dir: Path
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    async def start(self, service: str, copy: int = 0) -> float:
        """Start replica ``copy`` of ``service`` and wait until it is ready; returns the seconds that took."""
        began = time.monotonic()
        instance = service if copy == 0 else f"{service}-{copy + 1}"
        self.processes[instance] = start_service(service, self.server.url, free_port(), self.log_dir, copy=copy)
        await wait_ready(self.processes[instance])
        return time.monotonic() - began

    def kill(self, instance: str) -> None:
        """``kill -9``: no drain, no goodbye."""
        process = self.processes[instance].process
        process.kill()
        process.wait()

    def stop_all(self) -> None:
        for service in self.processes.values():
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait()


@dataclass
class Flow:
    """One patient's story: a referral through its whole lifecycle, a plan update and an alert."""

    sender: str
    patient_ref: str
    referral_id: UUID = field(default_factory=lambda: UUID(int=0))
    alert_id: UUID = field(default_factory=lambda: UUID(int=0))


@dataclass
class Ledger:
    """What the clinics had acknowledged by JetStream."""

    flows: list[Flow] = field(default_factory=list)
    acknowledged: int = 0
    resends: int = 0
    refused_full: list[str] = field(default_factory=list)
    """The hub's back-pressure answers (``HubFullError``), each sent again later."""
    requests_only: list[Flow] = field(default_factory=list)
    """Referrals only requested (a flood): each request must reach both parties once."""
    applied_at: list[float] = field(default_factory=list)
    """When each lifecycle step was seen applied (monotonic seconds): how long traffic stalled."""

    def recovered_after(self, fault_at: float) -> float:
        """Seconds from ``fault_at`` until a lifecycle step was next applied: the stall the clinics saw."""
        return min((t for t in self.applied_at if t > fault_at), default=float("inf")) - fault_at


async def connect_clinic(url: str, clinic: str) -> ClinicClient:
    """A clinic connection that keeps reconnecting, as a real integration would through an outage."""
    connection = await nats.connect(
        server_urls(url),
        name=f"clinic-{clinic}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        **credentials.for_clinic(clinic).connect_options(),
    )
    return ClinicClient(connection, clinic)


async def send_until_stored(client: ClinicClient, message: Message, ledger: Ledger) -> None:
    """Publish until JetStream acknowledges; the same ``Nats-Msg-Id`` makes every retry safe."""
    while True:
        try:
            await client.send(message)
        except HubFullError as full:
            ledger.refused_full.append(str(full))
            await asyncio.sleep(RESEND_PAUSE_SECONDS)
            continue
        except (nats.errors.Error, OSError, TimeoutError):
            ledger.resends += 1
            await asyncio.sleep(RESEND_PAUSE_SECONDS)
            continue
        ledger.acknowledged += 1
        return


async def until(probe: Callable[[], Awaitable[bool]], seconds: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not await probe():
        if time.monotonic() > deadline:
            msg = f"not reached within {seconds:.0f}s"
            raise AssertionError(msg)
        await asyncio.sleep(0.1)


async def flood_requests(url: str, ledger: Ledger, relieved: asyncio.Event) -> None:
    """Referral requests back to back until ``relieved``: each refused one is kept and sent again."""
    client = await connect_clinic(url, SENDERS[0])
    try:
        while not relieved.is_set():
            flow = Flow(SENDERS[0], f"pt-flood-{len(ledger.requests_only):05d}")
            request = referral_request(flow.sender, RECIPIENT, patient_ref=flow.patient_ref, actor=MEMBERS[flow.sender])
            flow.referral_id = request.referral_id
            ledger.requests_only.append(flow)
            await send_until_stored(client, request, ledger)
    finally:
        await client.close()


@dataclass(frozen=True)
class StateView:
    """The referral and care-team buckets, opened once per load: how a clinic sees what was applied.

    Opened before any fault: opening a bucket is an API request, which a node being killed
    can time out (it did, when each story opened its own).
    """

    referrals: KvStore
    teams: KvStore

    @classmethod
    async def open(cls, admin: Client) -> StateView:
        return cls(await referral_store(admin.jetstream()), await careteam_store(admin.jetstream()))


async def run_flow(clients: dict[str, ClinicClient], state: StateView, flow: Flow, ledger: Ledger) -> None:
    """Request and accept; once the care team exists, a plan and an alert; then the rest of the lifecycle.

    Each lifecycle step is sent once the previous one is applied, as a clinic acting on
    its inbox would. A command pipelined behind one that a crashing process held can
    overtake it (README, Durability): that is a documented limitation, not what this checks.
    """
    sender, recipient = clients[flow.sender], clients[RECIPIENT]
    request = referral_request(
        flow.sender, RECIPIENT, patient_ref=flow.patient_ref, actor=MEMBERS[flow.sender], modality=Modality.ACUPUNCTURE
    )
    flow.referral_id = request.referral_id

    async def step_applied(message_id: UUID) -> None:
        """A clinic acts on what it has seen happen: the next step waits for this one."""

        async def applied() -> bool:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                stored = await state.referrals.load(str(request.referral_id), fresh=True)
                return stored is not None and any(item.message_id == message_id for item in stored[0].history)
            return False

        await until(applied)
        ledger.applied_at.append(time.monotonic())

    await send_until_stored(sender, request, ledger)
    await step_applied(request.message_id)
    accept = command("accept", RECIPIENT, request.referral_id, flow.patient_ref)
    await send_until_stored(recipient, accept, ledger)
    await step_applied(accept.message_id)

    async def team_formed() -> bool:
        with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
            stored = await state.teams.load(team_key(flow.patient_ref), fresh=True)
            return stored is not None and RECIPIENT in stored[0].active_clinics()
        return False

    await until(team_formed)
    await send_until_stored(recipient, plan(RECIPIENT, 1, patient_ref=flow.patient_ref), ledger)
    alert = alert_raise(flow.sender, flow.patient_ref)
    flow.alert_id = alert.alert_id
    await send_until_stored(sender, alert, ledger)
    for step in LIFECYCLE[1:]:
        party = flow.sender if step == "close" else RECIPIENT
        next_step = command(step, party, request.referral_id, flow.patient_ref)
        await send_until_stored(clients[party], next_step, ledger)
        await step_applied(next_step.message_id)


async def drive(
    url: str, admin: Client, scenario: str, stop: asyncio.Event, concurrency: int = 6, ledger: Ledger | None = None
) -> Ledger:
    """Patient stories from three referring clinics, ``concurrency`` at a time, until ``stop`` is set.

    Pass ``ledger`` to watch it while the load runs.
    """
    clients = {clinic: await connect_clinic(url, clinic) for clinic in (*SENDERS, RECIPIENT)}
    state = await StateView.open(admin)
    ledger = ledger if ledger is not None else Ledger()

    async def lane(lane_index: int) -> None:
        story = 0
        while not stop.is_set():
            flow = Flow(SENDERS[lane_index % len(SENDERS)], f"pt-{scenario}-{lane_index}-{story:04d}")
            ledger.flows.append(flow)
            await run_flow(clients, state, flow, ledger)
            story += 1

    try:
        await asyncio.gather(*(lane(index) for index in range(concurrency)))
    finally:
        for client in clients.values():
            with contextlib.suppress(Exception):
                await client.close()
    return ledger


@dataclass
class Verdict:
    """What the checker found."""

    expected: int = 0
    delivered: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def miss(self, what: str) -> None:
        self.lost.append(what)

    def expect(self, found: int, what: str) -> None:
        self.expected += 1
        if found == 0:
            self.lost.append(what)
        else:
            self.delivered += 1
            if found > 1:
                self.duplicated.append(f"{what} x{found}")


async def inbox_of(url: str, clinic: str) -> list:
    client = await ClinicClient.connect(url, clinic)
    try:
        return [item async for item in client.inbox()]
    finally:
        await client.close()


def _transitions(items: list, referral_id: UUID) -> list[str]:
    return [
        item.message.transition
        for item in items
        if isinstance(item.message, ReferralTransitioned) and item.message.referral_id == referral_id
    ]


async def check(url: str, admin: Client, ledger: Ledger) -> Verdict:
    """Compare what was acknowledged with what every party received, the state, the pages and the audit log."""
    await wait_idle(admin, timeout=SETTLE_SECONDS)
    verdict = Verdict()
    inboxes = {clinic: await inbox_of(url, clinic) for clinic in (*SENDERS, RECIPIENT)}
    for clinic, items in inboxes.items():
        _check_inbox(clinic, items, verdict)
    referrals = await referral_store(admin.jetstream())
    pages = await admin.jetstream().key_value(topology.PAGES_KV)
    for flow in ledger.flows:
        _check_requested(inboxes, flow, verdict)
        for party in (flow.sender, RECIPIENT):
            items = inboxes[party]
            transitions = _transitions(items, flow.referral_id)
            for step in LIFECYCLE:
                verdict.expect(transitions.count(step), f"{party}: {step} {flow.patient_ref}")
            if [step for step in transitions if step in LIFECYCLE] != [s for s in LIFECYCLE if s in transitions]:
                verdict.problems.append(f"{party}: {flow.patient_ref} transitions out of order: {transitions}")
            alerts = [m for m in (i.message for i in items) if isinstance(m, AlertRaised)]
            verdict.expect(sum(m.alert_id == flow.alert_id for m in alerts), f"{party}: alert {flow.patient_ref}")
        plans = [m for m in (i.message for i in inboxes[flow.sender]) if isinstance(m, PlanUpdated)]
        verdict.expect(sum(m.patient_ref == flow.patient_ref for m in plans), f"{flow.sender}: plan {flow.patient_ref}")
        stored = await referrals.load(str(flow.referral_id), fresh=True)
        if stored is None or stored[0].state is not ReferralState.CLOSED:
            verdict.miss(f"referral {flow.patient_ref} not closed")
        try:
            await pages.get(str(page_id_for(f"alert:{flow.alert_id}:{RECIPIENT}")))
        except nats.js.errors.KeyNotFoundError:
            verdict.miss(f"page for alert {flow.patient_ref}")
    for flow in ledger.requests_only:
        _check_requested(inboxes, flow, verdict)
    await _check_audit(admin, verdict)
    return verdict


def _check_inbox(clinic: str, items: list, verdict: Verdict) -> None:
    """Gap-free numbers, no message twice, no rejection."""
    numbers = [item.event_number for item in items]
    if numbers != list(range(1, len(items) + 1)):
        verdict.problems.append(f"{clinic}: inbox numbers are not 1..{len(items)}")
    repeated = [mid for mid, n in Counter(item.message.message_id for item in items).items() if n > 1]
    verdict.duplicated.extend(f"{clinic}: message {mid} delivered twice" for mid in repeated)
    verdict.problems.extend(
        f"{clinic}: rejection {item.message.code}" for item in items if isinstance(item.message, Rejection)
    )


def _check_requested(inboxes: dict[str, list], flow: Flow, verdict: Verdict) -> None:
    """The referral request reached both parties, once."""
    for party in (flow.sender, RECIPIENT):
        requested = [m for m in (i.message for i in inboxes[party]) if isinstance(m, ReferralRequested)]
        verdict.expect(
            sum(m.referral_id == flow.referral_id for m in requested), f"{party}: request {flow.patient_ref}"
        )


async def _check_audit(admin: Client, verdict: Verdict) -> None:
    entries = await audit_entries(admin)
    count, fault = verify(entries)
    if fault is not None:
        verdict.problems.append(f"audit chain broken at {fault.index}: {fault.reason}")
    if [entry.index for entry in entries] != list(range(1, count + 1)):
        verdict.problems.append("audit indexes have a gap")
    sources = Counter((entry.source_stream, entry.source_sequence) for entry in entries)
    verdict.duplicated.extend(f"audit: {source} recorded {n} times" for source, n in sources.items() if n > 1)
    for stream in (streams.CLINIC_OUT, streams.CLINIC_IN, streams.HUB_EVENTS, streams.HUB_DEADLETTER):
        stored = (await admin.jetstream().stream_info(stream)).state.messages
        audited = sum(1 for source_stream, _ in sources if source_stream == stream)
        if audited != stored:
            verdict.lost.append(f"audit: {stored - audited} of {stored} {stream} messages unrecorded")


@dataclass(frozen=True)
class Row:
    scenario: str
    sent: int
    effects: int
    lost: int
    duplicated: int
    recover_seconds: float
    out_of_order: int = 0


SUMMARY: list[Row] = []


def summary_table() -> str:
    """One line per scenario: what was sent, what took effect, lost and duplicated."""
    lines = [
        f"{'scenario':<44} {'sent':>6} {'effects':>8} {'lost':>5} {'dup':>5} {'order':>5} {'recover s':>10}",
        *(
            f"{row.scenario:<44} {row.sent:>6} {row.effects:>8} {row.lost:>5} {row.duplicated:>5} "
            f"{row.out_of_order:>5} {row.recover_seconds:>10.1f}"
            for row in SUMMARY
        ),
    ]
    return "\n".join(lines)


CALM_SECONDS = 2.0
"""Load after the last fault, so recovery happens under traffic too."""


@contextlib.asynccontextmanager
async def load_during(hub: HubProcesses, admin: Client, scenario: str) -> AsyncIterator[Ledger]:
    """Clinic traffic for the body of the ``async with`` (the faults), and a little after; yields its ledger."""
    stop = asyncio.Event()
    ledger = Ledger()
    load = asyncio.create_task(drive(hub.server.url, admin, scenario, stop, ledger=ledger))
    try:
        yield ledger
        await asyncio.sleep(CALM_SECONDS)
    finally:
        stop.set()
        await load


def record(scenario: str, ledger: Ledger, verdict: Verdict, recover_seconds: float) -> None:
    """One row of the summary table."""
    SUMMARY.append(
        Row(
            scenario,
            ledger.acknowledged,
            verdict.delivered,
            len(verdict.lost),
            len(verdict.duplicated),
            recover_seconds,
            sum("out of order" in problem for problem in verdict.problems),
        )
    )


def assert_exactly_once(verdict: Verdict) -> None:
    """0 lost, 0 duplicated, no other problem, and something was checked at all."""
    assert verdict.lost == [], "\n".join(verdict.lost)
    assert verdict.duplicated == [], "\n".join(verdict.duplicated)
    assert verdict.problems == [], "\n".join(verdict.problems)
    assert verdict.delivered == verdict.expected > 0
