"""The authenticated account: balances, positions, leverage, margin mode and isolated
position margin (SPEC §12), withdrawals."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from api import convert
from api.deps import AccountDep, ServicesDep
from api.response_models import (
    ERROR_RESPONSES,
    AccountOut,
    BalanceOut,
    LeverageOut,
    MarginModeOut,
    PositionMarginOut,
    PositionOut,
)
from api.responses import json_response, rejection, submit
from api.routing import JSONRoute
from api.schemas import LeverageRequest, MarginModeRequest, PositionMarginRequest, WithdrawRequest
from api.views import account_body, position_body
from engine.commands import AdjustPositionMargin, SetLeverage, SetMarginMode, Withdraw
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


def _margin_mode_set(engine: Engine, events: list[Any]) -> Any:
    err = rejection(events)
    if err is not None:
        return err
    return {"symbol": events[0].symbol, "mode": events[0].mode}


@router.post(
    "/margin-mode",
    response_model=MarginModeOut,
    responses=ERROR_RESPONSES,
    summary="Cross or isolated margin in one symbol (only with no position and no open orders there)",
)
async def margin_mode(
    services: ServicesDep, account_id: AccountDep, body: MarginModeRequest
) -> Response:
    convert.instrument(services.engine, body.symbol)
    return json_response(
        await submit(services, SetMarginMode(account_id, body.symbol, body.mode), _margin_mode_set)
    )


def _position_margin_set(engine: Engine, events: list[Any]) -> Any:
    err = rejection(events)
    if err is not None:
        return err
    e = events[0]
    return {
        "symbol": e.symbol,
        "amount": money_str(e.delta_atoms),
        "isolated_margin": money_str(e.isolated_margin_atoms),
        "wallet_balance": money_str(e.wallet_balance_atoms),
    }


@router.post(
    "/position-margin",
    response_model=PositionMarginOut,
    responses=ERROR_RESPONSES,
    summary="Add (amount > 0) or remove (< 0, down to its initial margin) an isolated position's margin",
)
async def position_margin(
    services: ServicesDep, account_id: AccountDep, body: PositionMarginRequest
) -> Response:
    convert.instrument(services.engine, body.symbol)
    return json_response(
        await submit(
            services, AdjustPositionMargin(account_id, body.symbol, body.amount), _position_margin_set
        )
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
