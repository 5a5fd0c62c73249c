"""``hubctl up`` heals itself: children restarted, a NATS stall survived, one data folder used from anywhere.

One hub serves the module: started from one folder with ``--data-dir ../elsewhere``, its
banner's commands run verbatim from another folder. Each real-process test shares it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from referral_hub.cli import supervise
from referral_hub.cli.supervise import Supervisor, in_crash_loop, restart_delay
from referral_hub.runtime.broker.embedded import free_port, free_ports

pytestmark = pytest.mark.slow

BACK_WITHIN_SECONDS = 10.0
STALL_SECONDS = 30.0
CHILDREN = ("referrals", "notifications", "audit", "nats-exporter", "portal", "gateway")


# --- the supervisor's decisions -----------------------------------------------------------------


def test_restart_delay_doubles_with_each_quick_exit_up_to_its_cap() -> None:
    delays = [restart_delay(exits) for exits in range(1, 10)]

    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == supervise.MAX_DELAY_SECONDS


def test_a_crash_loop_is_five_exits_within_the_window_and_not_fewer() -> None:
    now = 1000.0
    recent = [now - 10.0 * step for step in range(5)]

    assert (in_crash_loop(recent, now), in_crash_loop(recent[:4], now)) == (True, False)


@dataclass
class FakeChild:
    name: str
    log_path: Path
    process: subprocess.Popen[bytes]


@dataclass
class Said:
    lines: list[str] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        self.lines.append(line)


def test_a_child_that_keeps_dying_is_restarted_and_reported_as_a_crash_loop(tmp_path: Path) -> None:
    log = tmp_path / "dies.log"
    log.write_text("first line\nfatal: cannot start\n")

    def start() -> FakeChild:
        return FakeChild("dies", log, subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))

    said = Said()
    supervisor = Supervisor(said, tmp_path / "supervision.json")
    supervisor.add(start)
    clock = 0.0
    while sum("started again" in line for line in said.lines) < supervise.CRASH_LOOP_EXITS:
        supervisor.children[0].process.wait()
        supervisor.check(clock)
        clock += supervise.MAX_DELAY_SECONDS
        supervisor.check(clock)

    record = json.loads((tmp_path / "supervision.json").read_text())
    assert record["dies"]["restarts"] == supervise.CRASH_LOOP_EXITS
    assert any("crash loop" in line and "fatal: cannot start" in line for line in said.lines)


# --- a real hub ---------------------------------------------------------------------------------


@dataclass
class Hub:
    process: subprocess.Popen[str]
    data_dir: Path
    lines: list[str]
    url: str
    reader: threading.Thread

    def wait_for(self, marker: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in list(self.lines) if marker in line), None)
            if found is not None:
                return found
            assert self.process.poll() is None, "\n".join(self.lines)
            time.sleep(0.1)
        pytest.fail(f"{marker!r} not seen; output was:\n" + "\n".join(self.lines))

    def children(self) -> dict[str, dict[str, object]]:
        loaded: dict[str, dict[str, object]] = json.loads((self.data_dir / "supervision.json").read_text())
        return loaded


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("supervised")
    start_in = base / "here"
    start_in.mkdir()
    port, monitor, metrics = free_port(), free_port(), free_ports(6)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("HUB_", "NATS_"))}
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
        [
            *(sys.executable, "-m", "referral_hub.cli", "up", "--data-dir", "../elsewhere", "--no-demo"),
            *("--port", str(port), "--monitor-port", str(monitor), "--metrics-port", str(metrics)),
            *("--gateway-port", str(free_port()), "--portal-port", str(free_port())),
        ],
        cwd=start_in,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))  # noqa: PERF401 - each line must be visible while the hub runs

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    running = Hub(process, base / "elsewhere", lines, f"nats://127.0.0.1:{port}", reader)
    running.wait_for("FHIR gateway")
    yield running
    process.send_signal(signal.SIGINT)
    process.wait(60)
    reader.join(10)


def banner_commands(hub: Hub) -> list[str]:
    """The banner's command lines that start with this installation's hubctl."""
    hubctl = str(Path(sys.executable).parent / "hubctl")
    return [line[line.index(hubctl) :].removesuffix(")") for line in hub.lines if hubctl in line]


def run_from(folder: Path, command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("HUB_", "NATS_"))}
    return subprocess.run(  # noqa: S603 - the banner's own command lines
        shlex.split(command),
        cwd=folder,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_banners_commands_work_verbatim_from_another_folder_with_a_non_default_data_folder(
    hub: Hub, tmp_path: Path
) -> None:
    commands = banner_commands(hub)
    results = [run_from(tmp_path, command) for command in commands]

    assert len(commands) >= 3
    assert [(result.returncode, result.stderr) for result in results] == [(0, "")] * len(commands)
    assert list(tmp_path.iterdir()) == []


def test_the_banners_export_line_serves_every_later_command(hub: Hub, tmp_path: Path) -> None:
    exported = hub.wait_for("export NATS_URL=").split("export ", 1)[1]
    env = dict(pair.split("=", 1) for pair in shlex.split(exported))
    hubctl = str(Path(sys.executable).parent / "hubctl")

    verified = run_from(tmp_path, f"{hubctl} audit verify", env)
    queried = run_from(tmp_path, f"{hubctl} audit query --limit 1", env)

    assert (verified.returncode, queried.returncode) == (0, 0), verified.stderr + queried.stderr
    assert list(tmp_path.iterdir()) == []
    assert (hub.data_dir / "audit-index.sqlite").is_file()


def test_every_url_the_banner_prints_answers(hub: Hub) -> None:
    urls = sorted({url.rstrip(".,;)") for line in hub.lines for url in re.findall(r"https?://[^\s'\"]+", line)})
    answers = {}
    for url in urls:
        try:
            answers[url] = httpx.get(url, timeout=5, follow_redirects=True).status_code
        except httpx.HTTPError as exc:
            answers[url] = type(exc).__name__

    assert len(urls) >= 8, hub.lines
    assert {url: status for url, status in answers.items() if not isinstance(status, int) or status >= 500} == {}


def test_nothing_is_written_beside_the_data_folder(hub: Hub) -> None:
    assert sorted(path.name for path in hub.data_dir.parent.iterdir()) == ["elsewhere", "here"]
    assert list((hub.data_dir.parent / "here").iterdir()) == []
    assert (hub.data_dir / "break-glass").is_dir()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310 - a loopback URL from the banner
            return bool(reply.status == 200)
    except OSError:
        return False


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - a loopback URL from the banner
            return int(reply.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)
    except OSError:
        return 0


def probe_url(hub: Hub, name: str) -> str:
    line = next(line for line in hub.lines if line.strip().startswith(name) and "metrics http" in line)
    url = line.split("metrics ", 1)[1].split()[0]
    return url if name == "nats-exporter" else url.replace("/metrics", "/health")


@pytest.mark.parametrize("name", CHILDREN)
def test_a_killed_child_is_back_within_ten_seconds(hub: Hub, name: str) -> None:
    before = hub.children()[name]
    os.kill(int(str(before["pid"])), signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < BACK_WITHIN_SECONDS:
        after = hub.children()[name]
        if after["pid"] != before["pid"] and answers(probe_url(hub, name)):
            break
        time.sleep(0.2)
    back_after = time.monotonic() - killed

    assert back_after < BACK_WITHIN_SECONDS, "\n".join(hub.lines[-20:])
    assert hub.children()[name]["restarts"] == int(str(before["restarts"])) + 1
    assert hub.wait_for(f"!! {name} stopped (signal 9)")


def test_status_shows_each_childs_restarts(hub: Hub, tmp_path: Path) -> None:
    os.kill(int(str(hub.children()["audit"]["pid"])), signal.SIGKILL)
    hub.wait_for("!! audit started again")
    command = next(command for command in banner_commands(hub) if " status " in command)

    shown = run_from(tmp_path, command).stdout

    audit_row = next(line for line in shown.splitlines() if line.strip().startswith("audit ") and "health" not in line)
    assert int(audit_row.split()[1]) >= 1, shown


def test_a_thirty_second_nats_stall_is_survived_and_a_referral_sent_afterwards_arrives(
    hub: Hub, tmp_path: Path
) -> None:
    nats_pid = find_nats(hub.data_dir)
    health = {name: probe_url(hub, name) for name in ("referrals", "gateway", "portal")}
    os.kill(nats_pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        not_ready: set[str] = set()
        while time.monotonic() < stopped_at + STALL_SECONDS - 1:
            not_ready |= {name for name, url in health.items() if status_of(url) == 503}
            time.sleep(1.0)
    finally:
        os.kill(nats_pid, signal.SIGCONT)
    hubctl = str(Path(sys.executable).parent / "hubctl")
    where = f"--nats-url {hub.url} --data-dir {hub.data_dir}"
    patient = f"pt-stall-{os.getpid()}"
    sent = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sent = run_from(
            tmp_path,
            f"{hubctl} refer --clinic harbor-pt --to summit-chiro --patient {patient} --modality chiropractic "
            f"--reason 'Low back pain' --actor ana.ruiz {where}",
        )
        if sent.returncode == 0:
            break
        time.sleep(1)
    arrived = False
    while not arrived and time.monotonic() < deadline:
        inbox = run_from(tmp_path, f"{hubctl} inbox --clinic summit-chiro --json {where}")
        arrived = patient in inbox.stdout
        time.sleep(0.5)

    assert hub.process.poll() is None, "\n".join(hub.lines[-20:])
    assert not_ready == set(health)
    assert sent is not None
    assert sent.returncode == 0, sent.stderr
    assert arrived


def find_nats(data_dir: Path) -> int:
    """The nats-server whose configuration is in ``data_dir``."""
    config = str(data_dir.resolve() / "nats-server.conf")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(part.decode(errors="replace").endswith(config) for part in command) and b"nats-server" in command[0]:
                return int(entry.name)
    pytest.fail(f"no nats-server runs with {config}")


@pytest.mark.parametrize("server", ["refusing", "absent"])
def test_provision_without_credentials_or_server_fails_in_seconds_with_one_clear_line(
    hub: Hub, tmp_path: Path, server: str
) -> None:
    reachable = server == "refusing"
    url = hub.url if reachable else f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()

    result = run_from(tmp_path, f"{Path(sys.executable).parent / 'hubctl'} provision --nats-url {url}")

    took = time.monotonic() - started
    assert (result.returncode, len(result.stderr.splitlines())) == (1, 1), result.stderr[-2000:]
    assert took < 10.0
    assert ("--data-dir" if reachable else "cannot reach NATS") in result.stderr


RUNBOOK = Path(__file__).resolve().parent.parent / "deploy" / "RUNBOOK.md"
NAMED_NOT_RUN = {"hubctl", "hubctl up", "hubctl up --data-dir", "hubctl nats-config", "hubctl roster set"}
"""Commands the runbook names in passing (what started the hub, what to run elsewhere), not steps to run here."""


def runbook_steps() -> list[str]:
    """Every ``hubctl`` command the runbook gives in backticks, placeholders filled, minus :data:`NAMED_NOT_RUN`."""
    found = dict.fromkeys(re.findall(r"`(hubctl[^`]*)`", RUNBOOK.read_text(encoding="utf-8")))
    roster = Path(__file__).resolve().parent.parent / "docs" / "examples" / "roster.json"
    return [
        command.replace("--clinic X", "--clinic harbor-pt").replace("roster.json", str(roster))
        for command in found
        if command not in NAMED_NOT_RUN
    ]


def test_every_runbook_step_runs_as_written_from_any_folder_with_the_banners_settings(hub: Hub, tmp_path: Path) -> None:
    exported = hub.wait_for("export NATS_URL=").split("export ", 1)[1]
    env = dict(pair.split("=", 1) for pair in shlex.split(exported))
    hubctl = str(Path(sys.executable).parent / "hubctl")
    steps = runbook_steps()

    failed = {
        step: result.stderr.strip()[-300:]
        for step in steps
        if (result := run_from(tmp_path, step.replace("hubctl", hubctl, 1), env)).returncode != 0
    }

    assert len(steps) >= 6
    assert failed == {}
    assert list(tmp_path.iterdir()) == []


def test_a_failed_portal_login_is_one_json_access_line_without_the_credentials(hub: Hub) -> None:
    portal = next(line for line in hub.lines if "/portal/login" in line and "http://" in line).split()[1]
    password = "wrong-horse-battery-staple"  # noqa: S105 - a wrong password, sent to be refused
    with httpx.Client() as client:
        form = client.get(portal)
        token = re.search(r'name="_csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        refused = client.post(
            portal,
            data={
                "_csrf_token": token.group(1),
                "username": "sam.lee@kneadwell-massage",
                "password": password,
                "code": "000000",
            },
        )
    log = hub.data_dir / "logs" / "portal.log"
    deadline = time.monotonic() + 5
    lines: list[dict[str, object]] = []
    while not any(line.get("status") == refused.status_code for line in lines) and time.monotonic() < deadline:
        lines = [json.loads(text) for text in log.read_text().splitlines() if text.startswith("{")]
        time.sleep(0.2)

    assert refused.status_code == 401
    assert {"event": "http_request", "method": "POST", "route": "/portal/login", "status": 401}.items() <= next(
        line for line in lines if line.get("status") == 401
    ).items()
    assert password not in log.read_text()
    assert all(text.startswith("{") for text in log.read_text().splitlines() if text.strip())
