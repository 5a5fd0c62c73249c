"""``hubctl bench gateway``: referral lifecycles over HTTP/FHIR beside the same lifecycles over NATS.

One run, one fresh nats-server, the three services and the gateway as processes. Each
lifecycle is request, accept, schedule, complete, close (five transitions), driven by
``--workers`` concurrent clinics' systems: over HTTP through the gateway (token first, then
``POST /fhir/Task`` and JSON Patches of the Task), then over NATS with ``ClinicClient``
(``send_and_confirm``, as ``hubctl`` does). A transition's latency is from the request to
the hub's answer (the HTTP response, or the confirmation in the inbox). Both sides run on the
same hub with the same JetStream sync setting and the same number of workers, in alternating
slices of about five seconds each; the HTTP client keeps its connections open, as a clinic's
system would.

``notify_p99_ms``: during the HTTP phase harbor-pt has a rest-hook subscription to a receiver
in this process; for each transition lotus-acu makes, the time from lotus-acu's HTTP
response to harbor-pt's receiver getting the notification about that Task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec

from referral_hub.cli import gateway as gateway_cli
from referral_hub.cli.bench import bench_server, percentile, start_hub
from referral_hub.cli.up import stop_services, wait_ready
from referral_hub.client import ClinicClient, new_id, utc_now
from referral_hub.contracts.referrals import (
    ConsultNote,
    ReferralAccept,
    ReferralClose,
    ReferralComplete,
    ReferralRequest,
    ReferralSchedule,
)
from referral_hub.errors import HubError
from referral_hub.gateway import auth
from referral_hub.gateway.subscriptions import HEARTBEAT_EXTENSION, PAYLOAD_EXTENSION, TOPIC_URL
from referral_hub.runtime.broker.embedded import free_port
from referral_hub.runtime.jetstream.registry_cache import load_registry_file

BSER: Final = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
SENDER: Final = "harbor-pt"
RECIPIENT: Final = "lotus-acu"
ACTORS: Final = {SENDER: "ben.okafor", RECIPIENT: "raj.patel"}


class BenchError(HubError):
    """The benchmark could not run (a step was refused)."""


class NotYetError(BenchError):
    """The gateway does not know the Task for this clinic (yet)."""


def _patch(code: str, status: str, **more: Any) -> list[dict[str, Any]]:  # noqa: ANN401 - JSON values
    operations: list[dict[str, Any]] = [
        {"op": "replace", "path": "/status", "value": status},
        {"op": "replace", "path": "/businessStatus", "value": {"coding": [{"system": BSER, "code": code}]}},
    ]
    operations.extend({"op": "add", "path": f"/{name}", "value": value} for name, value in more.items())
    return operations


def _steps() -> list[tuple[str, list[dict[str, Any]]]]:
    when = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    return [
        (RECIPIENT, _patch("3.0", "accepted")),
        (RECIPIENT, _patch("5.1.1", "in-progress", executionPeriod={"start": when})),
        (
            RECIPIENT,
            _patch("5.1.4", "completed", output=[{"type": {"text": "visits"}, "valueInteger": 4}]),
        ),
        (SENDER, _patch("7.0", "completed")),
    ]


class Receiver:
    """A rest-hook endpoint in this process: when each Task's notifications arrived."""

    def __init__(self) -> None:
        """Nothing received yet."""
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hook"

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.CancelledError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                length = int(head.split("content-length:")[1].split("\r\n")[0]) if "content-length:" in head else 0
                body = await reader.readexactly(length)
                now = time.perf_counter()
                for focus in _focuses(body):
                    self.arrivals[focus].append(now)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        self._writers.discard(writer)
        writer.close()


def _focuses(body: bytes) -> list[str]:
    bundle = msgspec.json.decode(body)
    found: list[str] = []
    for parameter in bundle["entry"][0]["resource"]["parameter"]:
        if parameter["name"] == "notification-event":
            found.extend(
                part["valueReference"]["reference"].rsplit("/", 1)[1]
                for part in parameter["part"]
                if part["name"] == "focus"
            )
    return found


