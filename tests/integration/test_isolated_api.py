"""Isolated margin over HTTP (SPEC §12): POST /v1/margin-mode, POST /v1/position-margin, and
the isolated fields of GET /v1/account and GET /v1/positions, against the real service.

Numbers as in tests/scenario/test_isolated_partial.py: Alice buys 1 BTC @ 10000 isolated at
20x; the taker fee 5 comes from the wallet, the initial margin 500 moves into the position.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.helpers import Api, assert_error


@pytest.fixture(scope="module")
def fresh(start_service: Any) -> Api:
    return Api(start_service())


def _order(side: str, qty: str, price: str) -> dict[str, Any]:
    return {"symbol": "BTC-PERP", "side": side, "type": "limit", "qty": qty, "price": price}


def test_isolated_position_over_http(fresh: Api) -> None:
    api = fresh
    api.set_mark("BTC-PERP", "10000")
    _, alice_key = api.new_account("1000")
    _, bob_key = api.new_account("10000")
    with api.as_key(alice_key) as a, api.as_key(bob_key) as b:
        assert a.post("/v1/leverage", json={"symbol": "BTC-PERP", "leverage": 20}).status_code == 200
        r = a.post("/v1/margin-mode", json={"symbol": "BTC-PERP", "mode": "isolated"})
        assert r.status_code == 200, r.text
        assert r.json() == {"symbol": "BTC-PERP", "mode": "isolated"}
        assert b.post("/v1/orders", json=_order("sell", "1", "10000")).status_code == 200
        assert a.post("/v1/orders", json=_order("buy", "1", "10000")).json()["status"] == "filled"

        acct = a.get("/v1/account").json()
        assert acct["wallet_balance"] == "495"
        assert acct["cross_equity"] == "495"  # no cross position: the wallet
        assert acct["equity"] == "995"  # wallet 495 + margin 500 + upnl 0
        assert acct["initial_margin"] == "500"
        assert acct["maintenance_margin"] == "50"  # 10000 x 0.5%
        assert acct["available"] == "495"
        (pos,) = a.get("/v1/positions").json()
        assert (pos["margin_mode"], pos["isolated_margin"]) == ("isolated", "500")
        assert pos["liquidation_price"] == "9547.73869347"

        # mode change with a position open: refused, nothing changes
        seq = api.seq()
        r = a.post("/v1/margin-mode", json={"symbol": "BTC-PERP", "mode": "cross"})
        assert_error(r, 400, "POSITION_OR_ORDERS_OPEN")
        assert api.seq() == seq + 1

        r = a.post("/v1/position-margin", json={"symbol": "BTC-PERP", "amount": "200"})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "symbol": "BTC-PERP", "amount": "200", "isolated_margin": "700", "wallet_balance": "295",
        }
        assert_error(
            a.post("/v1/position-margin", json={"symbol": "BTC-PERP", "amount": "-200.5"}),
            400, "INSUFFICIENT_MARGIN",
        )
        r = a.post("/v1/position-margin", json={"symbol": "BTC-PERP", "amount": "-200"})
        assert r.json()["isolated_margin"] == "500"
        assert_error(
            a.post("/v1/position-margin", json={"symbol": "ETH-PERP", "amount": "1"}), 400, "NOT_ISOLATED"
        )
        assert_error(
            a.post("/v1/position-margin", json={"symbol": "BTC-PERP", "amount": "0"}), 400, "INVALID_AMOUNT"
        )
        assert_error(
            a.post("/v1/margin-mode", json={"symbol": "BTC-PERP", "mode": "portfolio"}),
            400, "INVALID_MARGIN_MODE",
        )

    # the isolated position is liquidated alone: the wallet keeps its 495
    result = api.set_mark("BTC-PERP", "9520")
    (liq,) = result["liquidations"]
    assert (liq["account_id"], liq["equity_before"], liq["bankruptcy_price"]) == (1, "20", "9500")
    with api.as_key(alice_key) as a:
        acct = a.get("/v1/account").json()
        assert acct["wallet_balance"] == "495" and acct["positions"] == []
