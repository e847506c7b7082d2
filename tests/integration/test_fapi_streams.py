"""The Binance-style WebSocket streams driven by ccxt.pro's `watch_*` and by a raw client:
diff depth that rebuilds the book, trades, orders, my trades, balance, positions, mark
price and funding, liquidations (forceOrder), and the liquidation / ADL fills a bot sees
on its user-data stream (SPEC §13, api/binance/streams.py, market_streams.py,
user_stream.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets.asyncio.client

from tests.integration.helpers import Api, ServiceProcess
from tests.integration.test_fapi_rest import BTC, ETH, Market

DEADLINE_S = "1"


@pytest.fixture(scope="module")
def stream_service(start_service: Any) -> ServiceProcess:
    svc: ServiceProcess = start_service(
        funding="off", adl_quantile_interval_s="0.05", ws_auth_deadline_s=DEADLINE_S, ws_max_per_ip="40"
    )
    api = Api(svc)
    api.set_mark("BTC-PERP", "50000")
    api.set_mark("ETH-PERP", "3000")
    return svc


@pytest.fixture
def market(stream_service: ServiceProcess) -> Iterator[Market]:
    m = Market(stream_service)
    yield m
    m.cleanup()


class Raw:
    """A raw stream connection: JSON messages in, `next(pred)` out."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: list[Any] = []

    async def send(self, **msg: Any) -> None:
        await self.conn.send(json.dumps(msg))

    async def next(self, pred: Any = lambda m: True, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing matching within {timeout}s; saw {self.seen[-8:]}")
            msg = json.loads(await asyncio.wait_for(self.conn.recv(), left))
            self.seen.append(msg)
            if pred(msg):
                return msg


@contextlib.asynccontextmanager
async def rawconn(svc: ServiceProcess, path: str) -> AsyncIterator[Raw]:
    """A raw stream connection to `path` of the service."""
    async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{svc.port}{path}", max_queue=None) as conn:
        yield Raw(conn)


async def settle(ex: Any, symbol: str, predicate: Any, timeout: float = 5.0) -> Any:
    """ccxt's streamed book of `symbol` once `predicate(book)` holds (it may already)."""
    deadline = time.monotonic() + timeout
    while True:
        book = ex.orderbooks.get(symbol)
        if book is not None:
            view = {"asks": [list(x) for x in book["asks"]], "bids": [list(x) for x in book["bids"]], "nonce": book["nonce"]}
            if predicate(view):
                return view
        if time.monotonic() > deadline:
            raise AssertionError(f"book never settled: {view['asks'][:4]} {view['bids'][:4]}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ex.watch_order_book(symbol), 0.3)


# -- market streams ---------------------------------------------------------------------------------


async def test_depth_stream_when_the_book_churns_rebuilds_exactly_the_rest_book(market: Market) -> None:
    maker, taker = market.trader(), market.trader()
    mx, tx = maker.ccxt_async(), taker.ccxt_async()
    v1 = httpx.AsyncClient(base_url=market.svc.base_url, headers={"X-API-Key": maker.key})
    try:
        await mx.load_markets()
        first = await mx.watch_order_book(BTC)  # subscribes, snapshots
        assert first["asks"] == [] and first["bids"] == []
        ids = []
        for i in range(8):
            o = await mx.create_order(BTC, "limit", "sell", 0.01 * (i + 1), 50010 + 10 * i)
            ids.append(o["id"])
            await mx.create_order(BTC, "limit", "buy", 0.02, 49990 - 10 * i)
        await mx.cancel_order(ids[3], BTC)
        await tx.create_order(BTC, "limit", "buy", 0.025, 50020, {"timeInForce": "IOC"})  # eats a level and a half
        r = await v1.patch(f"/v1/orders/{ids[6]}", json={"price": "49990.0"})  # an amend moves a level away
        assert r.status_code == 200, r.text
        await mx.create_order(BTC, "limit", "sell", 0.5, 50100)
        rest = (await tx.fapiPublicGetDepth({"symbol": "BTCUSD", "limit": 1000}))
        expected_asks = [[float(p), float(q)] for p, q in rest["asks"]]
        expected_bids = [[float(p), float(q)] for p, q in rest["bids"]]
        book = await settle(mx, BTC, lambda b: b["asks"] == expected_asks and b["bids"] == expected_bids)
        assert book["nonce"] >= int(rest["lastUpdateId"]) - 1
        assert [50030.0, 0.04] not in book["asks"] and [50070.0, 0.07] not in book["asks"]  # canceled, amended away
    finally:
        await v1.aclose()
        await mx.close()
        await tx.close()


async def test_trade_and_user_streams_when_orders_fill_ccxt_watchers_see_them(market: Market) -> None:
    maker, taker = market.trader(), market.trader()
    mx, tx = maker.ccxt_async(), taker.ccxt_async()
    try:
        await mx.load_markets()
        await tx.load_markets()
        trades = asyncio.create_task(tx.watch_trades(ETH))
        orders = asyncio.create_task(mx.watch_orders(ETH))
        await asyncio.sleep(0.3)
        placed = await mx.create_order(ETH, "limit", "sell", 2, 3005)
        seen = await asyncio.wait_for(orders, 5)
        assert [(o["id"], o["status"]) for o in seen] == [(placed["id"], "open")]
        mine = asyncio.create_task(mx.watch_my_trades(ETH))
        balance = asyncio.create_task(mx.watch_balance())
        positions = asyncio.create_task(mx.watch_positions([ETH]))
        filled_orders = asyncio.create_task(mx.watch_orders(ETH))
        await asyncio.sleep(0.3)
        await tx.create_order(ETH, "market", "buy", 0.5)
        public = await asyncio.wait_for(trades, 5)
        assert (public[-1]["price"], public[-1]["amount"], public[-1]["side"]) == (3005, 0.5, "buy")
        fills = await asyncio.wait_for(mine, 5)
        assert (fills[-1]["order"], fills[-1]["price"], fills[-1]["amount"], fills[-1]["takerOrMaker"]) == (placed["id"], 3005, 0.5, "maker")
        assert fills[-1]["fee"]["cost"] == pytest.approx(0.3005)
        updated = (await asyncio.wait_for(filled_orders, 5))[-1]
        assert (updated["id"], updated["status"], updated["filled"], updated["remaining"]) == (placed["id"], "open", 0.5, 1.5)
        bal = await asyncio.wait_for(balance, 5)
        assert bal["USD"]["total"] == pytest.approx(100000 - 0.3005)
        pos = await asyncio.wait_for(positions, 5)
        eth = [p for p in pos if p["symbol"] == ETH][-1]
        assert (eth["contracts"], eth["side"], eth["entryPrice"]) == (0.5, "short", 3005)
        canceled = asyncio.create_task(mx.watch_orders(ETH))
        await asyncio.sleep(0.1)
        await mx.cancel_order(placed["id"], ETH)
        assert (await asyncio.wait_for(canceled, 5))[-1]["status"] == "canceled"
    finally:
        await mx.close()
        await tx.close()


async def test_mark_and_funding_streams_when_the_mark_moves_are_sent(market: Market) -> None:
    ex = market.trader().ccxt_async()
    try:
        await ex.load_markets()
        first = await ex.watch_mark_price(ETH)  # a snapshot on subscribing
        assert first["markPrice"] == 3000
        nxt = asyncio.create_task(ex.watch_mark_price(ETH))
        await asyncio.sleep(0.2)
        market.api.set_mark("ETH-PERP", "3001.5")
        assert (await asyncio.wait_for(nxt, 5))["markPrice"] == 3001.5
        again = asyncio.create_task(ex.watch_mark_price(ETH))
        await asyncio.sleep(0.2)
        market.api.set_mark("ETH-PERP", "3000")
        update = await asyncio.wait_for(again, 5)
        assert update["markPrice"] == 3000 and update["indexPrice"] == 3000
        assert update["info"]["r"] == "0.0001" and update["info"]["T"] > time.time() * 1000  # funding
    finally:
        await ex.close()


# -- the liquidation a bot sees -----------------------------------------------------------------------


@pytest.mark.slow
async def test_liquidation_when_mark_crashes_bot_sees_its_autoclose_and_counterparty_its_adl(start_service: Any) -> None:
    svc = start_service(funding="off", adl_quantile_interval_s="0.05")
    m = Market(svc)
    m.api.set_mark("ETH-PERP", "3000")
    bot, short = m.trader("1000"), m.trader()
    b, s = bot.ccxt_async(), short.ccxt_async()
    try:
        await b.load_markets()
        await s.load_markets()
        await b.set_leverage(20, ETH)
        await s.create_order(ETH, "limit", "sell", 5, 3000)
        opened = await b.create_order(ETH, "limit", "buy", 5, 3000, {"timeInForce": "IOC"})
        assert (opened["status"], opened["filled"]) == ("closed", 5)  # 15,000 USD long on 1,000 USD
        bot_orders = asyncio.create_task(b.watch_orders(ETH))
        bot_trades = asyncio.create_task(b.watch_my_trades(ETH))
        short_orders = asyncio.create_task(s.watch_orders(ETH))
        liquidations = asyncio.create_task(s.watch_liquidations(ETH))
        async with rawconn(svc, "/private/ws?listenKey=" + (await s.fapiPrivatePostListenKey())["listenKey"]) as short_raw:
            await asyncio.sleep(0.5)
            moved = m.api.set_mark("ETH-PERP", "2810")  # equity 42.5 < maintenance 70.25
            assert [liq["account_id"] for liq in moved["liquidations"]] == [bot.account_id]
            assert [f["counterparty_account_id"] for f in moved["adl_fills"]] == [short.account_id]
            bankruptcy = moved["liquidations"][0]["bankruptcy_price"]
            liq_order = (await asyncio.wait_for(bot_orders, 5))[-1]
            assert liq_order["clientOrderId"].startswith("autoclose-") and liq_order["type"] == "liquidation"
            assert (liq_order["side"], liq_order["amount"], liq_order["filled"], liq_order["status"]) == ("sell", 5, 5, "closed")
            assert liq_order["price"] == float(bankruptcy)
            liq_trade = (await asyncio.wait_for(bot_trades, 5))[-1]
            assert (liq_trade["side"], liq_trade["amount"], liq_trade["price"]) == ("sell", 5, float(bankruptcy))
            assert liq_trade["order"] == liq_order["id"]
            adl = (await asyncio.wait_for(short_orders, 5))[-1]
            assert adl["clientOrderId"] == "adl_autoclose" and adl["info"]["x"] == "CALCULATED"
            assert (adl["side"], adl["filled"], adl["status"], adl["price"]) == ("buy", 5, "closed", float(bankruptcy))
            forced = (await asyncio.wait_for(liquidations, 5))[-1]
            assert (forced["side"], forced["contracts"], forced["price"]) == ("sell", 5, float(bankruptcy))
            update = await short_raw.next(lambda msg: msg.get("e") == "ACCOUNT_UPDATE" and msg["a"]["m"] == "ADL")
            assert update["a"]["P"][0] == {**update["a"]["P"][0], "s": "ETHUSD", "pa": "0"}
            quantile = await short_raw.next(lambda msg: msg.get("e") == "ADL_QUANTILE")
            assert quantile["symbol"] == "ETHUSD" and quantile["adlQuantile"]["BOTH"] == 0  # its position is gone
        history = await b.fetch_my_trades(ETH)
        assert history[-1]["info"]["realizedPnl"] == "-992.5" and history[-1]["price"] == float(bankruptcy)
        assert (await b.fetch_balance())["USD"]["total"] == 0
        assert await b.fetch_positions([ETH]) == []
    finally:
        await b.close()
        await s.close()


# -- the protocol itself --------------------------------------------------------------------------------


async def test_raw_protocol_when_subscribing_lists_and_refuses_unknown_streams(market: Market) -> None:
    maker = market.trader()
    async with rawconn(market.svc, "/market/ws/0") as ws:
        await ws.send(method="SUBSCRIBE", params=["ethusd@aggTrade", "ethusd@depth5@100ms", "!forceOrder@arr"], id=1)
        assert await ws.next(lambda msg: msg.get("id") == 1) == {"result": None, "id": 1}
        snapshot = await ws.next(lambda msg: msg.get("e") == "depthUpdate")
        assert snapshot["s"] == "ETHUSD" and snapshot["b"] == [] and snapshot["a"] == []
        await ws.send(method="LIST_SUBSCRIPTIONS", id=2)
        listed = await ws.next(lambda msg: msg.get("id") == 2)
        assert listed["result"] == sorted(["ethusd@aggTrade", "ethusd@depth5@100ms", "!forceOrder@arr"])
        await ws.send(method="SUBSCRIBE", params=["ethusd@kline_1m"], id=3)
        error = await ws.next(lambda msg: msg.get("id") == 3)
        assert error["error"]["code"] == 2
        await ws.send(method="NOPE", id=4)
        assert (await ws.next(lambda msg: msg.get("id") == 4))["error"]["code"] == 2
        await ws.conn.send("not json")
        assert (await ws.next(lambda msg: "error" in msg))["error"]["code"] == 3
        maker.signed("POST", "/fapi/v1/order", {"symbol": "ETHUSD", "side": "SELL", "type": "LIMIT", "quantity": "1", "price": "3002", "timeInForce": "GTC"})
        partial = await ws.next(lambda msg: msg.get("e") == "depthUpdate")
        assert partial["a"] == [["3002", "1"]] and partial["u"] >= snapshot["u"]
        await ws.send(method="UNSUBSCRIBE", params=["ethusd@depth5@100ms"], id=5)
        assert await ws.next(lambda msg: msg.get("id") == 5) == {"result": None, "id": 5}
    async with rawconn(market.svc, "/ws/ethusd@bookTicker") as ws:  # Binance's raw form: the stream in the path
        maker.signed("POST", "/fapi/v1/order", {"symbol": "ETHUSD", "side": "BUY", "type": "LIMIT", "quantity": "2", "price": "2990", "timeInForce": "GTC"})
        ticker = await ws.next(lambda msg: msg.get("e") == "bookTicker")
        assert (ticker["b"], ticker["B"], ticker["a"], ticker["A"]) == ("2990", "2", "3002", "1")
    async with rawconn(market.svc, "/ws/!markPrice@arr") as ws:  # every symbol's mark, as a list
        first = await ws.next()
        assert [m["s"] for m in first] == ["BTCUSD", "ETHUSD"] and first[1]["e"] == "markPriceUpdate"
        market.api.set_mark("BTC-PERP", "50000.5")
        update = await ws.next()
        assert [(m["s"], m["p"]) for m in update] == [("BTCUSD", "50000.5")]
        market.api.set_mark("BTC-PERP", "50000")
    async with rawconn(market.svc, "/stream?streams=ethusd@aggTrade") as ws:  # combined: wrapped
        market.trader().signed("POST", "/fapi/v1/order", {"symbol": "ETHUSD", "side": "BUY", "type": "MARKET", "quantity": "0.5"})
        wrapped = await ws.next()
        assert wrapped["stream"] == "ethusd@aggTrade" and wrapped["data"]["e"] == "aggTrade" and wrapped["data"]["p"] == "3002"


async def test_listen_key_when_unknown_or_deleted_refuses_or_ends_the_stream(market: Market) -> None:
    t = market.trader()
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with rawconn(market.svc, "/private/ws?listenKey=" + "0" * 64):
            pass
    key = t.signed("POST", "/fapi/v1/listenKey", sign=False).json()["listenKey"]
    async with rawconn(market.svc, "/ws/" + key) as ws:
        t.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT", "quantity": "0.01", "price": "49000", "timeInForce": "GTC"})
        new = await ws.next(lambda msg: msg.get("e") == "ORDER_TRADE_UPDATE")
        assert (new["o"]["x"], new["o"]["X"], new["o"]["s"], new["o"]["p"]) == ("NEW", "NEW", "BTCUSD", "49000")
        assert t.signed("DELETE", "/fapi/v1/listenKey", sign=False).status_code == 200
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await ws.next(timeout=5)


async def test_idle_market_connection_when_nothing_subscribed_is_closed_after_the_deadline(market: Market) -> None:
    async with rawconn(market.svc, "/public/ws") as ws:
        start = time.monotonic()
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            await ws.next(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        assert time.monotonic() - start >= float(DEADLINE_S) * 0.8


async def test_connection_cap_when_an_address_opens_too_many_refuses_the_next(start_service: Any) -> None:
    svc = start_service(funding="off", ws_max_per_ip="2")
    async with rawconn(svc, "/public/ws/0") as a, rawconn(svc, "/public/ws/1") as b:
        await a.send(method="SUBSCRIBE", params=["btcusd@aggTrade"], id=1)
        await b.send(method="SUBSCRIBE", params=["btcusd@aggTrade"], id=1)
        await a.next(lambda msg: msg.get("id") == 1)
        await b.next(lambda msg: msg.get("id") == 1)
        with pytest.raises((websockets.exceptions.InvalidStatus, websockets.exceptions.ConnectionClosed)):
            async with rawconn(svc, "/public/ws/2") as c:
                await c.next(timeout=5)
