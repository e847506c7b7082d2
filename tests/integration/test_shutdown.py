"""SIGTERM drains: in-flight orders are answered, the engine queue is applied, and the
publisher flushes everything to Redis before the process exits."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx

from tests.integration.helpers import Api, RedisServer, ServiceProcess


async def test_sigterm_when_orders_in_flight_drains_engine_and_flushes_redis(
    start_service: Any, redis_server: RedisServer
) -> None:
    url = redis_server.url_for_db(2)
    redis_server.clear_streams(2)
    svc: ServiceProcess = start_service(redis_url=url, log_level="info")
    api = Api(svc)
    api.set_mark("BTC-PERP", "50000")
    keys = [api.new_account()[1] for _ in range(4)]
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=svc.base_url, timeout=20, limits=limits) as c:

        async def place(i: int) -> int | str:
            body = {
                "symbol": "BTC-PERP",
                "side": "buy" if i % 2 else "sell",
                "type": "limit",
                "qty": "0.001",
                "price": str(40000 + i) if i % 2 else str(60000 + i),
            }
            try:
                r = await c.post("/v1/orders", json=body, headers={"X-API-Key": keys[i % 4]})
                done.append(r.status_code)
                return r.status_code
            except httpx.HTTPError as exc:
                return type(exc).__name__

        done: list[int] = []
        tasks = [asyncio.create_task(place(i)) for i in range(600)]
        deadline = time.monotonic() + 10
        while len(done) < 50:  # orders are flowing: now pull the plug mid-stream
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        assert svc.proc is not None
        svc.proc.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks)
    t0 = time.monotonic()
    code = svc.proc.wait(20)
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown
    assert code in (0, -signal.SIGTERM), svc.log()
    assert "Application shutdown complete" in svc.log()
    assert time.monotonic() - t0 < 15
    answered = [r for r in results if isinstance(r, int)]
    assert answered and set(answered) <= {200, 503}, results  # 503 only as "shutting down"
    log = svc.log()
    assert "stopped at seq" in log
    final_seq = int(log.rsplit("stopped at seq", 1)[1].split()[0])
    last = redis_server.client_for(url).xrevrange("exchange:events", count=1)
    assert last and last[0][0] == f"{final_seq}-0".encode(), (last, final_seq)
    svc.stop()
