"""Route classes.

`JSONRoute` (every body-taking router): FastAPI route that parses JSON bodies with orjson,
which is strict (a `NaN`/`Infinity` literal is malformed JSON, as it should be) and fast.
`orjson.JSONDecodeError` subclasses `json.JSONDecodeError`, so FastAPI reports it as
`json_invalid`, which api/errors.py answers 400 MALFORMED_JSON.

The order-entry hot path bypasses the framework altogether: see api/fastpath.py.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """APIRoute whose JSON bodies are parsed by orjson."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route_handler
