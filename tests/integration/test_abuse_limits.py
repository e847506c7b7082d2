"""Abuse limits (SPEC §10, §10a) against the real service: what a hostile client tried.

- idle WebSocket connections could exhaust the process's file descriptors (no cap, no
  deadline): now capped per address and in total, and closed unless they subscribe or
  authenticate in time;
- deep order-book reads, wrong API keys and wrong admin tokens were never throttled; one key
  could send orders without ever meeting its limit: now per-address request weights, a
  failed-authentication throttle and a per-key budget sized to a share of the process;
- a one-character admin token was accepted.

The floods are pipelined over keep-alive connections (see `pipeline`), so the client offers
far more than the limits allow however slow the machine is (a refusal is held 0.1 s, so
each connection then gets about ten answers a second). Assertions count answers; none
measures time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from typing import Any

import httpx
import orjson
import pytest
import websockets
import websockets.asyncio.client

from service.settings import Settings
from tests.integration.conftest import TEST_RATE_LIMITS
from tests.integration.helpers import ROOT, Api, ServiceProcess, assert_error, ws_connect

# The service's own defaults for the request-rate limits (what an operator gets). Limits the
# running service does not know are ignored by it.
DEFAULT_LIMITS = {
    name: str(Settings.model_fields[name].default)
    for name in TEST_RATE_LIMITS
    if name in Settings.model_fields
}
IOC = {
    "symbol": "BTC-PERP",
    "side": "buy",
    "type": "limit",
    "qty": "0.001",
    "price": "49990",
    "time_in_force": "IOC",
}


def raw_request(
    method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
) -> bytes:
    """One HTTP/1.1 request, as bytes."""
    payload = b"" if body is None else orjson.dumps(body)
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    if payload:
        head += "Content-Type: application/json\r\n"
    head += f"Content-Length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


async def _pipelined(port: int, requests: list[bytes]) -> list[Answer]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def write() -> None:
        for r in requests:
            writer.write(r)
            await writer.drain()

    sending = asyncio.create_task(write())
    out = []
    try:
        for _ in requests:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            out.append(Answer(int(lines[0][9:12]), headers, body))
        await sending
    finally:
        sending.cancel()
        writer.close()
    return out


def pipeline(port: int, requests: list[bytes], connections: int = 4) -> list[Answer]:
    """Send `requests` pipelined over `connections` keep-alive connections; every answer."""

    async def run() -> list[Answer]:
        parts = await asyncio.gather(
            *(_pipelined(port, requests[i::connections]) for i in range(connections))
        )
        out: list[Answer] = [None] * len(requests)  # type: ignore[list-item]
        for i, part in enumerate(parts):
            out[i::connections] = part
        return out

    return asyncio.run(run())


def statuses(answers: list[Answer]) -> dict[int, int]:
    out: dict[int, int] = {}
    for a in answers:
        out[a.status] = out.get(a.status, 0) + 1
    return out


def assert_rate_limited(a: Answer) -> None:
    assert a.status == 429, (a.status, a.body)
    body = a.json()
    assert body["error"] == "RATE_LIMITED" and body["code"] == 5006, body
    assert int(a.headers["retry-after"]) >= 1, a.headers


def ready(api: Api) -> Api:
    api.set_mark("BTC-PERP", "50000")
    return api


# -- HTTP: one key, one address ---------------------------------------------------------------


@pytest.fixture(scope="module")
def defaults(start_service: Any) -> Api:
    """An instance with the default request-rate limits."""
    return ready(Api(start_service(**DEFAULT_LIMITS)))


def test_orders_when_one_key_floods_past_the_default_limit_answer_429_and_other_keys_still_trade(
    defaults: Api,
) -> None:
    _, flooder = defaults.new_account("100000000")
    _, other = defaults.new_account("100000000")
    flood = [raw_request("POST", "/v1/orders", {"X-API-Key": flooder}, IOC)] * 3_000
    # many connections: each waits for its order's engine batch (and fsync) before the next
    answers = pipeline(defaults.service.port, flood, connections=48)
    counted = statuses(answers)
    assert counted.get(200, 0) >= 1 and counted.get(429, 0) >= 1, counted
    assert set(counted) <= {200, 429}, counted
    assert_rate_limited(next(a for a in answers if a.status == 429))
    with defaults.as_key(other) as c:
        assert c.post("/v1/orders", json=IOC).status_code == 200


def test_public_reads_when_one_address_floods_deep_books_answer_429_and_orders_still_pass(
    defaults: Api,
) -> None:
    _, key = defaults.new_account("100000000")
    flood = [raw_request("GET", "/v1/orderbook/BTC-PERP?depth=1000")] * 300
    answers = pipeline(defaults.service.port, flood, connections=16)
    counted = statuses(answers)
    assert counted.get(200, 0) >= 1 and counted.get(429, 0) >= 1, counted
    assert_rate_limited(next(a for a in answers if a.status == 429))
    # order entry is limited per key, not per address: the flooding address still trades
    with defaults.as_key(key) as c:
        assert c.post("/v1/orders", json=IOC).status_code == 200


def test_requests_when_many_wrong_keys_come_from_one_address_answer_429(
    start_service: Any,
) -> None:
    svc: ServiceProcess = start_service(**DEFAULT_LIMITS)  # its own: this drains the budget
    wrong = [
        raw_request("GET", "/v1/account", {"X-API-Key": f"wrong-{i}"})
        if i % 2
        else raw_request("POST", "/v1/orders", {"X-API-Key": f"wrong-{i}"}, IOC)  # the fast path
        for i in range(200)
    ]
    answers = pipeline(svc.port, wrong, connections=8)
    counted = statuses(answers)
    assert counted.get(401, 0) >= 1 and counted.get(429, 0) >= 1, counted
    assert set(counted) <= {401, 429}, counted
    assert_rate_limited(next(a for a in answers if a.status == 429))
    assert 429 in {a.status for a in answers[0::2]}  # POST /v1/orders (the fast path) too


def test_admin_routes_when_many_wrong_tokens_come_from_one_address_answer_429(
    start_service: Any,
) -> None:
    svc: ServiceProcess = start_service(**DEFAULT_LIMITS)
    wrong = [
        raw_request("GET", "/v1/admin/engine", {"X-Admin-Token": f"wrong-token-{i:08d}"})
        for i in range(200)
    ]
    counted = statuses(pipeline(svc.port, wrong, connections=8))
    assert counted.get(403, 0) >= 1 and counted.get(429, 0) >= 1, counted
    assert set(counted) <= {403, 429}, counted


@pytest.fixture(scope="module")
def strict(start_service: Any) -> Api:
    """Budgets that practically never refill, so what is allowed is a count: a bucket of 100
    weight per address, 5 failed authentications per address."""
    return ready(
        Api(
            start_service(
                ready="/healthz",  # weight 0: the start-up polls take nothing from the budget
                ip_weight_per_s="0.0001",
                ip_weight_burst="100",
                auth_fail_per_s="0.0001",
                auth_fail_burst="5",
            )
        )
    )


def test_public_reads_when_weighted_by_depth_take_their_weight_from_the_address_budget(
    strict: Api,
) -> None:
    port = strict.service.port
    # depth 1000 weighs 40: two fit in 100, the third does not
    deep = pipeline(port, [raw_request("GET", "/v1/orderbook/BTC-PERP?depth=1000")] * 3, 1)
    assert [a.status for a in deep] == [200, 200, 429]
    # 20 left: twenty reads of weight 1, then nothing, whatever the route
    light = pipeline(port, [raw_request("GET", "/v1/orderbook/BTC-PERP?depth=5")] * 21, 1)
    assert [a.status for a in light] == [200] * 20 + [429]
    assert_rate_limited(light[-1])
    assert_rate_limited(pipeline(port, [raw_request("GET", "/v1/instruments")], 1)[0])
    # the Binance edge shares the address budget and answers in Binance's words (ccxt maps
    # -1003 / 429 to DDoSProtection)
    (fapi,) = pipeline(port, [raw_request("GET", "/fapi/v1/depth?symbol=BTCUSD")], 1)
    assert fapi.status == 429 and fapi.json()["code"] == -1003, fapi.body
    assert fapi.json()["msg"].startswith("Too many requests") and int(fapi.headers["retry-after"]) >= 1
    # ... and a spoofed X-Forwarded-For does not make a new address (proxy_headers is off)
    spoofed = [
        raw_request("GET", "/v1/instruments", {"X-Forwarded-For": f"10.0.{i // 250}.{i % 250}"})
        for i in range(20)
    ]
    assert statuses(pipeline(port, spoofed, 1)) == {429: 20}


@pytest.fixture(scope="module")
def throttled(start_service: Any) -> Api:
    """Like `strict`, for the failed-authentication throttle (its own address budget)."""
    return ready(Api(start_service(auth_fail_per_s="0.0001", auth_fail_burst="5")))


def test_requests_when_address_is_throttled_for_failed_auth_refuse_even_a_valid_key(
    throttled: Api,
) -> None:
    _, key = throttled.new_account()
    port = throttled.service.port
    wrong = [raw_request("GET", "/v1/account", {"X-API-Key": f"wrong-{i}"}) for i in range(6)]
    assert [a.status for a in pipeline(port, wrong, 1)] == [401] * 5 + [429]
    # a guesser learns nothing more: the right key gets the same answer, unchecked
    right = pipeline(port, [raw_request("POST", "/v1/orders", {"X-API-Key": key}, IOC)], 1)
    assert_rate_limited(right[0])
    r = httpx.get(throttled.service.base_url + "/v1/orderbook/BTC-PERP")  # no credentials
    assert r.status_code == 200


# -- HTTP: the switch and the admin token --------------------------------------------------------


@pytest.fixture(scope="module")
def switched_off(start_service: Any) -> Api:
    """Tiny request-rate limits, switched off; tiny connection caps, which stay."""
    return ready(
        Api(
            start_service(
                rate_limits="off",
                rate_limit_per_s="0.0001",
                rate_limit_burst="1",
                ip_weight_per_s="0.0001",
                ip_weight_burst="1",
                ws_max_per_ip="2",
                ws_auth_deadline_s="0.5",
            )
        )
    )


async def test_requests_when_rate_limits_are_off_are_never_429_but_ws_caps_stay(
    switched_off: Api,
) -> None:
    _, key = switched_off.new_account("100000000")
    port = switched_off.service.port
    requests = [raw_request("POST", "/v1/orders", {"X-API-Key": key}, IOC)] * 200 + [
        raw_request("GET", "/v1/orderbook/BTC-PERP?depth=1000")
    ] * 200
    assert statuses(await asyncio.to_thread(pipeline, port, requests)) == {200: 400}
    url = switched_off.service.ws_url
    async with ws_connect(url) as a, ws_connect(url) as b:
        for ws in (a, b):
            await ws.send(op="subscribe", channels=["adl"])
            await ws.control("subscribed")
        async with ws_connect(url) as c:
            assert (await c.control("error"))["error"] == "TOO_MANY_CONNECTIONS"
            await assert_closed(c, 1013, "TOO_MANY_CONNECTIONS")
    async with ws_connect(url) as late:  # the deadline stays too
        await assert_closed(late, 1008, "SUBSCRIBE_TIMEOUT")


def test_startup_when_admin_token_is_shorter_than_16_characters_exits_with_one_line(
    tmp_path: Any,
) -> None:
    env = {**os.environ, "EXCHANGE_ADMIN_TOKEN": "t", "EXCHANGE_DATA_DIR": str(tmp_path)}
    env.pop("EXCHANGE_REDIS_URL", None)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "service", "--port", "0"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the service started with a one-character admin token")
    assert done.returncode != 0
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "EXCHANGE_ADMIN_TOKEN" in lines[0] and "16" in lines[0], lines


# -- WebSocket ----------------------------------------------------------------------------------


async def assert_closed(ws: Any, code: int, reason_start: str, timeout: float = 15.0) -> None:
    """`ws` gets closed by the server with `code` and a reason starting with `reason_start`."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                ws.seen.append(json.loads(await ws.conn.recv()))
    rcvd = closed.value.rcvd
    assert rcvd is not None, "closed without a close frame"
    assert rcvd.code == code and rcvd.reason.startswith(reason_start), (rcvd, ws.seen[-3:])


