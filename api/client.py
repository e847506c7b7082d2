"""A small typed Python client for this exchange's HTTP and WebSocket API (SPEC §9, §10).

    async with ExchangeClient("http://127.0.0.1:8000", admin_token="...") as admin:
        acct = await admin.create_account()
        await admin.deposit(acct.account_id, "1000")
        async with ExchangeClient(admin.base_url, api_key=acct.api_key) as alice:
            order = await alice.place_order("BTC-PERP", "buy", "0.01", price="10000")
        async with admin.websocket() as ws:
            await ws.subscribe(["adl", "liquidations"])
            async for msg in ws: ...

Amounts, prices and sizes go over the wire as decimal strings; pass `str`, `int` or
`Decimal` (never float). Answers are the API's JSON objects. A 4xx/5xx answer raises
`ApiError` carrying the error body's `code`, `error` and `message`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any

import httpx
import orjson
import websockets

Num = str | int | Decimal
Json = dict[str, Any]


class ApiError(Exception):
    """An error answer: HTTP status plus the body's stable `error` name and numeric `code`."""

    def __init__(self, status: int, body: Json) -> None:
        self.status = status
        self.body = body
        self.code = body.get("code")
        self.error = body.get("error", "")
        self.message = body.get("message", "")
        super().__init__(f"{status} {self.error} ({self.code}): {self.message}")


@dataclass(frozen=True)
class NewAccount:
    account_id: int
    api_key: str


def _num(value: Num) -> str:
    if isinstance(value, float):
        raise TypeError("pass decimals as str, int or Decimal, not float")
    return str(value)


