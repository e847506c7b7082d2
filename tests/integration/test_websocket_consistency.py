"""WebSocket messages against the pipelined group commit (EXCHANGE_FSYNC=batch).

The engine applies a batch at once but its events may be told only once the journal is
durable, and later batches are applied meanwhile. These tests hold the service to what
service/ws_hub.py promises: on one connection `seq` never decreases; a state message (book,
adl_quantile, control, heartbeat, snapshot) with seq s never comes before an event with seq
<= s; nothing shows state whose events were not yet delivered; a subscription made while
batches are in flight misses nothing and gets nothing twice; and `adl_quantile` follows
equity moves from other symbols (cross margin).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import websockets.asyncio.client

from tests.integration.helpers import Api, ServiceProcess

Msg = dict[str, Any]

# channels whose messages are engine events (their own seq); everything else is state as of
# some seq (book, control, heartbeat, adl_quantile, and `mark:`, whose snapshot on subscribe
# and events read alike: the current mark)
_EVENT_CHANNELS = ("trades:", "account", "adl", "liquidations")


def _is_event(m: Msg) -> bool:
    return m["channel"].startswith(_EVENT_CHANNELS) and m["data"].get("type") != "adl_quantile"


class Collector:
    """A real websockets client that reads every message in the background."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.msgs: list[Msg] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for raw in self.conn:
                self.msgs.append(json.loads(raw))

    async def send(self, **msg: Any) -> None:
        await self.conn.send(json.dumps(msg))

    async def wait_for(self, pred: Callable[[Msg], bool], timeout: float = 10.0) -> Msg:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.msgs:
                if pred(m):
                    return m
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching message within {timeout}s; last: {self.msgs[-5:]}")

    def on(self, channel: str) -> list[Msg]:
        return [m for m in self.msgs if m["channel"] == channel]


@contextlib.asynccontextmanager
async def collector(url: str) -> AsyncIterator[Collector]:
    async with websockets.asyncio.client.connect(url, max_queue=None, max_size=None) as conn:
        c = Collector(conn)
        try:
            yield c
        finally:
            c.task.cancel()


def assert_ordered(msgs: list[Msg]) -> None:
    """Per connection: seq never decreases, no state message at s precedes an event <= s,
    and book messages of one symbol have strictly increasing seq (one per batch at most)."""
    last_seq = 0
    last_state = -1
    last_book: dict[str, int] = {}
    for i, m in enumerate(msgs):
        seq = m["seq"]
        assert seq >= last_seq, f"seq went back at #{i}: {m} after seq {last_seq}"
        if _is_event(m):
            assert seq > last_state, f"event #{i} {m} after a state message at seq {last_state}"
        else:
            last_state = seq
        if m["channel"].startswith("book:"):
            prev = last_book.get(m["channel"], -1)
            assert seq > prev, f"book #{i} at seq {seq} after a book at seq {prev}"
            last_book[m["channel"]] = seq
        last_seq = seq


@pytest.fixture(scope="module")
def batch_api(start_service: Any) -> Api:
    svc: ServiceProcess = start_service(
        fsync="batch", adl_quantile_interval_s="0.02", ws_heartbeat_s="0.3"
    )
    api = Api(svc)
    api.set_mark("BTC-PERP", "10000")
    return api


async def _orders(base_url: str, keys: list[str], per_key: int, seed: int) -> int:
    """One task per key: limit orders around 10000 that often cross (trades, fills,
    position changes) and cancel-alls; returns how many trades the answers reported."""
    fills = 0

    async def trader(i: int, key: str) -> None:
        nonlocal fills
        rng = random.Random(seed * 100 + i)
        async with httpx.AsyncClient(
            base_url=base_url, headers={"X-API-Key": key}, timeout=30
        ) as c:
            for n in range(per_key):
                if n % 25 == 24:
                    assert (await c.delete("/v1/orders")).status_code == 200
                    continue
                side = rng.choice(("buy", "sell"))
                ticks = rng.randint(-30, 5) if side == "buy" else rng.randint(-5, 30)
                body = {
                    "symbol": "BTC-PERP",
                    "side": side,
                    "type": "limit",
                    "qty": "0.001",
                    "price": f"{10000 + ticks * 0.5:.1f}",
                }
                r = await c.post("/v1/orders", json=body)
                assert r.status_code == 200, r.text
                fills += len(r.json()["fills"])

    await asyncio.gather(*(trader(i, k) for i, k in enumerate(keys)))
    return fills


