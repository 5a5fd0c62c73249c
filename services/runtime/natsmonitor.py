"""NATS server metrics from its monitoring port (``/varz``, ``/jsz``), as Prometheus metrics.

A small collector inside the audit service, so a deployment needs nothing more to see the
broker beside the hub. Where the official prometheus-nats-exporter is already run, it gives
the same figures under ``gnatsd_``/``jetstream_`` names (``deploy/README.md``). The poll runs
on the event loop's schedule in a thread; a scrape only reads the last snapshot, so it never
waits on NATS, and ``hub_nats_up`` says whether that snapshot is fresh.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, Final

from nats.aio.client import Client
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

POLL_SECONDS: Final = 5.0
STALE_SECONDS: Final = 30.0

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
    "storage": ("hub_jetstream_storage_bytes", "File storage JetStream uses."),
    "memory": ("hub_jetstream_memory_bytes", "Memory storage JetStream uses."),
    "streams": ("hub_jetstream_streams", "Streams on the server."),
    "consumers": ("hub_jetstream_consumers", "Consumers on the server."),
    "messages": ("hub_jetstream_messages", "Messages stored in all streams."),
}


class NatsMonitor(Collector):
    """Polls the monitoring URL; exports its last snapshot on every scrape."""

    def __init__(self) -> None:
        """Unconfigured until :meth:`watch` names a URL."""
        self.url = ""
        self._varz: dict[str, Any] = {}
        self._jsz: dict[str, Any] = {}
        self._polled_at = 0.0

    def _get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=2.0) as reply:  # noqa: S310 - the operator's own monitoring URL
            data: dict[str, Any] = json.load(reply)
            return data

    async def poll_forever(self, _connection: Client) -> None:
        """Forever: refresh the snapshot; a failed poll only lets it go stale."""
        while True:
            if self.url:
                try:
                    self._varz, self._jsz = await asyncio.to_thread(lambda: (self._get("/varz"), self._get("/jsz")))
                    self._polled_at = time.monotonic()
                except (OSError, ValueError):
                    pass
            await asyncio.sleep(POLL_SECONDS)

    def collect(self) -> Iterator[Metric]:
        """The last snapshot, and whether it is fresh."""
        fresh = bool(self.url) and time.monotonic() - self._polled_at < STALE_SECONDS
        yield GaugeMetricFamily("hub_nats_up", "1 while the monitoring port answers.", value=1 if fresh else 0)
        if not fresh:
            return
        for key, (name, text) in COUNTERS.items():
            yield CounterMetricFamily(name, text, value=float(self._varz.get(key, 0)))
        for key, (name, text) in GAUGES.items():
            yield GaugeMetricFamily(name, text, value=float(self._varz.get(key, 0)))
        for key, (name, text) in JETSTREAM.items():
            yield GaugeMetricFamily(name, text, value=float(self._jsz.get(key, 0)))
        limit = float(self._jsz.get("config", {}).get("max_storage", 0))
        yield GaugeMetricFamily("hub_jetstream_max_storage_bytes", "JetStream's file storage limit.", value=limit)


MONITOR: Final = NatsMonitor()
REGISTRY.register(MONITOR)


def watch(url: str) -> NatsMonitor:
    """Point the process's collector at a monitoring URL (``http://host:8222``)."""
    MONITOR.url = url.rstrip("/")
    return MONITOR
