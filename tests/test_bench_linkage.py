"""``hubctl bench linkage`` on FEBRL 1 meets the linkage targets beside the plaintext matcher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HUBCTL = [sys.executable, "-m", "referral_hub.cli"]


@pytest.fixture(scope="module")
def febrl1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    folder = tmp_path_factory.mktemp("febrl1")
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [*HUBCTL, "bench", "linkage", "--febrl", "1", "--scale", "5000", "--json", "--export", str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def test_certain_links_are_never_wrong(febrl1: dict[str, float]) -> None:
    assert febrl1["certain_precision"] >= 0.999


def test_recall_counting_reviews_reaches_the_target(febrl1: dict[str, float]) -> None:
    assert febrl1["recall"] >= 0.95


def test_recall_is_within_two_points_of_the_plaintext_matcher(febrl1: dict[str, float]) -> None:
    assert febrl1["plaintext_recall_at_same_precision"] - febrl1["recall"] <= 0.02


def test_a_file_without_the_header_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "a.csv"
    bad.write_text("id,name\n1,Ada\n")

    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [*HUBCTL, "bench", "linkage", "--a", str(bad), "--b", str(bad), "--truth", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert done.returncode != 0
    assert "missing column(s)" in done.stderr
