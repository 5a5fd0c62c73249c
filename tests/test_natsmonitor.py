"""The hub's NATS exporter (``runtime.broker.exporter``) against a real nats-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from referral_hub.runtime.broker.embedded import EmbeddedNats, free_port
from referral_hub.runtime.broker.exporter import FAMILIES, MONITOR_URL_ENV, NatsMonitor, server_label
from referral_hub.runtime.hosting import metrics

SERVICE_FAMILIES = metrics.family_names((*metrics.SHARED, *(m for owned in metrics.OWNED.values() for m in owned)))


def samples(families: list[Metric]) -> dict[tuple[str, str], float]:
    """``(sample name, server)`` to value."""
    return {
        (sample.name, sample.labels.get("server", "")): sample.value for family in families for sample in family.samples
    }


def test_each_server_answers_for_itself_and_a_silent_one_has_only_up_0(nats_server: EmbeddedNats) -> None:
    silent = f"http://127.0.0.1:{free_port()}"
    live, dead = server_label(nats_server.monitor_url), server_label(silent)

    families = list(NatsMonitor([nats_server.monitor_url, silent], timeout=1.0).collect())
    values = samples(families)

    assert values[("hub_nats_up", live)] == 1
    assert values[("hub_nats_up", dead)] == 0
    assert [key for key in values if key[1] == dead] == [("hub_nats_up", dead)]
    assert values[("hub_nats_connections", live)] >= 0
    assert values[("hub_jetstream_max_storage_bytes", live)] > 0
    assert ("hub_nats_in_messages_total", live) in values
    assert {family.name for family in families} == FAMILIES
    assert FAMILIES.isdisjoint(SERVICE_FAMILIES)


def test_a_scrape_reads_the_server_afresh(nats_server: EmbeddedNats) -> None:
    monitor = NatsMonitor([nats_server.monitor_url], timeout=1.0)
    label = server_label(nats_server.monitor_url)
    first = samples(list(monitor.collect()))[("hub_nats_up", label)]

    nats_server.stop()
    second = samples(list(monitor.collect()))[("hub_nats_up", label)]

    assert (first, second) == (1, 0)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - loopback URL built here
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, ""
    except urllib.error.URLError:
        return 0, ""


def exporter(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "referral_hub.runtime.broker.exporter", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env if env is not None else {**os.environ},
    )


def test_the_exporter_process_serves_only_nats_families_and_stops_on_sigterm(nats_server: EmbeddedNats) -> None:
    port = free_port()
    process = exporter("--metrics-port", str(port), env={**os.environ, MONITOR_URL_ENV: nats_server.monitor_url})
    try:
        deadline = time.monotonic() + 20
        while get(f"http://127.0.0.1:{port}/health")[0] != 200 and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[0]
            time.sleep(0.1)
        status, text = get(f"http://127.0.0.1:{port}/metrics")
        live, _ = get(f"http://127.0.0.1:{port}/health/live")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)

    hub = {family.name for family in text_string_to_metric_families(text) if family.name.startswith("hub_")}
    assert (status, live) == (200, 200)
    assert f'hub_nats_up{{server="{server_label(nats_server.monitor_url)}"}} 1.0' in text
    assert hub == FAMILIES
    assert process.returncode == 0, output
    assert nats_server.monitor_url in output


def test_the_exporter_refuses_to_start_without_a_monitoring_url() -> None:
    process = exporter(
        "--metrics-port", str(free_port()), env={k: v for k, v in os.environ.items() if k != MONITOR_URL_ENV}
    )
    output, _ = process.communicate(timeout=20)

    assert process.returncode == 2
    assert "--nats-monitor-url" in output


def test_a_last_value_gauge_has_no_sample_until_measured() -> None:
    gauge = metrics.LastValue("hub_test_last_value_seconds", "A test gauge.")
    try:
        before = list(gauge.collect())
        gauge.set(12.5)
        after = [sample.value for family in gauge.collect() for sample in family.samples]
    finally:
        metrics.REGISTRY.unregister(gauge)

    assert before == []
    assert after == [12.5]


@pytest.mark.parametrize("service", sorted(metrics.OWNED))
def test_every_metric_has_one_owning_service_or_is_shared(service: str) -> None:
    others = {
        name for other, owned in metrics.OWNED.items() if other != service for name in metrics.family_names(owned)
    }

    assert metrics.family_names(metrics.OWNED[service]).isdisjoint(others)
    assert metrics.family_names(metrics.OWNED[service]).isdisjoint(metrics.family_names(metrics.SHARED))
