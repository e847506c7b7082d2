"""Isolated margin on /fapi (SPEC §12, §13), the way Binance USDⓈ-M does it: `POST
/fapi/v1/marginType`, `POST /fapi/v1/positionMargin`, the isolated fields of positions and
the account totals, the user-data stream's ACCOUNT_UPDATE; with raw signed requests and with
ccxt (`set_margin_mode`, `add_margin`, `reduce_margin`, `fetch_positions`).

Numbers as in tests/scenario/test_isolated_partial.py: mark 10000, the trader deposits 1000,
sets leverage 20, goes isolated and buys 1 BTC at 10000 (taker fee 5 from the wallet): wallet
495, isolated margin 500, liquidation price (10000 - 500) / 0.995 = 9547.73869347.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import ccxt
import pytest

from tests.integration.helpers import Api, ServiceProcess
from tests.integration.test_fapi_rest import BTC, ETH, Market, Trader
from tests.integration.test_fapi_streams import rawconn


@pytest.fixture(scope="module")
def iso_service(start_service: Any) -> ServiceProcess:
    svc: ServiceProcess = start_service(funding="off")
    api = Api(svc)
    api.set_mark("BTC-PERP", "10000")
    api.set_mark("ETH-PERP", "3000")
    return svc


@pytest.fixture
def market(iso_service: ServiceProcess) -> Iterator[Market]:
    m = Market(iso_service)
    yield m
    m.cleanup()


def _ok(r: Any) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def _refused(r: Any, code: int) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == code, r.text
    assert set(body) <= {"code", "msg", "detail"}, r.text
    return dict(body)


def _isolated_long(market: Market) -> tuple[Trader, Trader]:
    """A trader (1000 deposited) long 1 BTC at 10000, isolated at 20x, and its counterparty."""
    alice, bob = market.trader("1000"), market.trader()
    _ok(alice.signed("POST", "/fapi/v1/leverage", {"symbol": "BTCUSD", "leverage": 20}))
    assert _ok(alice.signed("POST", "/fapi/v1/marginType", {"symbol": "BTCUSD", "marginType": "ISOLATED"})) == {
        "code": 200, "msg": "success",
    }
    sell = {"symbol": "BTCUSD", "side": "SELL", "type": "LIMIT", "quantity": "1", "price": "10000", "timeInForce": "GTC"}
    _ok(bob.signed("POST", "/fapi/v1/order", sell))
    buy = {**sell, "side": "BUY", "timeInForce": "IOC"}
    assert _ok(alice.signed("POST", "/fapi/v1/order", buy))["status"] == "FILLED"
    return alice, bob


def _margin(t: Trader, amount: str, kind: int, symbol: str = "BTCUSD") -> Any:
    return t.signed("POST", "/fapi/v1/positionMargin", {"symbol": symbol, "amount": amount, "type": kind})


# -- raw signed requests -----------------------------------------------------------------------------


def test_isolated_position_when_opened_shows_its_margin_in_positions_and_totals(market: Market) -> None:
    alice, _ = _isolated_long(market)
    v3 = _ok(alice.signed("GET", "/fapi/v3/account"))
    assert {k: v for k, v in v3.items() if k not in ("assets", "positions")} == {
        "totalInitialMargin": "500",
        "totalMaintMargin": "50",  # 10000 x 0.5%
        "totalWalletBalance": "995",  # the cross wallet 495 + the isolated margin 500
        "totalUnrealizedProfit": "0",
        "totalMarginBalance": "995",
        "totalPositionInitialMargin": "500",
        "totalOpenOrderInitialMargin": "0",
        "totalCrossWalletBalance": "495",
        "totalCrossUnPnl": "0",
        "availableBalance": "495",
        "maxWithdrawAmount": "495",
    }
    asset = v3["assets"][0]
    assert (asset["walletBalance"], asset["crossWalletBalance"], asset["marginBalance"], asset["availableBalance"]) == (
        "995", "495", "995", "495",
    )
    (pos,) = v3["positions"]
    assert (pos["symbol"], pos["isolatedMargin"], pos["isolatedWallet"], pos["initialMargin"]) == ("BTCUSD", "500", "500", "500")
    v2 = _ok(alice.signed("GET", "/fapi/v2/account"))
    rows = {p["symbol"]: p for p in v2["positions"]}
    assert (rows["BTCUSD"]["isolated"], rows["BTCUSD"]["positionInitialMargin"]) == (True, "500")
    assert (rows["ETHUSD"]["isolated"], rows["ETHUSD"]["isolatedWallet"]) == (False, "0")
    (balance,) = _ok(alice.signed("GET", "/fapi/v2/balance"))
    assert (balance["balance"], balance["crossWalletBalance"], balance["crossUnPnl"], balance["availableBalance"]) == (
        "995", "495", "0", "495",
    )
    (risk3,) = _ok(alice.signed("GET", "/fapi/v3/positionRisk"))
    assert (risk3["liquidationPrice"], risk3["isolatedMargin"], risk3["isolatedWallet"], risk3["positionInitialMargin"]) == (
        "9547.73869347", "500", "500", "500",
    )
    risk2 = {r["symbol"]: r for r in _ok(alice.signed("GET", "/fapi/v2/positionRisk"))}
    assert (risk2["BTCUSD"]["marginType"], risk2["BTCUSD"]["isolatedWallet"], risk2["BTCUSD"]["isolatedMargin"]) == (
        "isolated", "500", "500",
    )
    assert (risk2["ETHUSD"]["marginType"], risk2["ETHUSD"]["isolatedMargin"]) == ("cross", "0")
    config = {c["symbol"]: c["marginType"] for c in _ok(alice.signed("GET", "/fapi/v1/symbolConfig"))}
    assert config == {"BTCUSD": "ISOLATED", "ETHUSD": "CROSSED"}

    # the mark moves: isolatedMargin is margin + upnl, the cross part is untouched
    market.api.set_mark("BTC-PERP", "10100")
    try:
        v3 = _ok(alice.signed("GET", "/fapi/v3/account"))
        assert (v3["totalUnrealizedProfit"], v3["totalMarginBalance"], v3["totalCrossUnPnl"], v3["availableBalance"]) == (
            "100", "1095", "0", "495",
        )
        assert v3["positions"][0]["isolatedMargin"] == "600" and v3["positions"][0]["isolatedWallet"] == "500"
    finally:
        market.api.set_mark("BTC-PERP", "10000")


def test_margin_type_when_position_or_orders_open_is_refused_before_the_engine(market: Market) -> None:
    alice, _ = _isolated_long(market)
    seq = market.seq()
    body = _refused(alice.signed("POST", "/fapi/v1/marginType", {"symbol": "BTCUSD", "marginType": "CROSSED"}), -4048)
    assert body["msg"] == "Margin type cannot be changed if there exists position."
    _refused(alice.signed("POST", "/fapi/v1/marginType", {"symbol": "BTCUSD", "marginType": "ISOLATED"}), -4046)
    assert market.seq() == seq
    # a resting order, then an untriggered stop, in a flat cross symbol
    order = {"symbol": "ETHUSD", "side": "BUY", "type": "LIMIT", "quantity": "0.01", "price": "2900", "timeInForce": "GTC"}
    placed = _ok(alice.signed("POST", "/fapi/v1/order", order))
    seq = market.seq()
    body = _refused(alice.signed("POST", "/fapi/v1/marginType", {"symbol": "ETHUSD", "marginType": "ISOLATED"}), -4047)
    assert body["msg"] == "Margin type cannot be changed if there exists open orders."
    assert market.seq() == seq
    _ok(alice.signed("DELETE", "/fapi/v1/order", {"symbol": "ETHUSD", "orderId": placed["orderId"]}))
    stop = {"symbol": "ETHUSD", "side": "SELL", "type": "STOP_MARKET", "quantity": "0.01", "stopPrice": "2500"}
    stopped = _ok(alice.signed("POST", "/fapi/v1/order", stop))
    _refused(alice.signed("POST", "/fapi/v1/marginType", {"symbol": "ETHUSD", "marginType": "ISOLATED"}), -4047)
    _ok(alice.signed("DELETE", "/fapi/v1/order", {"symbol": "ETHUSD", "orderId": stopped["orderId"]}))
    assert _ok(alice.signed("POST", "/fapi/v1/marginType", {"symbol": "ETHUSD", "marginType": "ISOLATED"}))["code"] == 200
    # flat and isolated: no position margin to move (-4054); back to cross
    body = _refused(_margin(alice, "1", 1, "ETHUSD"), -4054)
    assert body["msg"] == "Cannot add position margin: position is 0." and body["detail"].startswith("NO_POSITION")
    assert _ok(alice.signed("POST", "/fapi/v1/marginType", {"symbol": "ETHUSD", "marginType": "CROSSED"}))["code"] == 200


def test_position_margin_when_added_and_removed_moves_money_and_liquidation_price(market: Market) -> None:
    alice, _ = _isolated_long(market)
    assert _ok(_margin(alice, "200", 1)) == {"amount": 200.0, "code": 200, "msg": "Successfully modify position margin.", "type": 1}
    (risk,) = _ok(alice.signed("GET", "/fapi/v3/positionRisk"))
    assert (risk["isolatedWallet"], risk["isolatedMargin"]) == ("700", "700")
    assert risk["liquidationPrice"] == "9346.73366834"  # (10000 - 700) / 0.995
    v3 = _ok(alice.signed("GET", "/fapi/v3/account"))
    assert (v3["totalWalletBalance"], v3["totalCrossWalletBalance"], v3["availableBalance"]) == ("995", "295", "295")
    # below the initial margin at the mark (500): -4051; more than the cross available: -4050
    body = _refused(_margin(alice, "200.5", 2), -4051)
    assert body["msg"] == "Isolated balance insufficient." and body["detail"].startswith("INSUFFICIENT_MARGIN")
    body = _refused(_margin(alice, "295.00000001", 1), -4050)
    assert body["msg"] == "Cross balance insufficient." and body["detail"].startswith("INSUFFICIENT_BALANCE")
    assert _ok(_margin(alice, "200", 2)) == {"amount": 200.0, "code": 200, "msg": "Successfully modify position margin.", "type": 2}
    (risk,) = _ok(alice.signed("GET", "/fapi/v3/positionRisk"))
    assert (risk["isolatedWallet"], risk["liquidationPrice"]) == ("500", "9547.73869347")
    # a cross symbol has no position margin (-4049)
    body = _refused(_margin(alice, "1", 1, "ETHUSD"), -4049)
    assert body["msg"] == "Add margin only support for isolated position."
    # closing returns the margin to the wallet (less the taker fee 5)
    close = {"symbol": "BTCUSD", "side": "SELL", "type": "LIMIT", "quantity": "1", "price": "10000", "timeInForce": "GTC"}
    other = market.trader()
    _ok(other.signed("POST", "/fapi/v1/order", {**close, "side": "BUY"}))
    assert _ok(alice.signed("POST", "/fapi/v1/order", {**close, "timeInForce": "IOC"}))["status"] == "FILLED"
    v3 = _ok(alice.signed("GET", "/fapi/v3/account"))
    assert (v3["totalWalletBalance"], v3["totalCrossWalletBalance"], v3["positions"]) == ("990", "990", [])
    assert _ok(alice.signed("POST", "/fapi/v1/marginType", {"symbol": "BTCUSD", "marginType": "CROSSED"}))["code"] == 200


def test_cross_account_when_no_isolated_symbol_keeps_cross_numbers(market: Market) -> None:
    t, other = market.trader("1000"), market.trader()
    sell = {"symbol": "BTCUSD", "side": "SELL", "type": "LIMIT", "quantity": "0.1", "price": "10000", "timeInForce": "GTC"}
    _ok(other.signed("POST", "/fapi/v1/order", sell))
    _ok(t.signed("POST", "/fapi/v1/order", {**sell, "side": "BUY", "timeInForce": "IOC"}))
    v3 = _ok(t.signed("GET", "/fapi/v3/account"))
    assert v3["totalWalletBalance"] == v3["totalCrossWalletBalance"] == "999.5"
    assert v3["totalUnrealizedProfit"] == v3["totalCrossUnPnl"] == "0"
    (pos,) = v3["positions"]
    assert (pos["isolatedMargin"], pos["isolatedWallet"]) == ("0", "0")
    (risk,) = _ok(t.signed("GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSD"}))
    assert (risk["marginType"], risk["isolatedMargin"], risk["isolatedWallet"]) == ("cross", "0", "0")


HOSTILE = [  # (route, params, code): refused at the edge, nothing reaches the engine
    ("positionMargin", {"amount": "0", "type": "1"}, -4055),
    ("positionMargin", {"amount": "-5", "type": "2"}, -4055),
    ("positionMargin", {"amount": "1e3", "type": "1"}, -1100),
    ("positionMargin", {"amount": "1.123456789", "type": "1"}, -1111),
    ("positionMargin", {"amount": "1", "type": "3"}, -1130),
    ("positionMargin", {"amount": "1"}, -1102),
    ("positionMargin", {"amount": "1", "type": "1", "positionSide": "LONG"}, -4061),
    ("positionMargin", {"amount": "1", "type": "1", "symbol": "DOGEUSD"}, -1121),
    ("marginType", {"marginType": "PORTFOLIO"}, -1130),
    ("marginType", {}, -1102),
    ("marginType", {"marginType": "ISOLATED", "leverage": "5"}, -1104),
]


@pytest.mark.parametrize(("route", "params", "code"), HOSTILE, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(HOSTILE)])
def test_hostile_margin_request_when_refused_at_the_edge_leaves_the_engine_untouched(
    market: Market, route: str, params: dict[str, str], code: int
) -> None:
    t = market.trader()
    seq = market.seq()
    _refused(t.signed("POST", f"/fapi/v1/{route}", {"symbol": "BTCUSD", **params}), code)
    assert market.seq() == seq


# -- ccxt ---------------------------------------------------------------------------------------------


def test_ccxt_when_it_sets_isolated_and_moves_margin_sees_the_isolated_position(market: Market) -> None:
    alice, bob = market.trader("1000"), market.trader()
    ex, bx = alice.ccxt(), bob.ccxt()
    ex.load_markets()
    bx.load_markets()
    ex.set_leverage(20, BTC)
    assert ex.set_margin_mode("isolated", BTC) == {"code": 200, "msg": "success"}
    with pytest.raises(ccxt.MarginModeAlreadySet):
        ex.set_margin_mode("isolated", BTC)
    bx.create_order(BTC, "limit", "sell", 1, 10000)
    assert ex.create_order(BTC, "limit", "buy", 1, 10000, {"timeInForce": "IOC"})["status"] == "closed"
    (pos,) = ex.fetch_positions([BTC])
    assert (pos["marginMode"], pos["collateral"], pos["contracts"], pos["side"]) == ("isolated", 500.0, 1.0, "long")
    assert pos["liquidationPrice"] == 9547.73869347
    (pos,) = ex.fetch_positions([BTC], {"method": "account"})
    assert (pos["marginMode"], pos["collateral"]) == ("isolated", 500.0)
    added = ex.add_margin(BTC, 100)
    assert (added["type"], added["amount"], added["status"], added["marginMode"], added["code"]) == (
        "add", 100.0, "ok", "isolated", "USD",
    )
    (pos,) = ex.fetch_positions([BTC])
    assert pos["collateral"] == 600.0
    reduced = ex.reduce_margin(BTC, 100)
    assert (reduced["type"], reduced["amount"], reduced["status"]) == ("reduce", 100.0, "ok")
    assert ex.fetch_balance()["USD"]["free"] == 495.0
    with pytest.raises(ccxt.InsufficientFunds):  # -4051: the position keeps its initial margin
        ex.reduce_margin(BTC, 1)
    with pytest.raises(ccxt.InsufficientFunds):  # -4050: more than the cross available
        ex.add_margin(BTC, 1000)
    with pytest.raises(ccxt.BadRequest):  # -4049: ETH is cross
        ex.add_margin(ETH, 1)
    with pytest.raises(ccxt.OperationRejected, match="exists position"):  # -4048
        ex.set_margin_mode("cross", BTC)


# -- the user-data stream ------------------------------------------------------------------------------


async def test_user_stream_when_margin_type_and_margin_change_sends_account_updates(market: Market) -> None:
    alice, bob = market.trader("1000"), market.trader()
    key = _ok(alice.signed("POST", "/fapi/v1/listenKey", sign=False))["listenKey"]
    async with rawconn(market.svc, "/private/ws?listenKey=" + key) as raw:
        await asyncio.sleep(0.3)

        def update(reason: str) -> Any:
            return raw.next(lambda m: m.get("e") == "ACCOUNT_UPDATE" and m["a"]["m"] == reason)

        await asyncio.to_thread(_isolated_long_with, alice, bob)
        changed = await update("MARGIN_TYPE_CHANGE")
        assert changed["a"]["P"] == [
            {"s": "BTCUSD", "pa": "0", "ep": "0", "bep": "0", "cr": "0", "up": "0", "mt": "isolated", "iw": "0", "ps": "BOTH"}
        ]
        filled = await update("ORDER")
        assert filled["a"]["B"] == [{"a": "USD", "wb": "995", "cw": "495", "bc": "0"}]
        assert (filled["a"]["P"][0]["pa"], filled["a"]["P"][0]["mt"], filled["a"]["P"][0]["iw"]) == ("1", "isolated", "500")
        await asyncio.to_thread(lambda: _ok(_margin(alice, "100", 1)))
        moved = await update("MARGIN_TRANSFER")
        assert moved["a"]["B"] == [{"a": "USD", "wb": "995", "cw": "395", "bc": "0"}]
        row = moved["a"]["P"][0]
        assert (row["s"], row["pa"], row["ep"], row["mt"], row["iw"]) == ("BTCUSD", "1", "10000", "isolated", "600")


def _isolated_long_with(alice: Trader, bob: Trader) -> None:
    _ok(alice.signed("POST", "/fapi/v1/leverage", {"symbol": "BTCUSD", "leverage": 20}))
    _ok(alice.signed("POST", "/fapi/v1/marginType", {"symbol": "BTCUSD", "marginType": "ISOLATED"}))
    sell = {"symbol": "BTCUSD", "side": "SELL", "type": "LIMIT", "quantity": "1", "price": "10000", "timeInForce": "GTC"}
    _ok(bob.signed("POST", "/fapi/v1/order", sell))
    _ok(alice.signed("POST", "/fapi/v1/order", {**sell, "side": "BUY", "timeInForce": "IOC"}))


# -- liquidation --------------------------------------------------------------------------------------


def test_isolated_liquidation_when_the_mark_crashes_takes_only_the_margin(start_service: Any) -> None:
    m = Market(start_service(funding="off"))
    m.api.set_mark("BTC-PERP", "10000")
    m.api.set_mark("ETH-PERP", "3000")
    alice, _ = _isolated_long(m)
    moved = m.api.set_mark("BTC-PERP", "9520")  # below 9547.73869347
    assert [liq["account_id"] for liq in moved["liquidations"]] == [alice.account_id]
    v3 = _ok(alice.signed("GET", "/fapi/v3/account"))
    assert (v3["totalWalletBalance"], v3["totalCrossWalletBalance"], v3["availableBalance"], v3["positions"]) == (
        "495", "495", "495", [],
    )
    risk2 = {r["symbol"]: r for r in _ok(alice.signed("GET", "/fapi/v2/positionRisk"))}
    assert (risk2["BTCUSD"]["marginType"], risk2["BTCUSD"]["isolatedWallet"], risk2["BTCUSD"]["positionAmt"]) == (
        "isolated", "0", "0",
    )
