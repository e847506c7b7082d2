"""ASGI middleware: request body size limit (413) and the raw-send hook for WebSockets.

Pure ASGI (no BaseHTTPMiddleware): a request announcing a Content-Length above the limit
is answered 413 without reading the body; a body without Content-Length (chunked) is read
up to the limit first and replayed to the app. WebSocket scopes get
`scope["exchange.raw_send"]`, the server's own send callable, which the hub uses to abort
a slow consumer that no longer reads (service/ws_hub.py).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiCode, ApiError

_NO_BODY = frozenset(("GET", "HEAD", "OPTIONS"))


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                scope["exchange.raw_send"] = send
            await self.app(scope, receive, send)
            return
        if scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
                break
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._reject(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length: read it all (bounded), then replay.
        body = await read_body(receive, self.max_bytes)
        if body is None:
            await self._reject(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        err = ApiError.api(
            413, ApiCode.BODY_TOO_LARGE, f"request body above {self.max_bytes} bytes"
        )
        response = err.response()
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it exceeds `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
