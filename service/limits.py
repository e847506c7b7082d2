"""Abuse limits (SPEC §10, §10a): per-address request weights, the failed-authentication
throttle, WebSocket connection caps, and the process's open-file limit.

What is limited, and by what key:

- **Request weight per client address** (`ip_weight_per_s`, `ip_weight_burst`): every HTTP
  request except order entry costs its weight (`request_weight`): 1 for a plain read, more
  for the reads whose cost grows with a `depth` or `limit` (a 1000-level book costs about 40
  plain reads of server time), 0 for `/healthz` (it costs no more than the 429 would).
  A WebSocket connection attempt costs `WS_CONNECT_WEIGHT`. Requests that carry an API key
  and change state (order entry, amends, cancels, leverage, withdrawals) cost 0 here: they
  are limited per key (service/keys.py `RateLimiter`), like Binance's order-count limits.
  A valid admin token costs nothing.
- **Failed authentications per client address** (`auth_fail_per_s`, `auth_fail_burst`):
  every 401 (missing or unknown API key), 403 (wrong admin token) and failed WebSocket
  `auth` takes one token; while the address has none left, every request from it that
  carries credentials is answered 429 without the credentials being checked (a guesser
  learns nothing from a right guess), and a WebSocket `auth` closes the connection.
- **WebSocket connections** per client address and in total (service/ws_hub.py), and the
  deadline for a connection to subscribe or authenticate.

`EXCHANGE_RATE_LIMITS=off` turns off the request-rate budgets (per key and per address
weights); the failed-authentication throttle, the connection caps and the deadline stay.

The client address is the socket peer (`scope["client"]`), which uvicorn rewrites from
X-Forwarded-For only with `proxy_headers` set (and then only for a trusted proxy). IPv6
peers are keyed by their /64 (one host gets a whole /64 from any provider); IPv4-mapped
IPv6 addresses by their IPv4 address.

Known limits: the buckets live in this process (one service = one process); addresses are
forgotten once their buckets are full again (a sweep at most once a minute), so memory
grows only with the addresses active in the last minute. Many addresses acting together
(a botnet) each get their own budget: no per-address limit bounds that.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("service.limits")

WS_CONNECT_WEIGHT = 5  # a handshake, a task pair and a subscription snapshot to come
_FREE_PATHS = frozenset(("/healthz",))
_HEAVY_PATHS = {
    "/metrics": 10,
    "/openapi.json": 10,
    "/v1/orders": 10,
}  # GET /v1/orders: open orders
# (`depth` or `limit` at most N, weight): measured server time per request over a plain read
# (~100 µs here: a 1000-level book or 1000 trades format in ~4 ms)
_SIZE_TIERS = ((20, 1), (50, 2), (100, 5), (500, 20), (1000, 40))
_MAX_SIZE_WEIGHT = _SIZE_TIERS[-1][1]


def size_weight(value: bytes | str | None) -> int:
    """Weight of a read returning up to `value` rows (`depth`, `limit`); the largest tier when
    the value is not a plain number (the route refuses it anyway)."""
    if value is None:
        return 1
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if not text.isdigit() or len(text) > 6:
        return _MAX_SIZE_WEIGHT
    n = int(text)
    for most, weight in _SIZE_TIERS:
        if n <= most:
            return weight
    return _MAX_SIZE_WEIGHT


def request_weight(path: str, query: bytes) -> int:
    """The per-address weight of a read (GET/HEAD) of `path?query`."""
    if path in _FREE_PATHS:
        return 0
    weight = _HEAVY_PATHS.get(path, 1)
    if query and (b"depth=" in query or b"limit=" in query):
        for part in query.split(b"&"):
            name, _, value = part.partition(b"=")
            if name in (b"depth", b"limit"):
                weight = max(weight, size_weight(value))
    return weight


def client_key(scope: Any) -> str:
    """The address an ASGI connection is counted against (see the module docstring)."""
    client = scope.get("client")
    if not client:
        return "-"
    host = str(client[0])
    if ":" not in host:
        return host
    try:
        addr = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return f"{ipaddress.IPv6Network((addr, 64), strict=False).network_address}/64"


class Buckets:
    """Token buckets by key: each refills `rate_per_s` up to `burst`; absent means full."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        sweep_every_s: float = 60.0,
    ) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self.sweep_every_s = sweep_every_s
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, at]
        self._swept = clock()

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take `cost` tokens (at most the burst); 0 when allowed, else the seconds to wait
        (nothing is taken then)."""
        now = self.clock()
        cost = min(cost, self.burst)
        bucket = self._buckets.get(key)
        if bucket is None:
            if now - self._swept > self.sweep_every_s:
                self._sweep(now)
            self._buckets[key] = [self.burst - cost, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= cost:
            bucket[0] = tokens - cost
            return 0.0
        bucket[0] = tokens
        return (cost - tokens) / self.rate

    def wait(self, key: str) -> float:
        """Seconds until `key` has a whole token again (0: it has one); takes nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(self.burst, bucket[0] + (self.clock() - bucket[1]) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        """Forget keys whose buckets are full again (as good as absent)."""
        self._swept = now
        full = [
            k
            for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request or connection is refused, and for how long (`Retry-After`)."""

    message: str
    wait_s: float

    @property
    def retry_after(self) -> str:
        """`Retry-After` in whole seconds (at least 1)."""
        return str(max(1, math.ceil(self.wait_s)))


class AbuseLimits:
    """The per-address buckets of one service (shared by the HTTP edge and the WebSocket hub)."""

    def __init__(
        self,
        rate_limits: bool,
        ip_weight_per_s: float,
        ip_weight_burst: float,
        auth_fail_per_s: float,
        auth_fail_burst: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_limits = rate_limits
        self.weights = Buckets(ip_weight_per_s, ip_weight_burst, clock)
        self.auth_failures = Buckets(auth_fail_per_s, auth_fail_burst, clock)

    def charge(self, address: str, weight: int) -> Refusal | None:
        """Take `weight` from the address's request budget; the refusal when it has not enough."""
        if not self.rate_limits or weight <= 0:
            return None
        wait = self.weights.take(address, weight)
        if not wait:
            return None
        return Refusal(
            f"request weight limit of this address exceeded (this request weighs {weight})", wait
        )

    def auth_throttled(self, address: str) -> Refusal | None:
        """The refusal while `address` has used up its failed authentications, else None."""
        wait = self.auth_failures.wait(address)
        if not wait:
            return None
        return Refusal("too many failed authentications from this address", wait)

    def auth_failed(self, address: str) -> None:
        """Count one failed authentication of `address`."""
        self.auth_failures.take(address)


def raise_open_files_limit(ceiling: int = 1 << 20) -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (at most `ceiling`); the soft
    limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return ceiling if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def open_files_limit() -> int:
    """The soft RLIMIT_NOFILE of this process."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (1 << 20) if soft == resource.RLIM_INFINITY else soft


def ws_connection_cap(configured: int, explicit: bool) -> int:
    """The WebSocket cap in force. The default is lowered to half the open-files limit when
    that is smaller (the other half is for HTTP connections, the journal, Redis and the
    fsync helper); a value set explicitly is kept, with a warning."""
    half = max(1, open_files_limit() // 2)
    if configured <= half:
        return configured
    if explicit:
        log.warning(
            "EXCHANGE_WS_MAX_CONNECTIONS=%d is above half the open-files limit (%d): idle "
            "connections can use up the descriptors that order entry needs",
            configured,
            open_files_limit(),
        )
        return configured
    log.warning(
        "open-files limit %d: WebSocket connections capped at %d (raise the limit for more)",
        open_files_limit(),
        half,
    )
    return half
