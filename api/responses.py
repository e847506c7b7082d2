"""orjson responses and engine submission helpers shared by the route modules."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from api.errors import ApiCode, ApiError
from engine.commands import Command
from engine.events import REJECTION_TYPES
from service.engine_loop import After, EngineHalted
from service.runtime import Services


def json_response(body: Any, status: int = 200) -> Response:
    """`body` serialised with orjson (routes build plain data; no per-request pydantic)."""
    return Response(orjson.dumps(body), status, media_type="application/json")


async def submit(services: Services, command: Command, after: After | None = None) -> Any:
    """Hand `command` to the engine loop; an ApiError returned by `after` is raised here."""
    try:
        result = await services.loop.submit(command, after)
    except EngineHalted as exc:
        raise ApiError.api(503, ApiCode.ENGINE_HALTED, exc.message) from None
    if isinstance(result, ApiError):
        raise result
    return result


def rejection(events: list[Any]) -> ApiError | None:
    """The ApiError for a rejected command, or None when it went through."""
    if events and isinstance(events[0], REJECTION_TYPES):
        return ApiError.from_event(events[0])
    return None
