"""The ASGI edge of the Binance-compatible API: `/fapi/*`, `/sapi/*` and the stream paths.

Installed as a pure ASGI middleware (api/binance/__init__.py): requests for its paths are
answered here without FastAPI's router and dependency solver, like the /v1 order fast path
(api/fastpath.py) and for the same reason: per-request framework overhead larger than the
work. Everything else passes through unchanged. The per-address abuse limits
(api/guard.py) sit outside and apply to these paths too (request weights by path and
`limit`, 401 counted as failed authentications).

One HTTP request:

1. route lookup by (method, path): unknown path 404 -5000, known path other method 405;
2. body read, bounded by EXCHANGE_MAX_BODY_BYTES (413);
3. by the route's security: NONE; USER_STREAM (`X-MBX-APIKEY` known, -2014 / -2015, 401);
   SIGNED (the key, then the signature over query + body, -1022, then the timestamp window,
   -1021, then, for POST / PUT / DELETE, the replay check, api/binance/signing.py).
   An address throttled for failed authentications gets 429 -1003 before its key is
   looked at; a bad signature counts as a failed authentication too;
4. the key's request budget (service/keys.py RateLimiter, shared with /v1): 429 -1003 with
   Retry-After;
5. parameters the route does not read: -1104; then the handler (the route table
   api/binance/rest.py; handlers in market.py, trading.py, account.py).

Answers are orjson bodies; errors Binance's `{"code", "msg"}` (api/binance/errors.py). An
unexpected exception is logged and answered 500 -1000.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from api.binance import errors as err
from api.binance.common import Route
from api.binance.rest import ROUTES
from api.binance.signing import (
    ReplayGuard,
    check_timestamp,
    parse_params,
    signature_ok,
    split_signature,
)
from api.binance.views import Venue, now_ms
from api.middleware import read_body
from service.keys import retry_after_header
from service.limits import client_key

if TYPE_CHECKING:
    from api.binance.streams import Streams
    from engine.engine import Engine
    from service.runtime import Services

log = logging.getLogger("api.binance")

_JSON = (b"content-type", b"application/json")
_PREFIXES = ("/fapi/", "/sapi/")
_SIGNED_ONLY = frozenset(("timestamp", "recvWindow"))
_WRITES = frozenset(("POST", "PUT", "DELETE"))
_PATHS = frozenset(path for _, path in ROUTES)
WS_PATHS = ("/ws", "/public/ws", "/market/ws", "/private/ws", "/stream")


class Call:
    """One parsed, authenticated request, as a handler sees it."""

    __slots__ = ("account_id", "edge", "engine", "params", "services", "venue")

    def __init__(self, edge: FapiEdge, params: dict[str, str], account_id: int) -> None:
        self.edge = edge
        self.services: Services = edge.services
        self.engine: Engine = edge.engine
        self.venue: Venue = edge.venue
        self.params = params
        self.account_id = account_id


class FapiEdge:
    """Serve the Binance-compatible paths; pass everything else to `app`."""

    def __init__(self, app: ASGIApp, owner: Any) -> None:
        self.app = app
        self.owner = owner  # the FastAPI app: its state holds the services and the streams
        self.replays = ReplayGuard()
        self._services: Services | None = None

    def _bind(self) -> None:
        """Look the running services up once (they exist from the lifespan's start on)."""
        services: Services = self.owner.state.services
        self._services = services
        self.services = services
        self.engine = services.engine
        self.venue = Venue(services.engine)
        self.max_body_bytes: int = self.owner.state.max_body_bytes

    @property
    def streams(self) -> Streams:
        streams: Streams = self.owner.state.binance_streams
        return streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        path: str = scope.get("path", "")
        if kind == "http" and path.startswith(_PREFIXES):
            await self._http(scope, receive, send)
        elif kind == "websocket" and _is_stream_path(path):
            await self.streams.serve(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = []
        if self._services is not self.owner.state.services:
            self._bind()
        try:
            route = ROUTES.get((scope["method"], scope["path"]))
            if route is None:
                raise err.unknown_route() if scope["path"] not in _PATHS else err.method_not_allowed()
            api_key: str | None = None
            length = b""
            for name, value in scope["headers"]:
                if name == b"x-mbx-apikey":
                    api_key = value.decode("latin-1")
                elif name == b"content-length":
                    length = value
            body = await self._body(length, receive)
            result = await self._serve(scope, route, body, api_key)
            status, payload = 200, orjson.dumps(result)
        except err.BinanceError as exc:
            status, payload = exc.status, exc.payload()
            if exc.headers:
                headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            failure = err.internal_error()
            status, payload = failure.status, failure.payload()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", str(len(payload)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _serve(self, scope: Scope, route: Route, body: bytes, api_key: str | None) -> Any:
        query: bytes = scope["query_string"]
        if route.security == "NONE":
            params = parse_params(query, body)
            _only(params, route.params)
            return await route.handler(Call(self, params, 0))
        services = self.services
        address = client_key(scope)
        throttled = services.limits.auth_throttled(address)
        if api_key is not None and throttled is not None:
            raise err.auth_throttled(throttled.retry_after)
        if not api_key:
            raise err.api_key_format()
        account_id = services.keys.lookup(api_key)
        if account_id is None:
            raise err.api_key_invalid()  # 401: counted by the guard as a failed authentication
        if route.security == "SIGNED":
            query, q_sig = split_signature(query)
            body, b_sig = split_signature(body)
            signature = q_sig if q_sig is not None else b_sig
            params = parse_params(query, body)
            if not signature:
                raise err.mandatory("signature")
            secret = services.keys.signing_key(account_id)
            if secret is None or not signature_ok(secret, query + body, signature):
                services.limits.auth_failed(address)
                raise err.bad_signature()
            now = now_ms()
            ts, window = check_timestamp(params, now)
            if scope["method"] in _WRITES and not self.replays.admit(signature, ts, window, now):
                raise err.replayed()
            for name in _SIGNED_ONLY:
                params.pop(name, None)
        else:  # USER_STREAM: the key alone; a timestamp sent along is ignored
            params = parse_params(query, body)
            for name in _SIGNED_ONLY:
                params.pop(name, None)
        wait = services.limiter.acquire(account_id)
        if wait:
            services.metrics.rate_limited.inc()
            raise err.too_many_requests(retry_after_header(wait))
        _only(params, route.params)
        return await route.handler(Call(self, params, account_id))

    async def _body(self, length: bytes, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        if length:
            try:
                too_big = int(length) > limit
            except ValueError:
                raise err.BinanceError(-1104, "Malformed Content-Length.") from None
            if too_big:
                raise err.body_too_large(limit)
        body = await read_body(receive, limit)
        if body is None:
            raise err.body_too_large(limit)
        return body


def _only(params: dict[str, str], allowed: frozenset[str]) -> None:
    for name in params:
        if name not in allowed:
            raise err.unknown_param(name)


def _is_stream_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in WS_PATHS)
