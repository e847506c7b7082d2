"""Order entry and order queries of the authenticated account.

`POST /v1/orders` is the hot path: `place_order_raw` parses and authenticates by hand (same
functions as the dependencies) and is served by the ASGI fast path (api/fastpath.py); the
route below documents it in the OpenAPI and serves it if the fast path is bypassed.
Every answer is the order as it stood right after its own command (the snapshot is taken in
the engine task by the `after` callback, before later commands of the batch run).
Another account's order id answers 404 ORDER_NOT_FOUND, exactly like a missing one; an
order id that is not an integer in 1..2^63-1 answers 400 INVALID_ID before anything runs.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from api import convert
from api.deps import AccountDep, ServicesDep, authenticate
from api.errors import ApiCode, ApiError, validation_error
from api.response_models import ERROR_RESPONSES, AccountFillOut, CanceledOut, ErrorBody, OrderOut
from api.responses import json_response, rejection, submit
from api.routing import JSONRoute
from api.schemas import AmendOrderRequest, PathId, PlaceOrderRequest, body_schema
from api.views import fill_body, order_body
from engine.commands import AmendOrder, CancelAllOrders, CancelOrder, PlaceOrder
from engine.engine import Engine
from engine.errors import Reject
from engine.events import OrderCanceled
from service.runtime import Services

router = APIRouter(prefix="/v1", tags=["orders"], route_class=JSONRoute)

OrderId = Annotated[PathId, Path(description="order id, 1..2^63-1 (else 400 INVALID_ID)")]
ClientOrderId = Annotated[str, Path(min_length=1, max_length=64, description="the order's client_order_id")]
_ORDER_ERRORS = {
    **ERROR_RESPONSES,
    404: {"model": ErrorBody, "description": "no such order of this account"},
}


def _placed(account_id: int) -> Any:
    def after(engine: Engine, events: list[Any]) -> Any:
        err = rejection(events)
        if err is not None:
            return err
        order = engine.find_order(account_id, events[0].order_id)
        assert order is not None
        return order_body(engine, order)

    return after


def _order_after(account_id: int, order_id: int) -> Any:
    def after(engine: Engine, events: list[Any]) -> Any:
        err = rejection(events)
        if err is not None:
            return err
        order = engine.find_order(account_id, order_id)
        assert order is not None
        return order_body(engine, order)

    return after


def _canceled(engine: Engine, events: list[Any]) -> Any:
    err = rejection(events)
    if err is not None:
        return err
    return {"canceled": [e.order_id for e in events if type(e) is OrderCanceled]}


async def place_order_raw(services: Services, api_key: str | None, raw: bytes) -> dict[str, Any]:
    """Authenticate, parse, convert and submit one order; the order after matching.

    Shared by the documented route below and the ASGI fast path (api/fastpath.py).
    """
    account_id = authenticate(services, api_key)
    if not raw:
        raise ApiError.api(400, ApiCode.VALIDATION_ERROR, "a JSON object body is required")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError.api(400, ApiCode.MALFORMED_JSON, f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError.api(400, ApiCode.VALIDATION_ERROR, "the body must be a JSON object")
    try:
        req = PlaceOrderRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    inst = convert.instrument(services.engine, req.symbol)
    _check_trigger_fields(req)
    command = PlaceOrder(
        account_id,
        req.symbol,
        req.side,
        0 if req.qty is None else convert.lots(inst, req.qty),  # 0: close_position (the engine refuses a qty there)
        None if req.price is None else convert.ticks(inst, req.price),
        req.type,
        req.time_in_force,
        req.post_only,
        req.reduce_only,
        req.stp,
        req.client_order_id,
        trigger_price_ticks=None if req.trigger_price is None else convert.trigger_ticks(inst, req.trigger_price),
        trigger_by=req.trigger_by,
        close_position=req.close_position,
    )
    result: dict[str, Any] = await submit(services, command, _placed(account_id))
    return result


def _check_trigger_fields(req: PlaceOrderRequest) -> None:
    """SPEC §12 field combinations refused at the edge (the engine checks them too), so that
    they never reach the journal: the codes are the engine's."""
    if req.type in ("limit", "market"):
        if req.trigger_price is not None or req.close_position or req.trigger_by != "mark":
            raise ApiError.reject(
                Reject.TRIGGER_NOT_ALLOWED,
                "trigger_price, trigger_by and close_position are for stop and take-profit orders",
            )
    elif req.trigger_price is None:
        raise ApiError.reject(Reject.INVALID_TRIGGER_PRICE, "trigger_price: required for stop and take-profit orders")
    elif req.close_position and req.type not in ("stop_market", "take_profit_market"):
        raise ApiError.reject(Reject.TRIGGER_NOT_ALLOWED, "close_position only on stop_market and take_profit_market")
    if req.close_position:
        if req.qty is not None:
            raise ApiError.reject(
                Reject.INVALID_QUANTITY, "qty: a close_position order takes none (it closes the whole position)"
            )
    elif req.qty is None:
        raise ApiError.api(400, ApiCode.VALIDATION_ERROR, "qty: field required (only a close_position order omits it)")


