"""Market-data routes of `/fapi` (security NONE): ping, time, exchangeInfo, depth, trades,
aggTrades, premiumIndex, fundingRate, fundingInfo, tickers, openInterest.

`ticker/24hr` counts the trades the engine keeps (the last 1,000 per symbol) of the last 24 h;
`aggTrades` has one aggregate per engine trade. market_streams.py renders its mark-price
stream with `mark_index`, `next_funding_ms` and `predicted_funding_e8` from here.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

from api.binance import errors as err
from api.binance.common import MAX_PRICE_E8, limit_of, one_or_all, ppm, symbol_of, symbols
from api.binance.signing import integer
from api.binance.views import ASSET, ms, now_ms
from engine.engine import Engine
from engine.funding import funding_rate, to_e8
from engine.instruments import Instrument
from engine.units import E8, PPM, div_half_even, e8_to_str
from service.funding_times import next_funding_time_ns

if TYPE_CHECKING:
    from api.binance.edge import Call

_DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
DAY_MS = 86_400_000


# -- market data (NONE) ------------------------------------------------------------------------


async def ping(call: Call) -> Any:
    return {}


async def server_time(call: Call) -> Any:
    return {"serverTime": now_ms()}


def _filters(inst: Instrument, max_open_orders: int) -> list[dict[str, Any]]:
    tick, lot = e8_to_str(inst.tick_size_e8), e8_to_str(inst.lot_size_e8)
    max_qty = e8_to_str(inst.qty_e8(inst.max_order_lots))
    band = inst.price_band_ppm
    return [
        {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": e8_to_str(MAX_PRICE_E8), "tickSize": tick},
        {"filterType": "LOT_SIZE", "minQty": lot, "maxQty": max_qty, "stepSize": lot},
        {"filterType": "MARKET_LOT_SIZE", "minQty": lot, "maxQty": max_qty, "stepSize": lot},
        {"filterType": "MAX_NUM_ORDERS", "limit": max_open_orders},
        # SPEC §12: stops count toward the one open-order limit
        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": max_open_orders},
        {"filterType": "MIN_NOTIONAL", "notional": "0"},
        {
            "filterType": "PERCENT_PRICE",
            "multiplierUp": e8_to_str((PPM + band) * 100),
            "multiplierDown": e8_to_str((PPM - band) * 100),
            "multiplierDecimal": "6",
        },
    ]


def _precision(step_e8: int) -> int:
    """Decimal places of a step (`0.001` -> 3)."""
    text = e8_to_str(step_e8)
    return len(text.partition(".")[2])


async def exchange_info(call: Call) -> Any:
    engine, venue = call.engine, call.venue
    settings = call.services.settings
    per_min = int(settings.rate_limit_per_s * 60)
    symbols = []
    for symbol in engine.symbols:
        inst = engine.instruments[symbol]
        first = inst.tiers[0]
        symbols.append(
            {
                "symbol": venue.to_binance[symbol],
                "pair": venue.to_binance[symbol],
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000,
                "status": "TRADING",
                "maintMarginPercent": e8_to_str(first.maintenance_ppm * 100 * 100),
                "requiredMarginPercent": e8_to_str(div_half_even(100 * E8, inst.max_leverage)),
                "baseAsset": venue.base[symbol],
                "quoteAsset": ASSET,
                "marginAsset": ASSET,
                "pricePrecision": _precision(inst.tick_size_e8),
                "quantityPrecision": _precision(inst.lot_size_e8),
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "settlePlan": 0,
                "triggerProtect": "0",
                "liquidationFee": "0",
                "marketTakeBound": ppm(inst.market_band_ppm),
                "maxMoveOrderLimit": 0,
                "filters": _filters(inst, engine.max_open_orders),
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            }
        )
    return {
        "timezone": "UTC",
        "serverTime": now_ms(),
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": int(settings.ip_weight_per_s * 60)},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": per_min},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": ASSET, "marginAvailable": True, "autoAssetExchange": "0"}],
        "symbols": symbols,
    }


async def depth(call: Call) -> Any:
    symbol = symbol_of(call)
    assert symbol is not None
    limit = limit_of(call, 500, 1000)
    if limit not in _DEPTH_LIMITS:
        raise err.BinanceError(-4021, "Invalid depth limit.", detail=f"limit must be one of {_DEPTH_LIMITS}")
    engine = call.engine
    inst = engine.instruments[symbol]
    bids, asks = engine.books[symbol].depth(limit)
    t = now_ms()
    tick, lot = inst.tick_size_e8, inst.lot_size_e8
    return {
        "lastUpdateId": engine.seq,
        "E": t,
        "T": t,
        "bids": [[e8_to_str(p * tick), e8_to_str(q * lot)] for p, q in bids],
        "asks": [[e8_to_str(p * tick), e8_to_str(q * lot)] for p, q in asks],
    }


def _recent(call: Call, symbol: str) -> list[Any]:
    return list(call.engine.recent_trades[symbol])


async def trades(call: Call) -> Any:
    symbol = symbol_of(call)
    assert symbol is not None
    limit = limit_of(call, 500, 1000)
    inst = call.engine.instruments[symbol]
    out = []
    for t in _recent(call, symbol)[-limit:]:
        price_e8, qty_e8 = t.price_ticks * inst.tick_size_e8, t.qty_lots * inst.lot_size_e8
        out.append(
            {
                "id": t.trade_id,
                "price": e8_to_str(price_e8),
                "qty": e8_to_str(qty_e8),
                "quoteQty": e8_to_str(t.price_ticks * t.qty_lots * inst.atoms_per_lot_tick),
                "time": ms(t.ts_ns),
                "isBuyerMaker": t.taker_side == "sell",
            }
        )
    return out


async def agg_trades(call: Call) -> Any:
    """One aggregate per engine trade (the engine keeps trades, not taker orders' sweeps)."""
    symbol = symbol_of(call)
    assert symbol is not None
    limit = limit_of(call, 500, 1000)
    from_id = integer(call.params, "fromId")
    start = integer(call.params, "startTime")
    end = integer(call.params, "endTime")
    inst = call.engine.instruments[symbol]
    rows = _recent(call, symbol)
    if from_id is not None:
        rows = [t for t in rows if t.trade_id >= from_id][:limit]
    else:
        if start is not None:
            rows = [t for t in rows if ms(t.ts_ns) >= start]
        if end is not None:
            rows = [t for t in rows if ms(t.ts_ns) <= end]
        rows = rows[:limit] if start is not None else rows[-limit:]
    return [
        {
            "a": t.trade_id,
            "p": e8_to_str(t.price_ticks * inst.tick_size_e8),
            "q": e8_to_str(t.qty_lots * inst.lot_size_e8),
            "f": t.trade_id,
            "l": t.trade_id,
            "T": ms(t.ts_ns),
            "m": t.taker_side == "sell",
        }
        for t in rows
    ]


def predicted_funding_e8(engine: Engine, symbol: str) -> int:
    """The rate the next funding round would apply now (SPEC §12), in parts per 1e8."""
    inst = engine.instruments[symbol]
    samples = engine.premium_samples.get(symbol, 0)
    premium = engine.premium_sum[symbol] / samples if samples else Fraction(0)
    return to_e8(funding_rate(premium, inst.interest_ppm, inst.funding_cap_ppm))


def mark_index(engine: Engine, symbol: str) -> tuple[str, str]:
    """(mark, index) price strings; the index is the mark while none was set."""
    inst = engine.instruments[symbol]
    mark = engine.marks.get(symbol)
    index = engine.index.get(symbol, mark)
    return (
        "0" if mark is None else e8_to_str(mark * inst.tick_size_e8),
        "0" if index is None else e8_to_str(index * inst.tick_size_e8),
    )


def next_funding_ms(inst: Instrument) -> int:
    import time

    return next_funding_time_ns(time.time_ns(), inst.funding_interval_s) // 1_000_000


async def premium_index(call: Call) -> Any:
    engine, venue = call.engine, call.venue

    def render(symbol: str) -> dict[str, Any]:
        inst = engine.instruments[symbol]
        mark, index = mark_index(engine, symbol)
        return {
            "symbol": venue.to_binance[symbol],
            "markPrice": mark,
            "indexPrice": index,
            "estimatedSettlePrice": index,
            "lastFundingRate": e8_to_str(predicted_funding_e8(engine, symbol)),
            "interestRate": ppm(inst.interest_ppm),
            "nextFundingTime": next_funding_ms(inst),
            "time": now_ms(),
        }

    return one_or_all(call, render)


async def funding_rate_history(call: Call) -> Any:
    engine, venue = call.engine, call.venue
    limit = limit_of(call, 100, 1000)
    start = integer(call.params, "startTime")
    end = integer(call.params, "endTime")
    rows = []
    for symbol in symbols(call):
        for ts_ns, rate_e8 in engine.funding_history[symbol]:
            t = ms(ts_ns)
            if (start is None or t >= start) and (end is None or t <= end):
                rows.append((t, symbol, rate_e8))
    rows.sort()
    rows = rows[:limit] if start is not None else rows[-limit:]
    return [
        {"symbol": venue.to_binance[s], "fundingRate": e8_to_str(rate), "fundingTime": t, "markPrice": ""}
        for t, s, rate in rows
    ]


async def funding_info(call: Call) -> Any:
    engine, venue = call.engine, call.venue
    return [
        {
            "symbol": venue.to_binance[s],
            "adjustedFundingRateCap": ppm(engine.instruments[s].funding_cap_ppm),
            "adjustedFundingRateFloor": "-" + ppm(engine.instruments[s].funding_cap_ppm),
            "fundingIntervalHours": engine.instruments[s].funding_interval_s // 3600,
            "disclaimer": False,
        }
        for s in engine.symbols
    ]


async def ticker_24hr(call: Call) -> Any:
    engine, venue = call.engine, call.venue
    now = now_ms()

    def render(symbol: str) -> dict[str, Any]:
        inst = engine.instruments[symbol]
        rows = [t for t in engine.recent_trades[symbol] if now - ms(t.ts_ns) <= DAY_MS]
        tick, lot, k = inst.tick_size_e8, inst.lot_size_e8, inst.atoms_per_lot_tick
        if rows:
            first, last = rows[0], rows[-1]
            volume = sum(t.qty_lots for t in rows)
            quote = sum(t.qty_lots * t.price_ticks for t in rows)
            high = max(t.price_ticks for t in rows)
            low = min(t.price_ticks for t in rows)
            change = last.price_ticks - first.price_ticks
            pct = div_half_even(change * 100 * 1000, first.price_ticks)  # 3 decimals
            weighted = div_half_even(quote * tick, volume)
            return {
                "symbol": venue.to_binance[symbol],
                "priceChange": e8_to_str(change * tick),
                "priceChangePercent": e8_to_str(pct * 100_000),
                "weightedAvgPrice": e8_to_str(weighted),
                "lastPrice": e8_to_str(last.price_ticks * tick),
                "lastQty": e8_to_str(last.qty_lots * lot),
                "openPrice": e8_to_str(first.price_ticks * tick),
                "highPrice": e8_to_str(high * tick),
                "lowPrice": e8_to_str(low * tick),
                "volume": e8_to_str(volume * lot),
                "quoteVolume": e8_to_str(quote * k),
                "openTime": ms(first.ts_ns),
                "closeTime": ms(last.ts_ns),
                "firstId": first.trade_id,
                "lastId": last.trade_id,
                "count": len(rows),
            }
        zero = "0"
        return {
            "symbol": venue.to_binance[symbol], "priceChange": zero, "priceChangePercent": zero,
            "weightedAvgPrice": zero, "lastPrice": zero, "lastQty": zero, "openPrice": zero,
            "highPrice": zero, "lowPrice": zero, "volume": zero, "quoteVolume": zero,
            "openTime": now - DAY_MS, "closeTime": now, "firstId": -1, "lastId": -1, "count": 0,
        }

    return one_or_all(call, render)


async def ticker_price(call: Call) -> Any:
    engine, venue = call.engine, call.venue

    def render(symbol: str) -> dict[str, Any]:
        inst = engine.instruments[symbol]
        last = engine.last_price.get(symbol)
        if last is None and engine.recent_trades[symbol]:
            last = engine.recent_trades[symbol][-1].price_ticks
        return {"symbol": venue.to_binance[symbol], "price": venue.price(inst, last), "time": now_ms()}

    return one_or_all(call, render)


async def book_ticker(call: Call) -> Any:
    engine, venue = call.engine, call.venue

    def render(symbol: str) -> dict[str, Any]:
        inst = engine.instruments[symbol]
        bids, asks = engine.books[symbol].depth(1)
        bid = bids[0] if bids else (None, 0)
        ask = asks[0] if asks else (None, 0)
        t = now_ms()
        return {
            "symbol": venue.to_binance[symbol],
            "bidPrice": venue.price(inst, bid[0]),
            "bidQty": venue.qty(inst, bid[1]),
            "askPrice": venue.price(inst, ask[0]),
            "askQty": venue.qty(inst, ask[1]),
            "time": t,
            "lastUpdateId": engine.seq,
        }

    return one_or_all(call, render)


async def open_interest(call: Call) -> Any:
    symbol = symbol_of(call)
    assert symbol is not None
    engine = call.engine
    longs = sum(max(0, engine.accounts[a].size(symbol)) for a in engine.holders[symbol])
    inst = engine.instruments[symbol]
    return {"openInterest": call.venue.qty(inst, longs), "symbol": call.venue.to_binance[symbol], "time": now_ms()}
