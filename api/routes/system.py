"""Liveness, readiness and Prometheus metrics.

Readiness (`/readyz`) is about whether this instance can take orders and publish them: 503
when the engine loop halted, the journal cannot be made durable, Redis is ahead of the
engine (its streams hold another run's history, so publication is stopped), or the publisher
is stuck (its task ended, or every attempt has failed for EXCHANGE_PUBLISH_STALL_S with events
waiting while Redis answers PING). A Redis that is only unreachable keeps it 200: trading
never waits for Redis, and the body shows Redis's state and how many events wait to be
published. Both answers carry the same publication fields.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from api.deps import ServicesDep
from api.errors import ApiCode, ApiError
from api.response_models import ErrorBody, StatusOut

router = APIRouter(tags=["system"])

_OK = b'{"status":"ok"}'


class ReadyOut(BaseModel):
    """/readyz when ready (a 503 is the error body plus the same publication fields)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ready", "message": "Redis unreachable: trading goes on, 120 events wait to be published",
                 "redis": "unreachable", "publisher": "retrying", "engine_seq": 1234, "last_published_seq": 1114,
                 "publish_backlog": 120, "publish_lag_events": 120}
            ]
        }
    )

    status: str = Field(description='"ready"')
    message: str = Field(description='"ok", or what is degraded (Redis unreachable)')
    redis: str = Field(description="ok | unreachable | ahead of the engine | another data dir's streams | not configured")
    publisher: str = Field(
        description="ok | retrying (the last attempt failed) | stuck (no progress although Redis "
        "answers: 503) | stopped (Redis holds another run's history: 503) | in process (no Redis)"
    )
    engine_seq: int
    last_published_seq: int = Field(description="highest seq known to be in exchange:events")
    publish_backlog: int = Field(
        description="events not yet in exchange:events, held in memory or to be regenerated "
        "from the journal (counted from 0 until Redis has answered once since the start)"
    )
    publish_lag_events: int = Field(description="engine seq minus last_published_seq")


@router.get("/healthz", response_model=StatusOut, summary="Liveness: 200 while the process serves")
async def healthz() -> Response:
    return Response(_OK, media_type="application/json")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ErrorBody}},
    summary="Readiness: engine running, journal durable, publication not stopped or stuck (Redis down is still ready)",
)
async def readyz(services: ServicesDep) -> Response:
    ready = await services.ready()
    if not ready.ok:
        raise ApiError(503, int(ApiCode.NOT_READY), ApiCode.NOT_READY.name, ready.message, ready.details())
    body = {"status": "ready", "message": ready.message, **ready.details()}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
