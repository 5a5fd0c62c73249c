"""The benchmark command runs end to end and prints its published keys (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

KEYS = {
    "transitions_per_s",
    "p50_ms",
    "p99_ms",
    "baseline_kv_put_per_s",
    "baseline_js_publish_per_s",
    "ratio_vs_kv_put",
}


def test_bench_referrals_json_prints_one_object_with_the_published_keys() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "referral_hub.cli", "bench", "referrals", "--duration", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    figures = json.loads(line)
    assert set(figures) >= KEYS
    assert figures["transitions_per_s"] > 0
    assert figures["baseline_kv_put_per_s"] > 0
    assert figures["ratio_vs_kv_put"] == pytest.approx(
        figures["transitions_per_s"] / figures["baseline_kv_put_per_s"], rel=0.01
    )
