"""ASGI guard: per-address abuse limits, in front of everything (the order fast path included).

For each HTTP request, before any route or the fast path runs (SPEC §10a, service/limits.py):

1. an address that has used up its failed authentications gets 429 for every request that
   carries `X-API-Key` or `X-Admin-Token`, before the credential is checked;
2. the request's weight is taken from the address's budget (`request_weight`: reads by
   their size, order entry and other keyed commands 0, a valid admin token 0); 429 when the
   budget is short (skipped with EXCHANGE_RATE_LIMITS=off);
3. the answer's status is watched: a 401 or 403 counts one failed authentication.

The Binance edge's key header (`X-MBX-APIKEY`) counts as a key like `X-API-Key`, and its
refusals carry Binance's body (`{"code": -1003, "msg": ...}`). Otherwise a refusal is the
SPEC error body, 429 `RATE_LIMITED` with `Retry-After`, written here in one
go, `REFUSAL_DELAY_S` after the request came (the refused client had to wait anyway). A
refusal still costs about what `/healthz` does; the delay is what bounds a flood: a
connection that keeps asking gets at most 1 / `REFUSAL_DELAY_S` answers a second, so a
hostile client's cost grows with its connections, not with its request rate. At most
`MAX_DELAYED` refusals wait at once (beyond, they are answered at once), so a flood of
one-request connections cannot hold many sockets open by being delayed. The per-key budget
is checked later, with the key (api/deps.py `authenticate`); the same delay applies to its
refusals (api/deps.py and the fast path answer 429; `watch` holds the answer). WebSocket connections are limited in
service/ws_hub.py.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiCode, ApiError
from service.limits import Refusal, client_key, request_weight

_READS = frozenset(("GET", "HEAD"))
_BINANCE_PATHS = ("/fapi/", "/sapi/")
_AUTH_FAILED = frozenset((401, 403))
REFUSAL_DELAY_S = 0.1
MAX_DELAYED = 256


class AbuseGuard:
    """Per-address request budget and failed-authentication throttle; see the module docstring."""

    def __init__(self, app: ASGIApp, owner: Any) -> None:
        self.app = app
        self.owner = owner  # the FastAPI app, whose state holds the services (set at start)
        self.delayed = 0  # refusals waiting out REFUSAL_DELAY_S now

    async def _delay(self) -> None:
        """Hold a 429 for REFUSAL_DELAY_S (unless MAX_DELAYED already wait)."""
        if self.delayed >= MAX_DELAYED:
            return
        self.delayed += 1
        try:
            await asyncio.sleep(REFUSAL_DELAY_S)
        finally:
            self.delayed -= 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = self.owner.state.services
        limits = services.limits
        address = client_key(scope)
        api_key = admin = None
        for name, value in scope["headers"]:
            if name == b"x-api-key" or name == b"x-mbx-apikey":  # /v1 and the Binance edge
                api_key = value
            elif name == b"x-admin-token":
                admin = value
        if api_key is not None or admin is not None:
            refused = limits.auth_throttled(address)
            if refused is not None:
                await self._delay()
                await _refuse(services, send, refused, scope["path"])
                return
        if limits.rate_limits:
            if admin is not None and hmac.compare_digest(
                admin, services.settings.admin_token.encode()
            ):
                weight = 0
            elif scope["method"] in _READS:
                weight = request_weight(scope["path"], scope["query_string"])
            else:
                weight = 0 if api_key is not None else 1  # keyed commands: the key's budget
            refused = limits.charge(address, weight)
            if refused is not None:
                await self._delay()
                await _refuse(services, send, refused, scope["path"])
                return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if status in _AUTH_FAILED:
                    limits.auth_failed(address)
                elif status == 429:  # the key's budget (api/deps.py, the fast path)
                    await self._delay()
            await send(message)

        await self.app(scope, receive, watch)


async def _refuse(services: Any, send: Send, refused: Refusal, path: str) -> None:
    services.metrics.rate_limited.inc()
    message = f"{refused.message}; retry after {refused.retry_after} s"
    if path.startswith(_BINANCE_PATHS):  # the Binance edge's own error body (ccxt: DDoSProtection)
        body = orjson.dumps({"code": -1003, "msg": f"Too many requests; {message}."})
    else:
        body = orjson.dumps(ApiError.api(429, ApiCode.RATE_LIMITED, message).body())
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", refused.retry_after.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
