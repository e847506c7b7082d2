"""`GET /v1/events`: the service's own event history (SPEC §9), oldest first, no Redis needed.

Without a token it serves the events the public WebSocket channels carry (trades without
account or order ids, marks, index and funding rates, liquidations, ADL fills, insurance-fund
changes); with `X-Admin-Token` every event type, each exactly as `exchange:events` holds it.
Recent events come from memory, older ones are regenerated from the journal (service/history.py).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from starlette.responses import Response

from api.deps import ServicesDep
from api.errors import ApiCode, ApiError
from api.response_models import ERROR_RESPONSES, ErrorBody, EventsOut
from api.responses import json_response
from api.schemas import Count1000, PathId
from engine import events as ev

router = APIRouter(prefix="/v1", tags=["market data"])

PUBLIC_TYPES = frozenset(
    {
        "trade",
        "mark_price_changed",
        "index_price_changed",
        "funding_rate_changed",
        "liquidation",
        "position_reduced",
        "adl",
        "insurance_fund_changed",
    }
)
ALL_TYPES = frozenset(  # the TYPE of a blank event of each class (the property reads no field)
    cls._make((None,) * len(cls._fields)).TYPE for cls in ev.Event.__args__
)


@router.get(
    "/events",
    response_model=EventsOut,
    responses={**ERROR_RESPONSES, 403: {"model": ErrorBody, "description": "admin-only types without a valid token"}},
    summary="Past events, oldest first (types, from_seq, limit)",
    description="The service's own history: recent events from memory, older ones regenerated "
    "from the journal. Without `X-Admin-Token`: the public types "
    f"({', '.join(sorted(PUBLIC_TYPES))}); with it, every type. Read on from `next_from_seq` "
    "(null once the last delivered event was reached). `first_available_seq` > `from_seq` "
    "when older events were pruned behind a snapshot and cannot be rebuilt.",
)
async def events(
    services: ServicesDep,
    types: Annotated[
        str | None, Query(max_length=512, description="comma-separated event types, e.g. liquidation,adl")
    ] = None,
    from_seq: Annotated[PathId | None, Query(description="first seq to return (default 1)")] = None,
    limit: Annotated[Count1000 | None, Query(description="at most this many events (default 100)")] = None,
    x_admin_token: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    admin = False
    if x_admin_token is not None:
        if not hmac.compare_digest(x_admin_token.encode(), services.settings.admin_token.encode()):
            raise ApiError.api(403, ApiCode.FORBIDDEN, "valid X-Admin-Token required")
        admin = True
    allowed = ALL_TYPES if admin else PUBLIC_TYPES
    if types is None:
        wanted_types = allowed
    else:
        wanted_types = frozenset(t.strip() for t in types.split(",") if t.strip())
        unknown = sorted(wanted_types - ALL_TYPES)
        if unknown or not wanted_types:
            raise ApiError.api(
                400, ApiCode.VALIDATION_ERROR, f"unknown event types {unknown}; known: {sorted(ALL_TYPES)}"
            )
        private = sorted(wanted_types - allowed)
        if private:
            raise ApiError.api(403, ApiCode.FORBIDDEN, f"event types {private} need X-Admin-Token")
    start = 1 if from_seq is None else from_seq
    found, next_from, first_available = await services.history.read(
        start, 100 if limit is None else limit, lambda e: e.TYPE in wanted_types
    )
    fmt = services.formatter
    out: list[dict[str, Any]] = []
    for e in found:
        data = fmt.public_trade(e) if type(e) is ev.TradeExecuted and not admin else fmt.data(e)
        out.append({"type": e.TYPE, "seq": e.seq, "ts_ns": e.ts_ns, "data": data})
    return json_response(
        {"events": out, "next_from_seq": next_from, "first_available_seq": first_available}
    )
