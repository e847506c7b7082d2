"""Every SPEC §9 route over real HTTP: happy paths, error bodies and status codes.

The shared service keeps BTC-PERP's mark at 50,000 and ETH-PERP's at 3,000 (set once);
tests here never move them (mark moves run on fresh instances), and each test opens its own
accounts, so they are independent of order.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.helpers import ADMIN_TOKEN, Api, ServiceProcess, assert_error


@pytest.fixture(scope="module", autouse=True)
def marks(api: Api) -> None:
    api.set_mark("BTC-PERP", "50000")
    api.set_mark("ETH-PERP", "3000")


def order(client: httpx.Client, **body: Any) -> httpx.Response:
    payload = {"symbol": "BTC-PERP", "type": "limit", **body}
    return client.post("/v1/orders", json=payload)


# -- system ---------------------------------------------------------------------------------


def test_health_ready_metrics_when_running_answer_200(api: Api) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok"}
    ready = api.http.get("/readyz").json()
    assert (ready["status"], ready["message"], ready["redis"]) == ("ready", "ok", "ok"), ready
    assert ready["publish_backlog"] >= 0 and ready["engine_seq"] >= ready["last_published_seq"]
    text = api.http.get("/metrics").text
    for name in (
        "exchange_commands_total",
        "exchange_command_latency_seconds_bucket",
        "exchange_engine_queue_depth",
        "exchange_publish_backlog",
        "exchange_publish_backlog_in_memory",
        "exchange_publish_lag_events",
        "exchange_publish_redis_connected",
        "exchange_publish_redis_ahead",
        "exchange_ws_clients",
        "exchange_trades_total",
    ):
        assert name in text, name


def test_docs_when_requested_serve_openapi_with_every_route(api: Api) -> None:
    assert api.http.get("/docs").status_code == 200
    paths = api.http.get("/openapi.json").json()["paths"]
    expected = {
        "/v1/instruments": {"get"},
        "/v1/orderbook/{symbol}": {"get"},
        "/v1/trades/{symbol}": {"get"},
        "/v1/insurance-fund": {"get"},
        "/v1/orders": {"post", "get", "delete"},
        "/v1/orders/{order_id}": {"get", "patch", "delete"},
        "/v1/account": {"get"},
        "/v1/positions": {"get"},
        "/v1/leverage": {"post"},
        "/v1/withdraw": {"post"},
        "/v1/admin/accounts": {"post"},
        "/v1/admin/deposit": {"post"},
        "/v1/admin/insurance-fund": {"post"},
        "/v1/admin/mark-price": {"post"},
        "/v1/admin/adl-policy": {"put"},
        "/v1/admin/accounts/{account_id}": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    assert "requestBody" in paths["/v1/orders"]["post"]


def test_unknown_route_and_method_when_called_answer_error_body(api: Api) -> None:
    assert_error(api.http.get("/v1/nope"), 404, "NOT_FOUND")
    assert_error(api.http.put("/healthz"), 405, "METHOD_NOT_ALLOWED")


# -- market data ----------------------------------------------------------------------------


def test_instruments_when_listed_show_spec_defaults(api: Api) -> None:
    by_symbol = {i["symbol"]: i for i in api.http.get("/v1/instruments").json()}
    btc = by_symbol["BTC-PERP"]
    assert (btc["tick_size"], btc["lot_size"], btc["max_leverage"]) == ("0.1", "0.001", 50)
    assert (btc["maker_fee_ppm"], btc["taker_fee_ppm"]) == (200, 500)
    assert btc["tiers"][1] == {
        "max_notional": "1000000",
        "maintenance_ppm": 10000,
        "maintenance_amount": "500",
        "max_leverage": 25,
    }
    assert (by_symbol["ETH-PERP"]["tick_size"], by_symbol["ETH-PERP"]["lot_size"]) == (
        "0.01",
        "0.01",
    )
    assert btc["mark_price"] == "50000"


def test_orderbook_when_orders_rest_aggregates_levels_best_first(api: Api) -> None:
    _, key = api.new_account()
    with api.as_key(key) as c:
        for price, qty in (("40000.1", "0.002"), ("40000.1", "0.003"), ("39999", "0.01")):
            assert order(c, side="buy", qty=qty, price=price).status_code == 200
        book = api.http.get("/v1/orderbook/BTC-PERP", params={"depth": 1000}).json()
        assert book["symbol"] == "BTC-PERP" and isinstance(book["seq"], int)
        bids = dict((p, q) for p, q in book["bids"])
        assert bids["40000.1"] == "0.005" and bids["39999"] == "0.01"
        prices = [float(p) for p, _ in book["bids"]]
        assert prices == sorted(prices, reverse=True)
        assert len(api.http.get("/v1/orderbook/BTC-PERP", params={"depth": 1}).json()["bids"]) == 1
        c.delete("/v1/orders", params={"symbol": "BTC-PERP"})


def test_orderbook_when_symbol_unknown_answers_404(api: Api) -> None:
    assert_error(api.http.get("/v1/orderbook/DOGE-PERP"), 404, "INVALID_SYMBOL")
    assert_error(api.http.get("/v1/trades/DOGE-PERP"), 404, "INVALID_SYMBOL")


@pytest.mark.parametrize(
    "depth", ["0", "-1", "abc", "100000"], ids=["zero", "negative", "text", "huge"]
)
def test_orderbook_when_depth_invalid_answers_400(api: Api, depth: str) -> None:
    assert_error(
        api.http.get("/v1/orderbook/BTC-PERP", params={"depth": depth}), 400, "VALIDATION_ERROR"
    )


def test_trades_when_a_trade_printed_lists_it_newest_first_without_accounts(api: Api) -> None:
    _, maker = api.new_account()
    _, taker = api.new_account()
    with api.as_key(maker) as m, api.as_key(taker) as t:
        assert order(m, side="sell", qty="0.004", price="52000").status_code == 200
        r = order(t, side="buy", qty="0.004", price="52000")
        trade_id = r.json()["fills"][0]["trade_id"]
    trades = api.http.get("/v1/trades/BTC-PERP", params={"limit": 5}).json()
    assert trades[0]["trade_id"] >= trade_id
    mine = next(x for x in trades if x["trade_id"] == trade_id)
    assert mine["price"] == "52000" and mine["qty"] == "0.004" and mine["taker_side"] == "buy"
    assert not any("account" in k for k in mine)
    assert len(api.http.get("/v1/trades/BTC-PERP", params={"limit": 1}).json()) == 1


def test_insurance_fund_when_topped_up_grows_by_exact_amount(api: Api) -> None:
    before = api.http.get("/v1/insurance-fund").json()["balance"]
    r = api.admin("POST", "/v1/admin/insurance-fund", json={"amount": "0.00000001"})
    assert r.status_code == 200, r.text
    after = api.http.get("/v1/insurance-fund").json()["balance"]
    from decimal import Decimal

    assert Decimal(after) - Decimal(before) == Decimal("0.00000001")
    assert r.json() == {"balance": after}


# -- admin ----------------------------------------------------------------------------------


def test_admin_when_token_missing_or_wrong_answers_403(api: Api) -> None:
    assert_error(api.http.post("/v1/admin/accounts"), 403, "FORBIDDEN")
    assert_error(
        api.http.post("/v1/admin/accounts", headers={"X-Admin-Token": "nope"}), 403, "FORBIDDEN"
    )
    assert_error(
        api.http.get("/v1/admin/accounts/1", headers={"X-Admin-Token": ADMIN_TOKEN + "x"}),
        403,
        "FORBIDDEN",
    )


def test_admin_create_account_when_called_returns_int_id_and_working_key(api: Api) -> None:
    r = api.admin("POST", "/v1/admin/accounts")
    body = r.json()
    assert (
        r.status_code == 200 and isinstance(body["account_id"], int) and len(body["api_key"]) >= 32
    )
    with api.as_key(body["api_key"]) as c:
        assert c.get("/v1/account").json()["account_id"] == body["account_id"]


def test_admin_deposit_when_account_unknown_answers_404(api: Api) -> None:
    assert_error(
        api.admin("POST", "/v1/admin/deposit", json={"account_id": 10**9, "amount": "1"}),
        404,
        "ACCOUNT_NOT_FOUND",
    )
    # 0 (the insurance fund's internal id) is not an id at all: refused at the edge (SPEC §1)
    assert_error(
        api.admin("POST", "/v1/admin/deposit", json={"account_id": 0, "amount": "1"}),
        400,
        "INVALID_ID",
    )


def test_admin_deposit_when_ok_answers_new_wallet_balance(api: Api) -> None:
    account_id, _ = api.new_account(deposit=None)
    r = api.admin("POST", "/v1/admin/deposit", json={"account_id": account_id, "amount": "995.035"})
    assert r.json() == {"account_id": account_id, "amount": "995.035", "wallet_balance": "995.035"}


def test_admin_get_account_when_known_matches_account_route(api: Api) -> None:
    account_id, key = api.new_account("1234.5")
    with api.as_key(key) as c:
        mine = c.get("/v1/account").json()
    assert api.admin("GET", f"/v1/admin/accounts/{account_id}").json() == mine
    assert_error(api.admin("GET", "/v1/admin/accounts/999999"), 404, "ACCOUNT_NOT_FOUND")
    assert_error(api.admin("GET", "/v1/admin/accounts/0"), 400, "INVALID_ID")


def test_admin_adl_policy_when_set_answers_policy(api: Api) -> None:
    r = api.admin("PUT", "/v1/admin/adl-policy", json={"symbol": "ETH-PERP", "policy": "pro_rata"})
    assert r.json() == {"symbol": "ETH-PERP", "policy": "pro_rata"}
    r = api.admin("PUT", "/v1/admin/adl-policy", json={"symbol": "ETH-PERP", "policy": "queue"})
    assert r.json() == {"symbol": "ETH-PERP", "policy": "queue"}
    policy = {i["symbol"]: i["adl_policy"] for i in api.http.get("/v1/instruments").json()}
    assert policy["ETH-PERP"] == "queue"
    assert_error(
        api.admin("PUT", "/v1/admin/adl-policy", json={"symbol": "ETH-PERP", "policy": "random"}),
        400,
        "INVALID_ADL_POLICY",
    )
    assert_error(
        api.admin("PUT", "/v1/admin/adl-policy", json={"symbol": "X", "policy": "queue"}),
        400,
        "INVALID_SYMBOL",
    )


def test_admin_mark_price_when_off_grid_or_unknown_answers_400(api: Api) -> None:
    assert_error(
        api.admin("POST", "/v1/admin/mark-price", json={"symbol": "BTC-PERP", "price": "50000.05"}),
        400,
        "INVALID_PRICE",
    )
    assert_error(
        api.admin("POST", "/v1/admin/mark-price", json={"symbol": "NOPE", "price": "1"}),
        400,
        "INVALID_SYMBOL",
    )
    assert_error(
        api.admin("POST", "/v1/admin/mark-price", json={"symbol": "BTC-PERP", "price": "0"}),
        400,
        "INVALID_PRICE",
    )


# -- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/account"),
        ("GET", "/v1/positions"),
        ("GET", "/v1/orders"),
        ("GET", "/v1/orders/1"),
        ("DELETE", "/v1/orders/1"),
        ("DELETE", "/v1/orders"),
        ("POST", "/v1/orders"),
        ("POST", "/v1/withdraw"),
        ("POST", "/v1/leverage"),
    ],
    ids=lambda v: v.replace("/", "_"),
)
def test_account_routes_when_key_missing_or_unknown_answer_401(
    api: Api, method: str, path: str
) -> None:
    assert_error(api.http.request(method, path, json={}), 401, "UNAUTHORIZED")
    assert_error(
        api.http.request(method, path, json={}, headers={"X-API-Key": "not-a-key"}),
        401,
        "UNAUTHORIZED",
    )


# -- orders ---------------------------------------------------------------------------------


def test_place_when_limit_rests_answers_new_with_no_fills(api: Api) -> None:
    _, key = api.new_account()
    with api.as_key(key) as c:
        r = order(c, side="buy", qty="0.01", price="45000.5", client_order_id="rest-1")
        body = r.json()
        assert r.status_code == 200, r.text
        assert body["status"] == "new" and body["fills"] == [] and body["avg_price"] is None
        assert (body["symbol"], body["side"], body["type"], body["price"], body["qty"]) == (
            "BTC-PERP",
            "buy",
            "limit",
            "45000.5",
            "0.01",
        )
        assert (body["filled_qty"], body["remaining_qty"], body["client_order_id"]) == (
            "0",
            "0.01",
            "rest-1",
        )
        assert isinstance(body["order_id"], int)
        c.delete("/v1/orders")


def test_place_when_crossing_fills_at_maker_price_with_exact_fees(api: Api) -> None:
    maker_id, maker = api.new_account("10000")
    taker_id, taker = api.new_account("10000")
    with api.as_key(maker) as m, api.as_key(taker) as t:
        rest = order(m, side="sell", qty="0.01", price="51000").json()
        r = order(t, side="buy", qty="0.02", price="51000.5")
        body = r.json()
        assert body["status"] == "partially_filled"
        assert (body["filled_qty"], body["remaining_qty"], body["avg_price"]) == (
            "0.01",
            "0.01",
            "51000",
        )
        fill = body["fills"][0]
        # notional 510 USD: taker 500 ppm = 0.255, maker 200 ppm = 0.102
        assert (fill["price"], fill["qty"], fill["fee"], fill["liquidity"]) == (
            "51000",
            "0.01",
            "0.255",
            "taker",
        )
        maker_order = m.get(f"/v1/orders/{rest['order_id']}").json()
        assert maker_order["status"] == "filled"
        assert (
            maker_order["fills"][0]["fee"] == "0.102"
            and maker_order["fills"][0]["liquidity"] == "maker"
        )
        assert t.get("/v1/account").json()["wallet_balance"] == "9999.745"
        assert m.get("/v1/account").json()["wallet_balance"] == "9999.898"
        pos = t.get("/v1/positions").json()
        assert [(p["symbol"], p["size"], p["entry_price"]) for p in pos] == [
            ("BTC-PERP", "0.01", "51000")
        ]
        # close both sides again so later tests see a clean book and no positions
        t.delete("/v1/orders")
        order(m, side="buy", qty="0.01", price="51000")
        closing = order(t, side="sell", qty="0.01", price="51000", reduce_only=True).json()
        assert closing["status"] == "filled"
    del maker_id, taker_id


def test_place_when_ioc_cannot_fill_answers_canceled(api: Api) -> None:
    _, key = api.new_account()
    with api.as_key(key) as c:
        body = order(c, side="buy", qty="0.01", price="1000", time_in_force="IOC").json()
        assert body["status"] == "canceled" and body["fills"] == [] and body["remaining_qty"] == "0"


def test_place_when_fok_cannot_fill_entirely_answers_canceled_without_fills(api: Api) -> None:
    _, maker = api.new_account()
    _, taker = api.new_account()
    with api.as_key(maker) as m, api.as_key(taker) as t:
        order(m, side="sell", qty="0.01", price="52000", symbol="BTC-PERP")
        body = order(t, side="buy", qty="5", price="52000", time_in_force="FOK").json()
        assert body["status"] == "canceled" and body["fills"] == []
        m.delete("/v1/orders")


def test_place_when_market_order_finds_nothing_in_band_answers_canceled(api: Api) -> None:
    _, key = api.new_account()
    with api.as_key(key) as c:
        # band is 5 % of the ETH mark 3000; nothing from other tests rests in 2850..3150
        body = c.post(
            "/v1/orders", json={"symbol": "ETH-PERP", "side": "buy", "type": "market", "qty": "0.1"}
        ).json()
        assert (body["status"], body["fills"], body["price"], body["type"]) == (
            "canceled",
            [],
            None,
            "market",
        )


def test_place_when_post_only_would_take_answers_400_would_take(api: Api) -> None:
    _, maker = api.new_account()
    _, taker = api.new_account()
    with api.as_key(maker) as m, api.as_key(taker) as t:
        order(m, side="sell", qty="0.01", price="52100")
        assert_error(
            order(t, side="buy", qty="0.01", price="52100", post_only=True), 400, "WOULD_TAKE"
        )
        m.delete("/v1/orders")


def test_place_when_reduce_only_without_position_answers_400(api: Api) -> None:
    _, key = api.new_account()
    with api.as_key(key) as c:
        assert_error(
            order(c, side="sell", qty="0.01", price="50000", reduce_only=True),
            400,
            "NOTHING_TO_REDUCE",
        )


def test_place_when_margin_short_answers_400_insufficient_margin(api: Api) -> None:
    _, key = api.new_account("10")
    with api.as_key(key) as c:
        assert_error(order(c, side="buy", qty="1", price="40000"), 400, "INSUFFICIENT_MARGIN")
        assert c.get("/v1/orders").json() == []


def test_place_when_client_order_id_reused_answers_409_naming_original(api: Api) -> None:
    _, key = api.new_account()
    with api.as_key(key) as c:
        first = order(c, side="buy", qty="0.01", price="41000", client_order_id="dup").json()
        body = assert_error(
            order(c, side="buy", qty="0.01", price="41000", client_order_id="dup"),
            409,
            "DUPLICATE_CLIENT_ORDER_ID",
        )
        assert body["order_id"] == first["order_id"]
        assert len(c.get("/v1/orders").json()) == 1
        c.delete("/v1/orders")


def test_list_orders_when_filtered_by_symbol_shows_only_that_symbol(api: Api) -> None:
    _, key = api.new_account()
    with api.as_key(key) as c:
        b = order(c, side="buy", qty="0.01", price="42000").json()
        e = order(c, symbol="ETH-PERP", side="buy", qty="0.1", price="2000").json()
        assert [o["order_id"] for o in c.get("/v1/orders").json()] == [b["order_id"], e["order_id"]]
        assert [
            o["order_id"] for o in c.get("/v1/orders", params={"symbol": "ETH-PERP"}).json()
        ] == [e["order_id"]]
        assert_error(c.get("/v1/orders", params={"symbol": "NOPE"}), 400, "INVALID_SYMBOL")
        canceled = c.delete("/v1/orders", params={"symbol": "ETH-PERP"}).json()
        assert canceled == {"canceled": [e["order_id"]]}
        assert_error(c.delete("/v1/orders", params={"symbol": "NOPE"}), 400, "INVALID_SYMBOL")
        assert c.delete("/v1/orders").json() == {"canceled": [b["order_id"]]}
        assert c.get("/v1/orders").json() == []


def test_get_order_when_closed_still_answers_and_unknown_answers_404(api: Api) -> None:
    _, key = api.new_account()
    with api.as_key(key) as c:
        o = order(c, side="buy", qty="0.01", price="43000").json()
        canceled = c.delete(f"/v1/orders/{o['order_id']}").json()
        assert canceled["status"] == "canceled" and canceled["order_id"] == o["order_id"]
        assert c.get(f"/v1/orders/{o['order_id']}").json()["status"] == "canceled"
        assert_error(c.delete(f"/v1/orders/{o['order_id']}"), 404, "ORDER_NOT_FOUND")
        assert_error(c.get("/v1/orders/987654321"), 404, "ORDER_NOT_FOUND")
        assert_error(c.get("/v1/orders/abc"), 400, "INVALID_ID")


def test_amend_when_qty_lowered_keeps_order_and_when_price_crosses_matches(api: Api) -> None:
    _, maker = api.new_account()
    _, key = api.new_account()
    with api.as_key(maker) as m, api.as_key(key) as c:
        o = order(c, side="buy", qty="0.03", price="48000").json()
        r = c.patch(f"/v1/orders/{o['order_id']}", json={"qty": "0.02"})
        assert r.status_code == 200, r.text
        assert (r.json()["qty"], r.json()["remaining_qty"], r.json()["status"]) == (
            "0.02",
            "0.02",
            "new",
        )
        ask = order(m, side="sell", qty="0.01", price="48100").json()
        crossed = c.patch(f"/v1/orders/{o['order_id']}", json={"price": "48100"}).json()
        assert crossed["status"] == "partially_filled" and crossed["fills"][0]["price"] == "48100"
        assert m.get(f"/v1/orders/{ask['order_id']}").json()["status"] == "filled"
        assert_error(c.patch(f"/v1/orders/{o['order_id']}", json={}), 400, "NOTHING_TO_AMEND")
        assert_error(
            c.patch(f"/v1/orders/{o['order_id']}", json={"price": "48100.05"}), 400, "INVALID_PRICE"
        )
        assert_error(c.patch("/v1/orders/987654321", json={"qty": "1"}), 404, "ORDER_NOT_FOUND")
        c.delete("/v1/orders")
        order(m, side="buy", qty="0.01", price="48100")
        order(c, side="sell", qty="0.01", price="48100", reduce_only=True)


def test_account_and_positions_when_long_show_margins_and_liquidation_price(api: Api) -> None:
    _, maker = api.new_account()
    _, key = api.new_account("1000")
    with api.as_key(maker) as m, api.as_key(key) as c:
        order(m, side="sell", qty="0.1", price="50000")
        order(c, side="buy", qty="0.1", price="50000")
        acct = c.get("/v1/account").json()
        # fee 500 ppm of 5000 = 2.5; IM = 5000 / 10; MM = 0.5 % of 5000
        assert (
            acct["wallet_balance"],
            acct["equity"],
            acct["initial_margin"],
            acct["maintenance_margin"],
            acct["available"],
        ) == ("997.5", "997.5", "500", "25", "497.5")
        (pos,) = acct["positions"]
        assert pos == c.get("/v1/positions").json()[0]
        assert (
            pos["size"],
            pos["entry_price"],
            pos["mark_price"],
            pos["unrealized_pnl"],
            pos["leverage"],
        ) == ("0.1", "50000", "50000", "0", 10)
        assert pos["liquidation_price"] is not None and 0 <= pos["adl_quantile"] <= 4
        order(m, side="buy", qty="0.1", price="50000")
        order(c, side="sell", qty="0.1", price="50000", reduce_only=True)
        assert c.get("/v1/positions").json() == []


def test_leverage_when_valid_is_set_and_when_invalid_answers_400(api: Api) -> None:
    _, key = api.new_account()
    with api.as_key(key) as c:
        assert c.post("/v1/leverage", json={"symbol": "BTC-PERP", "leverage": 25}).json() == {
            "symbol": "BTC-PERP",
            "leverage": 25,
        }
        assert_error(
            c.post("/v1/leverage", json={"symbol": "BTC-PERP", "leverage": 51}),
            400,
            "INVALID_LEVERAGE",
        )
        assert_error(
            c.post("/v1/leverage", json={"symbol": "BTC-PERP", "leverage": 0}),
            400,
            "INVALID_LEVERAGE",
        )
        assert_error(
            c.post("/v1/leverage", json={"symbol": "BTC-PERP", "leverage": 2.5}),
            400,
            "INVALID_LEVERAGE",
        )
        assert_error(
            c.post("/v1/leverage", json={"symbol": "NOPE", "leverage": 5}), 400, "INVALID_SYMBOL"
        )


def test_withdraw_when_within_available_debits_and_when_too_much_answers_400(api: Api) -> None:
    account_id, key = api.new_account("100")
    with api.as_key(key) as c:
        r = c.post("/v1/withdraw", json={"amount": "40.5"})
        assert r.json() == {"account_id": account_id, "amount": "40.5", "wallet_balance": "59.5"}
        assert_error(
            c.post("/v1/withdraw", json={"amount": "59.50000001"}), 400, "INSUFFICIENT_BALANCE"
        )
        assert c.get("/v1/account").json()["wallet_balance"] == "59.5"


# -- instances with their own settings ----------------------------------------------------


@pytest.fixture(scope="module")
def limited(start_service: Any, tmp_path_factory: pytest.TempPathFactory) -> Api:
    """A fresh instance: 2 open orders per account, ETH-PERP without a mark, tiny rate limit."""
    cfg = tmp_path_factory.mktemp("cfg") / "limits.toml"
    cfg.write_text('max_open_orders = 2\n[instruments.BTC-PERP]\ninitial_mark = "50000"\n')
    svc: ServiceProcess = start_service(
        config=str(cfg), rate_limit_per_s="0.5", rate_limit_burst="6"
    )
    return Api(svc)


def test_place_when_open_order_limit_reached_answers_400_too_many(limited: Api) -> None:
    _, key = limited.new_account()
    with limited.as_key(key) as c:
        assert order(c, side="buy", qty="0.001", price="100").status_code == 200
        assert order(c, side="buy", qty="0.001", price="101").status_code == 200
        assert_error(order(c, side="buy", qty="0.001", price="102"), 400, "TOO_MANY_OPEN_ORDERS")


def test_place_when_symbol_has_no_mark_answers_400_no_mark_price(limited: Api) -> None:
    _, key = limited.new_account()
    with limited.as_key(key) as c:
        assert_error(
            order(c, symbol="ETH-PERP", side="buy", qty="1", price="100"), 400, "NO_MARK_PRICE"
        )


def test_requests_when_key_exceeds_rate_limit_answer_429_with_retry_after(limited: Api) -> None:
    _, key = limited.new_account()
    with limited.as_key(key) as c:
        statuses = [c.get("/v1/account") for _ in range(10)]
    limited_responses = [r for r in statuses if r.status_code == 429]
    assert limited_responses, [r.status_code for r in statuses]
    r = limited_responses[0]
    assert_error(r, 429, "RATE_LIMITED")
    assert int(r.headers["Retry-After"]) >= 1
    with limited.as_key(key) as c:  # order entry (the ASGI fast path) shares the bucket
        r = order(c, side="buy", qty="0.001", price="100")
    assert_error(r, 429, "RATE_LIMITED")
    assert int(r.headers["Retry-After"]) >= 1
    # admin calls are exempt
    assert all(limited.admin("GET", "/v1/admin/accounts/1").status_code == 200 for _ in range(10))


def test_startup_when_redis_unset_logs_that_events_stay_in_process(limited: Api) -> None:
    assert "EXCHANGE_REDIS_URL unset: events stay in process" in limited.service.log()


# -- trade history and orders by client order id (SPEC §9, version 2) -------------------------


def test_fills_when_traded_lists_both_sides_newest_first_with_fees(api: Api) -> None:
    _, maker_key = api.new_account()
    _, taker_key = api.new_account()
    with api.as_key(maker_key) as m, api.as_key(taker_key) as t:
        assert order(m, side="sell", qty="0.01", price="50000").status_code == 200
        assert order(m, side="sell", qty="0.02", price="50010").status_code == 200
        placed = order(t, side="buy", qty="0.03", price="50010", time_in_force="IOC").json()
        taker_fills = t.get("/v1/fills").json()
        # newest first: 0.02 @ 50,010 (fee 1000.2 x 0.0005 = 0.5001), then 0.01 @ 50,000 (0.25)
        assert [(f["price"], f["qty"], f["fee"], f["liquidity"], f["side"]) for f in taker_fills] == [
            ("50010", "0.02", "0.5001", "taker", "buy"),
            ("50000", "0.01", "0.25", "taker", "buy"),
        ]
        assert {f["order_id"] for f in taker_fills} == {placed["order_id"]}
        assert [f["trade_id"] for f in taker_fills] == [x["trade_id"] for x in reversed(placed["fills"])]
        maker_fills = m.get("/v1/fills", params={"symbol": "BTC-PERP", "limit": 1}).json()
        # maker fee 1000.2 x 0.0002 = 0.20004
        assert [(f["qty"], f["fee"], f["liquidity"], f["realized_pnl"]) for f in maker_fills] == [
            ("0.02", "0.20004", "maker", "0")
        ]
        assert m.get("/v1/fills", params={"symbol": "ETH-PERP"}).json() == []
        assert_error(m.get("/v1/fills", params={"limit": 0}), 400, "VALIDATION_ERROR")
        assert_error(m.get("/v1/fills", params={"limit": 1001}), 400, "VALIDATION_ERROR")
        assert_error(m.get("/v1/fills", params={"symbol": "NOPE"}), 400, "INVALID_SYMBOL")
    assert_error(api.http.get("/v1/fills"), 401, "UNAUTHORIZED")


def test_cancel_and_amend_by_client_order_id_over_http(api: Api) -> None:
    _, key = api.new_account()
    _, other_key = api.new_account()
    with api.as_key(key) as a, api.as_key(other_key) as b:
        first = order(a, side="buy", qty="0.01", price="49000", client_order_id="bot-1").json()
        order(a, side="buy", qty="0.01", price="48000", client_order_id="bot-2")
        amended = a.patch("/v1/orders/by-client-id/bot-1", json={"price": "48500", "qty": "0.02"}).json()
        assert (amended["order_id"], amended["price"], amended["qty"], amended["status"]) == (
            first["order_id"], "48500", "0.02", "new"
        )
        canceled = a.delete("/v1/orders", params={"client_order_id": "bot-1"}).json()
        assert (canceled["order_id"], canceled["client_order_id"], canceled["status"]) == (
            first["order_id"], "bot-1", "canceled"
        )
        # gone, someone else's, unknown, malformed: nothing is canceled
        seq = api.seq()
        assert_error(a.delete("/v1/orders", params={"client_order_id": "bot-1"}), 404, "ORDER_NOT_FOUND")
        assert_error(b.delete("/v1/orders", params={"client_order_id": "bot-2"}), 404, "ORDER_NOT_FOUND")
        assert_error(b.patch("/v1/orders/by-client-id/bot-2", json={"qty": "0.05"}), 404, "ORDER_NOT_FOUND")
        assert_error(a.delete("/v1/orders", params={"client_order_id": "x" * 65}), 400, "VALIDATION_ERROR")
        assert_error(
            a.delete("/v1/orders", params={"client_order_id": "bot-2", "symbol": "BTC-PERP"}), 400, "VALIDATION_ERROR"
        )
        assert api.seq() == seq
        assert [o["client_order_id"] for o in a.get("/v1/orders").json()] == ["bot-2"]
