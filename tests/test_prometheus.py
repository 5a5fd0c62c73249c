"""Ops material against the real thing: Debian's Prometheus 2.42 scraping a running ``hubctl up``.

``make tools`` installs the ``prometheus`` package (``promtool`` and ``prometheus``); a missing
binary fails these tests rather than skipping them.

One ``hubctl up`` (three services and the NATS exporter) runs for the whole module, scraped by
a real Prometheus every 2 s (rules evaluated every second) with ``deploy/prometheus/prometheus.yml``'s
jobs and the alert rules exactly as deployed: no ``for:`` is shortened, since ``HubServiceDown``
is pending at the first evaluation that sees a failed scrape. In order:
- a healthy hub raises no alert, pending or firing, for ninety seconds (the false alerts this
  guards against fired within the first minute);
- every ``hub_`` family comes from the one job that owns it, and promtool, fed each job's
  real series held steady, finds no alert either;
- after a clinic's bad input, every rule and dashboard query runs, each panel with data;
- a killed service makes ``HubServiceDown`` pending for its job, and nothing else.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from referral_hub.client import ClinicClient
from referral_hub.runtime.broker.credentials import NatsCredentials, clinic_seed_path
from referral_hub.runtime.broker.embedded import free_port, free_ports
from referral_hub.runtime.broker.permissions import clinic_inbox_prefix

from .helpers import interrupt
from .test_up import read_until

pytestmark = pytest.mark.slow
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "hub.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "hub_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "referral-hub.json"
DEFAULT_METRICS_BASE = 9101
"""``hubctl up --metrics-port``'s default; prometheus.yml's targets count up from it."""
SOAK_SECONDS = 90.0
"""How long the healthy hub is watched, from Prometheus's start."""
SHARED_FAMILIES = {
    "hub_messages_handled",
    "hub_message_handling_seconds",
    "hub_rejections",
    "hub_nats_connected",
}
"""Every service reports these, about itself (its ``service`` label, its own consumers)."""


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


def deployed_jobs() -> dict[str, list[int]]:
    """prometheus.yml's jobs and their target ports."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    return {
        job["job_name"]: [int(target.rsplit(":", 1)[1]) for target in job["static_configs"][0]["targets"]]
        for job in config["scrape_configs"]
    }


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # noqa: S603 - a fixed tool
        [binary("promtool"), *args], input=stdin, capture_output=True, check=False, timeout=120
    )


# --- the files alone ----------------------------------------------------------------------


def test_promtool_accepts_the_rules_and_the_config() -> None:
    rules = promtool("check", "rules", str(RULES))
    config = promtool("check", "config", str(PROMETHEUS_YML))

    assert rules.returncode == 0, (rules.stdout + rules.stderr).decode()
    assert config.returncode == 0, (config.stdout + config.stderr).decode()


def test_promtool_unit_tests_pass_and_cover_every_rule() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }

    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert tested == set(rule_expressions())


def test_the_healthy_unit_test_has_every_job_and_expects_no_alert_from_any_rule() -> None:
    healthy = yaml.safe_load(RULE_TESTS.read_text())["tests"][0]
    up_jobs = {
        series["series"].split('job="', 1)[1].split('"', 1)[0]
        for series in healthy["input_series"]
        if series["series"].startswith("up{")
    }
    quiet = {case["alertname"] for case in healthy["alert_rule_test"] if case["exp_alerts"] == []}

    assert up_jobs == set(deployed_jobs())
    assert quiet == set(rule_expressions())


def test_every_rule_has_a_for_a_severity_and_a_runbook_section() -> None:
    runbook = (DEPLOY / "RUNBOOK.md").read_text()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule.get("for"), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["runbook_url"] == f"{{{{ $externalLabels.runbook }}}}#{rule['alert'].lower()}"
            assert f"## {rule['alert']}\n" in runbook, rule["alert"]


@pytest.mark.parametrize("config", ["prometheus/prometheus.yml", "compose/prometheus.yml"])
def test_each_shipped_config_says_where_the_runbook_is_so_every_alert_links_to_its_section(config: str) -> None:
    runbook = yaml.safe_load((DEPLOY / config).read_text())["global"]["external_labels"]["runbook"]

    assert runbook.startswith("https://")
    assert runbook.endswith("/deploy/RUNBOOK.md")


def test_no_rule_or_panel_masks_missing_data() -> None:
    masked = {
        name: expr for name, expr in {**rule_expressions(), **dashboard_expressions()}.items() if "vector(" in expr
    }

    assert masked == {}


# --- a running hub, scraped -----------------------------------------------------------------


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - loopback
                return json.load(reply)
        except urllib.error.HTTPError as exc:
            return json.load(exc)
        except urllib.error.URLError:
            return {"status": "unreachable"}

    def query(self, expr: str) -> dict[str, Any]:
        return self.get("/api/v1/query", query=expr)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert pending or firing now."""
        answer = self.get("/api/v1/alerts")
        return answer["data"]["alerts"] if answer.get("status") == "success" else []

    def rules(self) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/rules")
        return [rule for group in answer["data"]["groups"] for rule in group["rules"]]


