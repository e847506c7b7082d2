"""Stop and take-profit orders over /fapi (SPEC §12, §13; docs/binance.md): the classic
`POST /fapi/v1/order` with `stopPrice` / `workingType` / `closePosition`, the algo-order
endpoints ccxt 4.5 sends conditional orders to, ccxt itself, the user-data stream, and the
refusals (each a Binance error before anything reaches the engine).

A service of this module's own: its tests move the BTC-PERP mark and print trades.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import websockets.asyncio.client

from tests.integration.helpers import Api, ServiceProcess
from tests.integration.test_fapi_rest import BTC, ORDER_DOC, Market, Trader, assert_shape


@pytest.fixture(scope="module")
def stop_service(start_service: Any) -> ServiceProcess:
    svc: ServiceProcess = start_service(funding="off")
    return svc


@pytest.fixture
def market(stop_service: ServiceProcess) -> Iterator[Market]:
    Api(stop_service).set_mark("BTC-PERP", "50000")
    m = Market(stop_service)
    yield m
    m.cleanup()


def _long(market: Market, qty: str = "0.1") -> tuple[Trader, Trader]:
    """Bob rests `qty` @50000, Alice takes it: Alice long, the last trade price 50000."""
    alice, bob = market.trader(), market.trader()
    r = bob.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "SELL", "type": "LIMIT", "quantity": qty,
                                              "price": "50000", "timeInForce": "GTC"})
    assert r.status_code == 200, r.text
    r = alice.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "BUY", "type": "MARKET", "quantity": qty})
    assert r.json()["status"] == "FILLED", r.text
    return alice, bob


def test_classic_stop_market_when_placed_shows_new_with_its_stop_price_then_fills_on_the_mark(market: Market) -> None:
    alice, bob = _long(market)
    r = alice.signed("POST", "/fapi/v1/order", {
        "symbol": "BTCUSD", "side": "SELL", "type": "STOP_MARKET", "stopPrice": "48000", "closePosition": "true",
        "workingType": "MARK_PRICE", "newClientOrderId": "sl-1",
    })
    assert r.status_code == 200, r.text
    stop = r.json()
    assert {k: stop[k] for k in ("status", "type", "origType", "stopPrice", "workingType", "closePosition",
                                 "origQty", "price", "clientOrderId")} == {
        "status": "NEW", "type": "STOP_MARKET", "origType": "STOP_MARKET", "stopPrice": "48000",
        "workingType": "MARK_PRICE", "closePosition": True, "origQty": "0", "price": "0", "clientOrderId": "sl-1",
    }
    opened = alice.signed("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSD"}).json()
    assert [(o["orderId"], o["status"], o["type"]) for o in opened] == [(stop["orderId"], "NEW", "STOP_MARKET")]
    assert_shape(opened[0], ORDER_DOC, "openOrders[] (stop)")
    # the mark falls to 48000: it closes Alice's 0.1 on Bob's bid @47900
    bob.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT", "quantity": "0.1",
                                          "price": "47900", "timeInForce": "GTC"})
    market.api.set_mark("BTC-PERP", "48000")
    done = alice.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSD", "orderId": stop["orderId"]}).json()
    assert (done["status"], done["executedQty"], done["avgPrice"], done["type"]) == ("FILLED", "0.1", "47900",
                                                                                    "STOP_MARKET")
    assert alice.signed("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSD"}).json() == []
    assert stop["orderId"] in [o["orderId"] for o in alice.signed("GET", "/fapi/v1/allOrders", {"symbol": "BTCUSD"}).json()]


def test_classic_stop_when_working_type_is_binances_default_fires_on_the_last_trade(market: Market) -> None:
    alice, bob = _long(market)
    carol = market.trader()
    # STOP (a stop-limit): sell 0.1 at 49000 or better once the last trade is at or below 49500
    r = alice.signed("POST", "/fapi/v1/order", {
        "symbol": "BTCUSD", "side": "SELL", "type": "STOP", "quantity": "0.1", "price": "49000",
        "stopPrice": "49500", "timeInForce": "GTC",
    })
    assert r.status_code == 200, r.text
    assert (r.json()["workingType"], r.json()["type"]) == ("CONTRACT_PRICE", "STOP")
    oid = r.json()["orderId"]
    # a trade at 49500 between Bob and Carol (the mark stays 50000): Alice's stop fires and
    # rests as a limit sell @49000 (nothing bids that high)
    bob.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT", "quantity": "0.01",
                                          "price": "49500", "timeInForce": "GTC"})
    carol.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "SELL", "type": "MARKET", "quantity": "0.01"})
    order = alice.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSD", "orderId": oid}).json()
    assert (order["status"], order["type"], order["price"]) == ("NEW", "STOP", "49000")
    book = market.api.http.get("/v1/orderbook/BTC-PERP").json()
    assert ["49000", "0.1"] in book["asks"]


@pytest.mark.parametrize(
    ("case", "params", "code"),
    [
        ("no-stop-price", {"type": "STOP_MARKET", "quantity": "0.1"}, -1102),
        ("off-grid", {"type": "STOP_MARKET", "quantity": "0.1", "stopPrice": "40000.05"}, -1013),
        ("negative", {"type": "STOP_MARKET", "quantity": "0.1", "stopPrice": "-40000"}, -1100),
        ("huge", {"type": "STOP_MARKET", "quantity": "0.1", "stopPrice": "9" * 14}, -1013),
        ("working-type", {"type": "STOP_MARKET", "quantity": "0.1", "stopPrice": "40000", "workingType": "INDEX"},
         -4031),
        ("close-on-stop-limit", {"type": "STOP", "quantity": "0.1", "price": "39000", "stopPrice": "40000",
                                 "closePosition": "true"}, -4136),
        ("close-with-quantity", {"type": "STOP_MARKET", "quantity": "0.1", "stopPrice": "40000",
                                 "closePosition": "true"}, -4137),
        ("stop-price-on-limit", {"type": "LIMIT", "quantity": "0.1", "price": "40000", "stopPrice": "40000",
                                 "timeInForce": "GTC"}, -1106),
        ("stop-without-price", {"type": "STOP", "quantity": "0.1", "stopPrice": "40000"}, -1102),
        ("trailing", {"type": "TRAILING_STOP_MARKET", "quantity": "0.1", "callbackRate": "1"}, -4136),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_classic_stop_when_fields_wrong_is_refused_before_the_engine(market: Market, case: str,
                                                                     params: dict[str, str], code: int) -> None:
    t = market.trader()
    seq = market.seq()
    r = t.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "SELL", **params})
    assert 400 <= r.status_code < 500 and r.json()["code"] == code, r.text
    assert market.seq() == seq


def test_stop_when_its_trigger_is_already_reached_answers_2021(market: Market) -> None:
    t = market.trader()
    r = t.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "SELL", "type": "STOP_MARKET",
                                            "quantity": "0.1", "stopPrice": "50000", "workingType": "MARK_PRICE"})
    assert r.status_code == 400 and r.json()["code"] == -2021, r.text


def test_algo_endpoints_when_ccxt_places_fetches_and_cancels_stops(market: Market) -> None:
    alice, bob = _long(market)
    ex = alice.ccxt()
    ex.load_markets()
    # ccxt 4.5 sends conditional orders to POST /fapi/v1/algoOrder (type STOP_MARKET, triggerPrice)
    sl = ex.create_order(BTC, "market", "sell", 0.1, None, {"stopLossPrice": 47000, "reduceOnly": True,
                                                            "workingType": "MARK_PRICE"})
    assert (sl["status"], sl["triggerPrice"], sl["reduceOnly"], sl["amount"]) == ("open", 47000, True, 0.1)
    assert sl["info"]["algoType"] == "CONDITIONAL" and sl["info"]["orderType"] == "STOP_MARKET"
    tp = ex.create_order(BTC, "limit", "sell", 0.1, 53000, {"takeProfitPrice": 52000})
    assert (tp["status"], tp["takeProfitPrice"], tp["price"]) == ("open", 52000, 53000)
    assert tp["info"]["orderType"] == "TAKE_PROFIT" and tp["info"]["workingType"] == "CONTRACT_PRICE"
    # listed by the algo endpoints (and, Binance's classic view, by openOrders as NEW)
    waiting = ex.fetch_open_orders(BTC, None, None, {"trigger": True})
    assert sorted(o["id"] for o in waiting) == sorted([sl["id"], tp["id"]])
    assert {o["orderId"] for o in alice.signed("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSD"}).json()} == {
        int(sl["id"]), int(tp["id"])}
    fetched = ex.fetch_order(sl["id"], BTC, {"trigger": True})
    assert (fetched["id"], fetched["status"], fetched["triggerPrice"]) == (sl["id"], "open", 47000)
    canceled = ex.cancel_order(tp["id"], BTC, {"trigger": True})
    assert canceled["id"] == tp["id"]
    assert ex.fetch_order(tp["id"], BTC, {"trigger": True})["status"] == "canceled"
    # the stop-loss fires on a mark drop and closes the long on Bob's bid
    bob.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT", "quantity": "0.1",
                                          "price": "46900", "timeInForce": "GTC"})
    market.api.set_mark("BTC-PERP", "47000")
    fired = ex.fetch_order(sl["id"], BTC, {"trigger": True})
    assert fired["status"] == "closed" and fired["info"]["algoStatus"] == "TRIGGERED"
    assert fired["info"]["actualOrderId"] == sl["id"]
    actual = ex.fetch_order(sl["id"], BTC)  # the order it became (the same id here)
    assert (actual["status"], actual["filled"], actual["average"]) == ("closed", 0.1, 46900)
    assert ex.fetch_open_orders(BTC, None, None, {"trigger": True}) == []
    history = alice.signed("GET", "/fapi/v1/allAlgoOrders", {"symbol": "BTCUSD"}).json()
    assert [(h["algoId"], h["algoStatus"]) for h in history] == [(int(sl["id"]), "TRIGGERED"), (int(tp["id"]), "CANCELED")]


def test_algo_cancel_all_when_asked_cancels_only_the_waiting_stops(market: Market) -> None:
    t = market.trader()
    for trigger in ("45000", "44000"):
        r = t.signed("POST", "/fapi/v1/algoOrder", {"algoType": "CONDITIONAL", "symbol": "BTCUSD", "side": "SELL",
                                                    "type": "STOP_MARKET", "quantity": "0.1", "triggerPrice": trigger})
        assert r.status_code == 200 and r.json()["algoStatus"] == "NEW", r.text
    resting = t.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT",
                                                  "quantity": "0.1", "price": "45000", "timeInForce": "GTC"}).json()
    r = t.signed("DELETE", "/fapi/v1/algoOpenOrders", {"symbol": "BTCUSD"})
    assert r.status_code == 200 and r.json()["code"] == 200, r.text
    assert t.signed("GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSD"}).json() == []
    assert [o["orderId"] for o in t.signed("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSD"}).json()] == [
        resting["orderId"]]
    # an unknown or already-canceled algo order
    assert t.signed("DELETE", "/fapi/v1/algoOrder", {"algoId": "999999"}).json()["code"] == -2011
    assert t.signed("GET", "/fapi/v1/algoOrder", {"algoId": str(resting["orderId"])}).json()["code"] == -2013
    bad = t.signed("POST", "/fapi/v1/algoOrder", {"algoType": "VP", "symbol": "BTCUSD", "side": "SELL",
                                                  "type": "STOP_MARKET", "quantity": "0.1", "triggerPrice": "40000"})
    assert bad.json()["code"] == -1130


async def test_user_stream_when_a_stop_triggers_shows_new_then_the_working_order(market: Market) -> None:
    alice, _ = _long(market)
    key = alice.signed("POST", "/fapi/v1/listenKey", sign=False).json()["listenKey"]
    url = f"ws://127.0.0.1:{market.svc.port}/private/ws?listenKey={key}"
    async with websockets.asyncio.client.connect(url, max_queue=None) as conn:
        r = alice.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "SELL", "type": "STOP_MARKET",
                                                    "quantity": "0.1", "stopPrice": "48000", "workingType": "MARK_PRICE"})
        oid = r.json()["orderId"]
        market.api.set_mark("BTC-PERP", "48000")  # empty bids: it triggers, then expires unfilled
        updates = []
        while len(updates) < 3:
            msg = json.loads(await conn.recv())
            if msg.get("e") == "ORDER_TRADE_UPDATE" and msg["o"]["i"] == oid:
                updates.append(msg["o"])
    assert [(u["x"], u["X"], u["o"], u["ot"], u["sp"], u["wt"]) for u in updates] == [
        ("NEW", "NEW", "STOP_MARKET", "STOP_MARKET", "48000", "MARK_PRICE"),  # placed, waiting
        ("NEW", "NEW", "MARKET", "STOP_MARKET", "48000", "MARK_PRICE"),  # triggered: a market order now
        ("EXPIRED", "EXPIRED", "MARKET", "STOP_MARKET", "48000", "MARK_PRICE"),  # nothing to fill it
    ]
