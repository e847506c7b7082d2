"""service/limits.py: request weights, client addresses, token buckets (a fake clock)."""

from __future__ import annotations

import pytest

from service.limits import AbuseLimits, Buckets, client_key, request_weight, size_weight


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("path", "query", "weight"),
    [
        ("/healthz", b"", 0),
        ("/v1/instruments", b"", 1),
        ("/v1/orderbook/BTC-PERP", b"", 1),
        ("/v1/orderbook/BTC-PERP", b"depth=20", 1),
        ("/v1/orderbook/BTC-PERP", b"depth=21", 2),
        ("/v1/orderbook/BTC-PERP", b"depth=100", 5),
        ("/v1/orderbook/BTC-PERP", b"depth=500", 20),
        ("/v1/orderbook/BTC-PERP", b"depth=1000", 40),
        ("/v1/orderbook/BTC-PERP", b"depth=1e3", 40),
        ("/v1/orderbook/BTC-PERP", b"depth=%2B5", 40),
        ("/v1/orderbook/BTC-PERP", b"x=1&depth=5&depth=1000", 40),
        ("/v1/trades/BTC-PERP", b"limit=1000", 40),
        ("/v1/orders", b"symbol=BTC-PERP", 10),
        ("/metrics", b"", 10),
    ],
    ids=lambda v: v if isinstance(v, str) else repr(v),
)
def test_request_weight_when_read_grows_with_what_it_returns(
    path: str, query: bytes, weight: int
) -> None:
    assert request_weight(path, query) == weight


@pytest.mark.parametrize(
    ("value", "weight"),
    [(None, 1), (b"1", 1), (b"50", 2), (b"1000", 40), (b"1001", 40), (b"", 40), (b"-1", 40)],
    ids=["absent", "1", "50", "1000", "1001", "empty", "negative"],
)
def test_size_weight_when_not_a_plain_number_is_the_largest_tier(
    value: bytes | None, weight: int
) -> None:
    assert size_weight(value) == weight


@pytest.mark.parametrize(
    ("client", "key"),
    [
        (("203.0.113.7", 5000), "203.0.113.7"),
        (("::ffff:203.0.113.7", 5000), "203.0.113.7"),
        (("2001:db8:1:2:3:4:5:6", 5000), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::1", 5000), "2001:db8:1:2::/64"),
        (None, "-"),
    ],
    ids=["ipv4", "ipv4_mapped", "ipv6", "ipv6_same_64", "none"],
)
def test_client_key_when_ipv6_counts_the_whole_64(client: object, key: str) -> None:
    assert client_key({"client": client}) == key


def test_buckets_when_empty_refuse_with_the_wait_then_refill() -> None:
    clock = Clock()
    b = Buckets(rate_per_s=10.0, burst=20.0, clock=clock)
    assert b.take("a", 20) == 0.0
    assert b.take("a", 5) == pytest.approx(0.5)  # refused: nothing taken
    assert b.take("b", 1) == 0.0  # another key has its own bucket
    clock.now += 0.5
    assert b.take("a", 5) == 0.0
    assert b.wait("a") == pytest.approx(0.1)


def test_buckets_when_cost_exceeds_burst_charge_the_whole_burst() -> None:
    b = Buckets(rate_per_s=1.0, burst=10.0, clock=Clock())
    assert b.take("a", 40) == 0.0  # never refused forever: a request heavier than the bucket
    assert b.take("a", 1) > 0.0


def test_buckets_when_swept_forget_full_keys_only() -> None:
    clock = Clock()
    b = Buckets(rate_per_s=1.0, burst=10.0, clock=clock, sweep_every_s=60.0)
    b.take("busy", 10)
    b.take("idle", 1)
    clock.now += 61.0  # both refilled by now
    b.take("busy", 10)  # ... and "busy" empties its bucket again just before the sweep
    b.take("new", 1)  # a new key triggers the sweep
    assert len(b) == 2  # "idle" forgotten, "busy" and "new" kept


def test_abuse_limits_when_rate_limits_off_charge_nothing_but_still_throttle_auth() -> None:
    limits = AbuseLimits(False, 1.0, 1.0, 0.001, 2.0, clock=Clock())
    assert all(limits.charge("a", 40) is None for _ in range(100))
    limits.auth_failed("a")
    assert limits.auth_throttled("a") is None
    limits.auth_failed("a")
    refused = limits.auth_throttled("a")
    assert refused is not None and int(refused.retry_after) >= 1
    assert limits.auth_throttled("b") is None
