"""Ops material against the real thing: Debian's Prometheus 2.42 scraping a running ``hubctl up``.

``make tools`` installs the ``prometheus`` package (``promtool`` and ``prometheus``); a missing
binary fails these tests rather than skipping them. Every PromQL expression in the alert rules
and the Grafana dashboard runs through Prometheus's HTTP API: each must parse, and each
dashboard panel must return data from the hub's own metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from referral_hub.client import ClinicClient
from referral_hub.runtime.credentials import NatsCredentials, clinic_seed_path
from referral_hub.runtime.natsauth import clinic_inbox_prefix
from referral_hub.runtime.natsserver import free_port

from .test_up import launch_up, read_until

pytestmark = pytest.mark.slow
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "hub.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "hub_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "referral-hub.json"
SERVICES = ("referrals", "notifications", "audit")


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed; `make tools` installs Debian's prometheus package"
    return path


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {
        f"{panel['title']} [{target['refId']}]": target["expr"]
        for panel in panels
        if panel["type"] != "row"
        for target in panel["targets"]
    }


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(  # noqa: S603 - a fixed tool
        [binary("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass_and_cover_every_rule() -> None:
    result = subprocess.run(  # noqa: S603 - a fixed tool
        [binary("promtool"), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False
    )
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }

    assert result.returncode == 0, result.stdout + result.stderr
    assert tested == set(rule_expressions())


def test_every_rule_has_a_for_a_severity_and_a_runbook_section() -> None:
    runbook = (DEPLOY / "RUNBOOK.md").read_text()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule.get("for"), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["runbook_url"] == f"deploy/RUNBOOK.md#{rule['alert'].lower()}"
            assert f"## {rule['alert']}\n" in runbook, rule["alert"]


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - loopback
                return json.load(reply)
        except urllib.error.HTTPError as exc:
            return json.load(exc)
        except urllib.error.URLError:
            return {"status": "unreachable"}


async def _publish_bad_input(url: str, auth_dir: Path) -> None:
    sender = NatsCredentials(clinic_inbox_prefix("harbor-pt"), clinic_seed_path(auth_dir, "harbor-pt"))
    client = await ClinicClient.connect(url, "harbor-pt", sender)
    await client.publish_raw("referral.request", b"{not json")
    await client.close()


@pytest.fixture(scope="module")
def scraped_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, int]]:
    work = tmp_path_factory.mktemp("prometheus")
    os.environ["HUB_AUDIT_CHECKPOINT_SECONDS"] = "2"
    try:
        up = launch_up(work / "hub-data", "--demo-interval", "0.2", "--duration", "240")
    finally:
        del os.environ["HUB_AUDIT_CHECKPOINT_SECONDS"]
    prometheus = None
    try:
        read_until(up.process, "Referral Hub is up")
        asyncio.run(_publish_bad_input(up.url, work / "hub-data" / "auth"))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": f"referral-hub-{name}",
                    "static_configs": [{"targets": [f"127.0.0.1:{up.metrics_base + i}"]}],
                }
                for i, name in enumerate(SERVICES)
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        prometheus = subprocess.Popen(  # noqa: S603 - a fixed tool
            [
                binary("prometheus"),
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        yield Prometheus(port), up.metrics_base
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        up.process.send_signal(signal.SIGINT)
        up.process.communicate(timeout=60)


def eventually_data(
    prometheus: Prometheus, expr: str, timeout: float = 90.0, *, need_data: bool = True
) -> dict[str, Any]:
    """Poll until the query succeeds (with a non-empty result unless ``need_data`` is off)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = prometheus.query(expr)
        if answer.get("status") == "success" and (answer["data"]["result"] or not need_data):
            return answer
        if time.monotonic() > deadline:
            return answer
        time.sleep(1.0)


@pytest.mark.parametrize("name", sorted(dashboard_expressions()))
def test_every_dashboard_panel_returns_data(scraped_hub: tuple[Prometheus, int], name: str) -> None:
    prometheus, _ = scraped_hub

    answer = eventually_data(prometheus, dashboard_expressions()[name])

    assert answer.get("status") == "success", answer
    assert answer["data"]["result"], f"{name}: no data for {dashboard_expressions()[name]}"


@pytest.mark.parametrize("name", sorted(rule_expressions()))
def test_every_rule_expression_runs_against_the_hub(scraped_hub: tuple[Prometheus, int], name: str) -> None:
    prometheus, _ = scraped_hub

    answer = eventually_data(prometheus, rule_expressions()[name], need_data=False)

    assert answer.get("status") == "success", answer


def test_prometheus_loaded_the_rules_and_scrapes_every_service(scraped_hub: tuple[Prometheus, int]) -> None:
    prometheus, _ = scraped_hub

    up = eventually_data(prometheus, 'count(up{job=~"referral-hub-.*"} == 1) == 3')
    with urllib.request.urlopen(f"{prometheus.base}/api/v1/rules", timeout=10) as reply:  # noqa: S310 - loopback
        loaded = {rule["name"] for group in json.load(reply)["data"]["groups"] for rule in group["rules"]}

    assert up["data"]["result"], up
    assert loaded == set(rule_expressions())


@pytest.mark.parametrize("offset", range(len(SERVICES)), ids=SERVICES)
def test_promtool_accepts_each_services_metrics(scraped_hub: tuple[Prometheus, int], offset: int) -> None:
    _, metrics_base = scraped_hub
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_base + offset}/metrics", timeout=10) as reply:
        exposition = reply.read()

    result = subprocess.run(  # noqa: S603 - a fixed tool
        [binary("promtool"), "check", "metrics"], input=exposition, capture_output=True, check=False
    )

    assert result.returncode == 0, (result.stdout + result.stderr).decode()
