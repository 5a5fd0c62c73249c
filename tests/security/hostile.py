"""Hostile clients on raw nats-py, and the witnesses that show an attack changed nothing.

A :class:`Hostile` connection holds real credentials (a clinic's, or a hub user's) and
sends what a compromised client would: raw publishes and raw ``$JS.API`` requests with
crafted JSON bodies. :meth:`Hostile.attempt` reports how the server answered: a
permissions violation, a JetStream error, nobody answering, or acceptance.

The witnesses read the hub's state the way its operators do: ``admin`` for the hub
account's streams and consumers, ``auditor`` (direct gets only) for the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from referral_hub.audit import app as audit_app
from referral_hub.audit.domain import ChainVerifier
from referral_hub.client import ClinicClient
from referral_hub.contracts.audit import AuditEntry
from referral_hub.notifications import app as notifications_app
from referral_hub.referrals.app import create_app as referrals_app
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.credentials import NatsCredentials
from referral_hub.runtime.broker.embedded import EmbeddedNats, free_port
from referral_hub.runtime.hosting.service import ServiceApp, ServiceSettings, serve
from referral_hub.runtime.jetstream import streams
from referral_hub.runtime.jetstream.registry_cache import load_registry_file
from tests.helpers import eventually, referral_request, wait_idle

ANSWER_SECONDS: Final = 2.0
"""How long an attempt waits for the server's verdict (a violation or a reply); a refusal by
permissions arrives in milliseconds, so this only bounds a server that says nothing."""
HEARTBEAT_SECONDS: Final = 0.5
"""The suite's hubs send inbox heartbeats this often, so a heartbeat is a prompt positive control."""
CONTROL_SECONDS: Final = 15.0
"""How long a positive control waits for the hub to store, deliver and audit one referral."""
MODALITIES: Final = {clinic.id: clinic.modalities[0] for clinic in load_registry_file().clinics}
"""What each clinic offers first: a referral to it must ask for that, or it is rejected."""
NO_RESPONDERS: Final = "503"
_entries: Final = msgspec.json.Decoder(AuditEntry)


@dataclass(frozen=True)
class Row:
    """One line of the summary table."""

    attack: str
    expected: str
    observed: str


ROWS: list[Row] = []


ROWS_DIR_ENV: Final = "HUB_HOSTILE_ROWS_DIR"
"""Where each test process appends its rows, so the run's one table gathers every worker's."""


def report(attack: str, expected: str, observed: str) -> None:
    """Add a line to the summary table (before the test asserts, so failures are listed too)."""
    row = Row(attack, expected, observed)
    ROWS.append(row)
    directory = os.environ.get(ROWS_DIR_ENV)
    if directory:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with (Path(directory) / f"{worker}.jsonl").open("a") as rows:
            rows.write(json.dumps([row.attack, row.expected, row.observed]) + "\n")


def reported_rows(directory: Path) -> list[Row]:
    """Every row any test process of this run reported, by worker."""
    return [
        Row(*json.loads(line))
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line
    ]


def summary_table(reported: list[Row] | None = None) -> str:
    """The table printed at the end of a run: attack, expected, observed."""
    header = Row("attack", "expected", "observed")
    rows = [header, *(ROWS if reported is None else reported)]
    width_attack = max(len(row.attack) for row in rows)
    width_expected = max(len(row.expected) for row in rows)
    lines = [f"{row.attack:<{width_attack}}  {row.expected:<{width_expected}}  {row.observed}" for row in rows]
    lines.insert(1, "-" * (width_attack + width_expected + 4 + max(len(row.observed) for row in rows)))
    return "\n".join(lines)


