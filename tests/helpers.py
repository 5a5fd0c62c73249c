"""Readers of the hub's streams, for assertions about what was stored."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from dataclasses import dataclass, field

import msgspec
import nats
import nats.errors
from nats.aio.client import Client
from prometheus_client import REGISTRY

from referral_hub.audit.adapters import read_chain
from referral_hub.client import ClinicClient, new_id, utc_now
from referral_hub.contracts.alerts import AlertRaise, Severity, TriggerKind
from referral_hub.contracts.audit import AuditEntry
from referral_hub.contracts.base import Modality
from referral_hub.contracts.codec import encode
from referral_hub.contracts.referrals import ReferralCommand, ReferralRequest
from referral_hub.contracts.rejections import DeadLetter
from referral_hub.referrals.adapters import careteam_store, referral_store
from referral_hub.referrals.domain import SlaPolicy
from referral_hub.referrals.handlers import IntakeHandler
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.embedded import EmbeddedCluster, EmbeddedNats, free_port, free_ports
from referral_hub.runtime.broker.server_config import generate
from referral_hub.runtime.jetstream import streams, topology
from referral_hub.runtime.jetstream.registry_cache import RegistryCache, load_registry_file
from referral_hub.runtime.messaging.incoming import Incoming

from .lifecycle_model import MEMBERS


async def stream_messages(connection: Client, stream: str, subject: str = ">") -> list[tuple[str, bytes]]:
    js = connection.jetstream()
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return []
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(stream, seq)
        if subject in {">", message.subject}:
            found.append((message.subject or "", message.data or b""))
    return found


async def dead_letters(connection: Client) -> list[DeadLetter]:
    return [
        msgspec.json.decode(data, type=DeadLetter)
        for _, data in await stream_messages(connection, streams.HUB_DEADLETTER)
    ]


async def as_auditor(connection: Client) -> Client:
    """A connection to the same server with the ``auditor`` key: the audit log has its own account."""
    url = connection.connected_url
    assert url is not None
    return await nats.connect(
        f"{url.scheme}://{url.hostname}:{url.port}", **credentials.for_hub_user(permissions.AUDITOR).connect_options()
    )


async def audit_entries(connection: Client) -> list[AuditEntry]:
    """The audit chain, read as the operators read it (``auditor``), for a server ``connection`` reaches."""
    auditor = await as_auditor(connection)
    try:
        return [entry async for entry in read_chain(auditor.jetstream())]
    finally:
        await auditor.close()


async def eventually(probe, timeout: float = 10.0, interval: float = 0.05):  # noqa: ASYNC109 - a polling helper's own deadline is its point
    """Poll ``probe`` (an async callable) until it returns a truthy value; return that value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            msg = f"condition not met within {timeout}s; last value {value!r}"
            raise AssertionError(msg)
        await asyncio.sleep(interval)


async def consumer_pending(connection: Client, spec: topology.ConsumerSpec) -> tuple[int, int]:
    info = await connection.jetstream().consumer_info(spec.stream, spec.durable)
    return info.num_pending or 0, info.num_ack_pending or 0


