"""The authenticated account: balances, positions, leverage, withdrawals."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from api import convert
from api.deps import AccountDep, ServicesDep
from api.responses import json_response, rejection, submit
from api.routing import JSONRoute
from api.schemas import (
    ERROR_RESPONSES,
    AccountOut,
    BalanceOut,
    LeverageOut,
    LeverageRequest,
    PositionOut,
    WithdrawRequest,
)
from api.views import account_body, position_body
from engine.commands import SetLeverage, Withdraw
from engine.engine import Engine
from engine.views import positions_view
from service.format import money_str

router = APIRouter(prefix="/v1", tags=["account"], route_class=JSONRoute)


@router.get(
    "/account",
    response_model=AccountOut,
    responses=ERROR_RESPONSES,
    summary="Balances, margins, positions",
)
async def account(services: ServicesDep, account_id: AccountDep) -> Response:
    return json_response(account_body(services.engine, account_id))


@router.get(
    "/positions",
    response_model=list[PositionOut],
    responses=ERROR_RESPONSES,
    summary="Open positions",
)
async def positions(services: ServicesDep, account_id: AccountDep) -> Response:
    engine = services.engine
    return json_response(
        [position_body(engine, account_id, p) for p in positions_view(engine, account_id)]
    )


def _leverage_set(engine: Engine, events: list[Any]) -> Any:
    err = rejection(events)
    if err is not None:
        return err
    return {"symbol": events[0].symbol, "leverage": events[0].leverage}


@router.post(
    "/leverage",
    response_model=LeverageOut,
    responses=ERROR_RESPONSES,
    summary="Set leverage in one symbol",
)
async def leverage(
    services: ServicesDep, account_id: AccountDep, body: LeverageRequest
) -> Response:
    convert.instrument(services.engine, body.symbol)
    return json_response(
        await submit(services, SetLeverage(account_id, body.symbol, body.leverage), _leverage_set)
    )


def balance_after(engine: Engine, events: list[Any]) -> Any:
    """`{account_id, amount, wallet_balance}` from a deposit/withdrawal event."""
    err = rejection(events)
    if err is not None:
        return err
    e = events[0]
    return {
        "account_id": e.account_id,
        "amount": money_str(e.amount_atoms),
        "wallet_balance": money_str(e.wallet_balance_atoms),
    }


@router.post(
    "/withdraw",
    response_model=BalanceOut,
    responses=ERROR_RESPONSES,
    summary="Withdraw up to `available`",
)
async def withdraw(
    services: ServicesDep, account_id: AccountDep, body: WithdrawRequest
) -> Response:
    return json_response(await submit(services, Withdraw(account_id, body.amount), balance_after))
