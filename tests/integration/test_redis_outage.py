"""Redis stopped mid-run: order entry goes on, and after a restart the publisher resumes
exactly where Redis left off (ids `<seq>-0`, strictly increasing, no gap, no duplicate)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.integration.helpers import Api, RedisServer, ServiceProcess


def _wait_published(r: Any, seq: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = r.xrevrange("exchange:events", count=1)
        if last and last[0][0] == f"{seq}-0".encode():
            return
        time.sleep(0.05)
    raise AssertionError(
        f"exchange:events did not reach {seq}: {r.xrevrange('exchange:events', count=1)}"
    )


def test_redis_when_stopped_mid_run_never_blocks_orders_and_publisher_resumes_without_duplicates(
    start_service: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if "EXCHANGE_REDIS_URL" in __import__("os").environ:
        pytest.skip("needs a redis-server the test can stop and restart")
    redis_server = RedisServer(tmp_path_factory.mktemp("redis-outage"))
    redis_server.start()
    try:
        svc: ServiceProcess = start_service(redis_url=redis_server.url)
        api = Api(svc)
        api.set_mark("BTC-PERP", "50000")
        _, key = api.new_account()
        r = redis_server.client()
        with api.as_key(key) as c:
            for i in range(20):
                assert (
                    c.post(
                        "/v1/orders",
                        json={
                            "symbol": "BTC-PERP",
                            "side": "buy",
                            "type": "limit",
                            "qty": "0.001",
                            "price": f"{30000 + i}",
                        },
                    ).status_code
                    == 200
                )
            before = api.seq()
            _wait_published(r, before)
            r.save()  # what Redis holds now survives its restart (the fixture runs with --save "")
            redis_server.stop()

            worst = 0.0
            for i in range(150):
                t0 = time.perf_counter()
                resp = c.post(
                    "/v1/orders",
                    json={
                        "symbol": "BTC-PERP",
                        "side": "sell",
                        "type": "limit",
                        "qty": "0.001",
                        "price": f"{70000 + i}",
                    },
                )
                worst = max(worst, time.perf_counter() - t0)
                assert resp.status_code == 200, resp.text
            # Order entry does not wait for Redis: all 150 answered 200 above. The bound is a hang
            # detector, not a speed check (a loaded CI machine may take a second; an order that
            # waited on Redis would wait for good, the publisher retrying in the background).
            print(f"worst order latency while Redis was down: {worst:.3f}s")
            assert worst < 10, f"an order took {worst:.3f}s while Redis was down"
            # Redis down alone keeps the instance in service (trading goes on); it says so
            ready = api.http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["redis"] == "unreachable" and ready.json()["publish_backlog"] > 0
            metrics = api.http.get("/metrics").text
            backlog = next(
                float(line.split()[1])
                for line in metrics.splitlines()
                if line.startswith("exchange_publish_backlog ")
            )
            assert backlog > 0
            during = api.seq()
            assert during > before

            redis_server.start()
            r = redis_server.client()
            _wait_published(r, during)
            for i in range(5):  # and it keeps publishing live
                c.post(
                    "/v1/orders",
                    json={
                        "symbol": "BTC-PERP",
                        "side": "sell",
                        "type": "limit",
                        "qty": "0.001",
                        "price": f"{80000 + i}",
                    },
                )
            c.delete("/v1/orders")
            final = api.seq()
            _wait_published(r, final)
        ids = [e[0].decode() for e in r.xrange("exchange:events")]
        seqs = [int(i.split("-")[0]) for i in ids]
        assert all(i.endswith("-0") for i in ids)
        assert seqs == list(range(1, final + 1))  # strictly increasing, gap-free, no duplicates
        deadline = time.monotonic() + 5
        while (ready := httpx.get(svc.base_url + "/readyz")).json().get("redis") != "ok":
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.05)
        assert ready.status_code == 200 and ready.json()["publish_backlog"] == 0, ready.text
    finally:
        redis_server.stop()
