"""When funding rounds happen: every `funding_interval_s`, aligned to the Unix epoch.

With the default 28,800 s that is 00:00, 08:00 and 16:00 UTC, as on Binance. The service's
scheduler submits each round as an `ApplyFunding` command stamped with the round's time (not
the moment it ran), so a replay of the journal computes the same payments.
"""

from __future__ import annotations

NS = 1_000_000_000


def next_funding_time_ns(now_ns: int, interval_s: int) -> int:
    """The first round strictly after `now_ns`."""
    step = interval_s * NS
    return (now_ns // step + 1) * step


def last_funding_time_ns(now_ns: int, interval_s: int) -> int:
    """The latest round at or before `now_ns`."""
    step = interval_s * NS
    return now_ns // step * step
