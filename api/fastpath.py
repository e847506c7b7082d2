"""ASGI fast path for order entry: `POST /v1/orders` served in front of the framework stack.

Why: on this FastAPI version every request crosses about ten middleware/router layers
(telemetry, body limits, exception middleware, exit stacks, included-router contexts),
each paid again on every resumption of the request's coroutine. For the order-entry hot
path that overhead was larger than matching itself (profiled with py-spy; see
bench/http_bench.py). `OrderEntryFastPath` sits at the outermost layer of the app's own
middleware stack and answers `POST /v1/orders` directly: header scan, bounded body read,
`place_order_raw` (the same auth, schema, conversion and engine submission as the
documented route), one orjson body. Every other request goes through FastAPI unchanged.

Same contract as the rest of the API: errors are `ApiError` bodies (api/errors.py), bodies
above the limit get 413, an unexpected exception answers 500 INTERNAL_ERROR.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import ApiCode, ApiError
from api.routes.orders import place_order_raw

log = logging.getLogger("api.fastpath")

_JSON = (b"content-type", b"application/json")


class OrderEntryFastPath:
    """Serve POST /v1/orders directly; pass everything else to `app`."""

    def __init__(self, app: ASGIApp, owner: Any, max_body_bytes: int) -> None:
        self.app = app
        self.owner = owner  # the FastAPI app, whose state holds the services
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/orders" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        api_key: str | None = None
        length = -1
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
        extra: list[tuple[bytes, bytes]] = []
        try:
            if length > self.max_body_bytes:
                extra.append((b"connection", b"close"))
                raise ApiError.api(
                    413, ApiCode.BODY_TOO_LARGE, f"request body above {self.max_body_bytes} bytes"
                )
            raw = await self._body(receive)
            result = await place_order_raw(self.owner.state.services, api_key, raw)
            status, payload = 200, orjson.dumps(result)
        except ApiError as err:
            status, payload = err.status, orjson.dumps(err.body())
            if err.headers:
                extra.extend(
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in err.headers.items()
                )
        except Exception:
            log.exception("order entry failed")
            status, payload = (
                500,
                orjson.dumps(ApiError.api(500, ApiCode.INTERNAL_ERROR, "internal error").body()),
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", str(len(payload)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _body(self, receive: Receive) -> bytes:
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ApiError.api(
                    413, ApiCode.BODY_TOO_LARGE, f"request body above {self.max_body_bytes} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)