@dataclass
class ScrapedHub:
    prometheus: Prometheus
    started_at: float
    """When Prometheus started (monotonic)."""
    targets: dict[str, str]
    """Each scrape job's one target, ``host:port``."""
    up: subprocess.Popen[str]
    url: str
    auth_dir: Path
    ui_ports: dict[str, int]
    """The gateway's and the portal's own HTTP ports (their metrics are in ``targets``)."""


def drain(process: subprocess.Popen[str], kept: collections.deque[str]) -> None:
    """Keep reading ``hubctl up``'s output, so its demo never blocks on a full pipe."""
    assert process.stdout is not None
    for line in process.stdout:
        kept.append(line)


@pytest.fixture(scope="module")
def scraped_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapedHub]:
    work = tmp_path_factory.mktemp("prometheus")
    jobs = deployed_jobs()
    nats_port, monitor_port, metrics_base = free_port(), free_port(), free_ports(len(jobs))
    data_dir = work / "hub-data"
    up = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
        [
            sys.executable,
            "-m",
            "referral_hub.cli",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(nats_port),
            "--monitor-port",
            str(monitor_port),
            "--metrics-port",
            str(metrics_base),
            "--gateway-port",
            str(gateway_port := free_port()),
            "--portal-port",
            str(portal_port := free_port()),
            "--demo-interval",
            "1.0",  # steady traffic through the soak at a fifth of the demo's CPU
            "--duration",
            "600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HUB_AUDIT_CHECKPOINT_SECONDS": "2"},
    )
    prometheus = None
    try:
        read_until(up, "Referral Hub is up")
        threading.Thread(target=drain, args=(up, collections.deque(maxlen=200)), daemon=True).start()
        # prometheus.yml's own jobs, each target moved from hubctl up's default ports to this run's.
        targets = {job: f"127.0.0.1:{metrics_base + ports[0] - DEFAULT_METRICS_BASE}" for job, ports in jobs.items()}
        config = {
            "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
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
        yield ScrapedHub(
            Prometheus(port),
            time.monotonic(),
            targets,
            up,
            f"nats://127.0.0.1:{nats_port}",
            data_dir / "auth",
            {"gateway": gateway_port, "portal": portal_port},
        )
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        interrupt(up, 60)


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


def described(alert: dict[str, Any]) -> str:
    labels = alert.get("labels", alert.get("metric", {}))
    return f"{labels.get('alertname')} {alert.get('state', labels.get('alertstate'))} {labels}"


@pytest.mark.timeout(SOAK_SECONDS + 120)
def test_a_healthy_hub_raises_no_alert_pending_or_firing_for_ninety_seconds(scraped_hub: ScrapedHub) -> None:
    prometheus = scraped_hub.prometheus
    watched = eventually_data(prometheus, f'count(up{{job=~"referral-hub-.*"}} == 1) == {len(scraped_hub.targets)}')
    seen: dict[str, str] = {}
    while time.monotonic() < scraped_hub.started_at + SOAK_SECONDS:
        seen.update((described(alert), alert.get("activeAt", "")) for alert in prometheus.alerts())
        time.sleep(1.0)
    # Every evaluation that found an alert pending or firing left an ALERTS sample; none may exist.
    history = prometheus.query(f"ALERTS[{SOAK_SECONDS + 60:.0f}s]")
    evaluated = {rule["name"]: (rule["health"], rule.get("lastError", "")) for rule in prometheus.rules()}
    # Silence must not be blindness: NATS, checkpoints and every service were seen all along.
    nats = prometheus.query("min_over_time(hub_nats_up[90s])")
    checkpoint_age = prometheus.query("time() - hub_audit_last_checkpoint_timestamp_seconds")

    assert watched["data"]["result"], watched
    assert seen == {}, "\n".join(seen)
    assert history["status"] == "success"
    assert [described(series) for series in history["data"]["result"]] == []
    assert evaluated == dict.fromkeys(rule_expressions(), ("ok", ""))
    assert [float(series["value"][1]) for series in nats["data"]["result"]] == [1.0]
    assert [float(series["value"][1]) < 30 for series in checkpoint_age["data"]["result"]] == [True]


def exposition(target: str) -> str:
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as reply:
        return reply.read().decode()


def hub_families(text: str) -> set[str]:
    return {
        family.name
        for family in text_string_to_metric_families(text)
        if family.name.startswith("hub_") and not family.name.endswith("_created")
    }


def test_each_hub_family_comes_from_the_one_job_that_owns_it(scraped_hub: ScrapedHub) -> None:
    eventually_data(scraped_hub.prometheus, "hub_audit_last_checkpoint_timestamp_seconds")
    exported = {job: hub_families(exposition(target)) for job, target in scraped_hub.targets.items()}
    jobs_of: dict[str, set[str]] = collections.defaultdict(set)
    for job, families in exported.items():
        for family in families:
            jobs_of[family].add(job)
    front_ends = {"referral-hub-portal", "referral-hub-gateway"}
    services = {job for job in exported if job != "referral-hub-nats"} - front_ends

    assert {family for family in SHARED_FAMILIES if jobs_of[family] - front_ends != services} == set()
    assert {
        job: {family for family in exported[job] if not family.startswith(f"hub_{job.removeprefix('referral-hub-')}_")}
        for job in front_ends
    } == {job: {"hub_nats_connected"} for job in front_ends}
    assert {family: jobs for family, jobs in jobs_of.items() if family not in SHARED_FAMILIES and len(jobs) > 1} == {}
    assert {
        family for family in jobs_of if family.startswith(("hub_nats_", "hub_jetstream_", "hub_consumer_"))
    } - SHARED_FAMILIES == (exported["referral-hub-nats"])
    assert {family for family in jobs_of if family.startswith("hub_audit_")} <= exported["referral-hub-audit"]


SERIES_STEPS = 60


TIMER_COUNTERS = {"hub_page_sweeps_total": 12}
"""Counters a healthy service's own timer advances, per minute (the escalation sweep runs every 5 s)."""
MOMENTARY = {"hub_consumer_waiting_pulls"}
"""Gauges that swing within a second (a reader between two fetches has no pull waiting): held at
the most Prometheus saw in the last minute, as the rule on them reads them, not at one instant."""


def steady_series(
    job: str, target: str, text: str, scraped_at: float, recent_max: dict[tuple[str, str], float]
) -> list[dict[str, str]]:
    """One job's real series as promtool input, held at the scraped value for an hour.

    Times are moved onto promtool's clock, where "now" is 0: a process started that long
    before, and the newest checkpoint keeps up with time as the live one does (one every 2 s
    here). Counters a timer drives (:data:`TIMER_COUNTERS`) keep ticking as they do live.
    """
    series = [{"series": f'up{{job="{job}", instance="{target}"}}', "values": f"1x{SERIES_STEPS}"}]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created") or not (
                sample.name.startswith("hub_") or sample.name == "process_start_time_seconds"
            ):
                continue
            labels = {**sample.labels, "job": job, "instance": target}
            selector = ", ".join(f"{name}={json.dumps(value)}" for name, value in sorted(labels.items()))
            if sample.name.endswith("_timestamp_seconds"):
                values = f"{sample.value - scraped_at:.3f}+60x{SERIES_STEPS}"
            elif sample.name == "process_start_time_seconds":
                values = f"{sample.value - scraped_at:.3f}x{SERIES_STEPS}"
            elif sample.name in MOMENTARY:
                values = f"{recent_max[sample.name, sample.labels.get('consumer', '')]:.6f}x{SERIES_STEPS}"
            elif sample.name in TIMER_COUNTERS:
                values = f"{sample.value:.6f}+{TIMER_COUNTERS[sample.name]}x{SERIES_STEPS}"
            else:
                values = f"{sample.value:.6f}x{SERIES_STEPS}"
            series.append({"series": f"{sample.name}{{{selector}}}", "values": values})
    return series