async def open_many(url: str, n: int, wave: int = 20) -> tuple[list[Any], list[Any], int]:
    """Open `n` connections, `wave` at a time (each waits at most 10 s for its handshake): the
    open ones, the error bodies of handshakes answered HTTP 429, how many failed otherwise."""

    async def one() -> Any:
        return await websockets.asyncio.client.connect(url, open_timeout=10, ping_interval=None)

    conns: list[Any] = []
    denied: list[Any] = []
    failed = 0
    for start in range(0, n, wave):
        size = min(wave, n - start)
        got = await asyncio.gather(*(one() for _ in range(size)), return_exceptions=True)
        for conn in got:
            if isinstance(conn, websockets.InvalidStatus) and conn.response.status_code == 429:
                denied.append(orjson.loads(conn.response.body))
            elif isinstance(conn, BaseException):
                failed += 1
            else:
                conns.append(conn)
    return conns, denied, failed


async def close_all(conns: list[Any]) -> None:
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def closed_by_server(conn: Any, timeout: float = 20.0) -> tuple[int, str] | None:
    """Read `conn` until the server closes it: (code, reason); None if still open at `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            async for _ in conn:
                pass
    except TimeoutError:
        return None
    except websockets.ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd is not None else (-1, "no close frame")
    return (conn.close_code, conn.close_reason)


async def test_idle_websockets_when_more_than_the_fd_limit_are_refused_and_orders_still_work(
    start_service: Any,
) -> None:
    # the finding: ~1,000 idle connections against `ulimit -n 1024`; here 300 against 256
    svc: ServiceProcess = start_service(nofile=256)
    api = ready(Api(svc))
    _, key = api.new_account("100000000")
    conns, denied, failed = await open_many(svc.ws_url, 300)
    try:
        ends = await asyncio.gather(*(closed_by_server(c) for c in conns))
        assert failed == 0 and None not in ends, (failed, ends.count(None))
        kinds = {(code, reason.split(":")[0]) for code, reason in ends if code != 1013}
        refused = sum(1 for code, reason in ends if code == 1013)
        # refused with a close frame, or (while many refused sockets still linger) HTTP 429
        assert refused + len(denied) >= 300 - 50, (refused, len(denied), ends)
        assert all(d["error"] == "TOO_MANY_CONNECTIONS" and d["code"] == 5106 for d in denied)
        assert all(r.startswith("TOO_MANY_CONNECTIONS") for c, r in ends if c == 1013), ends
        assert kinds <= {(1008, "SUBSCRIBE_TIMEOUT")}, kinds  # the idle ones let in
        async with httpx.AsyncClient(base_url=svc.base_url, timeout=10) as c:
            r = await c.post("/v1/orders", json=IOC, headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
    finally:
        await close_all(conns)


@pytest.fixture(scope="module")
def small_caps(start_service: Any) -> Api:
    return ready(Api(start_service(ws_max_per_ip="3", ws_max_connections="100")))


async def test_websocket_when_address_has_its_cap_refuses_with_1013_too_many_connections(
    small_caps: Api,
) -> None:
    url = small_caps.service.ws_url
    async with ws_connect(url) as a, ws_connect(url) as b, ws_connect(url) as c:
        for ws in (a, b, c):
            await ws.send(op="subscribe", channels=["adl"])
            await ws.control("subscribed")
        async with ws_connect(url) as d:
            err = await d.control("error")
            assert err["code"] == 5106 and err["error"] == "TOO_MANY_CONNECTIONS", err
            await assert_closed(d, 1013, "TOO_MANY_CONNECTIONS")
    async with ws_connect(url) as again:  # the slots are free again once they closed
        await again.send(op="subscribe", channels=["adl"])
        await again.control("subscribed")


async def test_websocket_when_total_cap_reached_refuses_with_1013_too_many_connections(
    start_service: Any,
) -> None:
    svc: ServiceProcess = start_service(ws_max_per_ip="100", ws_max_connections="4")
    conns, _, failed = await open_many(svc.ws_url, 4)
    try:
        assert failed == 0
        async with ws_connect(svc.ws_url) as fifth:
            err = await fifth.control("error")
            assert err["code"] == 5106 and "total" in err["message"], err
            await assert_closed(fifth, 1013, "TOO_MANY_CONNECTIONS")
    finally:
        await close_all(conns)


@pytest.fixture(scope="module")
def deadline(start_service: Any) -> Api:
    return ready(Api(start_service(ws_auth_deadline_s="0.5", ws_heartbeat_s="0.2")))


async def test_websocket_when_silent_past_the_deadline_is_closed_with_subscribe_timeout(
    deadline: Api,
) -> None:
    async with ws_connect(deadline.service.ws_url) as ws:
        await ws.send(op="ping")  # a ping is not a subscription
        await ws.send(op="subscribe", channels=["nonsense"])  # nor a refused one
        await assert_closed(ws, 1008, "SUBSCRIBE_TIMEOUT")
        errors = [m["data"] for m in ws.seen if m["channel"] == "control"]
        assert any(e.get("code") == 5107 and e["error"] == "SUBSCRIBE_TIMEOUT" for e in errors)


@pytest.mark.parametrize("op", ["subscribe", "auth"])
async def test_websocket_when_subscribed_or_authenticated_in_time_outlives_the_deadline(
    deadline: Api, op: str
) -> None:
    _, key = deadline.new_account()
    async with ws_connect(deadline.service.ws_url) as ws:
        if op == "subscribe":
            await ws.send(op="subscribe", channels=["adl"])
            await ws.control("subscribed")
        else:
            await ws.send(op="auth", api_key=key)
            await ws.control("authenticated")
        for _ in range(10):  # 10 heartbeats at 0.2 s: four times the 0.5 s deadline
            await ws.expect(lambda m: m["channel"] == "heartbeat")
        await ws.send(op="ping")
        await ws.control("pong")


async def test_websocket_auth_when_failures_repeat_is_throttled_and_closed(
    throttled: Api,
) -> None:
    # `throttled` allows 5 failed authentications per address, and the HTTP test on it may
    # have used them: at most 5 AUTH_FAILED, then AUTH_THROTTLED and the connection closes
    async with ws_connect(throttled.service.ws_url) as ws:
        await ws.send(op="subscribe", channels=["adl"])
        await ws.control("subscribed")
        failed = 0
        with contextlib.suppress(websockets.ConnectionClosed):
            for i in range(7):
                await ws.send(op="auth", api_key=f"wrong-{i}")
                err = await ws.control("error")
                if err["error"] != "AUTH_FAILED":
                    assert err["code"] == 5108 and err["error"] == "AUTH_THROTTLED", err
                    break
                failed += 1
        assert failed <= 5
        await assert_closed(ws, 1008, "AUTH_THROTTLED")
    # the same address is throttled over HTTP too (one budget per address)
    r = httpx.get(throttled.service.base_url + "/v1/account", headers={"X-API-Key": "x"})
    assert_error(r, 429, "RATE_LIMITED")


async def test_websocket_connects_when_address_is_over_its_budget_answer_http_429_with_error_body(
    start_service: Any,
) -> None:
    # 10 weight per address that practically never refills; a connection attempt weighs 5
    svc: ServiceProcess = start_service(
        ready="/healthz", ip_weight_per_s="0.0001", ip_weight_burst="10"
    )
    async with ws_connect(svc.ws_url), ws_connect(svc.ws_url):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with ws_connect(svc.ws_url):
                pass
    response = refused.value.response
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
    body = orjson.loads(response.body)
    assert body["code"] == 5109 and body["error"] == "CONNECT_RATE_LIMITED", body
