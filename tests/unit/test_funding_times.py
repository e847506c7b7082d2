"""Funding rounds are aligned to the epoch: 00:00, 08:00, 16:00 UTC with the default interval."""

from __future__ import annotations

from service.funding_times import NS, last_funding_time_ns, next_funding_time_ns

H = 3_600 * NS


def test_rounds_when_interval_is_eight_hours_fall_on_00_08_16_utc() -> None:
    day = 20_000 * 24 * H  # some midnight UTC
    assert next_funding_time_ns(day + 1, 28_800) == day + 8 * H
    assert next_funding_time_ns(day + 8 * H, 28_800) == day + 16 * H  # strictly after
    assert last_funding_time_ns(day + 8 * H, 28_800) == day + 8 * H
    assert last_funding_time_ns(day + 8 * H - 1, 28_800) == day
    assert next_funding_time_ns(day + 23 * H, 28_800) == day + 24 * H
