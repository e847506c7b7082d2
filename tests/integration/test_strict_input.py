"""SPEC §1 strict input at the API edge (issue 10, findings 2 and 6), against the real service.

Decimal strings must match `^[0-9]+(\\.[0-9]+)?$`; ids must be integers in 1..2^63-1. What
breaks either rule is refused with a 4xx error body before the engine sees it: the engine's
seq and state hash (`GET /v1/admin/engine`) do not move, so nothing was journaled. A JSON
number is read through its shortest decimal form written without an exponent. Unknown HTTP
methods and trailing slashes get the JSON error body too (no plain text, no redirect).
"""

from __future__ import annotations

import socket
from typing import Any

import orjson
import pytest

from tests.integration.helpers import Api, assert_error

ORDER = {"symbol": "BTC-PERP", "side": "buy", "type": "limit", "qty": "0.01", "price": "30000"}


def _engine(api: Api) -> tuple[int, str]:
    body = api.admin("GET", "/v1/admin/engine").json()
    return body["seq"], body["state_hash"]


@pytest.fixture(scope="module")
def trader(api: Api) -> tuple[int, str, int]:
    """(account id, API key, id of one open order)."""
    api.set_mark("BTC-PERP", "50000")
    account_id, key = api.new_account("5000")
    with api.as_key(key) as c:
        r = c.post("/v1/orders", json={**ORDER, "price": "29000"})
        assert r.status_code == 200, r.text
    return account_id, key, int(r.json()["order_id"])


NOT_PLAIN = ["1e3", "1E3", " 49000", "49000 ", "+49000", ".5", "5.", "4_9000", "0x10", "49000\n"]


@pytest.mark.parametrize("text", NOT_PLAIN, ids=repr)
@pytest.mark.parametrize(("field", "error"), [("price", "INVALID_PRICE"), ("qty", "INVALID_QUANTITY")])
def test_place_order_when_decimal_not_plain_answers_400_and_journals_nothing(
    api: Api, trader: tuple[int, str, int], field: str, error: str, text: str
) -> None:
    before = _engine(api)
    with api.as_key(trader[1]) as c:
        r = c.post("/v1/orders", json={**ORDER, field: text})
    assert_error(r, 400, error)
    assert _engine(api) == before


@pytest.mark.parametrize("text", NOT_PLAIN, ids=repr)
def test_withdraw_when_amount_not_plain_answers_400_and_journals_nothing(
    api: Api, trader: tuple[int, str, int], text: str
) -> None:
    before = _engine(api)
    with api.as_key(trader[1]) as c:
        r = c.post("/v1/withdraw", json={"amount": text})
    assert_error(r, 400, "INVALID_AMOUNT")
    assert _engine(api) == before


BAD_IDS = [
    "18446744073709551616",  # 2^64: journaled and wedged publication before
    "9223372036854775808",  # 2^63
    "9" * 400,  # bricked the next restart before
    "0",
    "-1",
    "1.0",
    "+1",
    "01",
    "1e3",
    "%201",
    "0x1",
]


@pytest.mark.parametrize("order_id", BAD_IDS, ids=lambda s: s[:24])
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_order_route_when_path_id_out_of_range_answers_400_and_journals_nothing(
    api: Api, trader: tuple[int, str, int], method: str, order_id: str
) -> None:
    before = _engine(api)
    with api.as_key(trader[1]) as c:
        kw: dict[str, Any] = {"json": {"qty": "0.02"}} if method == "PATCH" else {}
        r = c.request(method, f"/v1/orders/{order_id}", **kw)
    assert_error(r, 400, "INVALID_ID")
    assert _engine(api) == before


@pytest.mark.parametrize("account_id", BAD_IDS, ids=lambda s: s[:24])
def test_admin_get_account_when_path_id_out_of_range_answers_400(api: Api, account_id: str) -> None:
    assert_error(api.admin("GET", f"/v1/admin/accounts/{account_id}"), 400, "INVALID_ID")