@router.post(
    "/orders",
    response_model=OrderOut,
    responses={
        **ERROR_RESPONSES,
        409: {"model": ErrorBody, "description": "DUPLICATE_CLIENT_ORDER_ID (names order_id)"},
    },
    openapi_extra={**body_schema(PlaceOrderRequest), "security": [{"ApiKey": []}]},
    summary="Place an order; answers the order after matching",
)
async def place_order(request: Request) -> Response:
    """Documents the route; requests are normally answered by api/fastpath.py before they get here."""
    services: Services = request.app.state.services
    body = await place_order_raw(services, request.headers.get("x-api-key"), await request.body())
    return json_response(body)


@router.get(
    "/orders",
    response_model=list[OrderOut],
    responses=ERROR_RESPONSES,
    summary="Open orders of the account (untriggered stops included)",
)
async def open_orders(
    services: ServicesDep,
    account_id: AccountDep,
    symbol: Annotated[str | None, Query(max_length=32, description="only this symbol")] = None,
) -> Response:
    engine = services.engine
    if symbol is not None:
        convert.instrument(engine, symbol)
    acct = engine.accounts[account_id]
    orders = sorted(  # resting orders and untriggered stops (status `untriggered`)
        (o for held in (acct.open_orders, acct.stop_orders) for o in held.values() if symbol is None or o.symbol == symbol),
        key=lambda o: o.order_id,
    )
    return json_response([order_body(engine, o) for o in orders])


@router.get(
    "/orders/{order_id}",
    response_model=OrderOut,
    responses=_ORDER_ERRORS,
    summary="One order of the account, open or recently closed",
)
async def get_order(services: ServicesDep, account_id: AccountDep, order_id: OrderId) -> Response:
    order = services.engine.find_order(account_id, order_id)
    if order is None:
        raise ApiError.reject(Reject.ORDER_NOT_FOUND, f"no order {order_id}")
    return json_response(order_body(services.engine, order))


async def _amend(services: Services, account_id: int, order: Any, body: AmendOrderRequest, by_client_id: bool) -> Response:
    inst = services.engine.instruments[order.symbol]
    command = AmendOrder(
        account_id,
        0 if by_client_id else order.order_id,
        None if body.price is None else convert.ticks(inst, body.price),
        None if body.qty is None else convert.lots(inst, body.qty),
        client_order_id=order.client_order_id if by_client_id else None,
        trigger_price_ticks=None if body.trigger_price is None else convert.trigger_ticks(inst, body.trigger_price),
    )
    return json_response(await submit(services, command, _order_after(account_id, order.order_id)))


