"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from api.deps import ServicesDep
from api.errors import ApiCode, ApiError
from api.schemas import ErrorBody, StatusOut

router = APIRouter(tags=["system"])

_OK = b'{"status":"ok"}'


@router.get("/healthz", response_model=StatusOut, summary="Liveness: 200 while the process serves")
async def healthz() -> Response:
    return Response(_OK, media_type="application/json")


@router.get(
    "/readyz",
    response_model=StatusOut,
    responses={503: {"model": ErrorBody}},
    summary="Readiness: engine loop running and, when configured, Redis reachable",
)
async def readyz(services: ServicesDep) -> Response:
    ok, why = await services.ready()
    if not ok:
        raise ApiError.api(503, ApiCode.NOT_READY, why)
    return Response(b'{"status":"ready"}', media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