class HttpClinics:
    """Each clinic's bearer token and one HTTP client."""

    def __init__(self, base: str, keys: dict[str, dict[str, Any]]) -> None:
        """Tokens come later, from :meth:`login`."""
        self.base = base
        self.keys = keys
        self.tokens: dict[str, str] = {}
        self.http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64))

    async def login(self) -> None:
        """SMART Backend Services: one token per clinic."""
        for clinic, key in self.keys.items():
            assertion = auth.client_assertion(key, clinic, f"{self.base}/auth/token", datetime.now(UTC))
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": auth.ASSERTION_TYPE,
                "client_assertion": assertion,
            }
            answer = await self.http.post(f"{self.base}/auth/token", data=form)
            if answer.status_code != 200:  # noqa: PLR2004 - HTTP status
                raise BenchError(answer.text)
            self.tokens[clinic] = answer.json()["access_token"]

    async def call(self, clinic: str, method: str, path: str, body: Any, content_type: str) -> dict[str, Any]:  # noqa: ANN401 - JSON
        """One FHIR request; a refusal stops the benchmark."""
        headers = {"Authorization": f"Bearer {self.tokens[clinic]}", "Content-Type": content_type}
        answer = await self.http.request(
            method, f"{self.base}/fhir{path}", content=msgspec.json.encode(body), headers=headers
        )
        if answer.status_code == 404:  # noqa: PLR2004 - HTTP status
            raise NotYetError(answer.text)
        if answer.status_code >= 300:  # noqa: PLR2004 - HTTP status class
            msg = f"{method} {path}: {answer.status_code} {answer.text[:300]}"
            raise BenchError(msg)
        result: dict[str, Any] = msgspec.json.decode(answer.content)
        return result


def _task(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "identifier": [{"system": "urn:bench", "value": str(uuid.uuid4())}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "urn:referral-hub:modality", "code": "acupuncture"}]},
        "for": {"identifier": {"value": patient}},
        "owner": {"identifier": {"value": RECIPIENT}},
        "reasonCode": {"text": "Chronic tension-type headache"},
    }


async def _http_lifecycle(clinics: HttpClinics, n: int, latencies: list[float], sent: dict[str, list[float]]) -> None:
    started = time.perf_counter()
    task = await clinics.call(SENDER, "POST", "/Task", _task(f"pt-bench-{n:06d}"), "application/fhir+json")
    latencies.append(time.perf_counter() - started)
    for clinic, operations in _steps():
        started = time.perf_counter()
        for attempt in range(50):
            try:
                await clinics.call(clinic, "PATCH", f"/Task/{task['id']}", operations, "application/json-patch+json")
                break
            except NotYetError:
                # The recipient's inbox has not received the referral yet: as its system would,
                # it asks again (the wait counts in the latency).
                await asyncio.sleep(0.01 * (attempt + 1))
        finished = time.perf_counter()
        latencies.append(finished - started)
        if clinic == RECIPIENT:
            sent[task["id"]].append(finished)


def _nats_commands(patient: str) -> tuple[ReferralRequest, list[Callable[[ReferralRequest], Any]]]:
    def envelope(clinic: str, request: ReferralRequest) -> dict[str, Any]:
        return {
            "message_id": new_id(),
            "occurred_at": utc_now(),
            "sender_clinic": clinic,
            "actor": ACTORS[clinic],
            "correlation_id": request.correlation_id,
            "referral_id": request.referral_id,
            "patient_ref": request.patient_ref,
        }

    request = ReferralRequest(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic=SENDER,
        actor=ACTORS[SENDER],
        correlation_id=new_id(),
        referral_id=new_id(),
        patient_ref=patient,
        recipient_clinic=RECIPIENT,
        modality="acupuncture",  # type: ignore[arg-type]  # msgspec checks the enum value at encode
        reason="Chronic tension-type headache",
    )
    steps: list[Callable[[ReferralRequest], Any]] = [
        lambda r: ReferralAccept(**envelope(RECIPIENT, r)),
        lambda r: ReferralSchedule(**envelope(RECIPIENT, r), appointment_at=utc_now() + timedelta(days=3)),
        lambda r: ReferralComplete(**envelope(RECIPIENT, r), outcome=ConsultNote(visits=4)),
        lambda r: ReferralClose(**envelope(SENDER, r)),
    ]
    return request, steps


async def _nats_lifecycle(clients: dict[str, ClinicClient], n: int, latencies: list[float]) -> None:
    request, steps = _nats_commands(f"pt-nats-{n:06d}")
    started = time.perf_counter()
    await clients[SENDER].send_and_confirm(request)
    latencies.append(time.perf_counter() - started)
    for step in steps:
        command = step(request)
        started = time.perf_counter()
        await clients[command.sender_clinic].send_and_confirm(command)
        latencies.append(time.perf_counter() - started)


