"""API keys, their signing secrets, and per-key rate limits.

Keys are generated here (`secrets.token_urlsafe`) and shown once; the engine's
`CreateAccount` gets only `sha256(key)` hex, which is what the service keeps (hash ->
account id, rebuilt from `engine.accounts` at start). A presented key is hashed and looked
up; the stored hash is then compared with `hmac.compare_digest`.

API secrets (the HMAC-SHA256 signing secret of the Binance-compatible `/fapi` edge,
api/binance/) are derived, not stored: `secret = hex(HMAC-SHA256(server_secret, sha256(key)))`,
with `server_secret` 32 random bytes kept in the data dir (`api_secret.key`, created once with
mode 0600 by `load_server_secret`). So neither the engine nor the journal changes, every
account (also those created before secrets existed) has one, and the same data dir gives the
same secrets after a restart. What the derivation implies: whoever reads the data dir can
compute every secret, but a secret alone signs nothing without its API key (never stored);
deleting `api_secret.key` rotates every secret at once. An operator gets an existing
account's secret from `GET /v1/admin/accounts/{id}/api-secret`, or offline with
`python -m service.keys api-secret DATA_DIR API_KEY`.

Rate limit: a token bucket per account (refill `rate_per_s`, size `burst`); every request
made with the key takes one token (order entry, amends, cancels and private reads alike).
The admin token is exempt. A refused request learns how long to wait (`Retry-After`, whole
seconds). `enabled=False` (EXCHANGE_RATE_LIMITS=off) lets everything through. Per-address
limits are in service/limits.py.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import sys
import time
from pathlib import Path

from engine.engine import Engine

log = logging.getLogger("service.keys")

SERVER_SECRET_FILE = "api_secret.key"
_SERVER_SECRET_BYTES = 32


def hash_key(api_key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    """A fresh random API key (shown to the user once)."""
    return secrets.token_urlsafe(32)


def load_server_secret(data_dir: Path) -> bytes:
    """The data dir's server secret (`api_secret.key`, hex), created once with mode 0600.

    Created with O_EXCL, so two processes starting at once agree on one secret; written and
    fsynced before use. A file that is not 64 hex digits is refused (ValueError): a silently
    new secret would invalidate every secret handed out.
    """
    path = data_dir / SERVER_SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            os.write(fd, secrets.token_bytes(_SERVER_SECRET_BYTES).hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        dir_fd = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o): chmod 600 it", path, mode & 0o777)
    text = path.read_text().strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != _SERVER_SECRET_BYTES:
        raise ValueError(f"{path}: expected {2 * _SERVER_SECRET_BYTES} hex digits")
    return raw


def derive_api_secret(server_secret: bytes, key_hash: str) -> str:
    """The API secret of the key whose sha256 hex is `key_hash` (64 hex digits)."""
    return hmac.new(server_secret, key_hash.encode(), hashlib.sha256).hexdigest()


class KeyRegistry:
    """sha256(api key) -> account id; the accounts' derived signing secrets."""

    def __init__(self) -> None:
        self._by_hash: dict[str, int] = {}
        self._hash_of: dict[int, str] = {}
        self._server_secret: bytes | None = None
        self._signing: dict[int, bytes] = {}  # account id -> its API secret (HMAC key), cached

    def rebuild(self, engine: Engine) -> None:
        """Load every account's key hash from engine state."""
        self._by_hash.clear()
        self._hash_of.clear()
        self._signing.clear()
        for aid, acct in engine.accounts.items():
            if aid and acct.api_key_hash:
                self.add(acct.api_key_hash, aid)

    def add(self, key_hash: str, account_id: int) -> None:
        self._by_hash[key_hash] = account_id
        self._hash_of[account_id] = key_hash

    def attach_server_secret(self, server_secret: bytes) -> None:
        """Use `server_secret` (from `load_server_secret`) to derive API secrets."""
        self._server_secret = server_secret
        self._signing.clear()

    def api_secret(self, key_hash: str) -> str:
        """The API secret of a key, by its stored hash (RuntimeError before attach)."""
        if self._server_secret is None:
            raise RuntimeError("no server secret attached (KeyRegistry.attach_server_secret)")
        return derive_api_secret(self._server_secret, key_hash)

    def secret_of(self, account_id: int) -> str | None:
        """The API secret of an account's key, or None (unknown account, nothing attached)."""
        key_hash = self._hash_of.get(account_id)
        if key_hash is None or self._server_secret is None:
            return None
        return self.api_secret(key_hash)

    def signing_key(self, account_id: int) -> bytes | None:
        """The HMAC key that verifies the account's signatures (its API secret's bytes)."""
        key = self._signing.get(account_id)
        if key is None:
            secret = self.secret_of(account_id)
            if secret is None:
                return None
            key = self._signing[account_id] = secret.encode()
        return key

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


def main(argv: list[str] | None = None) -> int:
    """`python -m service.keys api-secret DATA_DIR API_KEY`: print the key's API secret."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "api-secret":
        print("usage: python -m service.keys api-secret DATA_DIR API_KEY", file=sys.stderr)
        return 2
    data_dir = Path(args[1])
    if not (data_dir / SERVER_SECRET_FILE).exists():
        print(f"{data_dir}: no {SERVER_SECRET_FILE} (the service creates it at start)", file=sys.stderr)
        return 1
    print(derive_api_secret(load_server_secret(data_dir), hash_key(args[2])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
