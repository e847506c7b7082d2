"""Binance USDⓈ-M compatible API (SPEC §13): a second edge over the same engine.

The same single writer, journal and events as /v1: commands built here go through
`Services.loop.submit`, streams get their events from the same post-journal delivery as
/v1/ws. What a bot author needs is in docs/binance.md; clients/ccxt_local.py returns a ccxt
`binanceusdm` pointed at a local service.

Modules: edge.py (the ASGI edge: routing, keys, signatures, limits), signing.py (parameters,
HMAC, timestamps, replays), rest.py (the REST route table), with its handlers in market.py
(market data), trading.py (orders) and account.py (account, positions, margin, listen keys)
and their shared helpers in common.py, views.py (Binance shapes of engine state), streams.py
(the WebSocket stream connections) with market_streams.py (market streams) and
user_stream.py (the user-data stream, listen keys), errors.py (Binance error codes and
messages, chosen for ccxt's exception classes), admin.py (an operator's
`GET /v1/admin/accounts/{id}/api-secret`).

`install(app)` is the one hook in api/app.py: the edge as a middleware (in front of the
framework's router, like the /v1 order fast path), the admin route, and a lifespan step
that attaches the server secret (service/keys.py) and the streams once the services run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api.binance import admin
from api.binance.edge import FapiEdge
from api.binance.streams import Streams
from api.binance.views import Venue
from service.keys import load_server_secret


def install(app: FastAPI) -> None:
    """Serve /fapi, /sapi and the stream paths on `app` (call once, before it starts)."""
    app.add_middleware(FapiEdge, owner=app)
    app.include_router(admin.router)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with inner(application) as state:
            services = application.state.services
            services.keys.attach_server_secret(load_server_secret(services.settings.data_dir))
            streams = Streams(services, Venue(services.engine))
            application.state.binance_streams = streams
            streams.attach()
            try:
                yield state
            finally:
                await streams.stop()

    app.router.lifespan_context = lifespan