async def test_concurrent_orders_under_batch_fsync_when_watched_keep_seq_order_and_book_matches_rest(
    batch_api: Api,
) -> None:
    api = batch_api
    accounts = [api.new_account("10000000") for _ in range(12)]
    keys = [k for _, k in accounts]
    url = api.service.ws_url
    async with collector(url) as watcher, collector(url) as late:
        await watcher.send(
            op="subscribe", channels=["book:BTC-PERP", "trades:BTC-PERP", "mark:BTC-PERP"]
        )
        await watcher.send(op="auth", api_key=keys[0])
        await watcher.wait_for(lambda m: m["data"].get("type") == "authenticated")

        async def pings() -> None:  # control answers in the middle of the traffic
            while True:
                await watcher.send(op="ping")
                await asyncio.sleep(0.01)

        async def late_join() -> None:  # subscribes while batches are in flight
            while not watcher.on("trades:BTC-PERP"):
                await asyncio.sleep(0.005)
            await late.send(op="subscribe", channels=["book:BTC-PERP", "trades:BTC-PERP"])
            await late.send(op="auth", api_key=keys[1])

        pinger = asyncio.create_task(pings())
        try:
            fills, _ = await asyncio.gather(
                _orders(api.service.base_url, keys, 40, seed=3), late_join()
            )
        finally:
            pinger.cancel()
        assert fills > 20  # the load did cross: trades, fills and positions were sent

        # quiescent: the last book message of each connection is the book GET shows
        rest = api.http.get("/v1/orderbook/BTC-PERP", params={"depth": 20}).json()
        for ws in (watcher, late):
            await ws.wait_for(lambda m: m["seq"] >= rest["seq"])  # a heartbeat once all is sent
            last = ws.on("book:BTC-PERP")[-1]
            assert (last["data"]["bids"], last["data"]["asks"]) == (rest["bids"], rest["asks"])
            assert last["seq"] <= rest["seq"]
            assert_ordered(ws.msgs)
        assert len(watcher.on("book:BTC-PERP")) > 10
        assert any(m["data"].get("type") == "adl_quantile" for m in watcher.on("account"))
        # the late subscriber got every trade printed after its first one, none twice
        late_trades = [m["seq"] for m in late.on("trades:BTC-PERP")]
        seen_trades = [m["seq"] for m in watcher.on("trades:BTC-PERP")]
        assert late_trades and late_trades == seen_trades[seen_trades.index(late_trades[0]) :]


def _fsync_helper(svc: ServiceProcess) -> int:
    assert svc.proc is not None
    with open(f"/proc/{svc.proc.pid}/task/{svc.proc.pid}/children") as f:
        (pid,) = (int(p) for p in f.read().split())
    return pid


def _in_thread(
    method: str, url: str, headers: dict[str, str], body: dict[str, Any]
) -> tuple[threading.Thread, list[httpx.Response]]:
    """Send a request from a thread of its own (it blocks until the command is durable)."""
    out: list[httpx.Response] = []
    t = threading.Thread(
        target=lambda: out.append(
            httpx.request(method, url, headers=headers, json=body, timeout=30)
        ),
        daemon=True,
    )
    t.start()
    return t, out


