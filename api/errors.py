"""The error body and status codes of the HTTP API (SPEC §9).

Every error answers `{"code": <int>, "error": "UPPER_SNAKE", "message": "..."}` (plus
`order_id` for DUPLICATE_CLIENT_ORDER_ID). Engine rejections keep their engine codes
(engine/errors.py: 1xxx validation, 2xxx risk, 3xxx matching, 4xxx accounts); problems
found at the API edge have their own 5xxx range below (51xx is the WebSocket edge, in
service/ws_hub.py). FastAPI's own validation errors, malformed JSON and unknown routes are
mapped here too, so no default `{"detail": ...}` / 422 body ever leaks.

Status codes: 400 validation and business rejections, 401 missing/unknown X-API-Key,
403 bad X-Admin-Token, 404 unknown order/account/symbol-in-path/route, 405, 409
DUPLICATE_CLIENT_ORDER_ID and MARK_SOURCE_IS_INDEX (an admin mark on a symbol whose mark
follows its index: the request conflicts with the symbol's configuration), 413 body too
large, 429 rate limited (Retry-After), 500 bug, 503 engine halted / not ready.
"""

from __future__ import annotations

import logging
from enum import IntEnum
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from engine.errors import Reject

log = logging.getLogger("api")


class ApiCode(IntEnum):
    """Errors raised at the API edge (5xxx). The name is the body's `error`."""

    UNAUTHORIZED = 5001
    FORBIDDEN = 5002
    MALFORMED_JSON = 5003
    VALIDATION_ERROR = 5004
    BODY_TOO_LARGE = 5005
    RATE_LIMITED = 5006
    ENGINE_HALTED = 5007
    NOT_FOUND = 5008
    METHOD_NOT_ALLOWED = 5009
    NOT_READY = 5010
    INTERNAL_ERROR = 5011
    INVALID_ID = 5012  # an id in a path or body that is not an integer in 1..2^63-1
    MALFORMED_REQUEST = 5013  # refused by the HTTP parser (request line, headers): api/http_protocol.py


# Engine rejections that are not 400.
_REJECT_STATUS = {
    Reject.ORDER_NOT_FOUND: 404,
    Reject.ACCOUNT_NOT_FOUND: 404,
    Reject.DUPLICATE_CLIENT_ORDER_ID: 409,
    Reject.MARK_SOURCE_IS_INDEX: 409,
}


class ApiError(Exception):
    """An error answer: HTTP status plus the SPEC error body."""

    def __init__(
        self,
        status: int,
        code: int,
        error: str,
        message: str,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.error = error
        self.message = message
        self.extra = extra
        self.headers = headers

    @classmethod
    def api(
        cls, status: int, code: ApiCode, message: str, headers: dict[str, str] | None = None
    ) -> ApiError:
        return cls(status, int(code), code.name, message, headers=headers)

    @classmethod
    def reject(cls, reason: Reject, message: str, status: int | None = None) -> ApiError:
        """An engine reject code raised at the edge (e.g. an off-grid price)."""
        return cls(status or _REJECT_STATUS.get(reason, 400), int(reason), reason.name, message)

    @classmethod
    def from_event(cls, event: Any) -> ApiError:
        """The answer to an `OrderRejected` / `CommandRejected` engine event."""
        reason = Reject(event.code)
        extra = None
        if reason is Reject.DUPLICATE_CLIENT_ORDER_ID:
            extra = {"order_id": event.order_id}
        return cls(_REJECT_STATUS.get(reason, 400), event.code, event.reason, event.message, extra)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "error": self.error, "message": self.message}
        if self.extra:
            out.update(self.extra)
        return out

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.body()), self.status, self.headers, media_type="application/json"
        )


def not_found(what: str) -> ApiError:
    return ApiError.api(404, ApiCode.NOT_FOUND, what)


# -- validation errors ----------------------------------------------------------------------

