"""Admin routes (`X-Admin-Token`): accounts, deposits, insurance fund, marks, index prices,
funding rounds, ADL policy.

Commands that can set off liquidations (mark, index, funding) answer from the engine loop's
`after` callback, once everything the command caused has run: the answer lists the
liquidations and ADL fills of that command only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.responses import Response

from api import convert
from api.deps import AdminDep, ServicesDep
from api.errors import ApiError
from api.response_models import (
    ERROR_RESPONSES,
    AccountOut,
    AdlPolicyOut,
    BalanceOut,
    CreatedAccountOut,
    EngineStateOut,
    ErrorBody,
    FundingOut,
    IndexPriceOut,
    InsuranceFundOut,
    MarkPriceOut,
)
from api.responses import json_response, rejection, submit
from api.routes.account import balance_after
from api.routing import JSONRoute
from api.schemas import (
    AdlPolicyRequest,
    CreateAccountRequest,
    DepositRequest,
    FundingRequest,
    IndexPriceRequest,
    MarkPriceRequest,
    PathId,
    TopUpRequest,
)
from api.views import account_body
from engine.accounts import INSURANCE_FUND_ID
from engine.commands import (
    MARK_FROM_INDEX,
    ApplyFunding,
    CreateAccount,
    Deposit,
    SetAdlPolicy,
    SetIndexPrice,
    SetMarkPrice,
    TopUpInsuranceFund,
)
from engine.engine import Engine
from engine.errors import Reject
from engine.events import (
    AccountLiquidated,
    FundingPaid,
    FundingRateChanged,
    IndexPriceChanged,
    InsuranceFundChanged,
    PositionDeleveraged,
)
from service.format import EventFormatter, money_str, price_str
from service.keys import hash_key, new_api_key

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=JSONRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    **{k: v for k, v in ERROR_RESPONSES.items() if k not in (401, 429)},
    403: {"model": ErrorBody, "description": "missing or wrong X-Admin-Token"},
}


@router.post(
    "/accounts",
    response_model=CreatedAccountOut,
    responses=_ERRORS,
    summary="Create an account and its API key",
)
async def create_account(
    services: ServicesDep, _admin: AdminDep, body: CreateAccountRequest | None = None
) -> Response:
    api_key = new_api_key()
    key_hash = hash_key(api_key)
    events = await submit(services, CreateAccount(key_hash))
    err = rejection(events)
    if err is not None:
        raise err
    account_id = events[0].account_id
    services.keys.add(key_hash, account_id)
    # api_secret: signs /fapi requests (derived from the key, service/keys.py; api/binance/)
    api_secret = services.keys.api_secret(key_hash)
    return json_response({"account_id": account_id, "api_key": api_key, "api_secret": api_secret})


@router.post(
    "/deposit",
    response_model=BalanceOut,
    responses={**_ERRORS, 404: {"model": ErrorBody}},
    summary="Credit an account",
)
async def deposit(services: ServicesDep, _admin: AdminDep, body: DepositRequest) -> Response:
    return json_response(
        await submit(services, Deposit(body.account_id, body.amount), balance_after)
    )


def _topped_up(engine: Engine, events: list[Any]) -> Any:
    return rejection(events) or {"balance": money_str(engine.insurance_fund.wallet_atoms)}


@router.post(
    "/insurance-fund",
    response_model=InsuranceFundOut,
    responses=_ERRORS,
    summary="Top up the insurance fund",
)
async def top_up(services: ServicesDep, _admin: AdminDep, body: TopUpRequest) -> Response:
    return json_response(await submit(services, TopUpInsuranceFund(body.amount), _topped_up))


def _fallout(formatter: EventFormatter, events: list[Any]) -> dict[str, Any]:
    """The liquidations and ADL fills a command set off."""
    data = formatter.data
    return {
        "liquidations": [data(e) for e in events if type(e) is AccountLiquidated],
        "adl_fills": [data(e) for e in events if type(e) is PositionDeleveraged],
    }


def _mark_result(formatter: EventFormatter) -> Any:
    def after(engine: Engine, events: list[Any]) -> Any:
        return rejection(events) or _fallout(formatter, events)

    return after


def _index_result(formatter: EventFormatter) -> Any:
    def after(engine: Engine, events: list[Any]) -> Any:
        err = rejection(events)
        if err is not None:
            return err
        idx = next(e for e in events if type(e) is IndexPriceChanged)
        inst = engine.instruments[idx.symbol]
        return {
            "symbol": idx.symbol,
            "index_price": price_str(inst, idx.price_ticks),
            "basis": price_str(inst, idx.basis_ticks),
            "mark_price": price_str(inst, engine.marks.get(idx.symbol)),
            **_fallout(formatter, events),
        }

    return after


def _funding_result(formatter: EventFormatter) -> Any:
    def after(engine: Engine, events: list[Any]) -> Any:
        err = rejection(events)
        if err is not None:
            return err
        rate = next(e for e in events if type(e) is FundingRateChanged)
        residue = sum(
            e.delta_atoms
            for e in events
            if type(e) is InsuranceFundChanged and e.reason == "funding"
        )
        return {
            **formatter.data(rate),  # symbol, rate, premium, samples, mark_price
            "payments": sum(1 for e in events if type(e) is FundingPaid),
            "insurance_fund_delta": money_str(residue),
            **_fallout(formatter, events),
        }

    return after


@router.post(
    "/mark-price",
    response_model=MarkPriceOut,
    responses={
        **_ERRORS,
        409: {"model": ErrorBody, "description": "MARK_SOURCE_IS_INDEX: the mark follows the index"},
    },
    summary="Set a mark price; answers the liquidations and ADL fills it caused",
)
async def mark_price(services: ServicesDep, _admin: AdminDep, body: MarkPriceRequest) -> Response:
    inst = convert.instrument(services.engine, body.symbol)
    if inst.mark_source == MARK_FROM_INDEX:  # fixed by the config: refused before the journal
        raise ApiError.reject(
            Reject.MARK_SOURCE_IS_INDEX,
            f"the mark of {body.symbol} follows its index (mark_source = index); "
            "set the index with POST /v1/admin/index-price",
        )
    command = SetMarkPrice(body.symbol, convert.ticks(inst, body.price))
    return json_response(await submit(services, command, _mark_result(services.formatter)))


@router.post(
    "/index-price",
    response_model=IndexPriceOut,
    responses=_ERRORS,
    summary="Set an index price; answers the basis, the mark and what the move set off",
)
async def index_price(
    services: ServicesDep, _admin: AdminDep, body: IndexPriceRequest
) -> Response:
    """Record the symbol's index (SPEC §12): the basis EMA and a premium sample move when both
    sides of the book are present; on a `mark_source = index` symbol the mark becomes
    median(index, index + basis, last trade) and liquidations run as after any mark move."""
    inst = convert.instrument(services.engine, body.symbol)
    command = SetIndexPrice(body.symbol, convert.ticks(inst, body.price))
    return json_response(await submit(services, command, _index_result(services.formatter)))


@router.post(
    "/funding",
    response_model=FundingOut,
    responses=_ERRORS,
    summary="Apply a funding round now, at a given rate or the computed one",
)
async def apply_funding(services: ServicesDep, _admin: AdminDep, body: FundingRequest) -> Response:
    """One funding round of the symbol at its mark (SPEC §12). `rate` is per interval, a signed
    fraction rounded half-even to 8 decimals; without it the rate comes from the premium
    samples since the last round. Liquidations run after the payments."""
    convert.instrument(services.engine, body.symbol)
    command = ApplyFunding(body.symbol, body.rate)
    return json_response(await submit(services, command, _funding_result(services.formatter)))


def _policy_set(engine: Engine, events: list[Any]) -> Any:
    return rejection(events) or {"symbol": events[0].symbol, "policy": events[0].policy}


@router.put(
    "/adl-policy", response_model=AdlPolicyOut, responses=_ERRORS, summary="ADL policy of a symbol"
)
async def adl_policy(services: ServicesDep, _admin: AdminDep, body: AdlPolicyRequest) -> Response:
    convert.instrument(services.engine, body.symbol)
    return json_response(
        await submit(services, SetAdlPolicy(body.symbol, body.policy), _policy_set)
    )


@router.get(
    "/accounts/{account_id}",
    response_model=AccountOut,
    responses={**_ERRORS, 404: {"model": ErrorBody}},
    summary="Any account, same shape as GET /v1/account",
)
async def get_account(
    services: ServicesDep,
    _admin: AdminDep,
    account_id: Annotated[PathId, Path(description="account id, 1..2^63-1 (else 400 INVALID_ID)")],
) -> Response:
    if account_id == INSURANCE_FUND_ID or account_id not in services.engine.accounts:
        raise ApiError.reject(Reject.ACCOUNT_NOT_FOUND, f"account {account_id} does not exist")
    return json_response(account_body(services.engine, account_id))


@router.get("/engine", response_model=EngineStateOut, responses=_ERRORS, summary="Engine seq, state hash, durability")
async def engine_state(services: ServicesDep, _admin: AdminDep) -> Response:
    """For operators and recovery checks: the state hash equals a replay of the data dir."""
    return json_response(
        {
            "seq": services.engine.seq,
            "state_hash": services.engine.state_hash(),
            "journal_records": services.journal.records,
            "fsync": services.settings.fsync,
            "fsyncs": services.journal.fsyncs,
            "last_published_seq": services.publisher.last_published_seq,
            "publish_backlog": services.publisher.backlog(),
        }
    )