async def _until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_subscribe_when_batches_await_their_fsync_shows_no_undelivered_state_then_catches_up(
    batch_api: Api,
) -> None:
    api = batch_api
    base = api.service.base_url
    _, key = api.new_account("1000000")
    api.set_mark("ETH-PERP", "1000")  # a quiet symbol: nothing else trades it
    level = ["777.77", "0.03"]
    order = {
        "symbol": "ETH-PERP",
        "side": "buy",
        "type": "limit",
        "qty": "0.03",
        "price": "777.77",
    }

    def live_bids() -> list[list[str]]:  # a GET reads the live engine, durable or not
        return list(api.http.get("/v1/orderbook/ETH-PERP").json()["bids"])

    async with collector(api.service.ws_url) as before, collector(api.service.ws_url) as during:
        await before.send(op="subscribe", channels=["book:ETH-PERP"])
        await before.wait_for(lambda m: m["channel"] == "book:ETH-PERP")
        delivered = api.seq()
        helper = _fsync_helper(api.service)
        os.kill(helper, signal.SIGSTOP)  # the disk hangs: commands apply, none becomes durable
        try:
            placing, placed = _in_thread("POST", f"{base}/v1/orders", {"X-API-Key": key}, order)
            await _until(lambda: level in live_bids())
            applied = api.seq()
            marking, _ = _in_thread(
                "POST",
                f"{base}/v1/admin/mark-price",
                api.admin_headers,
                {"symbol": "ETH-PERP", "price": "1010"},
            )
            await _until(lambda: api.seq() > applied)
            await during.send(op="subscribe", channels=["book:ETH-PERP", "mark:ETH-PERP"])
            await during.send(op="auth", api_key=key)
            await during.send(op="ping")
            await during.wait_for(lambda m: m["data"].get("type") == "pong")
            await asyncio.sleep(0.3)  # room for anything wrongly sent early
            assert not placed  # nobody heard of the order yet ...
            for ws in (before, during):  # ... nor saw it, nor the new mark
                early = [
                    m
                    for m in ws.msgs
                    if m["seq"] > delivered
                    or level in m["data"].get("bids", ())
                    or m["data"].get("price") == "1010"
                ]
                assert not early, f"state not yet durable was shown: {early}"
        finally:
            os.kill(helper, signal.SIGCONT)
        placing.join(10)
        marking.join(10)
        assert placed and placed[0].status_code == 200, placed
        order_id = placed[0].json()["order_id"]
        for ws in (before, during):
            await ws.wait_for(
                lambda m: m["channel"] == "book:ETH-PERP" and level in m["data"]["bids"]
            )
        accepted = await during.wait_for(
            lambda m: (
                m["data"].get("type") == "order_accepted" and m["data"]["order_id"] == order_id
            )
        )
        await during.wait_for(lambda m: m["data"].get("price") == "1010")
        await asyncio.sleep(0.3)  # room for duplicates
        marks = [m["data"]["price"] for m in during.on("mark:ETH-PERP")]
        assert marks == ["1010"], marks  # the event, not also a snapshot of the same mark
        books = during.on("book:ETH-PERP")
        assert len(books) == 1 and books[0]["seq"] >= accepted["seq"], books
        for ws in (before, during):
            assert_ordered(ws.msgs)
    with api.as_key(key) as c:
        assert c.delete("/v1/orders").status_code == 200


@pytest.fixture
def quantile_api(start_service: Any) -> Api:
    """A service of its own per case: quantiles rank every holder of a symbol."""
    svc: ServiceProcess = start_service(adl_quantile_interval_s="0.02")
    api = Api(svc)
    api.set_mark("BTC-PERP", "10000")
    api.set_mark("ETH-PERP", "1000")
    return api


def _rest_quantile(api: Api, key: str, symbol: str) -> int:
    with api.as_key(key) as c:
        (pos,) = [p for p in c.get("/v1/positions").json() if p["symbol"] == symbol]
    return int(pos["adl_quantile"])


def _pushed(ws: Collector, symbol: str) -> list[int]:
    return [
        m["data"]["adl_quantile"]
        for m in ws.on("account")
        if m["data"].get("type") == "adl_quantile" and m["data"]["symbol"] == symbol
    ]


