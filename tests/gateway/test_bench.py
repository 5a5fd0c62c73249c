"""``hubctl bench gateway`` runs end to end and prints every figure it promises (a smoke test, not a target)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

KEYS = (
    "http_transitions_per_s",
    "nats_transitions_per_s",
    "ratio",
    "http_p50_ms",
    "http_p99_ms",
    "nats_p50_ms",
    "nats_p99_ms",
    "notify_p99_ms",
)


def test_bench_gateway_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "referral_hub.cli", "bench", "gateway", "--duration", "2", "--json", "--sync", "1s"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(KEYS) <= set(figures)
    assert figures["http_transitions_per_s"] > 0
    assert figures["nats_transitions_per_s"] > 0