@pytest.mark.parametrize(
    "raw",
    [b"0", b"-1", b"9223372036854775808", b"18446744073709551615", b"18446744073709551616",
     b'"1"', b"1.0", b"1e0", b"true", b"null", b"[1]"],
    ids=lambda b: b.decode(),
)
def test_admin_deposit_when_account_id_not_an_id_answers_400_and_journals_nothing(
    api: Api, raw: bytes
) -> None:
    before = _engine(api)
    r = api.http.post(
        "/v1/admin/deposit",
        content=b'{"account_id": ' + raw + b', "amount": "1"}',
        headers={**api.admin_headers, "Content-Type": "application/json"},
    )
    assert_error(r, 400, "INVALID_ID")
    assert _engine(api) == before


@pytest.mark.parametrize(
    ("raw", "price"),
    [(b"3e4", "30000"), (b"2.95E4", "29500"), (b"29000.5", "29000.5"), (b"29000", "29000")],
    ids=["3e4", "2.95E4", "fraction", "integer"],
)
def test_place_order_when_price_is_json_number_reads_plain_decimal(
    api: Api, trader: tuple[int, str, int], raw: bytes, price: str
) -> None:
    body = orjson.dumps({k: v for k, v in ORDER.items() if k != "price"})[:-1] + b',"price":' + raw + b"}"
    with api.as_key(trader[1]) as c:
        r = c.post("/v1/orders", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.json()["price"] == price
        assert c.delete(f"/v1/orders/{r.json()['order_id']}").status_code == 200


def test_place_order_when_json_number_needs_more_than_8_decimals_answers_400(
    api: Api, trader: tuple[int, str, int]
) -> None:
    before = _engine(api)
    body = b'{"symbol":"BTC-PERP","side":"buy","type":"limit","qty":1e-9,"price":"30000"}'
    with api.as_key(trader[1]) as c:
        r = c.post("/v1/orders", content=body, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "INVALID_QUANTITY")
    assert _engine(api) == before


def _raw_request(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` on a bare socket; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("method", [b"FOO", b"G3T", b"get"], ids=lambda b: b.decode())
def test_request_when_method_unknown_answers_json_error_body(api: Api, method: bytes) -> None:
    before = _engine(api)
    status, headers, body = _raw_request(
        api.service.port,
        method + b" /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json"), headers
    parsed = orjson.loads(body)
    assert set(parsed) >= {"code", "error", "message"}, parsed
    assert parsed["error"] == "METHOD_NOT_ALLOWED" and status == 405, (status, parsed)
    assert _engine(api) == before


def test_request_when_http_request_line_malformed_answers_json_error_body(api: Api) -> None:
    status, headers, body = _raw_request(api.service.port, b"GET /v1/instruments HTTP/9.9.9\r\n\r\n")
    assert status == 400 and headers["content-type"].startswith("application/json"), headers
    assert orjson.loads(body)["error"] == "MALFORMED_REQUEST"


@pytest.mark.parametrize(
    "path", ["/v1/orders/", "/v1/account/", "/v1/instruments/", "/v1/orderbook/BTC-PERP/", "/readyz/"]
)
def test_get_when_path_has_trailing_slash_answers_404_json_without_redirect(
    api: Api, trader: tuple[int, str, int], path: str
) -> None:
    status, headers, body = _raw_request(
        api.service.port,
        f"GET {path} HTTP/1.1\r\nHost: evil.example\r\nX-API-Key: {trader[1]}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert "location" not in headers, headers
    assert status == 404 and headers["content-type"].startswith("application/json"), (status, body)
    assert orjson.loads(body)["error"] == "NOT_FOUND"


def test_post_when_path_has_trailing_slash_answers_404_and_journals_nothing(
    api: Api, trader: tuple[int, str, int]
) -> None:
    before = _engine(api)
    with api.as_key(trader[1]) as c:
        r = c.post("/v1/orders/", json=ORDER, follow_redirects=False)
    assert_error(r, 404, "NOT_FOUND")
    assert _engine(api) == before
