"""Times typed into hubctl without an offset are the clinic's wall-clock times, never this machine's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from referral_hub.cli.clinic_registry import parse_when
from referral_hub.cli.commands import UsageError


def test_a_time_without_offset_is_read_in_the_clinics_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")

    assert parse_when("2026-12-09T10:30", "America/Chicago") == datetime(2026, 12, 9, 16, 30, tzinfo=UTC)


def test_a_time_with_an_offset_keeps_it() -> None:
    assert parse_when("2026-12-09T10:30-05:00", "America/Chicago") == datetime(2026, 12, 9, 15, 30, tzinfo=UTC)


def test_a_time_without_offset_or_zone_is_refused_with_the_way_out() -> None:
    with pytest.raises(
        UsageError, match=r"give the offset \(like 2026-12-09T10:30-05:00\) or the zone with --timezone"
    ):
        parse_when("2026-12-09T10:30", None)


def test_an_unknown_zone_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="cannot read '2026-12-09T10:30' in time zone 'Mars/Olympus'"):
        parse_when("2026-12-09T10:30", "Mars/Olympus")