def test_promtool_finds_no_alert_in_the_hubs_own_series(scraped_hub: ScrapedHub, tmp_path: Path) -> None:
    eventually_data(scraped_hub.prometheus, "hub_audit_last_checkpoint_timestamp_seconds")
    recent_max = {
        (name, series["metric"].get("consumer", "")): float(series["value"][1])
        for name in MOMENTARY
        for series in eventually_data(scraped_hub.prometheus, f"max by (consumer) (max_over_time({name}[1m]))")["data"][
            "result"
        ]
    }
    scraped_at = time.time()
    input_series = [
        series
        for job, target in scraped_hub.targets.items()
        for series in steady_series(job, target, exposition(target), scraped_at, recent_max)
    ]
    case = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "alert_rule_test": [
                    {"eval_time": "45m", "alertname": name, "exp_alerts": []} for name in sorted(rule_expressions())
                ],
            }
        ],
    }
    (tmp_path / "hub_as_scraped.yml").write_text(yaml.safe_dump(case))

    result = promtool("test", "rules", str(tmp_path / "hub_as_scraped.yml"))

    assert {job for job in scraped_hub.targets if any(f'job="{job}"' in s["series"] for s in input_series)} == set(
        deployed_jobs()
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()[-4000:]


async def _publish_bad_input(url: str, auth_dir: Path) -> None:
    sender = NatsCredentials(clinic_inbox_prefix("harbor-pt"), clinic_seed_path(auth_dir, "harbor-pt"))
    client = await ClinicClient.connect(url, "harbor-pt", sender)
    await client.publish_raw("referral.request", b"{not json")
    await client.close()


@pytest.fixture(scope="module")
def after_bad_input(scraped_hub: ScrapedHub) -> ScrapedHub:
    """The hub once a clinic has sent something unreadable (a rejection and a dead letter); each front end visited."""
    asyncio.run(_publish_bad_input(scraped_hub.url, scraped_hub.auth_dir))
    for path in (
        f"http://127.0.0.1:{scraped_hub.ui_ports['gateway']}/fhir/metadata",
        f"http://127.0.0.1:{scraped_hub.ui_ports['portal']}/portal/login",
    ):
        with urllib.request.urlopen(path, timeout=10) as reply:  # noqa: S310 - loopback
            reply.read()
    return scraped_hub


DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards" / "referral-hub.json"
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def dashboard_metric_names() -> dict[str, set[str]]:
    """Every ``hub_*`` series name each panel's PromQL reads, by panel title."""
    used: dict[str, set[str]] = collections.defaultdict(set)
    pending = list(json.loads(DASHBOARD.read_text())["panels"])
    while pending:
        panel = pending.pop()
        pending.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            used[panel["title"]].update(re.findall(r"\bhub_[a-z0-9_]+", target.get("expr", "")))
    return used


def exposed_series_names(text: str) -> set[str]:
    """The series names an exposition can carry, sampled yet or not (a labelled family with no child has none)."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))
    }


def test_every_dashboard_panel_reads_only_series_some_hub_process_exposes(after_bad_input: ScrapedHub) -> None:
    eventually_data(after_bad_input.prometheus, "hub_audit_last_checkpoint_timestamp_seconds")
    exposed = set().union(*(exposed_series_names(exposition(target)) for target in after_bad_input.targets.values()))

    assert {title: names - exposed for title, names in dashboard_metric_names().items() if names - exposed} == {}


@pytest.mark.parametrize("name", sorted(dashboard_expressions()))
def test_every_dashboard_panel_returns_data(after_bad_input: ScrapedHub, name: str) -> None:
    answer = eventually_data(after_bad_input.prometheus, dashboard_expressions()[name])

    assert answer.get("status") == "success", answer
    assert answer["data"]["result"], f"{name}: no data for {dashboard_expressions()[name]}"


@pytest.mark.parametrize("name", sorted(rule_expressions()))
def test_every_rule_expression_runs_against_the_hub(after_bad_input: ScrapedHub, name: str) -> None:
    answer = eventually_data(after_bad_input.prometheus, rule_expressions()[name], need_data=False)

    assert answer.get("status") == "success", answer


def test_prometheus_loaded_the_rules_and_scrapes_every_job(after_bad_input: ScrapedHub) -> None:
    prometheus = after_bad_input.prometheus

    up = eventually_data(prometheus, f'count(up{{job=~"referral-hub-.*"}} == 1) == {len(deployed_jobs())}')

    assert up["data"]["result"], up
    assert {rule["name"] for rule in prometheus.rules()} == set(rule_expressions())


@pytest.mark.parametrize("job", sorted(deployed_jobs()))
def test_promtool_accepts_each_jobs_metrics(after_bad_input: ScrapedHub, job: str) -> None:
    result = promtool("check", "metrics", stdin=exposition(after_bad_input.targets[job]).encode())

    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def service_pid(metrics_port: int, flag: str = "--metrics-port", *, missing_ok: bool = False) -> int:
    """The ``hubctl run`` child serving ``metrics_port`` (given with ``flag``); 0 if none and ``missing_ok``."""
    wanted = [flag, str(metrics_port)]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "run" in argv and any(argv[i : i + 2] == wanted for i in range(len(argv))):
            return int(proc.name)
    if missing_ok:
        return 0
    pytest.fail(f"no service process with {' '.join(wanted)}")


STUCK_WITHIN_SECONDS = 120.0
SCRAPE_SECONDS = 2.0
"""The test Prometheus's scrape interval (the scraped_hub fixture)."""


def serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310 - loopback
            return bool(reply.status == 200)
    except OSError:
        return False


CLEARED_WITHIN_SECONDS = 60.0


def active_alerts(prometheus: Prometheus) -> list[tuple[str, str]]:
    return sorted((alert["labels"]["alertname"], alert["labels"].get("job", "")) for alert in prometheus.alerts())


def wait_for_alerts(prometheus: Prometheus, wanted: list[tuple[str, str]], timeout: float) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    active = active_alerts(prometheus)
    while active != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
        active = active_alerts(prometheus)
    return active


@pytest.mark.timeout(STUCK_WITHIN_SECONDS + CLEARED_WITHIN_SECONDS + 60)
def test_a_frozen_service_makes_its_consumer_stuck_alert_pending_within_two_minutes(
    after_bad_input: ScrapedHub,
) -> None:
    """The broker's figures, not the frozen service's own, show it: its /metrics is frozen with it."""
    prometheus = after_bad_input.prometheus
    eventually_data(prometheus, 'ALERTS{alertname="HubDeadLetters"}')
    pid = service_pid(int(after_bad_input.targets["referral-hub-referrals"].rsplit(":", 1)[1]))
    os.kill(pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    stuck: list[dict[str, Any]] = []
    down = False
    try:
        while not stuck and time.monotonic() < frozen_at + STUCK_WITHIN_SECONDS:
            time.sleep(0.5)
            raised = prometheus.alerts()
            down = down or any(
                alert["labels"]["alertname"] == "HubServiceDown" and alert["labels"]["job"] == "referral-hub-referrals"
                for alert in raised
            )
            stuck = [
                alert
                for alert in raised
                if alert["labels"]["alertname"] == "HubConsumerStuck"
                and alert["labels"]["consumer"] == "referrals-intake"
            ]
        took = time.monotonic() - frozen_at
    finally:
        os.kill(pid, signal.SIGCONT)
    left = wait_for_alerts(prometheus, [("HubDeadLetters", "referral-hub-audit")], CLEARED_WITHIN_SECONDS)
    sys.stderr.write(f"HubConsumerStuck {stuck[0]['state'] if stuck else 'absent'} {took:.1f}s after SIGSTOP\n")

    assert stuck, f"no HubConsumerStuck for referrals-intake within {STUCK_WITHIN_SECONDS:.0f}s"
    assert down, "the frozen service's scrapes failed without HubServiceDown"
    assert left == [("HubDeadLetters", "referral-hub-audit")]


@pytest.mark.timeout(120)
def test_a_killed_gateway_is_back_and_leaves_no_alert_behind(after_bad_input: ScrapedHub) -> None:
    prometheus = after_bad_input.prometheus
    job = "referral-hub-gateway"
    target = after_bad_input.targets[job]
    eventually_data(prometheus, f'up{{job="{job}"}} == 1')
    pid = service_pid(int(target.rsplit(":", 1)[1]), "--gateway-metrics-port")

    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    port = int(target.rsplit(":", 1)[1])
    while (
        service_pid(port, "--gateway-metrics-port", missing_ok=True) in {0, pid} and time.monotonic() < killed_at + 10
    ):
        time.sleep(0.2)
    restarted = service_pid(port, "--gateway-metrics-port", missing_ok=True)
    while not serves(f"http://{target}/health") and time.monotonic() < killed_at + 30:
        time.sleep(0.2)
    serving_after = time.monotonic() - killed_at
    time.sleep(2 * SCRAPE_SECONDS)  # the next scrapes see the new process
    back = eventually_data(prometheus, f'min_over_time(up{{job="{job}"}}[5s]) == 1', 60)
    left = wait_for_alerts(prometheus, [("HubDeadLetters", "referral-hub-audit")], CLEARED_WITHIN_SECONDS)

    assert restarted not in {0, pid}
    assert serving_after < 10.0
    assert back["data"]["result"], "the gateway was not scraped again after its kill"
    assert left == [("HubDeadLetters", "referral-hub-audit")]


@pytest.mark.timeout(120)
def test_a_killed_service_is_back_at_once_and_leaves_no_alert_behind(after_bad_input: ScrapedHub) -> None:
    """Runs last. ``hubctl up`` starts it again (often before a scrape sees it gone); nothing stays raised."""
    prometheus = after_bad_input.prometheus
    job = "referral-hub-referrals"
    eventually_data(prometheus, 'ALERTS{alertname="HubDeadLetters"}')  # the bad input's dead letter, as expected
    port = int(after_bad_input.targets[job].rsplit(":", 1)[1])
    pid = service_pid(port)

    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    while (service_pid(port, missing_ok=True) in {0, pid}) and time.monotonic() < killed_at + 10:
        time.sleep(0.2)
    restarted = service_pid(port, missing_ok=True)
    left = wait_for_alerts(prometheus, [("HubDeadLetters", "referral-hub-audit")], CLEARED_WITHIN_SECONDS)
    serving = eventually_data(prometheus, f'min_over_time(up{{job="{job}"}}[5s]) == 1', 30)

    assert restarted not in {0, pid}
    assert serving["data"]["result"]
    assert left == [("HubDeadLetters", "referral-hub-audit")]
