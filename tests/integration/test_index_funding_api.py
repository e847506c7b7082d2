"""Index prices, the mark that follows them, and funding rounds over real HTTP and WebSocket
(SPEC §12; docs/funding.md).

Each test starts its own service (no Redis: events stay in process) whose BTC-PERP mark
follows its index (`mark_source = "index"` in EXCHANGE_CONFIG); ETH-PERP keeps the admin
mark. BTC-PERP: tick 0.1 (price ticks = USD x 10), lot 0.001; basis weight 0.1, interest
0.0001 per interval, cap 0.00375, the ±0.0005 clamp. Numbers in the comments are worked by
hand from the SPEC formulas.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import ADMIN_TOKEN, Api, assert_error, ws_connect

BTC = "BTC-PERP"
ETH = "ETH-PERP"
CONFIG = """
[instruments.BTC-PERP]
mark_source = "index"
"""


@pytest.fixture
def api(start_service: Any, tmp_path: Path) -> Api:
    cfg = tmp_path / "exchange.toml"
    cfg.write_text(CONFIG)
    # no scheduled rounds: a round time (00:00, 08:00, 16:00 UTC) during a test would add one
    return Api(start_service(config=str(cfg), funding="off"))


def _index(api: Api, price: str, symbol: str = BTC) -> dict[str, Any]:
    r = api.admin("POST", "/v1/admin/index-price", json={"symbol": symbol, "price": price})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _funding(api: Api, **body: Any) -> dict[str, Any]:
    r = api.admin("POST", "/v1/admin/funding", json={"symbol": BTC, **body})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _order(side: str, qty: str, price: str, symbol: str = BTC) -> dict[str, Any]:
    return {"symbol": symbol, "side": side, "type": "limit", "qty": qty, "price": price}


def _place(api: Api, key: str, side: str, qty: str, price: str, symbol: str = BTC) -> dict[str, Any]:
    with api.as_key(key) as c:
        r = c.post("/v1/orders", json=_order(side, qty, price, symbol))
        assert r.status_code == 200, r.text
        return dict(r.json())


def _trade(api: Api, qty: str, price: str, symbol: str = BTC) -> tuple[str, str]:
    """A long and a short of `qty` at `price`: (long's key, short's key)."""
    _, long_key = api.new_account("10000")
    _, short_key = api.new_account("10000")
    _place(api, short_key, "sell", qty, price, symbol)
    assert _place(api, long_key, "buy", qty, price, symbol)["status"] == "filled"
    return long_key, short_key


def _engine(api: Api) -> tuple[int, str]:
    body = api.admin("GET", "/v1/admin/engine").json()
    return body["seq"], body["state_hash"]


def _position(api: Api, key: str, symbol: str = BTC) -> dict[str, Any]:
    with api.as_key(key) as c:
        (pos,) = [p for p in c.get("/v1/positions").json() if p["symbol"] == symbol]
        (in_account,) = [p for p in c.get("/v1/account").json()["positions"] if p["symbol"] == symbol]
    assert pos == in_account
    return dict(pos)


# -- index, basis, mark ---------------------------------------------------------------------------


def test_index_price_when_book_two_sided_moves_basis_and_mark_by_the_spec_formulas(api: Api) -> None:
    # empty book: the basis stays 0; no trade yet, so "last" is the index:
    # M = median(50,000, 50,000 + 0, 50,000) = 50,000
    assert _index(api, "50000") == {
        "symbol": BTC, "index_price": "50000", "basis": "0", "mark_price": "50000",
        "liquidations": [], "adl_fills": [],
    }
    _trade(api, "0.01", "50050")  # last trade 50,050
    _, mm1 = api.new_account("10000")
    _, mm2 = api.new_account("10000")
    _place(api, mm1, "buy", "0.01", "50040")
    _place(api, mm2, "sell", "0.01", "50060")
    # mid 50,050. In half ticks: 500,400 + 500,600 - 2 x 500,000 - 2 x 0 = 1,000;
    # basis += trunc(1,000 x 100,000 / 2,000,000) = 50 ticks = 5 USD
    # M = median(50,000, 50,005, 50,050) = 50,005; premium sample (50,050 - 50,000) / 50,000 = 0.001
    assert _index(api, "50000") == {
        "symbol": BTC, "index_price": "50000", "basis": "5", "mark_price": "50005",
        "liquidations": [], "adl_fills": [],
    }
    # index 50,010: 1,000,800... half ticks 500,400 + 500,600 - 1,000,200 - 2 x 50 = 700
    # basis += trunc(700 x 0.1 / 2) = 35 -> 85 ticks = 8.5; M = median(50,010, 50,018.5, 50,050)
    # premium sample (50,050 - 50,010) / 50,010 = 40 / 50,010
    body = _index(api, "50010")
    assert (body["basis"], body["mark_price"]) == ("8.5", "50018.5")
    inst = next(i for i in api.http.get("/v1/instruments").json() if i["symbol"] == BTC)
    assert (inst["mark_source"], inst["index_price"], inst["mark_price"]) == ("index", "50010", "50018.5")
    assert (inst["basis_weight_ppm"], inst["funding_interval_s"]) == (100_000, 28_800)
    assert (inst["interest_rate"], inst["funding_cap"]) == ("0.0001", "0.00375")
    eth = next(i for i in api.http.get("/v1/instruments").json() if i["symbol"] == ETH)
    assert (eth["mark_source"], eth["index_price"], eth["mark_price"]) == ("admin", None, None)
    # P = (0.001 + 40 / 50,010) / 2 = 0.00089992... -> "0.00089992" (half-even to 8 places)
    # rate = P + clamp(0.0001 - P, ±0.0005) = P - 0.0005 = 0.00039992...
    state = api.http.get(f"/v1/funding/{BTC}").json()
    now_ms = time.time_ns() // 1_000_000
    next_ms = state.pop("next_funding_time")
    assert next_ms % (28_800 * 1000) == 0 and now_ms < next_ms <= now_ms + 28_800 * 1000
    assert state == {
        "symbol": BTC, "mark_source": "index", "index_price": "50010", "mark_price": "50018.5",
        "basis": "8.5", "premium": "0.00089992", "samples": 2, "predicted_rate": "0.00039992",
        "interest_rate": "0.0001", "funding_cap": "0.00375", "funding_interval_s": 28_800,
        "recent": [],
    }


def test_mark_price_when_symbol_marked_from_index_answers_409_and_journals_nothing(api: Api) -> None:
    _index(api, "50000")
    before = _engine(api)
    r = api.admin("POST", "/v1/admin/mark-price", json={"symbol": BTC, "price": "40000"})
    body = assert_error(r, 409, "MARK_SOURCE_IS_INDEX")
    assert body["code"] == 4003 and "index" in body["message"]
    assert _engine(api) == before
    assert api.http.get(f"/v1/funding/{BTC}").json()["mark_price"] == "50000"
    # the admin-marked symbol is untouched by the rule; its index is still recorded
    assert api.set_mark(ETH, "3000") == {"liquidations": [], "adl_fills": []}
    assert _index(api, "3001", ETH) == {
        "symbol": ETH, "index_price": "3001", "basis": "0", "mark_price": "3000",
        "liquidations": [], "adl_fills": [],
    }


def test_index_price_when_it_drops_liquidates_and_answers_the_liquidation(api: Api) -> None:
    _index(api, "50000")
    assert api.admin("POST", "/v1/admin/insurance-fund", json={"amount": "100000"}).status_code == 200
    _, lo_key = api.new_account("110")  # 0.1 BTC long at 50,000 with 110 USD, leverage 50
    _, hi_key = api.new_account("100000")
    with api.as_key(lo_key) as c:
        assert c.post("/v1/leverage", json={"symbol": BTC, "leverage": 50}).status_code == 200
    _place(api, hi_key, "sell", "0.1", "50000")
    _place(api, lo_key, "buy", "0.1", "50000")
    # the long's equity at M is 110 - 0.1 x 50,000 x 0.0005 (taker fee 2.5) + 0.1 x (M - 50,000);
    # MM = 0.1 x M x 0.005. At M = 49,000: 107.5 - 100 = 7.5 < 24.5: liquidated.
    # (empty book after the trade: basis 0, M = median(49,000, 49,000, last 50,000) = 49,000)
    body = _index(api, "49000")
    assert body["mark_price"] == "49000"
    (liq,) = body["liquidations"]
    assert (liq["symbol"], liq["qty"], liq["mark_price"]) == (BTC, "0.1", "49000")
    assert sum(Decimal(f["qty"]) for f in body["adl_fills"]) + Decimal(liq["book_fill_qty"]) == Decimal("0.1")


# -- funding rounds ---------------------------------------------------------------------------------


def test_funding_when_rate_given_long_pays_short_receives_exactly(api: Api) -> None:
    _index(api, "50000")
    long_key, short_key = _trade(api, "0.01", "50000")
    # book empty again: M = median(50,000, 50,000, last 50,000) = 50,000
    # 0.01 BTC x 50,000 x 0.0001 = 0.05 USD: the long pays it, the short receives it
    wallet_long = api.as_key(long_key).get("/v1/account").json()["wallet_balance"]
    assert _funding(api, rate="0.0001") == {
        "symbol": BTC, "rate": "0.0001", "premium": None, "samples": 0, "mark_price": "50000",
        "payments": 2, "insurance_fund_delta": "0", "liquidations": [], "adl_fills": [],
    }
    assert _position(api, long_key)["funding"] == "-0.05"
    assert _position(api, short_key)["funding"] == "0.05"
    # wallet: 10,000 - taker fee 0.01 x 50,000 x 0.0005 = 0.25 -> 9,999.75, less 0.05
    assert wallet_long == "9999.75"
    assert api.as_key(long_key).get("/v1/account").json()["wallet_balance"] == "9999.7"
    # a negative rate: shorts pay longs
    assert _funding(api, rate="-0.0002")["rate"] == "-0.0002"
    assert _position(api, long_key)["funding"] == "0.05"  # -0.05 + 0.1
    assert _position(api, short_key)["funding"] == "-0.05"
    recent = api.http.get(f"/v1/funding/{BTC}").json()["recent"]
    assert [r["rate"] for r in recent] == ["-0.0002", "0.0001"]  # newest first
    assert recent[0]["time"] >= recent[1]["time"] > time.time_ns() // 1_000_000 - 60_000


def test_funding_when_amounts_are_fractions_of_an_atom_rounds_against_each_and_funds_the_residue(
    api: Api,
) -> None:
    _index(api, "50000.1")
    long_key, short_key = _trade(api, "0.001", "50000.1")
    fund_before = api.http.get("/v1/insurance-fund").json()["balance"]
    # rate "0.000000025" is 2.5 parts per 1e8: half-even -> 2; "0.000000035" -> 4.
    # Notional 0.001 x 50,000.1 = 50.0001 USD = 5,000,010,000 atoms; at 3 parts per 1e8 that is
    # 150.0003 atoms: the long pays 151 (rounded up), the short gets 150 (rounded down), the
    # fund keeps the atom between them.
    assert _funding(api, rate="0.000000025")["rate"] == "0.00000002"
    assert _funding(api, rate="0.000000035")["rate"] == "0.00000004"
    body = _funding(api, rate="0.00000003")
    assert (body["rate"], body["payments"], body["insurance_fund_delta"]) == ("0.00000003", 2, "0.00000001")
    # the two earlier rounds: x 2 = 100.0002 atoms (101 / 100), x 4 = 200.0004 (201 / 200)
    assert _position(api, long_key)["funding"] == "-0.00000453"  # -(101 + 201 + 151)
    assert _position(api, short_key)["funding"] == "0.0000045"  # 100 + 200 + 150
    fund = api.http.get("/v1/insurance-fund").json()["balance"]
    assert Decimal(fund) - Decimal(fund_before) == Decimal("0.00000003")  # three rounds, 1 atom each


def test_funding_when_rate_computed_uses_the_premium_mean_with_the_clamps(api: Api) -> None:
    _index(api, "50000")
    long_key, short_key = _trade(api, "0.01", "50050")
    _, mm1 = api.new_account("10000")
    _, mm2 = api.new_account("10000")
    _place(api, mm1, "buy", "0.01", "50040")
    _place(api, mm2, "sell", "0.01", "50060")
    _index(api, "50000")  # one sample: (50,050 - 50,000) / 50,000 = 0.001; M = 50,005 (above)
    # rate = clamp(0.001 + clamp(0.0001 - 0.001, ±0.0005), ±0.00375) = 0.0005
    # 0.01 x 50,005 x 0.0005 = 0.250025 USD, exact to the atom: no residue
    assert _funding(api) == {
        "symbol": BTC, "rate": "0.0005", "premium": "0.001", "samples": 1, "mark_price": "50005",
        "payments": 2, "insurance_fund_delta": "0", "liquidations": [], "adl_fills": [],
    }
    assert _position(api, long_key)["funding"] == "-0.250025"
    assert _position(api, short_key)["funding"] == "0.250025"
    state = api.http.get(f"/v1/funding/{BTC}").json()
    # the samples are spent: no premium, and a round now would charge the interest alone
    assert (state["premium"], state["samples"], state["predicted_rate"]) == (None, 0, "0.0001")
    assert [r["rate"] for r in state["recent"]] == ["0.0005"]
    # a round without samples: P = 0, rate = clamp(0.0001, ±0.0005) = 0.0001
    assert _funding(api)["rate"] == "0.0001"
    assert _funding(api)["premium"] == "0"


def test_funding_when_rate_is_minus_zero_applies_a_zero_round_without_payments(api: Api) -> None:
    _index(api, "50000")
    long_key, _ = _trade(api, "0.01", "50000")
    body = _funding(api, rate="-0")
    assert (body["rate"], body["payments"], body["insurance_fund_delta"]) == ("0", 0, "0")
    assert _funding(api, rate=0.00001)["rate"] == "0.00001"  # a JSON number, shortest form 1e-05
    assert _position(api, long_key)["funding"] == "-0.005"  # 0.01 x 50,000 x 0.00001


# -- refusals -------------------------------------------------------------------------------------

EDGE_REFUSALS: list[tuple[str, dict[str, Any], int, str]] = [
    ("/v1/admin/funding", {"symbol": BTC, "rate": "1"}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": "-1"}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": "0.999999995"}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": "-0.999999995"}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": "9" * 64}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": "1e5"}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": "1e-5"}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": 1e5}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": 1}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": 5e-324}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": "+0.1"}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": "--0.1"}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": "\u22120.1"}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": "0." + "0" * 63}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": True}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"symbol": BTC, "rate": "NaN"}, 400, "INVALID_FUNDING_RATE"),
    ("/v1/admin/funding", {"rate": "0.0001"}, 400, "VALIDATION_ERROR"),
    ("/v1/admin/funding", {"symbol": "DOGE-PERP"}, 400, "INVALID_SYMBOL"),
    ("/v1/admin/funding", {"symbol": BTC, "rate_e8": 1}, 400, "VALIDATION_ERROR"),
    ("/v1/admin/index-price", {"symbol": BTC, "price": "50000.05"}, 400, "INVALID_PRICE"),
    ("/v1/admin/index-price", {"symbol": BTC, "price": "-50000"}, 400, "INVALID_PRICE"),
    ("/v1/admin/index-price", {"symbol": BTC, "price": "0"}, 400, "INVALID_PRICE"),
    ("/v1/admin/index-price", {"symbol": BTC, "price": "1e5"}, 400, "INVALID_PRICE"),
    ("/v1/admin/index-price", {"symbol": BTC, "price": "1000000000000000"}, 400, "INVALID_PRICE"),
    ("/v1/admin/index-price", {"symbol": BTC}, 400, "VALIDATION_ERROR"),
    ("/v1/admin/index-price", {"symbol": "DOGE-PERP", "price": "1"}, 400, "INVALID_SYMBOL"),
    ("/v1/admin/mark-price", {"symbol": BTC, "price": "50000"}, 409, "MARK_SOURCE_IS_INDEX"),
]


def test_admin_index_and_funding_when_input_refused_at_the_edge_journal_nothing(api: Api) -> None:
    _index(api, "50000")
    _trade(api, "0.01", "50000")
    before = _engine(api)
    for path, body, status, error in EDGE_REFUSALS:
        assert_error(api.admin("POST", path, json=body), status, error)
    for path, body, _, _ in EDGE_REFUSALS[:2]:
        assert_error(api.http.post(path, json=body), 403, "FORBIDDEN")  # no token
        r = api.http.post(path, json=body, headers={"X-Admin-Token": ADMIN_TOKEN + "x"})
        assert_error(r, 403, "FORBIDDEN")
    _, key = api.new_account(None)
    after_account = _engine(api)
    with api.as_key(key) as c:  # an account key is no admin token
        assert_error(c.post("/v1/admin/funding", json={"symbol": BTC}), 403, "FORBIDDEN")
        assert_error(c.post("/v1/admin/index-price", json={"symbol": BTC, "price": "1"}), 403, "FORBIDDEN")
    assert _engine(api) == after_account
    assert before[0] + 1 == after_account[0]  # only the account creation
    assert_error(api.http.get("/v1/funding/DOGE-PERP"), 404, "INVALID_SYMBOL")
    assert_error(api.http.get("/v1/funding/"), 404, "NOT_FOUND")


def test_funding_when_symbol_has_no_mark_is_rejected_by_the_engine(api: Api) -> None:
    seq = _engine(api)[0]
    r = api.admin("POST", "/v1/admin/funding", json={"symbol": ETH, "rate": "0.0001"})
    assert_error(r, 400, "NO_MARK_PRICE")
    assert _engine(api)[0] == seq + 1  # a command_rejected event: a business rejection
    state = api.http.get(f"/v1/funding/{ETH}").json()
    assert (state["index_price"], state["mark_price"], state["basis"], state["recent"]) == (None, None, "0", [])


# -- WebSocket ------------------------------------------------------------------------------------


def test_funding_channel_when_subscribed_gets_a_snapshot_then_index_and_rate_events(api: Api) -> None:
    _index(api, "50000")
    long_key, _ = _trade(api, "0.01", "50000")

    async def run() -> None:
        async with ws_connect(api.service.ws_url) as pub, ws_connect(api.service.ws_url) as priv:
            await pub.send(op="subscribe", channels=[f"funding:{BTC}"])
            snap = await pub.expect(lambda m: m["channel"] == f"funding:{BTC}")
            assert snap["data"]["type"] == "funding"
            assert (snap["data"]["index_price"], snap["data"]["mark_price"]) == ("50000", "50000")
            assert (snap["data"]["samples"], snap["data"]["recent"]) == (0, [])
            await pub.send(op="subscribe", channels=[f"mark:{BTC}"])
            await pub.expect(lambda m: m["channel"] == f"mark:{BTC}")  # the mark snapshot
            await priv.send(op="auth", api_key=long_key)
            await priv.control("authenticated")
            await asyncio.to_thread(_index, api, "50100")
            # empty book: M = median(50,100, 50,100, last 50,000) = 50,100
            idx = await pub.expect(lambda m: m["data"].get("type") == "index_price_changed")
            assert idx["channel"] == f"funding:{BTC}"
            assert idx["data"] == {"type": "index_price_changed", "symbol": BTC, "price": "50100", "basis": "0"}
            mark = await pub.expect(lambda m: m["channel"] == f"mark:{BTC}")
            assert mark["data"]["price"] == "50100" and mark["seq"] == idx["seq"] + 1
            await asyncio.to_thread(_funding, api, rate="0.0001")
            rate = await pub.expect(lambda m: m["data"].get("type") == "funding_rate_changed")
            assert rate["data"] == {
                "type": "funding_rate_changed", "symbol": BTC, "rate": "0.0001", "premium": None,
                "samples": 0, "mark_price": "50100",
            }
            # 0.01 x 50,100 x 0.0001 = 0.0501: only the authenticated long's own payment
            paid = await priv.expect(lambda m: m["data"].get("type") == "funding_paid")
            assert paid["channel"] == "account" and paid["seq"] > rate["seq"]
            data = paid["data"]
            assert (data["symbol"], data["size"], data["rate"], data["amount"]) == (BTC, "0.01", "0.0001", "-0.0501")
            assert data["wallet_balance"] == "9999.6999"  # 10,000 - 0.25 fee - 0.0501
            rest = await priv.drain(0.5)
            assert not [m for m in rest if m["data"].get("type") == "funding_paid"]
            seqs = [m["seq"] for m in pub.seen]
            assert seqs == sorted(seqs)

    asyncio.run(run())


def test_ws_when_unknown_funding_channel_is_refused(api: Api) -> None:
    async def run() -> None:
        async with ws_connect(api.service.ws_url) as ws:
            await ws.send(op="subscribe", channels=["funding:DOGE-PERP", "funding:"])
            for _ in range(2):
                err = await ws.control("error")
                assert err["error"] == "UNKNOWN_CHANNEL"

    asyncio.run(run())