@dataclass(frozen=True)
class Outcome:
    """How the server answered one hostile request."""

    subject: str
    violation: bool = False
    reply: dict[str, Any] | None = None
    status: str = ""

    description: str = ""
    """The status line's description (``No Messages`` for an empty pull)."""

    @property
    def refused(self) -> bool:
        """Refused by permissions, by JetStream, or because nobody in the account answers.

        A pull that finds nothing answers with a status too (404, 408): that is a pull the
        server accepted, not a refusal.
        """
        no_responders = self.status == NO_RESPONDERS
        return self.violation or no_responders or (self.reply is not None and "error" in self.reply)

    def describe(self) -> str:
        if self.violation:
            return "permissions violation"
        if self.status == NO_RESPONDERS:
            return f"no responders ({self.status})"
        if self.status:
            return f"ACCEPTED (status {self.status} {self.description})"
        if self.reply is None:
            return "no answer at all"
        error = self.reply.get("error")
        if error:
            return f"JetStream error {error.get('err_code')}: {error.get('description')}"
        return f"ACCEPTED ({self.reply.get('type', 'reply')})"


def describe_all(outcomes: list[Outcome]) -> str:
    """One phrase for several attempts: the distinct ways they were answered."""
    kinds = sorted({outcome.describe() for outcome in outcomes})
    return "; ".join(f"{len(outcomes)}x {kind}" if len(outcomes) > 1 else kind for kind in kinds)


def as_payload(body: bytes | dict[str, Any]) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@dataclass
class Hostile:
    """A connection with real credentials, driven as an attacker would."""

    name: str
    connection: Client
    errors: list[Exception] = field(default_factory=list)

    @classmethod
    async def connect(cls, url: str, name: str, identity: NatsCredentials) -> Hostile:
        """Connect with ``identity``, keeping every asynchronous error the server sends (its violations)."""
        errors: list[Exception] = []

        async def collect(error: Exception) -> None:
            errors.append(error)

        connection = await nats.connect(url, error_cb=collect, **identity.connect_options())
        return cls(name, connection, errors)

    def _violated_since(self, mark: int, text: str) -> bool:
        return any(text in str(error).lower() for error in self.errors[mark:])

    async def attempt(
        self, subject: str, body: bytes | dict[str, Any] = b"", headers: dict[str, str] | None = None
    ) -> Outcome:
        """Send one request and wait for the server's verdict: a violation, a reply, or "no responders"."""
        mark = len(self.errors)
        answered: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

        async def answer(message: Msg) -> None:
            if not answered.done():
                answered.set_result(message)

        inbox = self.connection.new_inbox()
        subscription = await self.connection.subscribe(inbox, cb=answer)
        try:
            await self.connection.publish(subject, as_payload(body), reply=inbox, headers=headers)
            await self.connection.flush()
            violation = f'permissions violation for publish to "{subject.lower()}"'
            deadline = asyncio.get_running_loop().time() + ANSWER_SECONDS
            while asyncio.get_running_loop().time() < deadline:
                if self._violated_since(mark, violation):
                    return Outcome(subject, violation=True)
                if answered.done():
                    return _outcome(subject, answered.result())
                await asyncio.sleep(0.01)
            return Outcome(subject)
        finally:
            await subscription.unsubscribe()

    async def publish_refused(self, subject: str, body: bytes = b"{}") -> bool:
        """A plain publish (no reply expected): True once the server reports the violation."""
        mark = len(self.errors)
        await self.connection.publish(subject, body)
        return await self._until(mark, f'permissions violation for publish to "{subject.lower()}"')

    async def subscribe_refused(self, subject: str) -> tuple[bool, nats.aio.subscription.Subscription]:
        """Subscribe; True once the server reports the violation (the subscription then gets nothing)."""
        mark = len(self.errors)
        subscription = await self.connection.subscribe(subject)
        refused = await self._until(mark, f'permissions violation for subscription to "{subject.lower()}"')
        return refused, subscription

    async def _until(self, mark: int, text: str) -> bool:
        await self.connection.flush()
        deadline = asyncio.get_running_loop().time() + ANSWER_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            if self._violated_since(mark, text):
                return True
            await asyncio.sleep(0.01)
        return False

    async def close(self) -> None:
        if not self.connection.is_closed:
            await self.connection.close()


