"""The benchmark command runs end to end and prints its published keys (no absolute timing; sealing as a share)."""

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
    "settle_s",
    "stored_messages_per_transition",
    "server_cpu_ms_per_transition",
    "server_ceiling_transitions_per_s",
    "ceiling_ratio_vs_kv_put",
    "stored_per_transition",
    "server_cpu_ratio",
    "baseline_kv_put_server_cpu_ms",
    "stored_per_transition_by_stream",
    "details_transitions_per_s",
    "details_p50_ms",
    "details_p99_ms",
    "seal_open_ms_p50",
    "seal_open_ms_p99",
    "seal_open_share_of_transition",
}
SEAL_OPEN_BUDGET = 0.05
"""Sealing a referral's patient details and opening them may cost at most 5 % of the request's latency."""
AT_LEAST_STORED_PER_TRANSITION = 3
"""The submission, the referral's new state and one inbox copy, before any audit entry."""


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
    assert figures["settle_s"] >= 0, "the hub did not catch up within a minute of the load"
    assert figures["stored_messages_per_transition"] >= AT_LEAST_STORED_PER_TRANSITION
    assert figures["server_cpu_ms_per_transition"] > 0
    assert sum(figures["stored_per_transition_by_stream"].values()) == pytest.approx(
        figures["stored_per_transition"], abs=0.1
    )
    assert figures["server_cpu_ratio"] == pytest.approx(
        figures["server_cpu_ms_per_transition"] / figures["baseline_kv_put_server_cpu_ms"], rel=0.02
    )
    assert figures["details_transitions_per_s"] > 0
    assert 0 < figures["seal_open_share_of_transition"] < SEAL_OPEN_BUDGET
