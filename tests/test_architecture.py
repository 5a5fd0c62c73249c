"""The pure core does no I/O: the import-linter contract in ``.importlinter`` holds, and bites.

The contract is checked on the installed tree, then on a copy of it in which one pure module
imports nats or structlog, directly or through a runtime module that does: each copy must fail the check,
naming the module and the forbidden import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import referral_hub

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / ".importlinter"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
INSTALLED = Path(referral_hub.__file__).parent


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repository's contract, importing ``referral_hub`` from ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "500"}  # one chain link per line
    return subprocess.run(  # noqa: S603 - our own venv's lint-imports, fixed arguments
        [str(LINT_IMPORTS), "--config", str(CONFIG), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_installed_tree_keeps_the_pure_core_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "source", "last_link"),
    [
        ("notifications/domain.py", "import nats", "referral_hub.notifications.domain", "domain -> nats"),
        (
            "notifications/rendering.py",
            "from referral_hub.runtime.messaging import inbox_writer",
            "referral_hub.notifications.rendering",
            "inbox_writer -> nats",
        ),
        ("contracts/paging.py", "import httpx", "referral_hub.contracts", "contracts.paging -> httpx"),
        (
            "referrals/domain.py",
            "from referral_hub.runtime.jetstream import topology",
            "referral_hub.referrals.domain",
            "topology -> nats",
        ),
        (
            "audit/domain.py",
            "from referral_hub.runtime.messaging import ack_policy",
            "referral_hub.audit.domain",
            "ack_policy -> structlog",
        ),
    ],
    ids=["direct", "indirect", "contracts", "domain-through-topology", "audit-through-ack-policy-logs"],
)
def test_a_pure_module_that_imports_io_breaks_the_contract(
    tmp_path: Path, module: str, line: str, source: str, last_link: str
) -> None:
    copy = tmp_path / "referral_hub"
    shutil.copytree(INSTALLED, copy, ignore=shutil.ignore_patterns("__pycache__"))
    edited = copy / module
    edited.write_text(f"{edited.read_text()}\n{line}  # noqa: E402\n")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout
    forbidden = last_link.rsplit(" ", 1)[-1]
    assert f"{source} is not allowed to import {forbidden}" in result.stdout
    assert f"referral_hub.{module.removesuffix('.py').replace('/', '.')}" in result.stdout
    assert last_link in result.stdout