def _outcome(subject: str, message: Msg) -> Outcome:
    headers = message.headers or {}
    status = headers.get("Status", "")
    if status:
        return Outcome(subject, status=status, description=headers.get("Description", ""))
    try:
        decoded = json.loads(message.data or b"{}")
    except ValueError:
        decoded = {"type": f"raw reply {message.data[:40]!r}"}
    return Outcome(subject, reply=decoded if isinstance(decoded, dict) else {"type": repr(decoded)})


async def js_request(connection: Client, subject: str, body: bytes | dict[str, Any] = b"") -> dict[str, Any]:
    """A JetStream API request by a trusted witness; the decoded reply."""
    reply = await connection.request(subject, as_payload(body), timeout=5)
    decoded: dict[str, Any] = json.loads(reply.data)
    return decoded


async def consumer_names(admin: Client, stream: str) -> set[str]:
    return {info.name for info in await admin.jetstream().consumers_info(stream)}


async def consumer_state(admin: Client, stream: str, durable: str) -> dict[str, Any]:
    """What must not change about a durable: its configuration, creation time and pause."""
    info = await js_request(admin, f"$JS.API.CONSUMER.INFO.{stream}.{durable}")
    if "error" in info:
        return {"GONE": info["error"].get("description")}
    return {"config": info["config"], "created": info["created"], "paused": info.get("paused", False)}


async def stream_state(connection: Client, stream: str) -> dict[str, Any]:
    """A stream's configuration and its message count, as ``connection`` sees them."""
    info = await js_request(connection, f"$JS.API.STREAM.INFO.{stream}")
    if "error" in info:
        return {"GONE": info["error"].get("description")}
    return {"config": info["config"], "messages": info["state"]["messages"], "created": info["created"]}


