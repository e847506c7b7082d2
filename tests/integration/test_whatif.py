"""`POST /v1/admin/what-if` (SPEC §9): per ADL policy, what a mark move would do now, on a copy.

Shorts A 1.0, B 0.5, C 0.3 BTC opened at 10,000; longs L1 0.9 (1,000 USD, 10x) and L2 0.9
(100,000 USD). At 8,000 L1's equity is 1,000 - 4.5 (taker fee) - 1,800 = -804.5: bankrupt;
the book is empty, so ADL closes 0.9 BTC against the shorts, all +20%. Effective leverage
|q M| / equity: A 8,000 / 11,998 = 0.667, B 4,000 / 10,999 = 0.364, C 2,400 / 10,599.4 = 0.226,
so A is first in line. `queue` takes 0.9 from A alone; `pro_rata` splits 0.9 by size:
0.9 x (1.0, 0.5, 0.3) / 1.8 = 0.5, 0.25, 0.15. The what-if changes nothing; the real move then
gives exactly what the what-if said for the policy in force (queue, the default).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.helpers import ADMIN_TOKEN, Api, assert_error

BTC = "BTC-PERP"


def _limit(side: str, qty: str) -> dict[str, Any]:
    return {"symbol": BTC, "side": side, "type": "limit", "qty": qty, "price": "10000"}


@pytest.fixture
def market(start_service: Any) -> Api:
    api = Api(start_service())
    api.set_mark(BTC, "10000")
    for qty in ("1.0", "0.5", "0.3"):
        _, key = api.new_account("10000")
        with api.as_key(key) as s:
            assert s.post("/v1/orders", json=_limit("sell", qty)).status_code == 200
    for deposit in ("1000", "100000"):
        _, key = api.new_account(deposit)
        with api.as_key(key) as lo:
            assert lo.post("/v1/orders", json=_limit("buy", "0.9")).json()["status"] == "filled"
    return api


def _state(api: Api) -> tuple[int, str]:
    body = api.admin("GET", "/v1/admin/engine").json()
    return body["seq"], body["state_hash"]


def test_what_if_when_asked_for_each_policy_changes_nothing_and_predicts_the_real_move(market: Api) -> None:
    api = market
    before = _state(api)
    events_before = api.http.get("/v1/events", params={"types": "liquidation,adl"}).json()
    r = api.admin("POST", "/v1/admin/what-if", json={"symbol": BTC, "mark_price": "8000"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["mark_price"], body["index_price"]) == ("8000", None)
    by_policy = {res["policy"]: res for res in body["results"]}
    assert {"queue", "pro_rata"} <= set(by_policy)
    for res in by_policy.values():
        (liq,) = res["liquidations"]
        assert (liq["adl_qty"], liq["book_fill_qty"], liq["bankruptcy_price"]) == ("0.9", "0", "8893.88888889")
    assert [(f["qty"], f["rank"]) for f in by_policy["queue"]["adl_fills"]] == [("0.9", 1)]
    assert [(f["qty"], f["rank"]) for f in by_policy["pro_rata"]["adl_fills"]] == [("0.5", 1), ("0.25", 2), ("0.15", 3)]
    assert (by_policy["queue"]["counterparties"], by_policy["pro_rata"]["counterparties"]) == (1, 3)
    assert _state(api) == before  # nothing journaled, nothing applied
    assert api.http.get("/v1/events", params={"types": "liquidation,adl"}).json() == events_before
    real = api.set_mark(BTC, "8000")
    assert real["liquidations"] == by_policy["queue"]["liquidations"]  # queue is the default
    assert real["adl_fills"] == by_policy["queue"]["adl_fills"]


def test_what_if_when_asked_wrongly_answers_4xx_and_changes_nothing(market: Api) -> None:
    api = market
    before = _state(api)
    path = "/v1/admin/what-if"
    assert_error(api.admin("POST", path, json={"symbol": BTC}), 400, "VALIDATION_ERROR")
    assert_error(
        api.admin("POST", path, json={"symbol": BTC, "mark_price": "8000", "index_price": "8000"}), 400, "VALIDATION_ERROR"
    )
    assert_error(api.admin("POST", path, json={"symbol": BTC, "index_price": "8000"}), 409, "MARK_SOURCE_IS_INDEX")
    assert_error(
        api.admin("POST", path, json={"symbol": BTC, "mark_price": "8000", "policies": ["bogus"]}), 400, "INVALID_ADL_POLICY"
    )
    assert_error(
        api.admin("POST", path, json={"symbol": BTC, "mark_price": "8000", "policies": ["queue", "queue"]}),
        400,
        "INVALID_ADL_POLICY",
    )
    assert_error(api.admin("POST", path, json={"symbol": "NOPE", "mark_price": "8000"}), 400, "INVALID_SYMBOL")
    assert_error(api.admin("POST", path, json={"symbol": BTC, "mark_price": "-1"}), 400, "VALIDATION_ERROR")
    r = api.http.post(path, json={"symbol": BTC, "mark_price": "8000"})
    assert_error(r, 403, "FORBIDDEN")
    r = api.http.post(path, json={"symbol": BTC, "mark_price": "8000"}, headers={"X-Admin-Token": ADMIN_TOKEN + "x"})
    assert_error(r, 403, "FORBIDDEN")
    assert _state(api) == before
