"""Service settings: one `BaseSettings` read from the `EXCHANGE_*` environment (SPEC §11).

`EXCHANGE_CONFIG` names a TOML file read by service/config.py. `EXCHANGE_PRICE_FEED` is
checked here for its form (`synthetic:<seed>` or an existing file); the file's rows are
checked against the instruments before the service starts (service/__main__.py).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.feed import check_feed_spec

MIN_ADMIN_TOKEN_CHARS = 16


class Settings(BaseSettings):
    """Everything the service reads from its environment (prefix `EXCHANGE_`)."""

    model_config = SettingsConfigDict(env_prefix="EXCHANGE_", extra="ignore")

    admin_token: str = Field(
        default="", description="token for /v1/admin/*; random and printed once when unset"
    )
    redis_url: str | None = Field(
        default=None, description="Redis for the event streams; unset: events stay in process"
    )
    data_dir: Path = Field(default=Path("./data"), description="journal and snapshots")
    fsync: Literal["batch", "always", "off"] = Field(
        default="batch", description="journal flush: one fsync per engine batch, per command, or none"
    )
    snapshot_every: int = Field(default=100_000, ge=1, description="snapshot after this many journaled commands")
    snapshot_interval_s: float = Field(default=300.0, gt=0, description="...or after this many seconds")
    snapshot_mode: Literal["fork", "inline"] = Field(
        default="fork",
        description="fork: a child process writes snapshots while the engine goes on; inline: "
        "the engine loop writes them itself and stalls meanwhile (the old behaviour)",
    )
    config: Path | None = Field(
        default=None, description="TOML overriding instruments, fees, tiers, bands, marks"
    )

    # index prices and funding (SPEC §12): service/feed.py, service/scheduler.py
    price_feed: str | None = Field(
        default=None,
        description="index prices: synthetic:<seed> (a seeded walk) or a CSV file "
        "offset_s,symbol,price; unset: no feed (index prices only by admin)",
    )
    feed_speed: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description="how fast a CSV feed (and the synthetic walk) is played: 2.0 = twice as fast",
    )
    feed_loop: bool = Field(
        default=False,
        description="a CSV feed starts over when it ends (else it stops; the index stays put)",
    )
    funding: bool = Field(
        default=True,
        description="the funding scheduler: a round per symbol at every epoch-aligned funding "
        "time; off: rounds only by admin",
    )

    # Redis Streams publication (SPEC §8)
    role: Literal["embedded", "engine"] = Field(
        default="embedded",
        description="embedded: one process serves everything; engine: also consume commands "
        "from the Redis command bus (needs EXCHANGE_REDIS_URL; `python -m service --role engine`)",
    )
    bus_prefix: str = Field(
        default="exchange", min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
        description="prefix of the command bus's keys: <prefix>:commands, <prefix>:results:<name>",
    )
    bus_dedupe_window: int = Field(
        default=100_000, ge=1, le=10_000_000,
        description="idempotency keys of the last N bus commands kept (a repeated key is not applied again)",
    )
    stream_maxlen: int = Field(
        default=100_000, ge=1, description="approximate MAXLEN of each stream"
    )
    publish_backlog: int = Field(
        default=1_000_000,
        ge=1,
        description="events kept while Redis is down; older ones are dropped",
    )
    publish_batch: int = Field(default=1_000, ge=1, description="events per Redis pipeline")
    publish_stall_s: float = Field(
        default=30.0,
        gt=0,
        description="a publisher whose every attempt fails this long, with events waiting and "
        "Redis answering PING, is stuck: /readyz 503",
    )
    memory_events_kept: int = Field(
        default=100_000, ge=1, description="in-process event ring when Redis is unset"
    )

    # HTTP edge
    max_body_bytes: int = Field(
        default=65_536, ge=1, description="request bodies above this get 413"
    )
    # abuse limits (SPEC §10a, service/limits.py); defaults explained in api/README.md
    rate_limits: bool = Field(
        default=True,
        description="off: no per-key or per-address request budgets (load tests, benchmarks); "
        "the failed-auth throttle, WebSocket caps and deadline stay",
    )
    rate_limit_per_s: float = Field(
        default=1_000.0,
        gt=0,
        description="requests per second per API key (orders, cancels, private reads; admin "
        "exempt): about a tenth of what one process serves",
    )
    rate_limit_burst: float = Field(
        default=1_000.0, ge=1, description="token-bucket size per API key"
    )
    ip_weight_per_s: float = Field(
        default=1_000.0, gt=0, description="request weight per second per client address"
    )
    ip_weight_burst: float = Field(
        default=2_000.0, ge=1, description="request-weight bucket size per client address"
    )
    auth_fail_per_s: float = Field(
        default=1.0, gt=0, description="failed authentications refilled per second per address"
    )
    auth_fail_burst: float = Field(
        default=20.0, ge=1, description="failed authentications an address may make at once"
    )
    access_log: bool = False
    proxy_headers: bool = Field(
        default=False, description="trust X-Forwarded-* (only behind a proxy you run)"
    )

    # WebSocket (SPEC §10)
    ws_max_connections: int = Field(
        default=500,
        ge=1,
        description="WebSocket connections in total (the default is lowered to half the "
        "open-files limit when that is smaller)",
    )
    ws_max_per_ip: int = Field(
        default=50, ge=1, description="WebSocket connections per client address"
    )
    ws_auth_deadline_s: float = Field(
        default=5.0, gt=0, description="a connection must subscribe or authenticate within this"
    )
    ws_queue_size: int = Field(
        default=1_000, ge=1, description="messages buffered per client before it is cut off"
    )
    ws_book_depth: int = Field(
        default=20, ge=1, description="levels per side in book:<symbol> snapshots"
    )
    ws_heartbeat_s: float = Field(
        default=15.0, gt=0, description="heartbeat message on an idle connection"
    )
    ws_ping_interval_s: float = Field(
        default=20.0, gt=0, description="protocol-level ping (uvicorn)"
    )
    adl_quantile_interval_s: float = Field(
        default=0.25, gt=0, description="adl_quantile pushes are recomputed at most this often"
    )

    # engine loop
    engine_batch: int = Field(
        default=512, ge=1, description="commands applied per engine-loop batch at most"
    )
    shutdown_timeout_s: float = Field(
        default=10.0, gt=0, description="graceful drain budget on SIGTERM"
    )

    gc_freeze: bool = Field(
        default=True, description="freeze survivors of full GCs (service/runtime.py)"
    )
    recovery_read_ahead: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="read the journal in a second process during recovery: auto = with a "
        "second core and 16 MiB or more to replay (service/storage/read_ahead.py)",
    )
    log_level: str = "info"

    # set by the validator when the token was generated here (then it is printed once)
    admin_token_generated: bool = Field(default=False, exclude=True)

    @field_validator("price_feed")
    @classmethod
    def _feed_form(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        check_feed_spec(value)
        return value

    @model_validator(mode="after")
    def _generate_admin_token(self) -> Settings:
        if self.admin_token and len(self.admin_token) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"EXCHANGE_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters "
                f"(it has {len(self.admin_token)}); unset it to have one generated"
            )
        if not self.admin_token:
            self.admin_token = secrets.token_urlsafe(24)
            self.admin_token_generated = True
        return self
