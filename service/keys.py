"""API keys and per-key rate limits.

Keys are generated here (`secrets.token_urlsafe`) and shown once; the engine's
`CreateAccount` gets only `sha256(key)` hex, which is what the service keeps (hash ->
account id, rebuilt from `engine.accounts` at start). A presented key is hashed and looked
up; the stored hash is then compared with `hmac.compare_digest`.

Rate limit: a token bucket per account (refill `rate_per_s`, size `burst`); every request
made with the key takes one token (order entry, amends, cancels and private reads alike).
The admin token is exempt. A refused request learns how long to wait (`Retry-After`, whole
seconds). `enabled=False` (EXCHANGE_RATE_LIMITS=off) lets everything through. Per-address
limits are in service/limits.py.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time

from engine.engine import Engine


def hash_key(api_key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    """A fresh random API key (shown to the user once)."""
    return secrets.token_urlsafe(32)


class KeyRegistry:
    """sha256(api key) -> account id."""

    def __init__(self) -> None:
        self._by_hash: dict[str, int] = {}
        self._hash_of: dict[int, str] = {}

    def rebuild(self, engine: Engine) -> None:
        """Load every account's key hash from engine state."""
        self._by_hash.clear()
        self._hash_of.clear()
        for aid, acct in engine.accounts.items():
            if aid and acct.api_key_hash:
                self.add(acct.api_key_hash, aid)

    def add(self, key_hash: str, account_id: int) -> None:
        self._by_hash[key_hash] = account_id
        self._hash_of[account_id] = key_hash

    def lookup(self, api_key: str | None) -> int | None:
        """The account of `api_key`, or None."""
        if not api_key or len(api_key) > 256:
            return None
        digest = hash_key(api_key)
        account_id = self._by_hash.get(digest)
        if account_id is None:
            return None
        # The dict matched on the hash (no secret leaks from timing on a sha256 of the key);
        # the final comparison is constant-time all the same.
        return account_id if hmac.compare_digest(self._hash_of[account_id], digest) else None

    def __len__(self) -> int:
        return len(self._by_hash)


class RateLimiter:
    """Token bucket per account id."""

    def __init__(self, rate_per_s: float, burst: float, enabled: bool = True) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.enabled = enabled
        self._buckets: dict[int, list[float]] = {}  # account -> [tokens, last refill]

    def acquire(self, account_id: int) -> float:
        """Take one token; return 0 when allowed, else the seconds to wait."""
        if not self.enabled:
            return 0.0
        now = time.monotonic()
        bucket = self._buckets.get(account_id)
        if bucket is None:
            self._buckets[account_id] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate


def retry_after_header(wait_s: float) -> str:
    """`Retry-After` in whole seconds (at least 1)."""
    return str(max(1, math.ceil(wait_s)))