async def wait_idle(connection: Client, specs=topology.CONSUMERS, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a polling helper's own deadline is its point
    """Wait until every durable consumer has delivered and had acked everything."""

    async def idle() -> bool:
        states = [await consumer_pending(connection, spec) for spec in specs]
        return all(pending == 0 and unacked == 0 for pending, unacked in states)

    await eventually(idle, timeout)


@dataclass
class RunningHub:
    url: str
    connection: Client
    metrics_ports: dict[str, int]
    clients: dict[str, ClinicClient] = field(default_factory=dict)

    async def clinic(self, clinic_id: str) -> ClinicClient:
        if clinic_id not in self.clients:
            self.clients[clinic_id] = await ClinicClient.connect(self.url, clinic_id)
        return self.clients[clinic_id]


def intake_delivery(message: ReferralCommand, sequence: int) -> Incoming:
    """``message`` as the referrals intake sees it: stored in CLINIC_OUT at ``sequence``, first delivery."""
    subject = f"clinic.{message.sender_clinic}.out.{message.__struct_config__.tag}"
    return Incoming(subject, encode(message), {}, "CLINIC_OUT", sequence, utc_now(), attempt=1)


async def intake_handler(provisioned: Client) -> IntakeHandler:
    """The referrals service's intake handler over the real buckets, with its own caches."""
    registry = RegistryCache()
    for clinic in load_registry_file().clinics:
        registry.apply(f"clinic.{clinic.id}", msgspec.json.encode(clinic))
    js = provisioned.jetstream()
    return IntakeHandler(await referral_store(js, 100), await careteam_store(js), registry, SlaPolicy())


def referral_request(sender: str = "harbor-pt", recipient: str = "lotus-acu", **overrides: object) -> ReferralRequest:
    fields: dict[str, object] = {
        "message_id": new_id(),
        "occurred_at": utc_now(),
        "sender_clinic": sender,
        "actor": {"harbor-pt": "ben.okafor", "lotus-acu": "raj.patel", "kneadwell-massage": "sam.lee"}.get(sender, "x"),
        "correlation_id": new_id(),
        "referral_id": new_id(),
        "patient_ref": "pt-0001",
        "recipient_clinic": recipient,
        "modality": Modality.ACUPUNCTURE,
        "reason": "Chronic tension-type headache",
    }
    fields.update(overrides)
    return ReferralRequest(**fields)  # type: ignore[arg-type]


def alert_raise(clinic: str, patient_ref: str, **overrides: object) -> AlertRaise:
    """A relative anticoagulant alert from ``clinic``, as the product's story has it."""
    fields: dict[str, object] = {
        "message_id": new_id(),
        "occurred_at": utc_now(),
        "sender_clinic": clinic,
        "actor": MEMBERS[clinic],
        "correlation_id": new_id(),
        "alert_id": new_id(),
        "patient_ref": patient_ref,
        "trigger_kind": TriggerKind.MEDICATION,
        "trigger": "apixaban",
        "modalities": (Modality.MASSAGE, Modality.ACUPUNCTURE),
        "techniques": ("deep tissue", "needling"),
        "severity": Severity.RELATIVE,
    }
    fields.update(overrides)
    return AlertRaise(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str


def interrupt(process: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str]:
    """Ctrl-C a long-running hub command, then read all it prints until it exits.

    Reading to the end matters: a process still printing into a full pipe blocks on the
    write and never exits, which would look like a hang on shutdown.
    """
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output or ""


async def hubctl(*args: str) -> Result:
    """Run ``hubctl`` as a user would: a separate process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "referral_hub.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


def secure_auth(tmp_path, monkeypatch, clinic_ids: list[str], *, tls=None) -> str:
    """Generated authorization (and TLS) for ``clinic_ids``; the credentials are named in the environment."""
    directory = tmp_path / "auth"
    written = generate(directory, clinic_ids, permissions.ServerOptions(store_dir=str(tmp_path / "unused")), tls=tls)
    monkeypatch.setenv(credentials.CREDS_DIR_ENV, str(directory))
    return written.auth_block


def secure_server(tmp_path, monkeypatch, clinic_ids: list[str], *, tls=None) -> EmbeddedNats:
    """A nats-server with the generated authorization (and TLS), its credentials named in the environment.

    Not started: the caller starts and stops it (fixtures override ``nats_server`` with it).
    """
    return EmbeddedNats(
        tmp_path / "nats",
        port=free_port(),
        monitor_port=free_port(),
        auth_config=secure_auth(tmp_path, monkeypatch, clinic_ids, tls=tls),
        tls=tls is not None,
    )


def secure_cluster(tmp_path, monkeypatch, clinic_ids: list[str]) -> EmbeddedCluster:
    """Three nats-servers in one JetStream cluster, each with the generated authorization. Not started."""
    return EmbeddedCluster(
        tmp_path / "cluster",
        port=free_ports(3),
        monitor_port=free_ports(3),
        cluster_port=free_ports(3),
        auth_config=secure_auth(tmp_path, monkeypatch, clinic_ids),
    )


def cluster_healthy(cluster: EmbeddedCluster):
    """A probe for ``eventually``: every node's full health check passes (replicas caught up, none wedged)."""

    async def probe() -> bool:
        return await asyncio.to_thread(cluster.unhealthy_nodes) == []

    return probe


async def connect_as_clinic(url: str, clinic_id: str, errors: list[Exception]) -> Client:
    """A clinic's own connection, collecting the server's asynchronous errors (permission violations)."""

    async def collect(error: Exception) -> None:
        errors.append(error)

    return await nats.connect(url, error_cb=collect, **credentials.for_clinic(clinic_id).connect_options())


# --- Proving that something ran, before asserting that it did nothing --------------------------
#
# A test that sleeps and then asserts that nothing happened passes just as well when the thing
# never ran. These wait for positive evidence instead: a counter the code under test moves each
# time it runs, or a durable consumer's acknowledgement floor passing a message.


def metric_value(name: str, **labels: str) -> float:
    """A metric's value in this process's registry (the services under test run in it); 0 if never set."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def counted(name: str, more: float = 1.0, timeout: float = 10.0, **labels: str) -> float:  # noqa: ASYNC109 - a polling helper's own deadline is its point
    """Wait until the counter ``name`` has grown by ``more`` from its value at the call; return the new value.

    For a periodic job, ``more=2`` proves a whole run began after the call: one run may have
    been under way (with what it read before the call) when it was made.
    """
    target = metric_value(name, **labels) + more

    async def grown() -> float:
        value = metric_value(name, **labels)
        return value if value >= target else 0.0

    return await eventually(grown, timeout)


async def stream_entries(connection: Client, stream: str, subject: str = ">") -> list[tuple[int, str, bytes]]:
    """Like :func:`stream_messages`, with each message's stream sequence first."""
    js = connection.jetstream()
    info = await js.stream_info(stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        message = await js.get_msg(stream, seq)
        if subject in {">", message.subject}:
            found.append((seq, message.subject or "", message.data or b""))
    return found


async def acked_through(connection: Client, spec: topology.ConsumerSpec, sequence: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a polling helper's own deadline is its point
    """Wait until ``spec``'s durable consumer has acknowledged (so handled) all it takes up to ``sequence``."""

    async def acked() -> bool:
        info = await connection.jetstream().consumer_info(spec.stream, spec.durable)
        return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= sequence

    await eventually(acked, timeout)


async def refusal(url: str, **options: object) -> str:
    """The server's reason for refusing a connection, or "" if it was accepted.

    The server may close the socket before nats-py reads its ``-ERR`` line, which shows as
    a reset connection; that attempt says nothing, so it is made again.
    """
    for _ in range(10):
        try:
            connection = await nats.connect(url, allow_reconnect=False, connect_timeout=2, **options)
        except nats.errors.Error as exc:
            return str(exc)
        except ConnectionResetError:
            await asyncio.sleep(0.05)
            continue
        await connection.close()
        return ""
    return "reset every time"
