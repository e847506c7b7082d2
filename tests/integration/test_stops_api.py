"""Stop and take-profit orders over HTTP and WebSocket (SPEC §12), against the real service.

A service of this module's own: its tests move the BTC-PERP mark. Numbers as in
tests/scenario/test_stops.py: Alice buys 1 BTC @10000 from Bob (taker fee 5), then guards
it with a stop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.integration.helpers import Api, assert_error, ws_connect


@pytest.fixture(scope="module")
def fresh(start_service: Any) -> Api:
    return Api(start_service())


def _limit(side: str, qty: str, price: str, **kw: Any) -> dict[str, Any]:
    return {"symbol": "BTC-PERP", "side": side, "type": "limit", "qty": qty, "price": price, **kw}


def _long(api: Api, client_a: httpx.Client, client_b: httpx.Client) -> None:
    api.set_mark("BTC-PERP", "10000")
    assert client_b.post("/v1/orders", json=_limit("sell", "1", "10000")).status_code == 200
    r = client_a.post("/v1/orders", json=_limit("buy", "1", "10000", time_in_force="IOC"))
    assert r.json()["status"] == "filled", r.text


def test_stop_lifecycle_over_http_place_list_amend_trigger(fresh: Api) -> None:
    api = fresh
    _, alice_key = api.new_account("10000")
    _, bob_key = api.new_account("100000")
    with api.as_key(alice_key) as a, api.as_key(bob_key) as b:
        _long(api, a, b)
        r = a.post("/v1/orders", json={
            "symbol": "BTC-PERP", "side": "sell", "type": "stop_market", "trigger_price": "9500",
            "close_position": True, "client_order_id": "sl-1",
        })
        assert r.status_code == 200, r.text
        stop = r.json()
        assert {k: stop[k] for k in ("type", "status", "qty", "price", "trigger_price", "trigger_by",
                                     "close_position", "reduce_only", "filled_qty", "fills")} == {
            "type": "stop_market", "status": "untriggered", "qty": "0", "price": None, "trigger_price": "9500",
            "trigger_by": "mark", "close_position": True, "reduce_only": True, "filled_qty": "0", "fills": [],
        }
        oid = stop["order_id"]
        # listed with the open orders, and by id
        listed = a.get("/v1/orders").json()
        assert [(o["order_id"], o["status"]) for o in listed] == [(oid, "untriggered")]
        assert a.get(f"/v1/orders/{oid}").json()["trigger_price"] == "9500"
        # plain orders carry no trigger fields
        r = a.post("/v1/orders", json=_limit("buy", "0.1", "9000"))
        plain = r.json()
        assert "trigger_price" not in plain
        assert a.delete(f"/v1/orders/{plain['order_id']}").status_code == 200
        # amend the trigger (a close-position order has no qty to amend)
        r = a.patch(f"/v1/orders/{oid}", json={"trigger_price": "9600"})
        assert r.status_code == 200, r.text
        assert (r.json()["trigger_price"], r.json()["status"]) == ("9600", "untriggered")
        assert_error(a.patch(f"/v1/orders/{oid}", json={"qty": "0.5"}), 400, "INVALID_QUANTITY")
        assert_error(a.patch(f"/v1/orders/{oid}", json={"trigger_price": "10000"}), 400, "WOULD_TRIGGER_IMMEDIATELY")
        assert_error(a.patch(f"/v1/orders/{oid}", json={"trigger_price": "9600.05"}), 400, "INVALID_TRIGGER_PRICE")
        r = a.patch("/v1/orders/by-client-id/sl-1", json={"trigger_price": "9550"})
        assert r.json()["trigger_price"] == "9550", r.text
        # Bob bids 1 @9400; the mark falls to 9550: the stop closes the long @9400
        assert b.post("/v1/orders", json=_limit("buy", "1", "9400")).status_code == 200
        marked = api.set_mark("BTC-PERP", "9550")
        assert marked["liquidations"] == []
        done = a.get(f"/v1/orders/{oid}").json()
        assert (done["status"], done["qty"], done["filled_qty"], done["avg_price"]) == ("filled", "1", "1", "9400")
        assert a.get("/v1/orders").json() == []
        # realized 1 x (9400 - 10000) = -600, fees 5 + 9400 x 0.0005 = 4.7: 10000 - 609.7
        acct = a.get("/v1/account").json()
        assert (acct["wallet_balance"], acct["positions"]) == ("9390.3", [])


def test_stop_cancel_and_cancel_all_over_http(fresh: Api) -> None:
    api = fresh
    api.set_mark("BTC-PERP", "10000")
    _, key = api.new_account("10000")
    with api.as_key(key) as a:
        ids = []
        for body in (
            {"type": "stop_limit", "side": "buy", "qty": "0.1", "price": "10600", "trigger_price": "10500",
             "trigger_by": "last"},
            {"type": "take_profit_market", "side": "sell", "qty": "0.1", "trigger_price": "11000",
             "client_order_id": "tp"},
            {"type": "take_profit_limit", "side": "buy", "qty": "0.1", "price": "9000", "trigger_price": "9100"},
        ):
            r = a.post("/v1/orders", json={"symbol": "BTC-PERP", **body})
            assert r.status_code == 200, r.text
            ids.append(r.json()["order_id"])
        assert a.get(f"/v1/orders/{ids[0]}").json()["trigger_by"] == "last"
        r = a.delete(f"/v1/orders/{ids[0]}")
        assert r.json()["status"] == "canceled", r.text
        r = a.delete("/v1/orders", params={"client_order_id": "tp"})
        assert (r.json()["order_id"], r.json()["status"]) == (ids[1], "canceled")
        assert a.delete("/v1/orders", params={"symbol": "BTC-PERP"}).json() == {"canceled": [ids[2]]}
        assert a.get("/v1/orders").json() == []


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"type": "stop_market", "side": "sell", "qty": "0.1"}, 400, "INVALID_TRIGGER_PRICE"),
        ({"type": "stop_market", "side": "sell", "qty": "0.1", "trigger_price": "0"}, 400, "INVALID_TRIGGER_PRICE"),
        ({"type": "stop_market", "side": "sell", "qty": "0.1", "trigger_price": "-9000"}, 400, "INVALID_TRIGGER_PRICE"),
        ({"type": "stop_market", "side": "sell", "qty": "0.1", "trigger_price": "9000.05"}, 400,
         "INVALID_TRIGGER_PRICE"),
        ({"type": "stop_market", "side": "sell", "qty": "0.1", "trigger_price": "1e3"}, 400, "INVALID_TRIGGER_PRICE"),
        ({"type": "stop_market", "side": "sell", "qty": "0.1", "trigger_price": "9" * 40}, 400,
         "INVALID_TRIGGER_PRICE"),
        ({"type": "stop_market", "side": "sell", "qty": "0.1", "trigger_price": "9000", "trigger_by": "index"}, 400,
         "INVALID_TRIGGER_BY"),
        ({"type": "stop_market", "side": "sell", "qty": "0.1", "trigger_price": "10000"}, 400,
         "WOULD_TRIGGER_IMMEDIATELY"),
        ({"type": "limit", "side": "sell", "qty": "0.1", "price": "10000", "trigger_price": "9000"}, 400,
         "TRIGGER_NOT_ALLOWED"),
        ({"type": "stop_limit", "side": "sell", "trigger_price": "9000", "price": "8900", "close_position": True},
         400, "TRIGGER_NOT_ALLOWED"),
        ({"type": "stop_market", "side": "sell", "qty": "0.1", "trigger_price": "9000", "close_position": True},
         400, "INVALID_QUANTITY"),
        ({"type": "stop_market", "side": "sell", "trigger_price": "9000"}, 400, "VALIDATION_ERROR"),
        ({"type": "stop_limit", "side": "sell", "qty": "0.1", "trigger_price": "9000"}, 400, "PRICE_REQUIRED"),
        ({"type": "stop_market", "side": "sell", "qty": "0.1", "trigger_price": "9000", "close_position": "yes"},
         400, "VALIDATION_ERROR"),
        ({"type": "trailing_stop_market", "side": "sell", "qty": "0.1", "trigger_price": "9000"}, 400,
         "INVALID_ORDER_TYPE"),
    ],
    ids=["no_trigger", "zero", "negative", "off_grid", "exponent", "huge", "trigger_by", "reached", "on_limit",
         "close_on_limit", "close_with_qty", "no_qty", "no_price", "close_not_bool", "trailing"],
)
def test_stop_place_when_fields_wrong_answers_4xx_and_changes_nothing(
    fresh: Api, body: dict[str, Any], status: int, error: str
) -> None:
    api = fresh
    api.set_mark("BTC-PERP", "10000")
    _, key = api.new_account("10000")
    with api.as_key(key) as a:
        before = a.get("/v1/orders").json()
        assert_error(a.post("/v1/orders", json={"symbol": "BTC-PERP", **body}), status, error)
        assert a.get("/v1/orders").json() == before


async def test_order_triggered_when_a_stop_fires_reaches_the_owners_account_channel(fresh: Api) -> None:
    api = fresh
    _, alice_key = api.new_account("10000")
    _, bob_key = api.new_account("100000")
    with api.as_key(alice_key) as a, api.as_key(bob_key) as b:
        _long(api, a, b)
        r = a.post("/v1/orders", json={
            "symbol": "BTC-PERP", "side": "sell", "type": "stop_market", "qty": "1", "trigger_price": "9500",
        })
        oid = r.json()["order_id"]
        async with ws_connect(api.service.ws_url) as ws, ws_connect(api.service.ws_url) as other:
            await ws.send(op="auth", api_key=alice_key)
            await ws.control("authenticated")
            await other.send(op="auth", api_key=bob_key)
            await other.control("authenticated")
            await asyncio.to_thread(api.set_mark, "BTC-PERP", "9500")
            trig = await ws.expect(lambda m: m["channel"] == "account" and m["data"]["type"] == "order_triggered")
            assert {k: trig["data"][k] for k in ("order_id", "order_type", "trigger_price", "trigger_by",
                                                 "reference_price")} == {
                "order_id": oid, "order_type": "stop_market", "trigger_price": "9500", "trigger_by": "mark",
                "reference_price": "9500",
            }
            # then it enters like a new order: accepted, and (an empty book) canceled
            accepted = await ws.expect(lambda m: m["channel"] == "account" and m["data"]["type"] == "order_accepted")
            assert accepted["data"]["order_id"] == oid and accepted["data"]["order_type"] == "stop_market"
            canceled = await ws.expect(lambda m: m["channel"] == "account" and m["data"]["type"] == "order_canceled")
            assert (canceled["data"]["order_id"], canceled["data"]["reason"]) == (oid, "market")
            # nobody else hears of it
            assert not any(m["data"].get("type") == "order_triggered" for m in await other.drain())
