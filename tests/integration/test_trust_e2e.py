"""Issue finding 1 and the bad-debt rule (SPEC §3, §5 step 5) against the real service.

Finding 1 (before the price band): mark 50,000; X (deposit 100) bid 0.01 @ 1,000,000,000 and
was accepted (margin was checked at the mark); Y sold 0.01 @ 1,000,000,000 reduce-only into
it and withdrew 9,000,000; X was liquidated and ADL closed Bob at the bankruptcy price, Bob's
wallet ending at -9,991,400.1 with 20,100 deposited in all.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.integration.helpers import Api, assert_error, ws_connect


@pytest.fixture(scope="module")
def fresh(start_service: Any) -> Api:
    return Api(start_service())


def _order(side: str, qty: str, price: str, **kw: Any) -> dict[str, Any]:
    return {"symbol": "BTC-PERP", "side": side, "type": "limit", "qty": qty, "price": price, **kw}


def _engine(api: Api) -> tuple[int, str]:
    body = api.admin("GET", "/v1/admin/engine").json()
    return body["seq"], body["state_hash"]


def test_two_accounts_when_they_try_to_mint_money_through_a_far_bid_are_refused(fresh: Api) -> None:
    api = fresh
    api.set_mark("BTC-PERP", "50000")
    bob, bob_key = api.new_account("10000")
    y, y_key = api.new_account("10000")
    x, x_key = api.new_account("100")
    with api.as_key(bob_key) as b, api.as_key(y_key) as yc, api.as_key(x_key) as xc:
        assert b.post("/v1/orders", json=_order("sell", "0.01", "50000")).status_code == 200
        assert yc.post("/v1/orders", json=_order("buy", "0.01", "50000")).status_code == 200
        bob_wallet = b.get("/v1/account").json()["wallet_balance"]
        # the bid at 20,000x the mark is out of the 5% band: refused, nothing changes but seq
        seq0, _ = _engine(api)
        r = xc.post("/v1/orders", json=_order("buy", "0.01", "1000000000"))
        assert_error(r, 400, "PRICE_OUT_OF_BAND")
        assert "52500" in r.json()["message"]  # the band limit: 50,000 x 1.05
        assert _engine(api)[0] == seq0 + 1  # one order_rejected event
        # Y's reduce-only ask at 1,000,000,000 is passive: it rests, nothing to sell into
        assert yc.post(
            "/v1/orders", json=_order("sell", "0.01", "1000000000", reduce_only=True)
        ).json()["status"] == "new"
        assert_error(yc.post("/v1/withdraw", json={"amount": "9000000"}), 400, "INSUFFICIENT_BALANCE")
        yc.delete("/v1/orders")
        # At the band edge X can buy at most what its 100 USD covers: 0.01 @ 52,500 needs
        # IM 0.01 x 50,000 / 10 = 50 plus open loss 0.01 x 2,500 = 25 = 75.
        r = xc.post("/v1/orders", json=_order("buy", "0.02", "52500"))
        assert_error(r, 400, "INSUFFICIENT_MARGIN")
        assert r.json()["message"] == (
            "order requires 150 USD of margin (initial margin 100 + open loss 50), available 100 USD"
        )
        assert xc.post("/v1/orders", json=_order("buy", "0.01", "52500")).status_code == 200
        assert xc.get("/v1/account").json()["available"] == "25"  # 100 - 50 - 25
        # Y sells into it: Y gains 25, X loses 25 (+ fees) of its own money; Bob is untouched
        fill = yc.post("/v1/orders", json=_order("sell", "0.01", "52500", reduce_only=True)).json()
        assert fill["status"] == "filled"
        assert b.get("/v1/account").json()["wallet_balance"] == bob_wallet
        x_acct = xc.get("/v1/account").json()
        assert x_acct["equity"] == "74.895"  # 100 - maker fee 0.105 - 25 at the mark
        assert x_acct["positions"][0]["size"] == "0.01"
    assert api.http.get("/v1/insurance-fund").json() == {"balance": "0", "bad_debt": "0"}
    del bob, y, x


def test_crash_when_adl_counterparty_cannot_pay_shows_bad_debt_over_http(fresh: Api) -> None:
    """tests/scenario/test_trust_rules.py's first bad-debt case, through the API: B's ETH fill
    is valued at 2049.6 (its equity ends at 0), 13.01538462 is bad debt."""
    api = fresh
    api.set_mark("BTC-PERP", "10000")
    api.set_mark("ETH-PERP", "2000")
    _, m_key = api.new_account("1000000")
    a, a_key = api.new_account("300")
    b, b_key = api.new_account("50")
    with api.as_key(m_key) as m, api.as_key(a_key) as ac, api.as_key(b_key) as bc:
        for client in (ac, bc):
            for sym in ("BTC-PERP", "ETH-PERP"):
                assert client.post("/v1/leverage", json={"symbol": sym, "leverage": 50}).status_code == 200
        m.delete("/v1/orders")
        assert m.post("/v1/orders", json=_order("sell", "0.5", "10000")).status_code == 200
        assert ac.post("/v1/orders", json=_order("buy", "0.5", "10000", time_in_force="IOC")).json()["status"] == "filled"
        eth = {"symbol": "ETH-PERP"}
        assert bc.post("/v1/orders", json={**_order("sell", "1", "2000"), **eth}).status_code == 200
        assert ac.post(
            "/v1/orders", json={**_order("buy", "1", "2000", time_in_force="IOC"), **eth}
        ).json()["status"] == "filled"
        # other tests of this module may have left BTC bids: clear every book side we rely on
        book = api.http.get("/v1/orderbook/BTC-PERP").json()
        assert book["bids"] == [] and api.http.get("/v1/orderbook/ETH-PERP").json()["bids"] == []
    fund_before = api.http.get("/v1/insurance-fund").json()

    async def watch_fund() -> list[dict[str, Any]]:
        """SPEC §10 `insurance_fund`: a snapshot, then fund changes and bad debt as they happen."""
        async with ws_connect(api.service.ws_url) as ws:
            await ws.send(op="subscribe", channels=["insurance_fund"])
            snap = await ws.expect(lambda m: m["channel"] == "insurance_fund")
            assert snap["data"] == {"type": "insurance_fund", **fund_before}
            res = await asyncio.to_thread(api.set_mark, "BTC-PERP", "9000")
            await ws.expect(lambda m: m["data"].get("type") == "bad_debt")
            later = await ws.drain(0.3)
            del later  # drain() also appends to seen
            return [res, *(m["data"] for m in ws.seen if m["channel"] == "insurance_fund")]

    res, *fund_msgs = asyncio.run(watch_fund())
    bad = [m for m in fund_msgs if m["type"] == "bad_debt"]
    assert fund_msgs[0]["type"] == "insurance_fund"  # the snapshot first
    assert bad == [{"type": "bad_debt", "amount": "13.01538462", "account_id": a, "symbol": "ETH-PERP"}]
    eth_liq = next(liq for liq in res["liquidations"] if liq["symbol"] == "ETH-PERP")
    assert (eth_liq["account"], eth_liq["bankruptcy_price"], eth_liq["bad_debt"]) == (a, "2062.61538462", "13.01538462")
    assert (eth_liq["book_fill_qty"], eth_liq["book_fill_avg_price"], eth_liq["adl_qty"]) == ("0", None, "1")
    eth_adl = next(f for f in res["adl_fills"] if f["symbol"] == "ETH-PERP")
    assert (eth_adl["counterparty_account_id"], eth_adl["price"], eth_adl["haircut"]) == (b, "2049.6", "49.6")
    assert api.admin("GET", f"/v1/admin/accounts/{b}").json()["wallet_balance"] == "0"
    fund = api.http.get("/v1/insurance-fund").json()
    assert fund == {"balance": fund_before["balance"], "bad_debt": "13.01538462"}
    metrics = api.http.get("/metrics").text
    assert "exchange_bad_debt_usd 13.01538462" in metrics
