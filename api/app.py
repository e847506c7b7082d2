"""The FastAPI application factory: `create_app(settings)`.

The engine, the engine loop, the Redis publisher and the WebSocket hub are built and
started in the lifespan (on the running event loop) and stopped there on shutdown, in the
order described in service/runtime.py. Routes live in api/routes/*; errors in api/errors.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from api.binance import install as install_binance
from api.errors import install_error_handlers
from api.fastpath import OrderEntryFastPath
from api.guard import AbuseGuard
from api.middleware import BodyLimitMiddleware
from api.routes import account, admin, events, market, orders, system, whatif, ws
from api.static import install as install_static
from service.runtime import Services
from service.settings import Settings

DESCRIPTION = """\
Perpetual-futures exchange core: cross margin, liquidation, insurance fund and
auto-deleveraging. Prices, sizes and money are **decimal strings**; account ids are integers.

* Input is strict: decimals match `^[0-9]+(\\.[0-9]+)?$` (a JSON number is read through its
  shortest decimal form, without an exponent); ids are integers in 1..2^63-1 (else 400
  `INVALID_ID`). Refused input never reaches the engine.
* Account routes need `X-API-Key` (from `POST /v1/admin/accounts`).
* Admin routes need `X-Admin-Token`.
* Errors: `{"code": int, "error": "UPPER_SNAKE", "message": str}`.
* WebSocket: `/v1/ws` (see the README for the protocol).
"""


class ExchangeApp(FastAPI):
    """FastAPI with the order-entry fast path (api/fastpath.py) in front of its middleware,
    and the per-address abuse limits (api/guard.py) in front of both."""

    def build_middleware_stack(self) -> ASGIApp:
        inner = OrderEntryFastPath(super().build_middleware_stack(), self, self.state.max_body_bytes)
        return AbuseGuard(inner, self)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new application with its own engine and services (started by the lifespan)."""
    settings = settings if settings is not None else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services(settings)
        app.state.services = services
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = ExchangeApp(
        title="perp-exchange",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        strict_content_type=False,
        # `/v1/orders/` is not `/v1/orders`: 404 with the error body. Starlette's default
        # answers 307 with a Location built from the client's Host header (an open redirect).
        redirect_slashes=False,
        # We export our own Prometheus metrics; FastAPI's OpenTelemetry hooks would cost an
        # environment lookup per request for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # /docs and /redoc on vendored assets, and the dashboard at / (api/static.py)
        docs_url=None,
        redoc_url=None,
    )
    app.state.max_body_bytes = settings.max_body_bytes
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.include_router(system.router)
    app.include_router(market.router)
    app.include_router(events.router)
    app.include_router(orders.router)
    app.include_router(account.router)
    app.include_router(admin.router)
    app.include_router(whatif.router)
    app.include_router(ws.router)
    install_binance(app)  # /fapi, /sapi and their streams (api/binance/)
    install_static(app)
    return app