class ExchangeClient:
    """One HTTP connection pool, authenticated as an account (`api_key`) and/or as admin."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        admin_token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.admin_token = admin_token
        headers = {}
        if api_key:
            headers["X-API-Key"] = api_key
        if admin_token:
            headers["X-Admin-Token"] = admin_token
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> ExchangeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Json | None = None, params: Json | None = None) -> Any:
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        resp = await self._http.request(method, path, content=content, params=params, headers=headers)
        data = orjson.loads(resp.content) if resp.content else None
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, data if isinstance(data, dict) else {"message": resp.text})
        return data

    # -- public market data -----------------------------------------------------------------
    async def instruments(self) -> list[Json]:
        return await self._call("GET", "/v1/instruments")  # type: ignore[no-any-return]

    async def orderbook(self, symbol: str, depth: int = 20) -> Json:
        return await self._call("GET", f"/v1/orderbook/{symbol}", params={"depth": depth})  # type: ignore[no-any-return]

    async def trades(self, symbol: str, limit: int = 100) -> list[Json]:
        return await self._call("GET", f"/v1/trades/{symbol}", params={"limit": limit})  # type: ignore[no-any-return]

    async def insurance_fund(self) -> Json:
        return await self._call("GET", "/v1/insurance-fund")  # type: ignore[no-any-return]

    async def healthz(self) -> Json:
        return await self._call("GET", "/healthz")  # type: ignore[no-any-return]

    # -- account ---------------------------------------------------------------------------
    async def place_order(
        self,
        symbol: str,
        side: str,
        qty: Num | None,
        price: Num | None = None,
        type: str | None = None,
        time_in_force: str | None = None,
        post_only: bool | None = None,
        reduce_only: bool | None = None,
        stp: str | None = None,
        client_order_id: str | None = None,
        trigger_price: Num | None = None,
        trigger_by: str | None = None,
        close_position: bool | None = None,
    ) -> Json:
        """Submit an order; returns it after matching (status, fills, avg_price). A stop or
        take-profit `type` (`stop_market`, ...) takes `trigger_price`, `trigger_by` (mark or
        last) and `close_position` (then `qty` is None) and answers `status: untriggered`."""
        body: Json = {"symbol": symbol, "side": side}
        if qty is not None:
            body["qty"] = _num(qty)
        body["type"] = type or ("limit" if price is not None else "market")
        if price is not None:
            body["price"] = _num(price)
        if trigger_price is not None:
            body["trigger_price"] = _num(trigger_price)
        for key, value in (
            ("time_in_force", time_in_force),
            ("post_only", post_only),
            ("reduce_only", reduce_only),
            ("stp", stp),
            ("client_order_id", client_order_id),
            ("trigger_by", trigger_by),
            ("close_position", close_position),
        ):
            if value is not None:
                body[key] = value
        return await self._call("POST", "/v1/orders", body)  # type: ignore[no-any-return]

    async def open_orders(self, symbol: str | None = None) -> list[Json]:
        params = {"symbol": symbol} if symbol else None
        return await self._call("GET", "/v1/orders", params=params)  # type: ignore[no-any-return]

    async def order(self, order_id: int) -> Json:
        return await self._call("GET", f"/v1/orders/{order_id}")  # type: ignore[no-any-return]

    async def amend(self, order_id: int, price: Num | None = None, qty: Num | None = None) -> Json:
        body: Json = {}
        if price is not None:
            body["price"] = _num(price)
        if qty is not None:
            body["qty"] = _num(qty)
        return await self._call("PATCH", f"/v1/orders/{order_id}", body)  # type: ignore[no-any-return]

    async def cancel(self, order_id: int) -> Json:
        return await self._call("DELETE", f"/v1/orders/{order_id}")  # type: ignore[no-any-return]

    async def cancel_all(self, symbol: str | None = None) -> list[int]:
        params = {"symbol": symbol} if symbol else None
        data = await self._call("DELETE", "/v1/orders", params=params)
        return list(data["canceled"])

    async def account(self) -> Json:
        return await self._call("GET", "/v1/account")  # type: ignore[no-any-return]

    async def positions(self) -> list[Json]:
        return await self._call("GET", "/v1/positions")  # type: ignore[no-any-return]

    async def set_leverage(self, symbol: str, leverage: int) -> Json:
        return await self._call("POST", "/v1/leverage", {"symbol": symbol, "leverage": leverage})  # type: ignore[no-any-return]

    async def set_margin_mode(self, symbol: str, mode: str) -> Json:
        """`cross` or `isolated` (only with no position and no open orders in the symbol)."""
        return await self._call("POST", "/v1/margin-mode", {"symbol": symbol, "mode": mode})  # type: ignore[no-any-return]

    async def position_margin(self, symbol: str, amount: Num) -> Json:
        """Add (> 0) or remove (< 0) margin of an isolated position."""
        return await self._call("POST", "/v1/position-margin", {"symbol": symbol, "amount": _num(amount)})  # type: ignore[no-any-return]

    async def withdraw(self, amount: Num) -> Json:
        return await self._call("POST", "/v1/withdraw", {"amount": _num(amount)})  # type: ignore[no-any-return]

    # -- admin -----------------------------------------------------------------------------
    async def create_account(self) -> NewAccount:
        data = await self._call("POST", "/v1/admin/accounts")
        return NewAccount(int(data["account_id"]), str(data["api_key"]))

    async def deposit(self, account_id: int, amount: Num) -> Json:
        return await self._call("POST", "/v1/admin/deposit", {"account_id": account_id, "amount": _num(amount)})  # type: ignore[no-any-return]

    async def top_up_insurance_fund(self, amount: Num) -> Json:
        return await self._call("POST", "/v1/admin/insurance-fund", {"amount": _num(amount)})  # type: ignore[no-any-return]

    async def set_mark_price(self, symbol: str, price: Num) -> Json:
        """Move a mark; returns `{liquidations: [...], adl_fills: [...]}` it caused."""
        return await self._call("POST", "/v1/admin/mark-price", {"symbol": symbol, "price": _num(price)})  # type: ignore[no-any-return]

    async def set_index_price(self, symbol: str, price: Num) -> Json:
        """Record an index price; returns `{symbol, index_price, basis, mark_price,
        liquidations, adl_fills}` once everything it set off has run."""
        return await self._call("POST", "/v1/admin/index-price", {"symbol": symbol, "price": _num(price)})  # type: ignore[no-any-return]

    async def apply_funding(self, symbol: str, rate: Num | None = None) -> Json:
        """A funding round now, at `rate` (a signed fraction per interval) or the computed rate."""
        body: Json = {"symbol": symbol} if rate is None else {"symbol": symbol, "rate": _num(rate)}
        return await self._call("POST", "/v1/admin/funding", body)  # type: ignore[no-any-return]

    async def funding(self, symbol: str) -> Json:
        """Index, mark, basis, premium, predicted rate, next funding time, recent rates."""
        return await self._call("GET", f"/v1/funding/{symbol}")  # type: ignore[no-any-return]

    async def set_adl_policy(self, symbol: str, policy: str) -> Json:
        return await self._call("PUT", "/v1/admin/adl-policy", {"symbol": symbol, "policy": policy})  # type: ignore[no-any-return]

    async def admin_account(self, account_id: int) -> Json:
        return await self._call("GET", f"/v1/admin/accounts/{account_id}")  # type: ignore[no-any-return]

    # -- websocket -------------------------------------------------------------------------
    def websocket(self) -> WsSession:
        """A WebSocket session on /v1/ws (use with `async with`)."""
        url = "ws" + self.base_url.removeprefix("http") + "/v1/ws"
        return WsSession(url)


class WsSession:
    """One WebSocket connection: `subscribe`, `auth`, then iterate messages."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    async def __aenter__(self) -> WsSession:
        self._conn = await websockets.connect(self.url, max_size=1 << 22)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._conn.close()

    async def send(self, message: Json) -> None:
        await self._conn.send(orjson.dumps(message).decode())

    async def subscribe(self, channels: list[str]) -> None:
        await self.send({"op": "subscribe", "channels": channels})

    async def auth(self, api_key: str) -> None:
        await self.send({"op": "auth", "api_key": api_key})

    async def recv(self) -> Json:
        """The next message `{channel, seq, data}`."""
        return orjson.loads(await self._conn.recv())  # type: ignore[no-any-return]

    def __aiter__(self) -> AsyncIterator[Json]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Json]:
        async for raw in self._conn:
            yield orjson.loads(raw)