@pytest.mark.parametrize("move", ["eth_mark", "eth_fill"], ids=["mark_move", "fill_at_a_loss"])
async def test_adl_quantile_when_another_symbol_moves_equity_is_pushed_for_the_ranked_symbol(
    quantile_api: Api, move: str
) -> None:
    """X and Z are the only BTC shorts; Z is also long ETH. An ETH loss cuts Z's equity,
    raising its effective leverage: Z goes first in the BTC ADL line and X second."""
    api = quantile_api
    _, kx = api.new_account("1000")
    _, kz = api.new_account("1500")
    _, kl = api.new_account("100000")
    _, kw = api.new_account("100000")

    def order(key: str, symbol: str, side: str, qty: str, price: str, **kw: Any) -> None:
        with api.as_key(key) as c:
            body = {
                "symbol": symbol,
                "side": side,
                "type": "limit",
                "qty": qty,
                "price": price,
                **kw,
            }
            r = c.post("/v1/orders", json=body)
        assert r.status_code == 200, r.text

    async with collector(api.service.ws_url) as wx, collector(api.service.ws_url) as wz:
        await wx.send(op="auth", api_key=kx)
        await wz.send(op="auth", api_key=kz)
        order(kl, "BTC-PERP", "buy", "0.2", "10000")
        order(kx, "BTC-PERP", "sell", "0.1", "10000")
        order(kz, "BTC-PERP", "sell", "0.1", "10000")
        order(kw, "ETH-PERP", "sell", "1", "1000")
        order(kz, "ETH-PERP", "buy", "1", "1000")
        api.set_mark("BTC-PERP", "9500")
        assert (_rest_quantile(api, kx, "BTC-PERP"), _rest_quantile(api, kz, "BTC-PERP")) == (4, 2)
        await wx.wait_for(lambda m: _pushed(wx, "BTC-PERP")[-1:] == [4])
        await wz.wait_for(lambda m: _pushed(wz, "BTC-PERP")[-1:] == [2])
        if move == "eth_mark":
            api.set_mark("ETH-PERP", "400")
        else:  # Z buys 11 ETH more and sells all 12 at the price band's edge (mark 1000 - 5%):
            # a realized loss of 12 x 50 = 600
            order(kw, "ETH-PERP", "sell", "11", "1000")
            order(kz, "ETH-PERP", "buy", "11", "1000")
            # one ETH at a time: each sell adds 50 of open loss (SPEC §3), which Z's available
            # covers, and its fill frees 100 of initial margin
            for _ in range(12):
                order(kw, "ETH-PERP", "buy", "1", "950")
                order(kz, "ETH-PERP", "sell", "1", "950", reduce_only=True)
        assert (_rest_quantile(api, kx, "BTC-PERP"), _rest_quantile(api, kz, "BTC-PERP")) == (2, 4)
        await wx.wait_for(lambda m: _pushed(wx, "BTC-PERP")[-1:] == [2])
        await wz.wait_for(lambda m: _pushed(wz, "BTC-PERP")[-1:] == [4])
        for ws in (wx, wz):
            assert_ordered(ws.msgs)


@pytest.mark.parametrize("fsync", ["off", "always"])
async def test_heartbeat_when_it_fires_as_a_message_is_queued_never_passes_that_message(
    start_service: Any, fsync: str
) -> None:
    """A heartbeat carries the last delivered seq; sent ahead of a message queued just as its
    timer fired, it made seq go down on the connection (a re-audit saw heartbeat 135, then
    trade 133). A 20 ms heartbeat and trades at random gaps make that moment frequent."""
    svc: ServiceProcess = start_service(fsync=fsync, ws_heartbeat_s="0.02")
    api = Api(svc)
    try:
        api.set_mark("BTC-PERP", "10000")
        seller, buyer = api.new_account("10000000")[1], api.new_account("10000000")[1]
        rng = random.Random(7)
        async with collector(svc.ws_url) as ws:
            await ws.conn.send(json.dumps({"op": "subscribe", "channels": ["trades:BTC-PERP"]}))
            async with httpx.AsyncClient(base_url=svc.base_url, timeout=10) as c:
                for _ in range(150):
                    for key, side in ((seller, "sell"), (buyer, "buy")):
                        body = {"symbol": "BTC-PERP", "side": side, "type": "limit", "qty": "0.001", "price": "10000"}
                        r = await c.post("/v1/orders", json=body, headers={"X-API-Key": key})
                        assert r.status_code == 200, r.text
                    await asyncio.sleep(rng.uniform(0, 0.04))
            await ws.wait_for(lambda _: len(ws.on("trades:BTC-PERP")) >= 150)
            assert len(ws.on("trades:BTC-PERP")) == 150 and len(ws.on("heartbeat")) > 10
            assert_ordered(ws.msgs)
    finally:
        svc.stop()