# Field name -> the engine reject code a bad value of it maps to.
_FIELD_CODES = {
    "symbol": Reject.INVALID_SYMBOL,
    "side": Reject.INVALID_SIDE,
    "type": Reject.INVALID_ORDER_TYPE,
    "qty": Reject.INVALID_QUANTITY,
    "price": Reject.INVALID_PRICE,
    "time_in_force": Reject.INVALID_TIME_IN_FORCE,
    "stp": Reject.INVALID_STP,
    "amount": Reject.INVALID_AMOUNT,
    "leverage": Reject.INVALID_LEVERAGE,
    "policy": Reject.INVALID_ADL_POLICY,
    "mode": Reject.INVALID_MARGIN_MODE,
    "client_order_id": Reject.INVALID_CLIENT_ORDER_ID,
    "rate": Reject.INVALID_FUNDING_RATE,
    "trigger_price": Reject.INVALID_TRIGGER_PRICE,
    "trigger_by": Reject.INVALID_TRIGGER_BY,
}


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) if parts else "body"


def validation_error(errors: list[Any] | tuple[Any, ...]) -> ApiError:
    """One ApiError for a list of pydantic/FastAPI error dicts (the first error decides)."""
    if not errors:
        return ApiError.api(400, ApiCode.VALIDATION_ERROR, "invalid request")
    err = errors[0]
    kind = err.get("type", "")
    loc = tuple(err.get("loc", ()))
    where = _where(loc)
    if kind == "json_invalid":
        detail = (err.get("ctx") or {}).get("error", "")
        return ApiError.api(
            400, ApiCode.MALFORMED_JSON, f"malformed JSON body{': ' + detail if detail else ''}"
        )
    if kind == "missing":
        if (loc and loc[-1] == "body") or loc == ("body",):
            return ApiError.api(400, ApiCode.VALIDATION_ERROR, "a JSON object body is required")
        return ApiError.api(400, ApiCode.VALIDATION_ERROR, f"{where}: field required")
    if kind == "invalid_id":
        return ApiError.api(400, ApiCode.INVALID_ID, f"{where}: {err.get('msg', 'invalid id')}")
    if kind == "extra_forbidden":
        return ApiError.api(400, ApiCode.VALIDATION_ERROR, f"{where}: unknown field")
    if kind in ("model_attributes_type", "dict_type", "model_type"):
        return ApiError.api(
            400,
            ApiCode.VALIDATION_ERROR,
            "the body must be a JSON object (Content-Type: application/json)",
        )
    field = loc[-1] if loc and loc[0] == "body" else None
    reason = _FIELD_CODES.get(field) if isinstance(field, str) else None
    msg = f"{where}: {err.get('msg', 'invalid value')}"
    if reason is not None:
        return ApiError.reject(reason, msg, status=400)
    return ApiError.api(400, ApiCode.VALIDATION_ERROR, msg)


# -- handlers -------------------------------------------------------------------------------


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _request_validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return validation_error(list(exc.errors())).response()


async def _pydantic_validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return validation_error([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]).response()


async def _http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers) if exc.headers else None
    if status == 404:
        return ApiError.api(404, ApiCode.NOT_FOUND, "no such route", headers).response()
    if status == 405:
        return ApiError.api(
            405, ApiCode.METHOD_NOT_ALLOWED, "method not allowed on this route", headers
        ).response()
    if status == 413:
        return ApiError.api(
            413, ApiCode.BODY_TOO_LARGE, "request body too large", headers
        ).response()
    if status == 400:
        return ApiError.api(400, ApiCode.MALFORMED_JSON, str(exc.detail), headers).response()
    code = ApiCode.VALIDATION_ERROR if status < 500 else ApiCode.INTERNAL_ERROR
    return ApiError(status, int(code), code.name, str(exc.detail), headers=headers).response()


async def _unhandled(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return ApiError.api(500, ApiCode.INTERNAL_ERROR, "internal error").response()


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the SPEC error body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _pydantic_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unhandled)
