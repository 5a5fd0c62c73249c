"""The ``/metrics`` and ``/health`` endpoints each service exposes.

A small stdlib HTTP server in a thread: scrapes and probes keep answering even when the
event loop is busy, and readiness is a snapshot the event loop refreshes, so a probe never
waits on NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

import nats.errors
import structlog
from nats.aio.client import Client
from nats.js.errors import NotFoundError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from referral_hub.runtime.broker import credentials
from referral_hub.runtime.hosting.metrics import (
    EXPOSITION,
    NATS_CONNECTED,
    STREAM_BYTES,
    STREAM_MESSAGES,
)
from referral_hub.runtime.jetstream.streams import AUDIT_STREAMS
from referral_hub.runtime.jetstream.topology import ConsumerSpec

REFRESH_SECONDS: Final = 2.0
PROBE_SECONDS: Final = 1
INDEX: Final = (
    b"<!doctype html><html><head><title>Referral Hub service</title></head><body>"
    b"<h1>Referral Hub service</h1><ul>"
    b'<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>'
    b'<li><a href="/health">/health</a>: readiness (503 until ready), with each check</li>'
    b'<li><a href="/health/live">/health/live</a>: liveness</li>'
    b"</ul></body></html>\n"
)
"""What ``/`` answers: someone who opens the port in a browser finds the two endpoints."""
log = structlog.get_logger(__name__)


@dataclass
class Readiness:
    """What ``/health`` reports; replaced whole by the refresher, read by the HTTP thread."""

    ready: bool = False
    checks: dict[str, bool] = field(default_factory=dict)

    def body(self) -> bytes:
        """The JSON body of a ``/health`` reply."""
        return json.dumps({"live": True, "ready": self.ready, "checks": self.checks}).encode()


class HealthServer:
    """Serves ``/`` (links), ``/metrics``, ``/health`` (readiness, 503 until ready) and ``/health/live``.

    ``/metrics`` shows the families of the services this process runs (``metrics.expose_service``).
    """

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        """Bind now, so a port clash fails at start-up rather than at the first scrape."""
        self.readiness = Readiness()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/":
                    self._reply(200, "text/html; charset=utf-8", INDEX)
                elif self.path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, generate_latest(EXPOSITION))
                elif self.path == "/health":
                    snapshot = owner.readiness
                    self._reply(200 if snapshot.ready else 503, "application/json", snapshot.body())
                elif self.path == "/health/live":
                    self._reply(200, "application/json", b'{"live": true}')
                else:
                    self._reply(404, "text/plain", b"not found\n")

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
                """Probes every few seconds would drown the service's own log lines."""

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    def start(self) -> None:
        """Begin serving in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


_unanswered: weakref.WeakKeyDictionary[Client, tuple[asyncio.Future[bool], float]] = weakref.WeakKeyDictionary()
PING_ABANDON_SECONDS: Final = 10.0
"""A PING unanswered this long is left behind (a reconnect drops nats-py's queue of them) and a new one sent."""


async def answers(connection: Client) -> bool:
    """Whether the server answers a round trip (PING, PONG) within a second.

    Not ``connection.flush(timeout=...)``: on a timeout nats-py cancels the PONG's future, and
    the PONG that arrives once the server resumes then fails its read loop (``set_result`` on a
    cancelled future), leaving a connection that never reads again. Here the future is never
    cancelled, and while one PING is unanswered (for up to ``PING_ABANDON_SECONDS``) no other is sent.
    """
    if not connection.is_connected:
        return False
    loop = asyncio.get_running_loop()
    pending, sent_at = _unanswered.get(connection, (None, 0.0))
    if pending is None or pending.done() or loop.time() - sent_at > PING_ABANDON_SECONDS:
        pending = loop.create_future()
        _unanswered[connection] = (pending, loop.time())
        try:
            await connection._send_ping(pending)  # noqa: SLF001 - the one way to PING without flush's cancellation
        except (nats.errors.Error, OSError, AssertionError):
            return False
    done, _ = await asyncio.wait({pending}, timeout=PROBE_SECONDS)
    return bool(done)


async def refresh_readiness(
    server: HealthServer,
    service: str,
    connection: Client,
    consumers: Iterable[ConsumerSpec],
    streams: Iterable[str] = (),
) -> None:
    """Forever: check the NATS connection and every consumer this service needs.

    ``nats_connected`` is a round trip to the server (a flush answered in time), not the
    client's idea of its socket: a paused broker keeps the socket open and answers nothing.
    ``streams`` get depth gauges. Consumer lag is the broker's to report (the NATS exporter).
    """
    specs = tuple(consumers)
    watched = tuple(streams)
    js = connection.jetstream(prefix=credentials.hub_api_prefix(service))
    own = connection.jetstream()
    while True:
        checks = {"nats_connected": await answers(connection)}
        for spec in specs:
            try:
                await js.consumer_info(spec.stream, spec.durable, timeout=1.0)
            except (NotFoundError, nats.errors.Error, TimeoutError):
                checks[f"consumer:{spec.stream}/{spec.durable}"] = False
                continue
            checks[f"consumer:{spec.stream}/{spec.durable}"] = True
        for stream in watched:
            with contextlib.suppress(NotFoundError, nats.errors.Error, TimeoutError):
                reader = own if stream in AUDIT_STREAMS else js
                state = (await reader.stream_info(stream)).state
                STREAM_MESSAGES.labels(stream).set(state.messages)
                STREAM_BYTES.labels(stream).set(state.bytes)
        NATS_CONNECTED.labels(service).set(1 if checks["nats_connected"] else 0)
        server.readiness = Readiness(ready=all(checks.values()), checks=checks)
        await asyncio.sleep(REFRESH_SECONDS)