async def messages_on(admin: Client, stream: str, subject: str) -> int:
    """How many messages ``stream`` holds on ``subject`` (wildcards allowed)."""
    info = await admin.jetstream().stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` one or more at the end."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for position, part in enumerate(wanted):
        if part == ">":
            return len(tokens) > position
        if position >= len(tokens) or part not in {"*", tokens[position]}:
            return False
    return len(tokens) == len(wanted)


async def strays(connection: Client, stream: str) -> dict[str, int]:
    """Messages ``stream`` holds on subjects outside its own configuration, by subject.

    A push consumer's delivery that another stream captures is stored under the subject it
    had in its source stream (``$KV.hub-registry.clinic.x`` in ``CLINIC_OUT``, say), so a
    foreign message shows up here, whatever deliver subject carried it.
    """
    info = await connection.jetstream().stream_info(stream, subjects_filter=">")
    own = info.config.subjects or []
    return {
        subject: count
        for subject, count in (info.state.subjects or {}).items()
        if not any(subject_matches(pattern, subject) for pattern in own)
    }


class AuditLog:
    """The audit stream, read as the ``auditor`` reads it (direct gets), checked entry by entry.

    Every stored message must be an audit entry whose index is its stream sequence and
    which chains onto the one before: anything else is a foreign message.
    """

    def __init__(self, auditor: Client) -> None:
        self._js = auditor.jetstream()
        self._verifier = ChainVerifier()
        self.read_to = 0
        self.entries: list[AuditEntry] = []
        self.foreign: list[str] = []

    async def refresh(self) -> int:
        """Read what was appended since the last call; returns how many messages the stream holds."""
        last = (await self._js.stream_info(streams.AUDIT)).state.last_seq
        for sequence in range(self.read_to + 1, last + 1):
            try:
                raw = await self._js.get_msg(streams.AUDIT, sequence, direct=True)
            except NotFoundError:
                self.foreign.append(f"sequence {sequence} missing")
                continue
            self._check(sequence, raw.subject or "", raw.data or b"")
        self.read_to = max(self.read_to, last)
        return last

    def _check(self, sequence: int, subject: str, data: bytes) -> None:
        try:
            entry = _entries.decode(data)
        except msgspec.DecodeError:
            self.foreign.append(f"sequence {sequence} on {subject}: not an audit entry: {data[:60]!r}")
            return
        if self.foreign:
            self.foreign.append(f"sequence {sequence}: after a foreign message")
            return
        fault = self._verifier.add(entry)
        if fault is not None:
            self.foreign.append(f"sequence {sequence}: {fault.reason}")
            return
        self.entries.append(entry)

    @property
    def verified(self) -> int:
        return self._verifier.count

    @property
    def intact(self) -> bool:
        return not self.foreign and self._verifier.count == self.read_to


def audit_entries_metric(port: int) -> float:
    """``hub_audit_entries_total`` as the audit service's ``/metrics`` reports it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("hub_audit_entries_total "):
                return float(line.split()[1])
    return 0.0


@dataclass
class AttackedHub:
    """A secured nats-server running the generated configuration, provisioned, with the real services."""

    name: str
    server: EmbeddedNats
    auth_dir: Path
    metrics_ports: dict[str, int] = field(default_factory=dict)
    admin: Client = field(init=False)
    auditor: Client = field(init=False)
    audit: AuditLog = field(init=False)
    clients: dict[str, ClinicClient] = field(default_factory=dict)
    hostiles: dict[str, Hostile] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    async def clinic(self, clinic_id: str) -> ClinicClient:
        """The clinic's own well-behaved client (``referral_hub.client``)."""
        if clinic_id not in self.clients:
            self.clients[clinic_id] = await ClinicClient.connect(self.url, clinic_id)
        return self.clients[clinic_id]

    async def hostile_clinic(self, clinic_id: str) -> Hostile:
        """A raw connection with the clinic's valid key."""
        return await self._hostile(f"clinic {clinic_id}", credentials.for_clinic(clinic_id))

    async def hostile_user(self, user: str) -> Hostile:
        """A raw connection with one hub user's key (a service, admin, ops or auditor)."""
        return await self._hostile(user, credentials.for_hub_user(user))

    async def break_glass(self, user: str = permissions.BREAK_GLASS) -> Hostile:
        return await self._hostile(user, credentials.for_break_glass(user))

    async def _hostile(self, name: str, identity: NatsCredentials) -> Hostile:
        if name not in self.hostiles:
            self.hostiles[name] = await Hostile.connect(self.url, name, identity)
        return self.hostiles[name]

    def audit_metric(self) -> float:
        return audit_entries_metric(self.metrics_ports["audit"])

    async def positive_control(self, sender: str, recipient: str) -> str:
        """A fresh referral, waited for until the audit chain recorded its delivery: "" or what went wrong.

        Whatever an attack had set in motion before this call, the hub has since stored,
        delivered and audited a new message, and every durable consumer is idle.
        """
        request = referral_request(sender, recipient, patient_ref="pt-control", modality=MODALITIES[recipient])
        wanted = str(request.referral_id)

        async def recorded() -> bool:
            await self.audit.refresh()
            return any(entry.referral_id == wanted and entry.action == "deliver" for entry in self.audit.entries)

        try:
            await (await self.clinic(sender)).send(request)
            await eventually(recorded, timeout=CONTROL_SECONDS)
            await wait_idle(self.admin, timeout=CONTROL_SECONDS)
        except (AssertionError, nats.errors.Error) as exc:
            return f"the chain did not record a new referral ({type(exc).__name__}: {exc})"
        finally:
            await self.audit.refresh()
        return ""


def service_factories() -> dict[str, Callable[[str], ServiceApp]]:
    """The real services; referrals sends heartbeats every half second for prompt positive controls."""
    return {
        "referrals": lambda url: referrals_app(url, heartbeat_interval=HEARTBEAT_SECONDS),
        "notifications": notifications_app.create_app,
        "audit": audit_app.create_app,
    }


@contextlib.asynccontextmanager
async def running_services(
    hub: AttackedHub, factories: dict[str, Callable[[str], ServiceApp]] | None = None
) -> AsyncIterator[None]:
    """Run the three services (``factories``, by default :func:`service_factories`) until closed."""
    stop = asyncio.Event()
    factories = factories or service_factories()
    hub.metrics_ports = {name: free_port() for name in factories}
    tasks = [
        asyncio.create_task(serve(factory(hub.url), ServiceSettings(hub.url, hub.metrics_ports[name]), stop))
        for name, factory in factories.items()
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
