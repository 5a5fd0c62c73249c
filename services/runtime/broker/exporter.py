"""The hub's NATS exporter: nats-server's monitoring endpoints (``/varz``, ``/jsz``) as Prometheus metrics.

nats-server has no Prometheus endpoint of its own. The official ``prometheus-nats-exporter``
is a Go binary that none of the package registries the hub installs from (PyPI, Debian, npm)
carries, so the hub ships this small equivalent, run as its own process beside the services:

    python -m referral_hub.runtime.broker.exporter --nats-monitor-url http://nats-1:8222
        [--nats-monitor-url http://nats-2:8222 ...] [--metrics-host 0.0.0.0] [--metrics-port 9104]

``hubctl up`` starts it with every node's monitoring URL, on the port after the services'.
Prometheus scrapes it as the job ``referral-hub-nats``. Every scrape reads each server's
``/varz`` and ``/jsz?consumers=true`` afresh (all servers at once), so there is no cached figure to go
stale. Each series carries ``server`` (the monitoring address). ``hub_nats_up`` is 1 for
a server that answered this scrape and 0 for one that did not, and a server that did not
answer has no other series: no placeholder 0. Nothing else exports these families, so no
service reports a figure about NATS that it does not know. The hub's durable consumers'
lag comes from here too (``runtime.broker.consumer_lag``), so it outlives a stopped service.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric

from referral_hub.runtime.broker.consumer_lag import JSZ_QUERY, consumer_states
from referral_hub.runtime.jetstream import topology

DEFAULT_PORT: Final = 9104
"""After ``hubctl up``'s three services (9101-9103)."""
TIMEOUT_SECONDS: Final = 1.0
"""Per request. A scrape sends every request (each server's ``/varz`` and ``/jsz``) at once, so
it takes about one of these at worst, well inside Prometheus's scrape timeout."""
ENDPOINTS: Final = ("/varz", JSZ_QUERY)
MONITOR_URL_ENV: Final = "NATS_MONITOR_URL"
"""Comma-separated monitoring URLs, when no ``--nats-monitor-url`` is given."""

UP: Final = "hub_nats_up"
INFO: Final = "hub_nats_info"
MAX_STORAGE: Final = "hub_jetstream_max_storage_bytes"
CONSUMER_FAMILIES: Final = {
    "pending": ("hub_consumer_pending_messages", "Messages a durable consumer has not yet delivered (its lag)."),
    "ack_pending": ("hub_consumer_ack_pending_messages", "Messages delivered but not yet acknowledged."),
    "redelivered": ("hub_consumer_redelivered_messages", "Messages currently being redelivered."),
    "waiting": ("hub_consumer_waiting_pulls", "Fetch requests waiting at the server; 0 when no process reads."),
    "ack_floor_age_seconds": (
        "hub_consumer_ack_floor_age_seconds",
        "Seconds since the consumer's ack floor last moved while messages wait; 0 when none wait.",
    ),
}
COUNTERS: Final = {
    "in_msgs": ("hub_nats_in_messages", "Messages the server received from clients."),
    "out_msgs": ("hub_nats_out_messages", "Messages the server sent to clients."),
    "in_bytes": ("hub_nats_in_bytes", "Bytes the server received."),
    "out_bytes": ("hub_nats_out_bytes", "Bytes the server sent."),
    "slow_consumers": ("hub_nats_slow_consumers", "Clients the server cut off as slow consumers."),
}
GAUGES: Final = {
    "connections": ("hub_nats_connections", "Client connections open now."),
    "mem": ("hub_nats_memory_bytes", "Resident memory of the nats-server process."),
}
JETSTREAM: Final = {
    "storage": ("hub_jetstream_storage_bytes", "File storage JetStream uses on this server."),
    "memory": ("hub_jetstream_memory_bytes", "Memory storage JetStream uses on this server."),
    "streams": ("hub_jetstream_streams", "Streams on the server."),
    "consumers": ("hub_jetstream_consumers", "Consumers on the server."),
    "messages": ("hub_jetstream_messages", "Messages stored in all streams on the server."),
}
FAMILIES: Final = frozenset(
    {
        UP,
        INFO,
        MAX_STORAGE,
        *(
            name
            for name, _ in (
                *COUNTERS.values(),
                *GAUGES.values(),
                *JETSTREAM.values(),
                *CONSUMER_FAMILIES.values(),
            )
        ),
    }
)
"""Every family this exporter can produce (and no other process does)."""


@dataclass(frozen=True)
class Snapshot:
    """One server's answers to one scrape; empty dicts when it did not answer."""

    server: str
    varz: dict[str, Any]
    jsz: dict[str, Any]

    @property
    def up(self) -> bool:
        """Whether the server's monitoring answered (``/varz``, the cheap one).

        ``/jsz?consumers=true`` grows with the consumers and can miss a one-second deadline on a
        loaded machine while the server is well: then this scrape has no JetStream or consumer
        series (a gap, which the consumer rules read across) rather than a false "NATS down".
        """
        return bool(self.varz)


def server_label(url: str) -> str:
    """The ``server`` label of a monitoring URL: its address, stable while the server is down."""
    return urllib.parse.urlsplit(url).netloc or url


