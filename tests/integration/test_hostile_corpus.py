"""A hostile-input corpus (issue 10): hundreds of requests the API edge must refuse, generated
systematically, each run against the real service.

Every case must answer a 4xx with the SPEC error body (`code` int, `error`, `message`; JSON
content type) and leave the engine exactly as it was: the same seq and the same state hash
(`GET /v1/admin/engine`) before and after, so nothing reached the engine or the journal.

The corpus is the product of:
- bad decimals (`BAD_DECIMALS`) x every decimal field of every route (`DECIMAL_FIELDS`), and
  bad signed rates (`BAD_RATES`) x the funding `rate`;
- bad ids (`BAD_PATH_IDS`, `BAD_BODY_IDS`) x every id in a path or body;
- bad query integers x `depth` / `limit`;
- per body route: each required field missing, an unknown field, wrong JSON types,
  bodies that are not objects, malformed JSON, oversized strings and bodies;
- unknown and unserved methods, trailing slashes, missing or wrong credentials.
Cases that the engine itself rejects (they are journaled as rejections) are not here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from service.storage.codec import dumps_exact
from tests.integration.helpers import ADMIN_TOKEN, Api

_NO_BODY = object()


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # "{oid}" is replaced by an open order of the trader
    auth: str = "key"  # key | admin | none | bad_key | bad_admin
    body: Any = _NO_BODY  # JSON-encoded unless bytes
    status: int | None = 400  # None: any 4xx
    error: str | None = None  # None: any error name
    headers: dict[str, str] = field(default_factory=dict)


PLACE = {"symbol": "BTC-PERP", "side": "buy", "type": "limit", "qty": "0.01", "price": "49000"}
# SPEC §12: a stop sell below the shared service's 50,000 mark (valid: it would wait)
PLACE_STOP = {"symbol": "BTC-PERP", "side": "sell", "type": "stop_market", "qty": "0.01", "trigger_price": "40000"}
# (route name, method, path, auth, valid body, required fields)
BODY_ROUTES: list[tuple[str, str, str, str, dict[str, Any], tuple[str, ...]]] = [
    ("place", "POST", "/v1/orders", "key", PLACE, ("symbol", "side", "type", "qty")),
    ("place_stop", "POST", "/v1/orders", "key", PLACE_STOP, ("symbol", "side", "type", "qty")),
    ("amend", "PATCH", "/v1/orders/{oid}", "key", {"qty": "0.02"}, ()),
    (
        "leverage", "POST", "/v1/leverage", "key", {"symbol": "BTC-PERP", "leverage": 5},
        ("symbol", "leverage"),
    ),
    ("withdraw", "POST", "/v1/withdraw", "key", {"amount": "1"}, ("amount",)),
    (
        "deposit", "POST", "/v1/admin/deposit", "admin", {"account_id": 1, "amount": "1"},
        ("account_id", "amount"),
    ),
    ("insurance", "POST", "/v1/admin/insurance-fund", "admin", {"amount": "1"}, ("amount",)),
    (
        "mark", "POST", "/v1/admin/mark-price", "admin", {"symbol": "BTC-PERP", "price": "50000"},
        ("symbol", "price"),
    ),
    (
        "adl_policy", "PUT", "/v1/admin/adl-policy", "admin",
        {"symbol": "BTC-PERP", "policy": "queue"}, ("symbol", "policy"),
    ),
    (
        "index", "POST", "/v1/admin/index-price", "admin", {"symbol": "BTC-PERP", "price": "50000"},
        ("symbol", "price"),
    ),
    ("funding", "POST", "/v1/admin/funding", "admin", {"symbol": "BTC-PERP", "rate": "0.0001"}, ("symbol",)),
    (
        "margin_mode", "POST", "/v1/margin-mode", "key", {"symbol": "BTC-PERP", "mode": "isolated"},
        ("symbol", "mode"),
    ),
    (
        "position_margin", "POST", "/v1/position-margin", "key", {"symbol": "BTC-PERP", "amount": "-1"},
        ("symbol", "amount"),
    ),
]
_ROUTE = {r[0]: r for r in BODY_ROUTES}

# (route name, decimal field, the error a bad value answers)
DECIMAL_FIELDS = [
    ("place", "qty", "INVALID_QUANTITY"),
    ("place", "price", "INVALID_PRICE"),
    ("amend", "qty", "INVALID_QUANTITY"),
    ("amend", "price", "INVALID_PRICE"),
    ("place_stop", "trigger_price", "INVALID_TRIGGER_PRICE"),
    ("amend", "trigger_price", "INVALID_TRIGGER_PRICE"),
    ("withdraw", "amount", "INVALID_AMOUNT"),
    ("deposit", "amount", "INVALID_AMOUNT"),
    ("insurance", "amount", "INVALID_AMOUNT"),
    ("mark", "price", "INVALID_PRICE"),
    ("index", "price", "INVALID_PRICE"),
]

# JSON values that are not strict positive decimals (SPEC §1)
BAD_DECIMALS: list[tuple[str, Any]] = [
    ("exp", "1e3"), ("exp_upper", "1E3"), ("exp_neg", "1e-3"), ("exp_plus", "1e+3"),
    ("lead_space", " 49000"), ("trail_space", "49000 "), ("tab", "\t1"), ("newline", "1\n"),
    ("nbsp", "\u00a01"), ("inner_space", "1 000"), ("plus", "+49000"), ("lead_dot", ".5"),
    ("trail_dot", "5."), ("negative", "-1"), ("negative_frac", "-0.5"), ("unicode_minus", "\u22121"),
    ("zero", "0"), ("zero_frac", "0.0"), ("zeros", "00"), ("nine_decimals", "1.000000001"),
    ("tiny", "0.000000001"), ("nan", "NaN"), ("nan_lower", "nan"), ("inf", "Infinity"),
    ("neg_inf", "-Infinity"), ("inf_short", "inf"), ("empty", ""), ("blank", " "),
    ("comma", "1,5"), ("underscore", "1_000"), ("hex", "0x10"), ("binary", "0b1"),
    ("two_dots", "1..2"), ("three_parts", "1.2.3"), ("double_minus", "--1"),
    ("arabic_digits", "\u0663\u0660"), ("fullwidth", "\uff11"), ("superscript", "3\u00b2"),
    ("vulgar_half", "\u00bd"), ("fraction", "1/2"), ("nul", "1\x00"), ("e_only", "e1"),
    ("long", "1" * 65), ("too_large", "1000000000000000"), ("too_large_frac", "9999999999999999.5"),
    ("bool_true", True), ("bool_false", False), ("num_negative", -5), ("num_zero", 0),
    ("num_neg_zero", -0.0), ("num_tiny", 1e-9), ("num_huge", 1e16), ("num_exp_only", 1e300),
    ("num_big_int", 10**40), ("list", []), ("list_str", ["1"]), ("object", {}), ("object_v", {"v": "1"}),
]

# JSON values that are not a signed decimal within (-1, 1) after rounding to 8 decimals (the
# funding `rate`: "-0.5", "0" or "0.000000001" are valid there, so BAD_DECIMALS does not apply)
BAD_RATES: list[tuple[str, Any]] = [
    ("one", "1"), ("minus_one", "-1"), ("rounds_to_one", "0.999999995"),
    ("rounds_to_minus_one", "-0.999999995"), ("huge", "9" * 64), ("too_large", "1000000000000000"),
    ("exp", "1e-4"), ("exp_upper", "1E-4"), ("plus", "+0.1"), ("double_minus", "--0.1"),
    ("minus_space", "- 0.1"), ("minus_only", "-"), ("unicode_minus", "\u22120.1"), ("lead_dot", ".5"),
    ("minus_lead_dot", "-.5"), ("trail_dot", "5."), ("lead_space", " 0.1"), ("trail_space", "0.1 "),
    ("comma", "0,1"), ("empty", ""), ("nan", "NaN"), ("inf", "-Infinity"), ("long", "0." + "0" * 63),
    ("arabic_digits", "\u0660.1"), ("fraction", "1/2"), ("bool_true", True), ("bool_false", False),
    ("num_one", 1), ("num_minus_one", -1), ("num_huge", 1e16), ("num_float", 1.5),
    ("num_exp_only", 1e300), ("num_subnormal", 5e-324), ("num_big_int", 10**40), ("list", []),
    ("object", {}),
]

BAD_PATH_IDS = [
    "0", "-1", "-0", "00", "01", "1.0", "+1", "1e3", "0x1", "1_0", "%201", "1%20", "abc",
    "\uff11", "9223372036854775808", "18446744073709551616", "9" * 400,
]
# (name, raw JSON of the id)
BAD_BODY_IDS: list[tuple[str, bytes]] = [
    ("zero", b"0"), ("negative", b"-1"), ("2^63", b"9223372036854775808"),
    ("2^64-1", b"18446744073709551615"), ("2^64", b"18446744073709551616"),
    ("huge", b"9" * 400), ("string", b'"1"'), ("string_zero_padded", b'"01"'),
    ("float", b"1.0"), ("exp", b"1e0"), ("fraction", b"1.5"), ("true", b"true"),
    ("null", b"null"), ("list", b"[1]"), ("object", b'{"id": 1}'),
]
BAD_COUNTS = ["0", "1001", "-1", "1.0", "+5", " 5", "5 ", "abc", "1e2", "", "\u0663", "9" * 20]

NOT_OBJECTS = [("list", b"[]"), ("string", b'"x"'), ("number", b"1"), ("true", b"true")]
MALFORMED = [
    ("truncated", b"{"), ("no_value", b'{"a":}'), ("single_quotes", b"{'a': 1}"),
    ("nan_literal", b'{"amount": NaN}'), ("infinity_literal", b'{"amount": Infinity}'),
    ("overflow_number", b'{"amount": 1e400}'), ("trailing_comma", b'{"amount": "1",}'),
    ("comment", b'/* c */ {"amount": "1"}'), ("trailing_garbage", b'{"amount": "1"} x'),
    ("binary", b"\xff\xfe\x00\x01"), ("bom", b'\xef\xbb\xbf{"amount": "1"}'),
]
WRONG_TYPES: list[tuple[str, str, Any]] = [
    ("place", "symbol", 7), ("place", "symbol", None), ("place", "symbol", ""),
    ("place", "symbol", "A" * 33), ("place", "symbol", "A" * 10_000), ("place", "symbol", "DOGE-PERP"),
    ("place", "side", 1), ("place", "side", "BUY"), ("place", "type", []), ("place", "type", "stop"),
    ("place", "time_in_force", None), ("place", "time_in_force", "GTD"), ("place", "stp", 5),
    ("place", "post_only", "true"), ("place", "post_only", 1), ("place", "reduce_only", "yes"),
    ("place", "client_order_id", 5), ("place", "client_order_id", ""),
    ("place", "client_order_id", "x" * 65), ("place", "qty", None),
    ("leverage", "leverage", "ten"), ("leverage", "leverage", True), ("leverage", "leverage", 1.5),
    ("leverage", "leverage", None), ("leverage", "leverage", 0), ("leverage", "leverage", -5),
    ("leverage", "leverage", 20.0), ("leverage", "leverage", "020"), ("leverage", "leverage", "+5"),
    ("leverage", "leverage", 2**63), ("leverage", "symbol", "DOGE-PERP"),
    ("mark", "symbol", "DOGE-PERP"), ("mark", "symbol", 1), ("mark", "price", None),
    ("adl_policy", "policy", "fifo"), ("adl_policy", "policy", 1), ("adl_policy", "symbol", None),
    ("deposit", "amount", None), ("withdraw", "amount", None), ("insurance", "amount", None),
    ("index", "symbol", "DOGE-PERP"), ("index", "symbol", None), ("index", "price", None),
    ("funding", "symbol", "DOGE-PERP"), ("funding", "symbol", 7), ("funding", "rate_e8", 1),
    ("margin_mode", "mode", "ISOLATED"), ("margin_mode", "mode", "portfolio"), ("margin_mode", "mode", None),
    ("margin_mode", "mode", 1), ("margin_mode", "symbol", "DOGE-PERP"), ("margin_mode", "symbol", None),
    ("position_margin", "amount", "1e3"), ("position_margin", "amount", True), ("position_margin", "amount", None),
    ("position_margin", "amount", "--1"), ("position_margin", "amount", "1.000000001"),
    ("position_margin", "amount", "9" * 64), ("position_margin", "amount", "NaN"),
    ("position_margin", "symbol", "DOGE-PERP"), ("position_margin", "symbol", []),
]
# SPEC §12 stop fields refused at the edge, with the engine's codes: (name, body, error)
BAD_STOPS: list[tuple[str, dict[str, Any], str]] = [
    ("no_trigger", {k: v for k, v in PLACE_STOP.items() if k != "trigger_price"}, "INVALID_TRIGGER_PRICE"),
    ("trigger_null", {**PLACE_STOP, "trigger_price": None}, "INVALID_TRIGGER_PRICE"),
    ("trigger_off_grid", {**PLACE_STOP, "trigger_price": "40000.05"}, "INVALID_TRIGGER_PRICE"),
    ("trigger_huge", {**PLACE_STOP, "trigger_price": "9" * 30}, "INVALID_TRIGGER_PRICE"),
    ("trigger_by_upper", {**PLACE_STOP, "trigger_by": "MARK"}, "INVALID_TRIGGER_BY"),
    ("trigger_by_index", {**PLACE_STOP, "trigger_by": "index"}, "INVALID_TRIGGER_BY"),
    ("trigger_by_null", {**PLACE_STOP, "trigger_by": None}, "INVALID_TRIGGER_BY"),
    ("trigger_by_number", {**PLACE_STOP, "trigger_by": 1}, "INVALID_TRIGGER_BY"),
    ("close_with_qty", {**PLACE_STOP, "close_position": True}, "INVALID_QUANTITY"),
    ("close_string", {**PLACE_STOP, "close_position": "true"}, "VALIDATION_ERROR"),
    ("close_int", {**PLACE_STOP, "close_position": 1}, "VALIDATION_ERROR"),
    ("close_on_stop_limit", {**PLACE_STOP, "type": "stop_limit", "price": "39000", "close_position": True},
     "TRIGGER_NOT_ALLOWED"),
    ("close_on_limit", {**PLACE, "close_position": True}, "TRIGGER_NOT_ALLOWED"),
    ("trigger_on_limit", {**PLACE, "trigger_price": "40000"}, "TRIGGER_NOT_ALLOWED"),
    ("trigger_on_market", {**PLACE, "type": "market", "price": None, "trigger_price": "40000"},
     "TRIGGER_NOT_ALLOWED"),
    ("trigger_by_on_limit", {**PLACE, "trigger_by": "last"}, "TRIGGER_NOT_ALLOWED"),
    ("no_qty", {k: v for k, v in PLACE_STOP.items() if k != "qty"}, "VALIDATION_ERROR"),
    ("trailing", {**PLACE_STOP, "type": "trailing_stop_market"}, "INVALID_ORDER_TYPE"),
    ("type_upper", {**PLACE_STOP, "type": "STOP_MARKET"}, "INVALID_ORDER_TYPE"),
    ("stop_limit_bad_price", {**PLACE_STOP, "type": "stop_limit", "price": "-1"}, "INVALID_PRICE"),
]
METHODS = ["FOO", "PUT", "TRACE", "PROPFIND", "PURGE", "OPTIONS"]
METHOD_PATHS = ["/v1/orders", "/v1/account", "/v1/instruments", "/v1/withdraw", "/v1/admin/deposit"]
TRAILING_SLASH: list[tuple[str, str, str]] = [
    ("GET", "/v1/orders/", "key"), ("POST", "/v1/orders/", "key"), ("DELETE", "/v1/orders/", "key"),
    ("GET", "/v1/account/", "key"), ("GET", "/v1/positions/", "key"), ("POST", "/v1/withdraw/", "key"),
    ("POST", "/v1/leverage/", "key"), ("POST", "/v1/admin/deposit/", "admin"),
    ("POST", "/v1/admin/accounts/", "admin"), ("GET", "/v1/admin/engine/", "admin"),
    ("GET", "/v1/instruments/", "none"), ("GET", "/v1/orderbook/BTC-PERP/", "none"),
    ("GET", "/v1/trades/BTC-PERP/", "none"), ("GET", "/v1/insurance-fund/", "none"),
    ("GET", "/healthz/", "none"), ("GET", "/readyz/", "none"), ("GET", "/v1//orders", "key"),
    ("GET", "/v1/funding/BTC-PERP/", "none"), ("GET", "/v1/funding/", "none"),
    ("POST", "/v1/admin/funding/", "admin"), ("POST", "/v1/admin/index-price/", "admin"),
]


def _with(body: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    return {**body, name: value}


def _label(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 20 else f"{text[:16]}..x{len(text)}"


def bad_decimals() -> Iterator[Case]:
    for route, name, error in DECIMAL_FIELDS:
        _, method, path, auth, body, _ = _ROUTE[route]
        for label, value in BAD_DECIMALS:
            yield Case(
                f"decimal-{route}-{name}-{label}", method, path, auth, _with(body, name, value),
                400, error,
            )
    _, method, path, auth, body, _ = _ROUTE["funding"]
    for label, value in BAD_RATES:
        yield Case(
            f"rate-funding-{label}", method, path, auth, _with(body, "rate", value), 400,
            "INVALID_FUNDING_RATE",
        )


def bad_ids() -> Iterator[Case]:
    for method in ("GET", "PATCH", "DELETE"):
        body = {"qty": "0.02"} if method == "PATCH" else _NO_BODY
        for oid in BAD_PATH_IDS:
            yield Case(
                f"path_id-{method}-order-{oid[:24]}", method, f"/v1/orders/{oid}", "key", body,
                400, "INVALID_ID",
            )
    for aid in BAD_PATH_IDS:
        yield Case(
            f"path_id-GET-admin-account-{aid[:24]}", "GET", f"/v1/admin/accounts/{aid}", "admin",
            _NO_BODY, 400, "INVALID_ID",
        )
    for label, raw in BAD_BODY_IDS:
        body = b'{"account_id": ' + raw + b', "amount": "1"}'
        # a 400-digit number is no JSON number a parser holds: malformed before it is an id
        error = "MALFORMED_JSON" if label == "huge" else "INVALID_ID"
        yield Case(f"body_id-deposit-{label}", "POST", "/v1/admin/deposit", "admin", body, 400, error)


def bad_queries() -> Iterator[Case]:
    for path in ("/v1/orderbook/BTC-PERP?depth=", "/v1/trades/BTC-PERP?limit="):
        param = path.split("?")[1]
        for text in BAD_COUNTS:
            yield Case(
                f"count-{param}{text[:12]!r}", "GET", path + quote(text, safe=""), "none",
                _NO_BODY, 400, "VALIDATION_ERROR",
            )
    for symbol in ("DOGE-PERP", "A" * 40):
        for method in ("GET", "DELETE"):
            yield Case(
                f"query_symbol-{method}-{symbol[:12]}", method, f"/v1/orders?symbol={symbol}",
                "key", _NO_BODY, 400, None,
            )


def bad_bodies() -> Iterator[Case]:
    for route, method, path, auth, body, required in BODY_ROUTES:
        for name in required:
            missing = {k: v for k, v in body.items() if k != name}
            yield Case(f"missing-{route}-{name}", method, path, auth, missing, 400, "VALIDATION_ERROR")
        extra = _with(body, "extra", 1)
        yield Case(f"unknown_field-{route}", method, path, auth, extra, 400, "VALIDATION_ERROR")
        yield Case(f"empty_body-{route}", method, path, auth, b"", 400, None)
        yield Case(f"null_body-{route}", method, path, auth, b"null", 400, None)
        for label, raw in NOT_OBJECTS:
            yield Case(f"not_object-{route}-{label}", method, path, auth, raw, 400, None)
        for label, raw in MALFORMED:
            yield Case(f"malformed-{route}-{label}", method, path, auth, raw, 400, None)
        huge = orjson.dumps(_with(body, "pad", "x" * 70_000))
        yield Case(f"oversized-{route}", method, path, auth, huge, 413, "BODY_TOO_LARGE")
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        yield Case(f"form_encoded-{route}", method, path, auth, b"amount=1", 400, None, form)
        if auth == "key":
            yield Case(f"no_key-{route}", method, path, "none", body, 401, "UNAUTHORIZED")
            yield Case(f"bad_key-{route}", method, path, "bad_key", body, 401, "UNAUTHORIZED")
        else:
            yield Case(f"no_token-{route}", method, path, "none", body, 403, "FORBIDDEN")
            yield Case(f"bad_token-{route}", method, path, "bad_admin", body, 403, "FORBIDDEN")
    for route, name, value in WRONG_TYPES:
        _, method, path, auth, body, _ = _ROUTE[route]
        yield Case(
            f"wrong_type-{route}-{name}-{_label(value)}", method, path, auth,
            _with(body, name, value), None, None,
        )
    for label, body, error in BAD_STOPS:
        yield Case(f"stop-{label}", "POST", "/v1/orders", "key", body, 400, error)
    for bad in ({"extra": 1}, [], b"{"):
        body_name = _label(bad)
        yield Case(f"create_account-{body_name}", "POST", "/v1/admin/accounts", "admin", bad, 400)


def bad_routes() -> Iterator[Case]:
    for method in METHODS:
        for path in METHOD_PATHS:
            yield Case(
                f"method-{method}-{path}", method, path, "key", _NO_BODY, 405, "METHOD_NOT_ALLOWED"
            )
    for method, path, auth in TRAILING_SLASH:
        body = PLACE if method == "POST" else _NO_BODY
        yield Case(f"trailing_slash-{method}-{path}", method, path, auth, body, 404, "NOT_FOUND")
    yield Case("unknown_route", "GET", "/v1/nothing-here", "none", _NO_BODY, 404, "NOT_FOUND")
    yield Case(
        "unknown_symbol_in_path", "GET", "/v1/orderbook/DOGE-PERP", "none", _NO_BODY, 404,
        "INVALID_SYMBOL",
    )
    yield Case(
        "unknown_symbol_in_funding_path", "GET", "/v1/funding/DOGE-PERP", "none", _NO_BODY, 404,
        "INVALID_SYMBOL",
    )


def corpus() -> Iterator[Case]:
    yield from bad_decimals()
    yield from bad_ids()
    yield from bad_queries()
    yield from bad_bodies()
    yield from bad_routes()


CASES = list(corpus())


def test_corpus_when_generated_holds_at_least_300_distinct_requests() -> None:
    assert len(CASES) >= 300
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"


@pytest.fixture(scope="module")
def clients(api: Api) -> Iterator[dict[str, Any]]:
    api.set_mark("BTC-PERP", "50000")
    _, key = api.new_account("5000")
    with api.as_key(key) as c:
        r = c.post("/v1/orders", json=PLACE)
        assert r.status_code == 200, r.text
        oid = r.json()["order_id"]
    base = api.service.base_url
    out = {
        "key": httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=10),
        "admin": httpx.Client(base_url=base, headers={"X-Admin-Token": ADMIN_TOKEN}, timeout=10),
        "none": httpx.Client(base_url=base, timeout=10),
        "bad_key": httpx.Client(base_url=base, headers={"X-API-Key": "not-a-key"}, timeout=10),
        "bad_admin": httpx.Client(base_url=base, headers={"X-Admin-Token": "x" * 24}, timeout=10),
        "oid": oid,
    }
    yield out
    out["key"].delete("/v1/orders")  # leave the shared book as found: later modules cross it
    for client in out.values():
        if isinstance(client, httpx.Client):
            client.close()


def _engine(api: Api) -> tuple[int, str]:
    body = api.admin("GET", "/v1/admin/engine").json()
    return body["seq"], body["state_hash"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_request_when_hostile_answers_4xx_error_body_and_changes_nothing(
    api: Api, clients: dict[str, Any], case: Case
) -> None:
    before = _engine(api)
    client: httpx.Client = clients[case.auth]
    kw: dict[str, Any] = {}
    if isinstance(case.body, bytes):
        kw["content"] = case.body
        kw["headers"] = {"Content-Type": "application/json", **case.headers}
    elif case.body is not _NO_BODY:
        kw["content"] = dumps_exact(case.body)  # integers beyond 64 bits too
        kw["headers"] = {"Content-Type": "application/json", **case.headers}
    r = client.request(case.method, case.path.replace("{oid}", str(clients["oid"])), **kw)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.headers.get("content-type", "").startswith("application/json"), (r.headers, r.text)
    body = r.json()
    assert isinstance(body, dict) and {"code", "error", "message"} <= set(body), body
    assert isinstance(body["code"], int) and isinstance(body["error"], str), body
    assert isinstance(body["message"], str) and body["message"], body
    if case.status is not None:
        assert r.status_code == case.status, (r.status_code, body)
    if case.error is not None:
        assert body["error"] == case.error, body
    assert "location" not in r.headers
    assert _engine(api) == before, f"{case.name} changed the engine"