@router.patch(
    "/orders/{order_id}",
    response_model=OrderOut,
    responses=_ORDER_ERRORS,
    summary="Amend price and/or total quantity; answers the order after any matching",
)
async def amend_order(
    services: ServicesDep, account_id: AccountDep, order_id: OrderId, body: AmendOrderRequest
) -> Response:
    order = services.engine.find_order(account_id, order_id)
    if order is None or order.status in ("filled", "canceled", "rejected"):
        raise ApiError.reject(Reject.ORDER_NOT_FOUND, f"no open order {order_id}")
    return await _amend(services, account_id, order, body, False)


@router.patch(
    "/orders/by-client-id/{client_order_id}",
    response_model=OrderOut,
    responses=_ORDER_ERRORS,
    summary="Amend an open order named by its client_order_id",
)
async def amend_order_by_client_id(
    services: ServicesDep, account_id: AccountDep, client_order_id: ClientOrderId, body: AmendOrderRequest
) -> Response:
    order = _open_by_client_id(services.engine, account_id, client_order_id)
    return await _amend(services, account_id, order, body, True)


def _open_by_client_id(engine: Engine, account_id: int, client_order_id: str) -> Any:
    """The open (or untriggered stop) order of the account with this client order id (404
    ORDER_NOT_FOUND if none)."""
    acct = engine.accounts[account_id]
    order_id = acct.client_order_ids.get(client_order_id)
    order = (acct.open_orders.get(order_id) or acct.stop_orders.get(order_id)) if order_id is not None else None
    if order is None:
        raise ApiError.reject(Reject.ORDER_NOT_FOUND, f"no open order with client_order_id {client_order_id!r}")
    return order


@router.delete(
    "/orders/{order_id}",
    response_model=OrderOut,
    responses=_ORDER_ERRORS,
    summary="Cancel one order",
)
async def cancel_order(
    services: ServicesDep, account_id: AccountDep, order_id: OrderId
) -> Response:
    command = CancelOrder(account_id, order_id)
    return json_response(await submit(services, command, _order_after(account_id, order_id)))


@router.delete(
    "/orders",
    response_model=CanceledOut | OrderOut,
    responses=_ORDER_ERRORS,
    summary="Cancel all (optionally by symbol), or one order by client_order_id",
    description="With `client_order_id`: cancels that open order and answers it (like "
    "`DELETE /v1/orders/{order_id}`); it cannot be combined with `symbol`. Without: cancels "
    "every open order (of `symbol` if given) and answers their ids.",
)
async def cancel_all(
    services: ServicesDep,
    account_id: AccountDep,
    symbol: Annotated[str | None, Query(max_length=32, description="only this symbol")] = None,
    client_order_id: Annotated[
        str | None, Query(min_length=1, max_length=64, description="cancel only this order")
    ] = None,
) -> Response:
    if client_order_id is not None:
        if symbol is not None:
            raise ApiError.api(400, ApiCode.VALIDATION_ERROR, "give either symbol or client_order_id, not both")
        order = _open_by_client_id(services.engine, account_id, client_order_id)
        command = CancelOrder(account_id, 0, client_order_id=client_order_id)
        return json_response(await submit(services, command, _order_after(account_id, order.order_id)))
    if symbol is not None:
        convert.instrument(services.engine, symbol)
    return json_response(await submit(services, CancelAllOrders(account_id, symbol), _canceled))


@router.get(
    "/fills",
    response_model=list[AccountFillOut],
    responses=ERROR_RESPONSES,
    summary="The account's own fills (trade history), newest first",
    description="Book trades (maker/taker) and the closes of its positions by liquidation and "
    "ADL, each with the PnL it realized. The last 1,000 per account are kept (`fills_kept`).",
)
async def fills(
    services: ServicesDep,
    account_id: AccountDep,
    symbol: Annotated[str | None, Query(max_length=32, description="only this symbol")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many (1..1000)")] = 100,
) -> Response:
    engine = services.engine
    if symbol is not None:
        convert.instrument(engine, symbol)
    out: list[dict[str, Any]] = []
    for fill in reversed(engine.accounts[account_id].fills):
        if symbol is None or fill.symbol == symbol:
            out.append(fill_body(engine, fill))
            if len(out) == limit:
                break
    return json_response(out)
