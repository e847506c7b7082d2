"""Integration fixtures: a real redis-server and the real service in a subprocess.

See tests/integration/helpers.py for what they start. `EXCHANGE_REDIS_URL`, when set, is
used instead of a throwaway redis-server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.helpers import ADMIN_TOKEN, Api, RedisServer, ServiceProcess


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), os.environ.get("EXCHANGE_REDIS_URL"))
    server.start()
    yield server
    server.stop()


# Every test talks to the service from 127.0.0.1, many of them fast: per-key and per-address
# request budgets far above what any test sends, unless a test passes its own (the abuse
# limits themselves are tested with their defaults and with small values in
# tests/integration/test_abuse_limits.py). Connection caps and the WebSocket deadline keep
# their defaults.
TEST_RATE_LIMITS = {
    "rate_limit_per_s": "1000000",
    "rate_limit_burst": "1000000",
    "ip_weight_per_s": "1000000",
    "ip_weight_burst": "1000000",
    "auth_fail_per_s": "1000000",
    "auth_fail_burst": "1000000",
}


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the test module's own, which its tests may stop (never an external
    EXCHANGE_REDIS_URL)."""
    server = RedisServer(tmp_path_factory.mktemp("redis-own"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def start_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Factory: start_service(ready="/readyz", nofile=None, **EXCHANGE_env) -> a running
    ServiceProcess (stopped at the end); `nofile` caps its open files (RLIMIT_NOFILE)."""
    started: list[ServiceProcess] = []

    def start(ready: str = "/readyz", nofile: int | None = None, **env: str) -> ServiceProcess:
        data = tmp_path_factory.mktemp("data")
        full = {
            "EXCHANGE_ADMIN_TOKEN": ADMIN_TOKEN,
            "EXCHANGE_DATA_DIR": str(data),
            "EXCHANGE_LOG_LEVEL": "warning",
            **{f"EXCHANGE_{k.upper()}": v for k, v in TEST_RATE_LIMITS.items()},
            **{f"EXCHANGE_{k.upper()}": v for k, v in env.items()},
        }
        svc = ServiceProcess(full, data, nofile)
        started.append(svc)
        svc.start(ready)
        return svc

    yield start
    for svc in started:  # all at once, then wait for each
        svc.terminate()
    for svc in started:
        svc.stop()


@pytest.fixture(scope="session")
def service(start_service: Any, redis_server: RedisServer) -> ServiceProcess:
    """The shared service, publishing to the session's Redis."""
    redis_server.clear_streams(0)
    svc: ServiceProcess = start_service(
        redis_url=redis_server.url_for_db(0), adl_quantile_interval_s="0.05", ws_heartbeat_s="1"
    )
    return svc


@pytest.fixture(scope="session")
def api(service: ServiceProcess) -> Api:
    return Api(service)
