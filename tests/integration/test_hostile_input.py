"""Hostile input gets a 4xx with the SPEC error body and changes nothing.

For each case the account (balances, positions, open orders) and the BTC-PERP book are read
before and after; they must be identical.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.helpers import Api, assert_error

GOOD = {"symbol": "BTC-PERP", "side": "buy", "type": "limit", "qty": "0.01", "price": "30000"}


def _with(**changes: Any) -> dict[str, Any]:
    body = dict(GOOD)
    for k, v in changes.items():
        if v is _DROP:
            body.pop(k)
        else:
            body[k] = v
    return body


_DROP = object()

ORDER_CASES: list[tuple[str, Any, int, str]] = [
    # (id, JSON body or raw bytes, status, error)
    ("price_off_grid", _with(price="30000.05"), 400, "INVALID_PRICE"),
    ("qty_off_grid", _with(qty="0.0015"), 400, "INVALID_QUANTITY"),
    ("price_negative", _with(price="-30000"), 400, "INVALID_PRICE"),
    ("qty_negative", _with(qty="-1"), 400, "INVALID_QUANTITY"),
    ("price_zero", _with(price="0"), 400, "INVALID_PRICE"),
    ("qty_zero", _with(qty="0"), 400, "INVALID_QUANTITY"),
    ("qty_nan_string", _with(qty="NaN"), 400, "INVALID_QUANTITY"),
    ("price_infinity_string", _with(price="Infinity"), 400, "INVALID_PRICE"),
    ("price_1e400", _with(price="1e400"), 400, "INVALID_PRICE"),
    (
        "price_number_1e400",
        b'{"symbol":"BTC-PERP","side":"buy","type":"limit","qty":"0.01","price":1e400}',
        400,
        None,
    ),
    ("qty_huge_digits", _with(qty="9" * 60), 400, "INVALID_QUANTITY"),
    ("qty_huge_int", _with(qty=10**40), 400, None),
    ("qty_too_many_decimals", _with(qty="0.000000001"), 400, "INVALID_QUANTITY"),
    ("price_non_ascii_digits", _with(price="٣٠٠٠٠"), 400, "INVALID_PRICE"),
    ("price_superscript", _with(price="3²"), 400, "INVALID_PRICE"),
    ("price_bool", _with(price=True), 400, "INVALID_PRICE"),
    ("price_list", _with(price=["30000"]), 400, "INVALID_PRICE"),
    ("qty_object", _with(qty={"v": 1}), 400, "INVALID_QUANTITY"),
    ("symbol_number", _with(symbol=7), 400, "INVALID_SYMBOL"),
    ("symbol_unknown", _with(symbol="DOGE-PERP"), 400, "INVALID_SYMBOL"),
    ("side_wrong", _with(side="hold"), 400, "INVALID_SIDE"),
    ("type_wrong", _with(type="stop"), 400, "INVALID_ORDER_TYPE"),
    ("tif_wrong", _with(time_in_force="GTD"), 400, "INVALID_TIME_IN_FORCE"),
    ("stp_wrong", _with(stp="none"), 400, "INVALID_STP"),
    ("post_only_string", _with(post_only="yes"), 400, "VALIDATION_ERROR"),
    ("client_order_id_too_long", _with(client_order_id="x" * 65), 400, "INVALID_CLIENT_ORDER_ID"),
    ("missing_qty", _with(qty=_DROP), 400, "VALIDATION_ERROR"),
    ("missing_side", _with(side=_DROP), 400, "VALIDATION_ERROR"),
    ("limit_without_price", _with(price=_DROP), 400, "PRICE_REQUIRED"),
    ("market_with_price", _with(type="market"), 400, "PRICE_NOT_ALLOWED"),
    ("unknown_field", _with(leverage=100), 400, "VALIDATION_ERROR"),
    ("malformed_json", b'{"symbol": "BTC-PERP", ', 400, "MALFORMED_JSON"),
    (
        "nan_literal",
        b'{"symbol":"BTC-PERP","side":"buy","type":"limit","qty":NaN,"price":"30000"}',
        400,
        "MALFORMED_JSON",
    ),
    (
        "infinity_literal",
        b'{"symbol":"BTC-PERP","side":"buy","type":"limit","qty":"0.01","price":Infinity}',
        400,
        "MALFORMED_JSON",
    ),
    ("not_an_object", b'["BTC-PERP"]', 400, "VALIDATION_ERROR"),
    ("empty_body", b"", 400, "VALIDATION_ERROR"),
    ("null_body", b"null", 400, "VALIDATION_ERROR"),
    ("binary_garbage", b"\xff\xfe\x00\x01", 400, "MALFORMED_JSON"),
    ("oversized", b'{"symbol":"' + b"A" * 70_000 + b'"}', 413, "BODY_TOO_LARGE"),
]


def _snapshot(api: Api, key: str) -> tuple[Any, Any, Any]:
    with api.as_key(key) as c:
        account = c.get("/v1/account").json()
        orders = c.get("/v1/orders").json()
    book = api.http.get("/v1/orderbook/BTC-PERP", params={"depth": 1000}).json()
    return account, orders, (book["bids"], book["asks"])


@pytest.fixture(scope="module")
def trader(api: Api) -> str:
    api.set_mark("BTC-PERP", "50000")
    _, key = api.new_account("5000")
    with api.as_key(key) as c:
        assert c.post("/v1/orders", json=_with(price="29000")).status_code == 200
    return key


@pytest.mark.parametrize(
    ("body", "status", "error"), [c[1:] for c in ORDER_CASES], ids=[c[0] for c in ORDER_CASES]
)
def test_place_order_when_input_hostile_answers_4xx_and_changes_nothing(
    api: Api, trader: str, body: Any, status: int, error: str | None
) -> None:
    before = _snapshot(api, trader)
    with api.as_key(trader) as c:
        if isinstance(body, bytes):
            r = c.post("/v1/orders", content=body, headers={"Content-Type": "application/json"})
        else:
            r = c.post("/v1/orders", json=body)
    if error is None:
        assert 400 <= r.status_code < 500 and {"code", "error", "message"} <= set(r.json()), r.text
    else:
        assert_error(r, status, error)
    assert _snapshot(api, trader) == before


OTHER_CASES: list[tuple[str, str, str, Any, int, str]] = [
    ("withdraw_negative", "POST", "/v1/withdraw", {"amount": "-5"}, 400, "INVALID_AMOUNT"),
    ("withdraw_nan", "POST", "/v1/withdraw", {"amount": "nan"}, 400, "INVALID_AMOUNT"),
    (
        "withdraw_float_nan_literal",
        "POST",
        "/v1/withdraw",
        b'{"amount": NaN}',
        400,
        "MALFORMED_JSON",
    ),
    (
        "withdraw_9_decimals",
        "POST",
        "/v1/withdraw",
        {"amount": "0.000000001"},
        400,
        "INVALID_AMOUNT",
    ),
    (
        "withdraw_too_much",
        "POST",
        "/v1/withdraw",
        {"amount": "1000000000000"},
        400,
        "INSUFFICIENT_BALANCE",
    ),
    ("withdraw_exponent", "POST", "/v1/withdraw", {"amount": "1e12"}, 400, "INVALID_AMOUNT"),
    ("withdraw_missing", "POST", "/v1/withdraw", {}, 400, "VALIDATION_ERROR"),
    (
        "withdraw_extra",
        "POST",
        "/v1/withdraw",
        {"amount": "1", "to": "me"},
        400,
        "VALIDATION_ERROR",
    ),
    ("withdraw_form_encoded", "POST", "/v1/withdraw", "form", 400, "VALIDATION_ERROR"),
    (
        "leverage_string_word",
        "POST",
        "/v1/leverage",
        {"symbol": "BTC-PERP", "leverage": "ten"},
        400,
        "INVALID_LEVERAGE",
    ),
    (
        "leverage_bool",
        "POST",
        "/v1/leverage",
        {"symbol": "BTC-PERP", "leverage": True},
        400,
        "INVALID_LEVERAGE",
    ),
    (
        "leverage_huge",
        "POST",
        "/v1/leverage",
        {"symbol": "BTC-PERP", "leverage": 10**30},
        400,
        "INVALID_LEVERAGE",
    ),
    ("amend_negative_qty", "PATCH", "/v1/orders/{oid}", {"qty": "-1"}, 400, "INVALID_QUANTITY"),
    ("amend_off_grid_price", "PATCH", "/v1/orders/{oid}", {"price": "1.05"}, 400, "INVALID_PRICE"),
    ("amend_malformed", "PATCH", "/v1/orders/{oid}", b"{", 400, "MALFORMED_JSON"),
    (
        "amend_oversized",
        "PATCH",
        "/v1/orders/{oid}",
        b"[" + b"1," * 40_000 + b"1]",
        413,
        "BODY_TOO_LARGE",
    ),
    ("cancel_negative_id", "DELETE", "/v1/orders/-1", None, 400, "INVALID_ID"),
    ("cancel_huge_id", "DELETE", "/v1/orders/" + "9" * 30, None, 400, "INVALID_ID"),
    ("cancel_text_id", "DELETE", "/v1/orders/abc", None, 400, "INVALID_ID"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [c[1:] for c in OTHER_CASES],
    ids=[c[0] for c in OTHER_CASES],
)
def test_account_routes_when_input_hostile_answer_4xx_and_change_nothing(
    api: Api, trader: str, method: str, path: str, body: Any, status: int, error: str
) -> None:
    before = _snapshot(api, trader)
    oid = before[1][0]["order_id"]
    with api.as_key(trader) as c:
        url = path.format(oid=oid)
        if body == "form":
            r = c.request(method, url, data={"amount": "1"})
        elif isinstance(body, bytes):
            r = c.request(method, url, content=body, headers={"Content-Type": "application/json"})
        elif body is None:
            r = c.request(method, url)
        else:
            r = c.request(method, url, json=body)
    assert_error(r, status, error)
    assert _snapshot(api, trader) == before


@pytest.mark.parametrize(
    "body",
    [
        {"account_id": "one", "amount": "1"},
        {"account_id": 1.5, "amount": "1"},
        {"account_id": True, "amount": "1"},
        {"account_id": 1, "amount": "0"},
        {"account_id": 1, "amount": 1e-9},
    ],
    ids=["id_text", "id_fraction", "id_bool", "amount_zero", "amount_tiny_float"],
)
def test_admin_deposit_when_input_hostile_answers_400(api: Api, body: dict[str, Any]) -> None:
    before = api.admin("GET", "/v1/admin/accounts/1").json()
    r = api.admin("POST", "/v1/admin/deposit", json=body)
    assert r.status_code == 400 and {"code", "error", "message"} <= set(r.json()), r.text
    assert api.admin("GET", "/v1/admin/accounts/1").json() == before


@pytest.mark.parametrize(
    ("raw", "error"),
    [(b"{bad", "MALFORMED_JSON"), (b'{"foo": 1}', "VALIDATION_ERROR"), (b"[]", "VALIDATION_ERROR")],
    ids=["malformed", "unknown_field", "not_an_object"],
)
def test_admin_create_account_when_body_hostile_answers_400_and_creates_nothing(
    api: Api, raw: bytes, error: str
) -> None:
    seq = api.admin("GET", "/v1/admin/engine").json()["seq"]
    r = api.http.post(
        "/v1/admin/accounts",
        content=raw,
        headers={**api.admin_headers, "Content-Type": "application/json"},
    )
    assert_error(r, 400, error)
    assert api.admin("GET", "/v1/admin/engine").json()["seq"] == seq  # no account_created
    ok = api.admin("POST", "/v1/admin/accounts", json={})  # no body, or `{}`, is fine
    assert ok.status_code == 200 and set(ok.json()) == {"account_id", "api_key", "api_secret"}, ok.text


def test_place_order_when_json_number_given_reads_shortest_decimal(api: Api, trader: str) -> None:
    with api.as_key(trader) as c:
        r = c.post("/v1/orders", json=_with(price=28000.1, qty=0.01))
        assert r.status_code == 200, r.text
        assert (r.json()["price"], r.json()["qty"]) == ("28000.1", "0.01")
        c.delete(f"/v1/orders/{r.json()['order_id']}")