class NatsMonitor:
    """A Prometheus collector that reads every monitoring URL on each scrape."""

    def __init__(self, urls: Sequence[str], timeout: float = TIMEOUT_SECONDS) -> None:
        """Watch ``urls`` (``http://host:8222``); at least one."""
        if not urls:
            msg = "the NATS exporter needs at least one monitoring URL (--nats-monitor-url or NATS_MONITOR_URL)"
            raise ValueError(msg)
        self.urls = tuple(url.rstrip("/") for url in urls)
        self._durables = frozenset(spec.durable for spec in topology.CONSUMERS)
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=len(self.urls) * len(ENDPOINTS), thread_name_prefix="nats-monitor")

    def _get(self, url: str) -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=self._timeout) as reply:  # noqa: S310 - the operator's own monitoring URL
            data = json.load(reply)
        if not isinstance(data, dict):
            msg = f"{url} did not answer a JSON object"
            raise TypeError(msg)
        return data

    def _answer(self, url: str) -> dict[str, Any]:
        """The endpoint's JSON, or ``{}`` if it did not answer with a JSON object in time."""
        try:
            return self._get(url)
        except (OSError, ValueError, TypeError):
            return {}

    def snapshots(self) -> list[Snapshot]:
        """Every server's answers, all requests at once."""
        requests = [(url, path) for url in self.urls for path in ENDPOINTS]
        answers = dict(zip(requests, self._pool.map(self._answer, [url + path for url, path in requests]), strict=True))
        return [Snapshot(server_label(url), answers[url, "/varz"], answers[url, JSZ_QUERY]) for url in self.urls]

    def describe(self) -> Iterable[Metric]:
        """Nothing: the registry must not scrape NATS to learn the names when this is registered."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One scrape: ``hub_nats_up`` for every server, the figures of those that answered."""
        snapshots = self.snapshots()
        up = GaugeMetricFamily(UP, "1 if the server's monitoring port answered this scrape, else 0.", labels=["server"])
        for snapshot in snapshots:
            up.add_metric([snapshot.server], 1 if snapshot.up else 0)
        yield up
        answered = [snapshot for snapshot in snapshots if snapshot.up]
        if not answered:
            return
        info = GaugeMetricFamily(
            INFO, "The server's name and version (always 1).", labels=["server", "server_name", "version"]
        )
        for snapshot in answered:
            info.add_metric(
                [snapshot.server, str(snapshot.varz.get("server_name", "")), str(snapshot.varz.get("version", ""))], 1
            )
        yield info
        for key, (name, text) in COUNTERS.items():
            counter = CounterMetricFamily(name, text, labels=["server"])
            for snapshot in answered:
                counter.add_metric([snapshot.server], float(snapshot.varz.get(key, 0)))
            yield counter
        sources = ((GAUGES, "varz", answered), (JETSTREAM, "jsz", with_jsz := [s for s in answered if s.jsz]))
        for families, endpoint, reporting in sources:
            for key, (name, text) in families.items():
                gauge = GaugeMetricFamily(name, text, labels=["server"])
                for snapshot in reporting:
                    gauge.add_metric([snapshot.server], float(getattr(snapshot, endpoint).get(key, 0)))
                yield gauge
        limit = GaugeMetricFamily(MAX_STORAGE, "JetStream's file storage limit on this server.", labels=["server"])
        for snapshot in with_jsz:
            limit.add_metric([snapshot.server], float(snapshot.jsz.get("config", {}).get("max_storage", 0)))
        yield limit
        yield from self._consumers(with_jsz)

    def _consumers(self, answered: list[Snapshot]) -> Iterator[Metric]:
        """The hub's durable consumers, per server that hosts them (a cluster's replicas each report theirs)."""
        states = [
            (snapshot.server, state) for snapshot in answered for state in consumer_states(snapshot.jsz, self._durables)
        ]
        for field, (name, text) in CONSUMER_FAMILIES.items():
            gauge = GaugeMetricFamily(name, text, labels=["server", "account", "stream", "consumer"])
            for server, state in states:
                gauge.add_metric([server, state.account, state.stream, state.consumer], float(getattr(state, field)))
            yield gauge


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The exporter's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m referral_hub.runtime.broker.exporter",
        description="Export nats-server's /varz and /jsz as Prometheus metrics (the hub's NATS exporter).",
    )
    parser.add_argument(
        "--nats-monitor-url",
        action="append",
        default=[],
        help="a server's monitoring URL (http://host:8222); repeat for each node (default: $NATS_MONITOR_URL, commas)",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for /metrics and /health (default: %(default)s)"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=DEFAULT_PORT, help="port for /metrics and /health (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if not args.nats_monitor_url:
        args.nats_monitor_url = [url for url in os.environ.get(MONITOR_URL_ENV, "").split(",") if url.strip()]
    if not args.nats_monitor_url:
        parser.error("give --nats-monitor-url (or NATS_MONITOR_URL)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Serve ``/metrics``, ``/health`` and ``/health/live`` until SIGINT or SIGTERM."""
    from referral_hub.runtime.hosting import metrics  # noqa: PLC0415 - only the exporter process needs the HTTP side
    from referral_hub.runtime.hosting.health import HealthServer, Readiness  # noqa: PLC0415 - same

    args = parse_args(argv)
    REGISTRY.register(NatsMonitor(args.nats_monitor_url))
    metrics.expose(FAMILIES)
    server = HealthServer(args.metrics_port, args.metrics_host)
    server.readiness = Readiness(ready=True, checks={"serving": True})
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(  # noqa: T201 - the exporter's one start-up line, for its log
        f"NATS exporter on http://{args.metrics_host}:{server.port}/metrics for {', '.join(args.nats_monitor_url)}",
        flush=True,
    )
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
