"""Service settings: one `BaseSettings` read from the `EXCHANGE_*` environment (SPEC §11).

`EXCHANGE_CONFIG` names a TOML file read by service/config.py.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    config: Path | None = Field(
        default=None, description="TOML overriding instruments, fees, tiers, bands, marks"
    )

    # Redis Streams publication (SPEC §8)
    stream_maxlen: int = Field(
        default=100_000, ge=1, description="approximate MAXLEN of each stream"
    )
    publish_backlog: int = Field(
        default=1_000_000,
        ge=1,
        description="events kept while Redis is down; older ones are dropped",
    )
    publish_batch: int = Field(default=1_000, ge=1, description="events per Redis pipeline")
    memory_events_kept: int = Field(
        default=100_000, ge=1, description="in-process event ring when Redis is unset"
    )

    # HTTP edge
    max_body_bytes: int = Field(
        default=65_536, ge=1, description="request bodies above this get 413"
    )
    rate_limit_per_s: float = Field(
        default=2_000.0, gt=0, description="token-bucket refill per API key (admin exempt)"
    )
    rate_limit_burst: float = Field(
        default=4_000.0, ge=1, description="token-bucket size per API key"
    )
    access_log: bool = False
    proxy_headers: bool = Field(
        default=False, description="trust X-Forwarded-* (only behind a proxy you run)"
    )

    # WebSocket (SPEC §10)
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
    log_level: str = "info"

    # set by the validator when the token was generated here (then it is printed once)
    admin_token_generated: bool = Field(default=False, exclude=True)

    @model_validator(mode="after")
    def _generate_admin_token(self) -> Settings:
        if not self.admin_token:
            self.admin_token = secrets.token_urlsafe(24)
            self.admin_token_generated = True
        return self
