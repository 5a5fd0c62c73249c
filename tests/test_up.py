"""Command one, ``hubctl up``, as a user runs it: traffic flows, Ctrl-C stops cleanly, data stays."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from referral_hub.client import ClinicClient
from referral_hub.runtime.broker import permissions
from referral_hub.runtime.broker.credentials import CREDS_DIR_ENV, CredentialsError, break_glass_dir_for
from referral_hub.runtime.broker.embedded import free_port, free_ports, port_is_free

from .helpers import interrupt

pytestmark = pytest.mark.slow


def free_metrics_base() -> int:
    """A port whose next five are free too: three services, the NATS exporter, the two front ends' metrics."""
    return free_ports(6)


@dataclass(frozen=True)
class Up:
    """A running ``hubctl up`` and where it listens."""

    process: subprocess.Popen[str]
    url: str
    metrics_base: int
    monitor_port: int


def start_up(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    up = launch_up(data_dir, *extra)
    return up.process, up.url


def launch_up(data_dir: Path, *extra: str) -> Up:
    port, monitor, metrics = free_port(), free_port(), free_metrics_base()
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
        [
            sys.executable,
            "-m",
            "referral_hub.cli",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--monitor-port",
            str(monitor),
            "--metrics-port",
            str(metrics),
            # Fixed free ports: the defaults (8480, 8490 when free) race between hubs started at once.
            *("--gateway-port", str(free_port()), "--portal-port", str(free_port())),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Up(process, f"nats://127.0.0.1:{port}", metrics, monitor)


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 60.0) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    pytest.fail(f"{marker!r} not seen; output was:\n" + "\n".join(lines))


def hubctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-m", "referral_hub.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_up_shows_traffic_stops_on_ctrl_c_and_keeps_its_data_behind_authorization(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub-data"
    first, url = start_up(data_dir, "--demo-interval", "0.2")
    banner = read_until(first, "Ctrl-C stops everything")
    traffic = read_until(first, "<- ")
    stopped, ending = interrupt(first, 30)

    assert stopped == 0, ending
    assert "stopped; data kept" in ending
    assert any("/metrics" in line and "/health" in line for line in banner)
    assert any(line.startswith("-> ") and " refers " in line for line in traffic)
    assert "stopping services ..." in ending

    second, url = start_up(data_dir, "--no-demo")
    read_until(second, "Ctrl-C stops everything")
    keys = ("--nats-url", url, "--creds-dir", str(data_dir / "auth"))
    clinics = json.loads(hubctl("clinics", "--json", *keys).stdout)["clinics"]
    inboxes = [hubctl("inbox", "--clinic", clinic["id"], "--json", *keys).stdout for clinic in clinics]
    verified = hubctl("audit", "verify", *keys)
    anonymous = subprocess.run(  # noqa: S603 - our own interpreter and CLI, from a folder holding no keys
        [sys.executable, "-m", "referral_hub.cli", "clinics", "--nats-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={name: value for name, value in os.environ.items() if name != CREDS_DIR_ENV},
    )
    stopped, ending = interrupt(second, 30)

    assert stopped == 0, ending
    assert sum(len(text.splitlines()) for text in inboxes) >= 2
    assert verified.returncode == 0
    assert verified.stdout.startswith("audit chain OK")
    assert anonymous.returncode == 1
    assert "Authorization Violation" in anonymous.stderr
    everyday = sorted(path.stat().st_mode & 0o777 for path in (data_dir / "auth").glob("*/*.nk"))
    assert everyday == [0o600] * (len(permissions.HUB_USERS) + 5)
    glass = sorted(path.name for path in (data_dir / "break-glass").glob("*.nk"))
    assert glass == sorted(f"{user}.nk" for user in permissions.BREAK_GLASS_USERS)
    assert break_glass_dir_for(data_dir / "auth") == (data_dir / "break-glass").resolve()
    assert not list((data_dir / "auth").rglob("*breakglass*"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hub-data"]


def test_up_refuses_a_busy_port_with_one_line(tmp_path: Path) -> None:
    import socket  # noqa: PLC0415

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = hubctl(
            "up",
            "--data-dir",
            str(tmp_path),
            "--port",
            str(port),
            "--monitor-port",
            str(free_port()),
            "--metrics-port",
            str(free_metrics_base()),
        )

    assert result.returncode == 1
    assert result.stderr.startswith(f"hubctl: error: port {port} on 127.0.0.1 is in use")
    assert "Traceback" not in result.stderr


def test_up_stops_everything_even_when_its_output_is_gone(tmp_path: Path) -> None:
    process, url = start_up(tmp_path / "hub-data", "--demo-interval", "0.2")
    read_until(process, "<- ")
    ports = [int(url.rsplit(":", 1)[1])]
    assert process.stdout is not None
    process.stdout.close()
    process.send_signal(signal.SIGINT)
    process.wait(30)

    leftovers = [_read(cmdline) for cmdline in Path("/proc").glob("[0-9]*/cmdline") if url.encode() in _read(cmdline)]
    assert leftovers == []
    assert all(port_is_free(port) for port in ports)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_up_runs_a_three_node_cluster_with_r3_streams_and_two_replicas_of_each_service(tmp_path: Path) -> None:
    port, monitor, routes, metrics = free_ports(3), free_ports(3), free_ports(3), free_ports(9)
    data_dir = tmp_path / "hub-data"
    up = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
        [
            *(sys.executable, "-m", "referral_hub.cli", "up", "--data-dir", str(data_dir), "--port", str(port)),
            *("--monitor-port", str(monitor), "--cluster-port", str(routes), "--metrics-port", str(metrics)),
            *("--cluster", "3", "--replicas", "2", "--demo-interval", "0.2"),
            *("--gateway-port", str(free_port()), "--portal-port", str(free_port())),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    banner = read_until(up, "Ctrl-C stops everything", timeout=120)
    read_until(up, "<- ")
    url = ",".join(f"nats://127.0.0.1:{port + node}" for node in range(3))
    verified = hubctl("audit", "verify", "--nats-url", url, "--creds-dir", str(data_dir / "auth"))
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor + 2}/jsz?streams=true&config=true", timeout=5) as reply:
        streams = json.load(reply)["account_details"][0]["stream_detail"]
    stopped, ending = interrupt(up, 60)

    assert stopped == 0, ending
    probed = Counter(line.split()[0].split("-")[0] for line in banner if " health http://127.0.0.1:" in line)
    assert probed == {"referrals": 2, "notifications": 2, "audit": 2, "gateway": 1, "portal": 1}
    assert {stream["config"]["num_replicas"] for stream in streams} == {3}
    assert verified.returncode == 0, verified.stderr


EXAMPLE_ROSTER = Path(__file__).parent.parent / "docs" / "examples" / "roster.json"


def test_up_keeps_roster_changes_across_restarts_and_clinics_connect_as_hubctl_does(  # noqa: PLR0915 - each hub start costs most of a minute, so one restart is checked for all it must keep
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / ".hub-data"
    keys_dir = data_dir / "auth"
    first = launch_up(data_dir, "--no-demo")
    banner = read_until(first.process, "Ctrl-C stops everything")
    keys = ("--nats-url", first.url, "--creds-dir", str(keys_dir))
    roster = hubctl("roster", "set", "--clinic", "harbor-pt", "--file", str(EXAMPLE_ROSTER), *keys)
    until_day = (datetime.now(UTC) + timedelta(days=2)).date()
    override = hubctl(
        "oncall", "override", "--clinic", "harbor-pt", "--member", "cara.lind", "--until", f"{until_day}T18:00", *keys
    )
    new_york_six_pm = datetime(until_day.year, until_day.month, until_day.day, 18, tzinfo=ZoneInfo("America/New_York"))
    with urllib.request.urlopen(f"http://127.0.0.1:{first.metrics_base}/", timeout=5) as reply:
        index = reply.read().decode()
    status = hubctl("status", "--metrics-port", str(first.metrics_base), *keys)
    stopped, ending = interrupt(first.process, 30)
    assert (stopped, "stopped; data kept" in ending) == (0, True), ending

    second = launch_up(data_dir, "--no-demo")
    read_until(second.process, "Ctrl-C stops everything")
    clinics = json.loads(hubctl("clinics", "--json", "--nats-url", second.url, "--creds-dir", str(keys_dir)).stdout)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CREDS_DIR_ENV, raising=False)
    newest = asyncio.run(newest_event(second.url, "harbor-pt"))
    with pytest.raises(CredentialsError, match=r"no credentials for clinic 'nowhere-clinic' in .*\.hub-data/auth"):
        asyncio.run(newest_event(second.url, "nowhere-clinic"))
    only = tmp_path / "harbor-only"
    (only / "clinics").mkdir(parents=True)
    shutil.copy(keys_dir / "clinics" / "harbor-pt.nk", only / "clinics" / "harbor-pt.nk")
    refer = (
        *("refer", "--clinic", "harbor-pt", "--to", "summit-chiro", "--patient", "pt-4711"),
        *("--modality", "chiropractic", "--reason", "Mechanical low back pain"),
        *("--nats-url", second.url, "--creds-dir", str(only)),
    )
    started = time.monotonic()
    without_actor = hubctl(*refer)
    asked_at_once = time.monotonic() - started
    with_actor = hubctl(*refer, "--actor", "ana.ruiz")
    stopped, ending = interrupt(second.process, 30)
    assert (stopped, "stopped; data kept" in ending) == (0, True), ending
    service_logs = "".join((data_dir / "logs" / f"{name}.log").read_text() for name in ("referrals", "notifications"))

    assert any("** a page goes out" in line and "!! a contraindication alert" in line for line in banner)
    assert roster.returncode == 0, roster.stderr
    assert override.returncode == 0, override.stderr
    assert 'href="/metrics"' in index
    assert 'href="/health"' in index
    assert status.returncode == 0, status.stderr
    assert all(f"  {name}" in status.stdout and "ready" in status.stdout for name in ("referrals", "audit"))
    assert "dead letters     0" in status.stdout
    assert "open pages       0" in status.stdout
    [harbor] = [clinic for clinic in clinics["clinics"] if clinic["id"] == "harbor-pt"]
    assert [m["id"] for m in harbor["members"]] == ["ana.ruiz", "ben.okafor", "cara.lind", "front.harbor"]
    assert harbor["oncall"]["members"] == ["ben.okafor", "cara.lind"]
    [kept] = harbor["oncall_overrides"]
    assert (kept["member"], datetime.fromisoformat(kept["ends_at"])) == ("cara.lind", new_york_six_pm)
    assert newest >= 0  # it connected and read the inbox with no credentials named
    assert without_actor.returncode == 1
    assert without_actor.stderr.startswith("hubctl: error: name the member acting for harbor-pt with --actor MEMBER")
    assert asked_at_once < 30
    assert with_actor.returncode == 0, with_actor.stderr
    assert " requested: harbor-pt -> summit-chiro" in with_actor.stdout
    assert "Traceback" not in service_logs


async def newest_event(url: str, clinic_id: str) -> int:
    """What a clinic's script gets, run in the folder ``hubctl up`` ran in: no credentials named."""
    client = await ClinicClient.connect(url, clinic_id)
    try:
        return await client.last_event_number()
    finally:
        await client.close()
