"""Public market data: instruments, order book, recent trades, insurance fund, funding."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from api import convert
from api.deps import ServicesDep
from api.response_models import (
    ERROR_RESPONSES,
    BookOut,
    ErrorBody,
    FundingStateOut,
    InstrumentOut,
    InsuranceFundOut,
    TradeOut,
)
from api.responses import json_response
from api.schemas import Count1000
from engine.units import e8_to_str
from service.format import funding_state, money_str, ppm_str, price_str

router = APIRouter(prefix="/v1", tags=["market data"])

SymbolPath = Annotated[str, Path(description="instrument symbol", examples=["BTC-PERP"])]
_404: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown symbol"},
    400: ERROR_RESPONSES[400],
}


@router.get(
    "/instruments", response_model=list[InstrumentOut], summary="Instrument specs, tiers and fees"
)
async def instruments(services: ServicesDep) -> Response:
    engine = services.engine
    out = []
    for symbol in engine.symbols:
        inst = engine.instruments[symbol]
        out.append(
            {
                "symbol": symbol,
                "tick_size": e8_to_str(inst.tick_size_e8),
                "lot_size": e8_to_str(inst.lot_size_e8),
                "max_leverage": inst.max_leverage,
                "default_leverage": inst.default_leverage,
                "maker_fee_ppm": inst.maker_fee_ppm,
                "taker_fee_ppm": inst.taker_fee_ppm,
                "market_band_ppm": inst.market_band_ppm,
                "liquidation_band_ppm": inst.liquidation_band_ppm,
                "price_band_ppm": inst.price_band_ppm,
                "max_order_qty": e8_to_str(inst.qty_e8(inst.max_order_lots)),
                "max_order_notional": money_str(inst.max_order_notional_atoms),
                "tiers": [
                    {
                        "max_notional": money_str(t.max_notional_atoms),
                        "maintenance_ppm": t.maintenance_ppm,
                        "maintenance_amount": money_str(t.maintenance_amount_atoms),
                        "max_leverage": t.max_leverage,
                    }
                    for t in inst.tiers
                ],
                "mark_price": price_str(inst, engine.marks.get(symbol)),
                "adl_policy": engine.adl_policy[symbol],
                "mark_source": inst.mark_source,
                "index_price": price_str(inst, engine.index.get(symbol)),
                "basis_weight_ppm": inst.basis_weight_ppm,
                "funding_interval_s": inst.funding_interval_s,
                "interest_rate": ppm_str(inst.interest_ppm),
                "funding_cap": ppm_str(inst.funding_cap_ppm),
            }
        )
    return json_response(out)


@router.get(
    "/orderbook/{symbol}",
    response_model=BookOut,
    responses=_404,
    summary="Aggregated book, best first",
)
async def orderbook(
    services: ServicesDep,
    symbol: SymbolPath,
    depth: Annotated[Count1000, Query(description="levels per side")] = 20,
) -> Response:
    engine = services.engine
    convert.instrument(engine, symbol, in_path=True)
    bids, asks = engine.books[symbol].depth(depth)
    body = services.formatter.book(symbol, bids, asks)
    return json_response(
        {"symbol": symbol, "seq": engine.seq, "bids": body["bids"], "asks": body["asks"]}
    )


@router.get(
    "/trades/{symbol}",
    response_model=list[TradeOut],
    responses=_404,
    summary="Recent trades, newest first",
)
async def trades(
    services: ServicesDep,
    symbol: SymbolPath,
    limit: Annotated[Count1000, Query(description="trades, newest first")] = 100,
) -> Response:
    engine = services.engine
    convert.instrument(engine, symbol, in_path=True)
    recent = engine.recent_trades[symbol]
    fmt = services.formatter.public_trade
    out = [fmt(recent[i]) for i in range(len(recent) - 1, max(len(recent) - 1 - limit, -1), -1)]
    return json_response(out)


@router.get(
    "/insurance-fund", response_model=InsuranceFundOut, summary="Insurance fund balance and bad debt"
)
async def insurance_fund(services: ServicesDep) -> Response:
    engine = services.engine
    return json_response(
        {
            "balance": money_str(engine.insurance_fund.wallet_atoms),
            "bad_debt": money_str(engine.bad_debt_atoms),
        }
    )


@router.get(
    "/funding/{symbol}",
    response_model=FundingStateOut,
    responses=_404,
    summary="Index, mark, basis, premium, predicted rate, next funding time, recent rates",
)
async def funding(services: ServicesDep, symbol: SymbolPath) -> Response:
    """The funding state of one symbol now (SPEC §12); `next_funding_time` is read from the
    service clock, aligned to the epoch like the scheduler's rounds."""
    engine = services.engine
    convert.instrument(engine, symbol, in_path=True)
    return json_response(funding_state(engine, symbol, time.time_ns()))