async def _drive(
    seconds: float, workers: int, lifecycle: Callable[[int], Awaitable[None]], counter: Iterator[int]
) -> float:
    """Run lifecycles from ``workers`` loops until ``seconds`` have passed; the elapsed time."""
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await lifecycle(next(counter))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started


def _rounds(seconds: float) -> int:
    """Rounds of the two phases: one per five seconds of each, at least one."""
    return max(1, round(seconds / 5))


def _schedule(seconds: float) -> list[str]:
    """The phases in turn, HTTP-NATS then NATS-HTTP, so both meet the same machine.

    On a shared machine the load of everything else drifts over a run; one phase after
    the other would give that drift to one side. Alternating short slices, in mirrored
    order, spreads it (and any warm-up) over both.
    """
    order: list[str] = []
    for round_ in range(_rounds(seconds)):
        order.extend(("http", "nats") if round_ % 2 == 0 else ("nats", "http"))
    return order


async def bench_gateway(seconds: float, workers: int = 4, sync: str = "always") -> dict[str, float]:
    """Both phases on one fresh hub; the figures as a dict."""
    async with bench_server(sync) as server:
        registry = load_registry_file()
        services = await start_hub(server.url, server.scratch, registry)
        receiver = Receiver()
        try:
            keys = {}
            for clinic in (SENDER, RECIPIENT):
                key_file = server.scratch / f"{clinic}.jwk.json"
                await gateway_cli.register(server.url, clinic, jwks_file=None, generate=key_file, actor=None)
                keys[clinic] = json.loads(Path(key_file).read_text())  # noqa: ASYNC240 - a small local file, once
            port = free_port()
            # The benchmark measures the gateway's throughput, not its per-client limit.
            unlimited = ("--rate-limit", "1000000", "--rate-burst", "1000000")
            gateway = gateway_cli.start_gateway(server.url, port, free_port(), server.scratch, {}, unlimited)
            services.append(gateway)
            await wait_ready(gateway)
            clinics = HttpClinics(f"http://127.0.0.1:{port}", keys)
            await clinics.login()
            await receiver.start()
            await clinics.call(SENDER, "POST", "/Subscription", _subscription(receiver.url), "application/fhir+json")

            clients = {c: await ClinicClient.connect(server.url, c) for c in (SENDER, RECIPIENT)}
            http_latencies: list[float] = []
            nats_latencies: list[float] = []
            sent: dict[str, list[float]] = defaultdict(list)
            numbers = iter(range(10**9))
            phases = {
                "http": lambda n: _http_lifecycle(clinics, n, http_latencies, sent),
                "nats": lambda n: _nats_lifecycle(clients, n, nats_latencies),
            }
            elapsed = dict.fromkeys(phases, 0.0)
            try:
                for kind in _schedule(seconds):
                    elapsed[kind] += await _drive(seconds / _rounds(seconds), workers, phases[kind], numbers)
                await asyncio.sleep(1.0)  # the last notifications in flight
            finally:
                for client in clients.values():
                    await client.close()
                await clinics.http.aclose()
            notify = [
                (arrived - made) * 1000
                for task_id, made_at in sent.items()
                for made, arrived in zip(made_at, receiver.arrivals.get(task_id, [])[1:], strict=False)
            ]
            http_seconds, nats_seconds = elapsed["http"], elapsed["nats"]
        finally:
            await receiver.stop()
            stop_services(services)
    http_rate = len(http_latencies) / http_seconds
    nats_rate = len(nats_latencies) / nats_seconds
    return {
        "seconds": seconds,
        "workers": workers,
        "http_transitions": len(http_latencies),
        "nats_transitions": len(nats_latencies),
        "http_transitions_per_s": round(http_rate, 1),
        "nats_transitions_per_s": round(nats_rate, 1),
        "ratio": round(http_rate / nats_rate, 3) if nats_rate else 0.0,
        "http_p50_ms": round(percentile(http_latencies, 0.5) * 1000, 2),
        "http_p99_ms": round(percentile(http_latencies, 0.99) * 1000, 2),
        "nats_p50_ms": round(percentile(nats_latencies, 0.5) * 1000, 2),
        "nats_p99_ms": round(percentile(nats_latencies, 0.99) * 1000, 2),
        "notify_p99_ms": round(percentile(notify, 0.99), 2),
        "notifications_matched": len(notify),
    }


def _subscription(endpoint: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "criteria": TOPIC_URL,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_EXTENSION, "valueCode": "id-only"}]},
            "extension": [{"url": HEARTBEAT_EXTENSION, "valueUnsignedInt": 60}],
        },
    }
