"""The `/fapi` REST routes: Binance USDⓈ-M market data, trading and account endpoints.

Each handler takes a `Call` (the parsed, authenticated request, api/binance/edge.py) and
returns plain data that the edge serialises, or raises `BinanceError`. Reads look at engine
state directly (between two commands, like the /v1 routes); commands go through the same
single-writer engine loop as /v1 (`Services.loop.submit`), so they are journaled, published
and fanned out exactly like /v1 commands. Every value is checked here, before a command is
built: a refused request never reaches the engine or the journal.

What is not Binance here (docs/binance.md): one asset `USD`; one-way mode only (positionSide
BOTH); cross margin only (marginType CROSSED answers -4046 "No need to change margin type.",
ISOLATED and positionMargin are refused); no trailing stops (-4136); no GTD;
`ticker/24hr` counts the trades the engine keeps (the last 1,000 per symbol) of the last 24 h.

Stop and take-profit orders (SPEC §12): STOP, STOP_MARKET, TAKE_PROFIT, TAKE_PROFIT_MARKET
with `stopPrice`, `workingType` (CONTRACT_PRICE, Binance's default: the last trade price;
MARK_PRICE: the mark) and `closePosition`, on `POST /fapi/v1/order` (the classic API: the
order keeps its id when it triggers, and shows in `openOrders` as NEW with its stopPrice) and
on the algo-order endpoints ccxt 4.5 uses for conditional orders (`POST/GET/DELETE
/fapi/v1/algoOrder`, `GET /fapi/v1/openAlgoOrders`, `GET /fapi/v1/allAlgoOrders`, `DELETE
/fapi/v1/algoOpenOrders`; `triggerPrice`, `clientAlgoId`, `algoId` = the order id). Both are
the same engine orders: each endpoint family sees every stop of the account.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, cast

from api.binance import errors as err
from api.binance.signing import boolean, decimal_e8, integer
from api.binance.views import ASSET, STP_IN, TYPE_IN, WORKING_TYPE_IN, Venue, ms, now_ms
from engine.accounts import Fill
from engine.commands import CancelAllOrders, CancelOrder, PlaceOrder, SetLeverage
from engine.engine import Engine
from engine.events import REJECTION_TYPES, OrderCanceled
from engine.funding import funding_rate, to_e8
from engine.instruments import Instrument
from engine.units import E8, PPM, div_half_even, e8_to_str
from service.engine_loop import EngineHalted
from service.format import money_str
from service.funding_times import next_funding_time_ns

if TYPE_CHECKING:
    from api.binance.edge import Call

Handler = Callable[["Call"], Awaitable[Any]]

MAX_PRICE_E8 = 1_000_000_000 * E8  # PRICE_FILTER.maxPrice: one billion USD
_CLIENT_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
_STOP_TYPES = frozenset(("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"))
_STOP_MARKET_TYPES = frozenset(("STOP_MARKET", "TAKE_PROFIT_MARKET"))  # closePosition allowed
DAY_MS = 86_400_000
# new-order parameters that need no further check beyond their own (the common case)
_PLAIN_ORDER = frozenset(
    ("symbol", "side", "type", "quantity", "price", "timeInForce", "newClientOrderId", "reduceOnly",
     "newOrderRespType", "selfTradePreventionMode")
)


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: its handler, security type and the parameters it reads."""

    handler: Handler
    security: str  # NONE | USER_STREAM (API key) | SIGNED (API key + signature + timestamp)
    params: frozenset[str] = frozenset()


# -- helpers -----------------------------------------------------------------------------------


async def submit(call: Call, command: Any, after: Callable[[Engine, list[Any]], Any]) -> Any:
    """Hand `command` to the engine loop; a BinanceError returned by `after` is raised."""
    try:
        result = await call.services.loop.submit(command, after)
    except EngineHalted as exc:
        raise err.engine_halted(exc.message) from None
    if isinstance(result, err.BinanceError):
        raise result
    return result


def _rejection(events: list[Any]) -> err.BinanceError | None:
    if events and isinstance(events[0], REJECTION_TYPES):
        return err.from_rejection(events[0])
    return None


def symbol_of(call: Call, required: bool = True) -> str | None:
    """The engine symbol of the `symbol` parameter (-1121 unknown, -1102 missing)."""
    name = call.params.get("symbol")
    if not name:
        if required:
            raise err.mandatory("symbol")
        return None
    symbol = call.venue.to_engine.get(name)
    if symbol is None:
        raise err.invalid_symbol()
    return symbol


def _symbols(call: Call) -> list[str]:
    symbol = symbol_of(call, required=False)
    return [symbol] if symbol is not None else list(call.engine.symbols)


def _one_or_all(call: Call, render: Callable[[str], dict[str, Any]]) -> Any:
    symbol = symbol_of(call, required=False)
    if symbol is not None:
        return render(symbol)
    return [render(s) for s in call.engine.symbols]


def _limit(call: Call, default: int, high: int) -> int:
    value = integer(call.params, "limit", low=1, high=high)
    return default if value is None else value


def _ppm(ppm: int) -> str:
    return e8_to_str(ppm * 100)


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
                "marketTakeBound": _ppm(inst.market_band_ppm),
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
    limit = _limit(call, 500, 1000)
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
    limit = _limit(call, 500, 1000)
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
    limit = _limit(call, 500, 1000)
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
            "interestRate": _ppm(inst.interest_ppm),
            "nextFundingTime": next_funding_ms(inst),
            "time": now_ms(),
        }

    return _one_or_all(call, render)


async def funding_rate_history(call: Call) -> Any:
    engine, venue = call.engine, call.venue
    limit = _limit(call, 100, 1000)
    start = integer(call.params, "startTime")
    end = integer(call.params, "endTime")
    rows = []
    for symbol in _symbols(call):
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
            "adjustedFundingRateCap": _ppm(engine.instruments[s].funding_cap_ppm),
            "adjustedFundingRateFloor": "-" + _ppm(engine.instruments[s].funding_cap_ppm),
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

    return _one_or_all(call, render)


async def ticker_price(call: Call) -> Any:
    engine, venue = call.engine, call.venue

    def render(symbol: str) -> dict[str, Any]:
        inst = engine.instruments[symbol]
        last = engine.last_price.get(symbol)
        if last is None and engine.recent_trades[symbol]:
            last = engine.recent_trades[symbol][-1].price_ticks
        return {"symbol": venue.to_binance[symbol], "price": venue.price(inst, last), "time": now_ms()}

    return _one_or_all(call, render)


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

    return _one_or_all(call, render)


async def open_interest(call: Call) -> Any:
    symbol = symbol_of(call)
    assert symbol is not None
    engine = call.engine
    longs = sum(max(0, engine.accounts[a].size(symbol)) for a in engine.holders[symbol])
    inst = engine.instruments[symbol]
    return {"openInterest": call.venue.qty(inst, longs), "symbol": call.venue.to_binance[symbol], "time": now_ms()}


async def capital_config(call: Call) -> Any:
    """`/sapi/v1/capital/config/getall`, minimally: the one asset, no networks."""
    available = call.venue.totals(call.account_id)["available"]
    return [
        {
            "coin": ASSET, "name": "US Dollar", "depositAllEnable": False, "withdrawAllEnable": False,
            "free": money_str(max(0, available)), "locked": "0", "freeze": "0", "withdrawing": "0",
            "ipoing": "0", "ipoable": "0", "storage": "0", "isLegalMoney": True, "trading": True,
            "networkList": [],
        }
    ]


async def margin_pairs(call: Call) -> Any:
    """`/sapi/v1/margin/allPairs` (ccxt asks it with `fetchCurrencies`): no spot margin here."""
    return []


# -- trading (SIGNED) --------------------------------------------------------------------------


def _order_after(venue: Venue, account_id: int, order_id: int | None, cum_qty: bool = True) -> Callable[[Engine, list[Any]], Any]:
    def after(engine: Engine, events: list[Any]) -> Any:
        rejected = _rejection(events)
        if rejected is not None:
            return rejected
        oid = order_id if order_id is not None else events[0].order_id
        order = engine.find_order(account_id, oid)
        assert order is not None
        return venue.order(order, cum_qty=cum_qty, with_time=False)

    return after


def _grid(inst: Instrument, value_e8: int, step_e8: int) -> int | None:
    if value_e8 <= 0 or value_e8 % step_e8:
        return None
    return value_e8 // step_e8


def _check_extras(p: dict[str, str], kind: str, algo: bool) -> None:
    """The optional new-order parameters this exchange accepts only in their neutral form, and
    the conditional ones only on the types they belong to."""
    if p.get("activationPrice") or p.get("activatePrice") or p.get("callbackRate"):
        raise err.trailing_not_supported()
    if p.get("positionSide", "BOTH") != "BOTH":
        raise err.BinanceError(-4061, "Order's position side does not match user's setting.")
    if kind not in _STOP_TYPES:
        if p.get("stopPrice") or (algo and p.get("triggerPrice")):
            raise err.BinanceError(-1106, "Parameter 'stopPrice' sent when not required.")
        if p.get("workingType"):
            raise err.BinanceError(-1106, "Parameter 'workingType' sent when not required.")
    if boolean(p, "closePosition") and kind not in _STOP_MARKET_TYPES:
        raise err.BinanceError(-4136, "closePosition is only for STOP_MARKET and TAKE_PROFIT_MARKET orders.")
    if p.get("priceMatch", "NONE") != "NONE":
        raise err.BinanceError(-5037, "Invalid price match")
    if p.get("goodTillDate"):
        raise err.invalid_tif()
    if p.get("workingType", "CONTRACT_PRICE") not in WORKING_TYPE_IN:
        raise err.BinanceError(-4031, "Invalid workingType.")


def _price_ticks(inst: Instrument, price_e8: int, name: str) -> int:
    """A price parameter on the tick grid (-1013 PRICE_FILTER otherwise)."""
    ticks = None if price_e8 < 0 or price_e8 > MAX_PRICE_E8 else _grid(inst, price_e8, inst.tick_size_e8)
    if ticks is None:
        raise err.price_filter(
            f"{name} must be a positive multiple of the tick size {e8_to_str(inst.tick_size_e8)}, "
            f"at most {e8_to_str(MAX_PRICE_E8)}"
        )
    return ticks


def _place_command(call: Call, algo: bool) -> PlaceOrder:
    """The engine command of a new order (`algo`: the algo-order endpoint's parameter names:
    `triggerPrice`, `clientAlgoId`, conditional types only)."""
    p = call.params
    symbol = symbol_of(call)
    assert symbol is not None
    inst = call.engine.instruments[symbol]
    side = p.get("side")
    if side not in ("BUY", "SELL"):
        raise err.mandatory("side") if not side else err.invalid_side()
    kind = p.get("type")
    if kind == "TRAILING_STOP_MARKET":
        raise err.trailing_not_supported()
    if kind not in TYPE_IN or (algo and kind not in _STOP_TYPES):
        raise err.mandatory("type") if not kind else err.invalid_order_type()
    stop = kind in _STOP_TYPES
    if algo or not _PLAIN_ORDER.issuperset(p):
        _check_extras(p, kind, algo)
    close = stop and boolean(p, "closePosition")
    qty_e8 = decimal_e8(p, "quantity", required=not close)
    if close:
        if qty_e8 is not None:
            raise err.BinanceError(-4137, "Quantity must be zero with closePosition equals true.")
        if boolean(p, "reduceOnly"):
            raise err.BinanceError(-1106, "Parameter 'reduceOnly' sent when not required.")
        lots = 0
    else:
        assert qty_e8 is not None
        maybe = None if qty_e8 < 0 else _grid(inst, qty_e8, inst.lot_size_e8)
        if maybe is None:
            raise err.lot_size(f"quantity must be a positive multiple of the step size {e8_to_str(inst.lot_size_e8)}")
        lots = maybe
    if lots > inst.max_order_lots:
        raise err.quantity_too_large(f"at most {e8_to_str(inst.qty_e8(inst.max_order_lots))} per order")
    trigger: int | None = None
    trigger_by = "mark"
    if stop:
        name = "triggerPrice" if algo else "stopPrice"
        trigger_e8 = decimal_e8(p, name, required=True)
        assert trigger_e8 is not None
        trigger = _price_ticks(inst, trigger_e8, name)
        trigger_by = WORKING_TYPE_IN[p.get("workingType") or "CONTRACT_PRICE"]
    price_e8 = decimal_e8(p, "price")
    tif_text = p.get("timeInForce")
    post_only = False
    if kind in ("LIMIT", "STOP", "TAKE_PROFIT"):
        if price_e8 is None:
            raise err.mandatory("price")
        tif = tif_text or "GTC"
        if tif == "GTX":
            tif, post_only = "GTC", True
        elif tif not in ("GTC", "IOC", "FOK"):
            raise err.invalid_tif()
        price: int | None = _price_ticks(inst, price_e8, "price")
    else:
        if price_e8 is not None:
            raise err.BinanceError(-1106, "Parameter 'price' sent when not required.")
        if tif_text and not (stop and tif_text == "GTC"):  # Binance shows its conditional market orders GTC
            raise err.BinanceError(-1114, "TimeInForce parameter sent when not required.")
        tif, price = "GTC", None
    coid = p.get("clientAlgoId" if algo else "newClientOrderId") or None
    if coid is not None and not _CLIENT_ID.fullmatch(coid):
        raise err.client_order_id_invalid()
    stp = STP_IN.get(p.get("selfTradePreventionMode") or "NONE")
    if stp is None:
        raise err.BinanceError(-5039, "Invalid self trade prevention mode")
    if p.get("newOrderRespType", "ACK") not in ("ACK", "RESULT"):  # both answer the full order
        raise err.BinanceError(-1136, "Invalid newOrderRespType")
    return PlaceOrder(
        call.account_id,
        symbol,
        "buy" if side == "BUY" else "sell",
        lots,
        price,
        TYPE_IN[kind],
        tif,
        post_only,
        boolean(p, "reduceOnly"),
        stp,
        coid,
        trigger_price_ticks=trigger,
        trigger_by=trigger_by,
        close_position=close,
    )


async def new_order(call: Call) -> Any:
    """POST /fapi/v1/order: LIMIT / MARKET, GTC / IOC / FOK / GTX, reduceOnly, newClientOrderId;
    STOP / STOP_MARKET / TAKE_PROFIT / TAKE_PROFIT_MARKET with stopPrice, workingType and
    closePosition (SPEC §12)."""
    command = _place_command(call, algo=False)
    return await submit(call, command, _order_after(call.venue, call.account_id, None))


# -- conditional orders through the algo-order endpoints (what ccxt 4.5 uses) ------------------


async def algo_order(call: Call) -> Any:
    """POST /fapi/v1/algoOrder (algoType CONDITIONAL): a stop / take-profit order, answered
    in the algo-order shape."""
    algo_type = call.params.get("algoType")
    if algo_type != "CONDITIONAL":
        raise err.mandatory("algoType") if not algo_type else err.invalid_value("algoType", "CONDITIONAL")
    command = _place_command(call, algo=True)
    venue, account_id = call.venue, call.account_id

    def after(engine: Engine, events: list[Any]) -> Any:
        rejected = _rejection(events)
        if rejected is not None:
            return rejected
        order = engine.find_order(account_id, events[0].order_id)
        assert order is not None
        return venue.algo_order(order)

    return await submit(call, command, after)


def _find_algo(call: Call, cancel: bool) -> Any:
    """The account's conditional order named by `algoId` or `clientAlgoId`."""
    p = call.params
    algo_id = integer(p, "algoId", low=1)
    coid = p.get("clientAlgoId") or None
    if algo_id is None and coid is None:
        raise err.BinanceError(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!")
    acct = call.engine.accounts[call.account_id]
    if algo_id is None:
        algo_id = acct.client_order_ids.get(coid) if coid is not None else None
    order = call.engine.find_order(call.account_id, algo_id) if algo_id is not None else None
    if order is not None and (order.trigger_price_ticks is None or (coid is not None and order.client_order_id != coid)):
        order = None
    if order is None or (cancel and order.status != "untriggered"):
        raise err.unknown_order_cancel() if cancel else err.unknown_order_query()
    return order


async def query_algo_order(call: Call) -> Any:
    return call.venue.algo_order(_find_algo(call, cancel=False))


async def cancel_algo_order(call: Call) -> Any:
    order = _find_algo(call, cancel=True)
    coid = order.client_order_id or ""

    def done(engine: Engine, events: list[Any]) -> Any:
        if _rejection(events) is not None:  # triggered or canceled meanwhile
            return err.unknown_order_cancel()
        return {"algoId": order.order_id, "clientAlgoId": coid, "code": "200", "msg": "success"}

    return await submit(call, CancelOrder(call.account_id, order.order_id), done)


def _waiting(call: Call, symbol: str | None) -> list[Any]:
    acct = call.engine.accounts[call.account_id]
    return sorted(
        (o for o in acct.stop_orders.values() if symbol is None or o.symbol == symbol), key=lambda o: o.order_id
    )


async def open_algo_orders(call: Call) -> Any:
    return [call.venue.algo_order(o) for o in _waiting(call, symbol_of(call, required=False))]


async def all_algo_orders(call: Call) -> Any:
    symbol = symbol_of(call)
    limit = _limit(call, 500, 1000)
    start = integer(call.params, "startTime")
    end = integer(call.params, "endTime")
    acct = call.engine.accounts[call.account_id]
    orders = [
        o for o in (*acct.closed_orders.values(), *acct.open_orders.values(), *acct.stop_orders.values())
        if o.symbol == symbol and o.trigger_price_ticks is not None
    ]
    orders.sort(key=lambda o: o.order_id)
    if start is not None:
        orders = [o for o in orders if ms(o.ts_ns) >= start]
    if end is not None:
        orders = [o for o in orders if ms(o.ts_ns) <= end]
    orders = orders[:limit] if start is not None else orders[-limit:]
    return [call.venue.algo_order(o) for o in orders]


async def cancel_algo_open_orders(call: Call) -> Any:
    """DELETE /fapi/v1/algoOpenOrders: every untriggered stop of the symbol, one cancel command
    each (a stop that triggers meanwhile is left to run)."""
    symbol = symbol_of(call)
    for order in _waiting(call, symbol):
        await submit(call, CancelOrder(call.account_id, order.order_id), lambda engine, events: None)
    return {"code": 200, "msg": "The operation of cancel all open order is done."}


def _find(call: Call, symbol: str, cancel: bool) -> Any:
    """The account's order named by `orderId` or `origClientOrderId` (in `symbol`)."""
    p = call.params
    order_id = integer(p, "orderId", low=1)
    coid = p.get("origClientOrderId") or None
    if order_id is None and coid is None:
        raise err.BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
    engine = call.engine
    acct = engine.accounts[call.account_id]
    if order_id is None:
        order_id = acct.client_order_ids.get(coid) if coid is not None else None
    order = engine.find_order(call.account_id, order_id) if order_id is not None else None
    if order is not None and (order.symbol != symbol or (coid is not None and order.client_order_id != coid)):
        order = None
    if order is None:
        raise err.unknown_order_cancel() if cancel else err.unknown_order_query()
    return order


async def query_order(call: Call) -> Any:
    symbol = symbol_of(call)
    assert symbol is not None
    return call.venue.order(_find(call, symbol, cancel=False))


async def cancel_order(call: Call) -> Any:
    symbol = symbol_of(call)
    assert symbol is not None
    order = _find(call, symbol, cancel=True)
    if order.status in ("filled", "canceled", "rejected"):
        raise err.unknown_order_cancel()
    command = CancelOrder(call.account_id, order.order_id)
    after = _order_after(call.venue, call.account_id, order.order_id)

    def canceled(engine: Engine, events: list[Any]) -> Any:
        rejected = _rejection(events)
        if rejected is not None:  # filled or canceled meanwhile
            return err.unknown_order_cancel()
        return after(engine, events)

    return await submit(call, command, canceled)


async def cancel_all(call: Call) -> Any:
    symbol = symbol_of(call)

    def done(engine: Engine, events: list[Any]) -> Any:
        rejected = _rejection(events)
        if rejected is not None:
            return rejected
        return {"code": 200, "msg": "The operation of cancel all open order is done.",
                "canceled": [e.order_id for e in events if type(e) is OrderCanceled]}

    return await submit(call, CancelAllOrders(call.account_id, symbol), done)


async def open_orders(call: Call) -> Any:
    symbol = symbol_of(call, required=False)
    acct = call.engine.accounts[call.account_id]
    orders = sorted(  # untriggered stops too: NEW, with their stopPrice (SPEC §12)
        (o for held in (acct.open_orders, acct.stop_orders) for o in held.values() if symbol is None or o.symbol == symbol),
        key=lambda o: o.order_id,
    )
    return [call.venue.order(o) for o in orders]


async def all_orders(call: Call) -> Any:
    symbol = symbol_of(call)
    limit = _limit(call, 500, 1000)
    from_id = integer(call.params, "orderId", low=1)
    start = integer(call.params, "startTime")
    end = integer(call.params, "endTime")
    acct = call.engine.accounts[call.account_id]
    orders = [
        o for o in (*acct.closed_orders.values(), *acct.open_orders.values(), *acct.stop_orders.values())
        if o.symbol == symbol
    ]
    orders.sort(key=lambda o: o.order_id)
    if from_id is not None:
        orders = [o for o in orders if o.order_id >= from_id][:limit]
    else:
        if start is not None:
            orders = [o for o in orders if ms(o.ts_ns) >= start]
        if end is not None:
            orders = [o for o in orders if ms(o.ts_ns) <= end]
        orders = orders[:limit] if start is not None else orders[-limit:]
    return [call.venue.order(o) for o in orders]


async def user_trades(call: Call) -> Any:
    symbol = symbol_of(call)
    limit = _limit(call, 500, 1000)
    start = integer(call.params, "startTime")
    end = integer(call.params, "endTime")
    from_id = integer(call.params, "fromId")
    fills = cast("list[Fill]", list(call.engine.accounts[call.account_id].fills))
    rows = [f for f in fills if f.symbol == symbol]
    if from_id is not None:
        rows = [f for f in rows if f.trade_id is not None and f.trade_id >= from_id][:limit]
    else:
        if start is not None:
            rows = [f for f in rows if ms(f.ts_ns) >= start]
        if end is not None:
            rows = [f for f in rows if ms(f.ts_ns) <= end]
        rows = rows[:limit] if start is not None else rows[-limit:]
    return [call.venue.user_trade(f) for f in rows]


# -- account (SIGNED) --------------------------------------------------------------------------


def _asset_row(call: Call, v2: bool) -> dict[str, Any]:
    t = call.venue.totals(call.account_id)
    row: dict[str, Any] = {
        "asset": ASSET,
        "walletBalance": money_str(t["wallet"]),
        "unrealizedProfit": money_str(t["upnl"]),
        "marginBalance": money_str(t["equity"]),
        "maintMargin": money_str(t["maint"]),
        "initialMargin": money_str(t["initial"]),
        "positionInitialMargin": money_str(t["pos_im"]),
        "openOrderInitialMargin": money_str(t["order_im"]),
        "crossWalletBalance": money_str(t["wallet"]),
        "crossUnPnl": money_str(t["upnl"]),
        "availableBalance": money_str(t["available"]),
        "maxWithdrawAmount": money_str(t["max_withdraw"]),
    }
    if v2:
        row["marginAvailable"] = True
    row["updateTime"] = call.venue.update_time(call.account_id)
    return row


def _account(call: Call, v2: bool) -> dict[str, Any]:
    venue = call.venue
    t = venue.totals(call.account_id)
    out: dict[str, Any] = {}
    if v2:
        out.update(
            {
                "feeTier": 0, "feeBurn": False, "canTrade": True, "canDeposit": True,
                "canWithdraw": True, "updateTime": 0, "multiAssetsMargin": False, "tradeGroupId": -1,
            }
        )
    out.update(
        {
            "totalInitialMargin": money_str(t["initial"]),
            "totalMaintMargin": money_str(t["maint"]),
            "totalWalletBalance": money_str(t["wallet"]),
            "totalUnrealizedProfit": money_str(t["upnl"]),
            "totalMarginBalance": money_str(t["equity"]),
            "totalPositionInitialMargin": money_str(t["pos_im"]),
            "totalOpenOrderInitialMargin": money_str(t["order_im"]),
            "totalCrossWalletBalance": money_str(t["wallet"]),
            "totalCrossUnPnl": money_str(t["upnl"]),
            "availableBalance": money_str(t["available"]),
            "maxWithdrawAmount": money_str(t["max_withdraw"]),
            "assets": [_asset_row(call, v2)],
        }
    )
    acct = call.engine.accounts[call.account_id]
    if v2:
        rows = venue.position_rows(call.account_id, call.engine.symbols)
    else:
        held = sorted(set(acct.positions) | set(acct.open_buy_lots) | set(acct.open_sell_lots))
        rows = venue.position_rows(call.account_id, held)
    positions = []
    for r in rows:
        inst = r["inst"]
        row: dict[str, Any] = {
            "symbol": venue.to_binance[r["symbol"]],
            "positionSide": "BOTH",
            "positionAmt": venue.qty(inst, r["size"]),
            "unrealizedProfit": money_str(r["upnl"]),
            "isolatedMargin": "0",
            "notional": money_str(r["notional"]),
            "isolatedWallet": "0",
            "initialMargin": money_str(r["pos_im"] + r["order_im"]),
            "maintMargin": money_str(r["maint"]),
            "updateTime": 0,
        }
        if v2:
            row.update(
                {
                    "positionInitialMargin": money_str(r["pos_im"]),
                    "openOrderInitialMargin": money_str(r["order_im"]),
                    "leverage": str(r["leverage"]),
                    "isolated": False,
                    "entryPrice": e8_to_str(r["entry_e8"]),
                    "breakEvenPrice": e8_to_str(r["entry_e8"]),
                    "maxNotional": money_str(r["max_notional"]),
                    "bidNotional": money_str(r["bid_notional"]),
                    "askNotional": money_str(r["ask_notional"]),
                }
            )
        positions.append(row)
    out["positions"] = positions
    return out


async def account_v2(call: Call) -> Any:
    return _account(call, v2=True)


async def account_v3(call: Call) -> Any:
    return _account(call, v2=False)


async def balance(call: Call) -> Any:
    row = _asset_row(call, v2=True)
    return [
        {
            "accountAlias": f"acct{call.account_id}",
            "asset": ASSET,
            "balance": row["walletBalance"],
            "crossWalletBalance": row["crossWalletBalance"],
            "crossUnPnl": row["crossUnPnl"],
            "availableBalance": row["availableBalance"],
            "maxWithdrawAmount": row["maxWithdrawAmount"],
            "marginAvailable": True,
            "updateTime": row["updateTime"],
        }
    ]


def _position_risk(call: Call, v2: bool) -> list[dict[str, Any]]:
    venue, engine = call.venue, call.engine
    acct = engine.accounts[call.account_id]
    symbol = symbol_of(call, required=False)
    if v2:
        symbols = [symbol] if symbol is not None else list(engine.symbols)
    else:
        symbols = [s for s in ([symbol] if symbol is not None else engine.symbols) if s in acct.positions]
    quantiles = {s: engine.adl_quantiles(s).get(call.account_id, 0) for s in symbols if s in acct.positions}
    out = []
    for r in venue.position_rows(call.account_id, symbols):
        inst = r["inst"]
        common: dict[str, Any] = {
            "symbol": venue.to_binance[r["symbol"]],
            "positionSide": "BOTH",
            "positionAmt": venue.qty(inst, r["size"]),
            "entryPrice": e8_to_str(r["entry_e8"]),
            "breakEvenPrice": e8_to_str(r["entry_e8"]),
            "markPrice": venue.price(inst, r["mark"]),
            "unRealizedProfit": money_str(r["upnl"]),
            "liquidationPrice": "0" if r["liq_e8"] is None else e8_to_str(r["liq_e8"]),
            "isolatedMargin": "0",
            "notional": money_str(r["notional"]),
        }
        if v2:
            common.update(
                {
                    "marginType": "cross",
                    "isAutoAddMargin": "false",
                    "leverage": str(r["leverage"]),
                    "maxNotionalValue": money_str(r["max_notional"]),
                    "isolatedWallet": "0",
                    "updateTime": 0,
                }
            )
        else:
            common.update(
                {
                    "marginAsset": ASSET,
                    "isolatedWallet": "0",
                    "initialMargin": money_str(r["pos_im"] + r["order_im"]),
                    "maintMargin": money_str(r["maint"]),
                    "positionInitialMargin": money_str(r["pos_im"]),
                    "openOrderInitialMargin": money_str(r["order_im"]),
                    "adl": quantiles.get(r["symbol"], 0),
                    "bidNotional": money_str(r["bid_notional"]),
                    "askNotional": money_str(r["ask_notional"]),
                    "updateTime": venue.update_time(call.account_id),
                }
            )
        out.append(common)
    return out


async def position_risk_v2(call: Call) -> Any:
    return _position_risk(call, v2=True)


async def position_risk_v3(call: Call) -> Any:
    return _position_risk(call, v2=False)


async def leverage_bracket(call: Call) -> Any:
    engine, venue = call.engine, call.venue

    def render(symbol: str) -> dict[str, Any]:
        inst = engine.instruments[symbol]
        brackets = []
        floor = 0
        for i, tier in enumerate(inst.tiers, 1):
            brackets.append(
                {
                    "bracket": i,
                    "initialLeverage": min(tier.max_leverage, inst.max_leverage),
                    "notionalCap": tier.max_notional_atoms // E8,
                    "notionalFloor": floor // E8,
                    "maintMarginRatio": tier.maintenance_ppm / PPM,
                    "cum": tier.maintenance_amount_atoms / E8,
                }
            )
            floor = tier.max_notional_atoms
        return {"symbol": venue.to_binance[symbol], "notionalCoef": 1.0, "brackets": brackets}

    symbol = symbol_of(call, required=False)
    return [render(s) for s in ([symbol] if symbol is not None else engine.symbols)]


async def set_leverage(call: Call) -> Any:
    symbol = symbol_of(call)
    assert symbol is not None
    lev = integer(call.params, "leverage", required=True, low=1, high=125)
    inst = call.engine.instruments[symbol]
    assert lev is not None
    if lev > inst.max_leverage:
        raise err.invalid_leverage(f"leverage must be within 1..{inst.max_leverage}")
    venue = call.venue

    def done(engine: Engine, events: list[Any]) -> Any:
        rejected = _rejection(events)
        if rejected is not None:
            return rejected
        return {"leverage": events[0].leverage, "maxNotionalValue": money_str(inst.tiers[-1].max_notional_atoms),
                "symbol": venue.to_binance[symbol]}

    return await submit(call, SetLeverage(call.account_id, symbol, lev), done)


async def margin_type(call: Call) -> Any:
    symbol_of(call)
    value = call.params.get("marginType")
    if value == "CROSSED":
        raise err.no_need_to_change_margin_type()
    if value == "ISOLATED":
        raise err.isolated_not_supported()
    raise err.mandatory("marginType") if not value else err.invalid_value("marginType", "CROSSED or ISOLATED")


async def position_margin(call: Call) -> Any:
    symbol_of(call)
    decimal_e8(call.params, "amount", required=True)
    if call.params.get("type") not in ("1", "2"):
        raise err.mandatory("type")
    raise err.position_margin_not_supported()


async def adl_quantile(call: Call) -> Any:
    engine, venue = call.engine, call.venue
    acct = engine.accounts[call.account_id]
    out = []
    for symbol in _symbols(call):
        size = acct.size(symbol)
        q = engine.adl_quantiles(symbol).get(call.account_id, 0) if size else 0
        out.append(
            {
                "symbol": venue.to_binance[symbol],
                "adlQuantile": {"LONG": q if size > 0 else 0, "SHORT": q if size < 0 else 0, "BOTH": q},
            }
        )
    return out


async def position_side_dual(call: Call) -> Any:
    return {"dualSidePosition": False}


async def set_position_side_dual(call: Call) -> Any:
    if boolean(call.params, "dualSidePosition"):
        raise err.BinanceError(-4068, "Hedge mode is not supported: one-way mode only (see docs/binance.md).")
    raise err.BinanceError(-4059, "No need to change position side.")


async def commission_rate(call: Call) -> Any:
    symbol = symbol_of(call)
    assert symbol is not None
    inst = call.engine.instruments[symbol]
    return {
        "symbol": call.venue.to_binance[symbol],
        "makerCommissionRate": _ppm(inst.maker_fee_ppm),
        "takerCommissionRate": _ppm(inst.taker_fee_ppm),
    }


async def symbol_config(call: Call) -> Any:
    engine, venue = call.engine, call.venue
    acct = engine.accounts[call.account_id]
    return [
        {
            "symbol": venue.to_binance[s],
            "marginType": "CROSSED",
            "isAutoAddMargin": False,
            "leverage": acct.leverage.get(s, engine.instruments[s].default_leverage),
            "maxNotionalValue": money_str(engine.instruments[s].tiers[-1].max_notional_atoms),
        }
        for s in _symbols(call)
    ]


# -- user data stream (USER_STREAM) ------------------------------------------------------------


async def listen_key_new(call: Call) -> Any:
    return {"listenKey": call.edge.streams.listen_keys.open(call.account_id)}


async def listen_key_keepalive(call: Call) -> Any:
    key = call.params.get("listenKey") or None
    found = call.edge.streams.listen_keys.keepalive(call.account_id, key)
    if found is None:
        raise err.listen_key_unknown()
    return {"listenKey": found}


async def listen_key_close(call: Call) -> Any:
    call.edge.streams.close_listen_key(call.account_id, call.params.get("listenKey") or None)
    return {}


# -- the table ---------------------------------------------------------------------------------

_SYM = frozenset(("symbol",))
_ORDER = frozenset(
    (
        "symbol", "side", "type", "quantity", "price", "timeInForce", "reduceOnly", "newClientOrderId",
        "positionSide", "newOrderRespType", "selfTradePreventionMode", "closePosition", "workingType",
        "priceProtect", "priceMatch", "stopPrice", "activationPrice", "callbackRate", "goodTillDate",
    )
)
_FIND = frozenset(("symbol", "orderId", "origClientOrderId"))
_ALGO_FIND = frozenset(("symbol", "algoId", "clientAlgoId"))
_RANGE = frozenset(("symbol", "limit", "startTime", "endTime"))

ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/fapi/v1/ping"): Route(ping, "NONE"),
    ("GET", "/fapi/v1/time"): Route(server_time, "NONE"),
    ("GET", "/fapi/v1/exchangeInfo"): Route(exchange_info, "NONE"),
    ("GET", "/fapi/v1/depth"): Route(depth, "NONE", frozenset(("symbol", "limit"))),
    ("GET", "/fapi/v1/trades"): Route(trades, "NONE", frozenset(("symbol", "limit"))),
    ("GET", "/fapi/v1/aggTrades"): Route(agg_trades, "NONE", _RANGE | {"fromId"}),
    ("GET", "/fapi/v1/premiumIndex"): Route(premium_index, "NONE", _SYM),
    ("GET", "/fapi/v1/fundingRate"): Route(funding_rate_history, "NONE", _RANGE),
    ("GET", "/fapi/v1/fundingInfo"): Route(funding_info, "NONE"),
    ("GET", "/fapi/v1/ticker/24hr"): Route(ticker_24hr, "NONE", _SYM),
    ("GET", "/fapi/v1/ticker/price"): Route(ticker_price, "NONE", _SYM),
    ("GET", "/fapi/v2/ticker/price"): Route(ticker_price, "NONE", _SYM),
    ("GET", "/fapi/v1/ticker/bookTicker"): Route(book_ticker, "NONE", _SYM),
    ("GET", "/fapi/v1/openInterest"): Route(open_interest, "NONE", _SYM),
    ("GET", "/sapi/v1/capital/config/getall"): Route(capital_config, "SIGNED"),
    ("GET", "/sapi/v1/margin/allPairs"): Route(margin_pairs, "SIGNED"),
    ("POST", "/fapi/v1/order"): Route(new_order, "SIGNED", _ORDER),
    ("GET", "/fapi/v1/order"): Route(query_order, "SIGNED", _FIND),
    ("DELETE", "/fapi/v1/order"): Route(cancel_order, "SIGNED", _FIND),
    ("POST", "/fapi/v1/algoOrder"): Route(
        algo_order, "SIGNED", _ORDER | {"algoType", "triggerPrice", "clientAlgoId", "activatePrice"}
    ),
    ("GET", "/fapi/v1/algoOrder"): Route(query_algo_order, "SIGNED", _ALGO_FIND),
    ("DELETE", "/fapi/v1/algoOrder"): Route(cancel_algo_order, "SIGNED", _ALGO_FIND),
    ("GET", "/fapi/v1/openAlgoOrders"): Route(open_algo_orders, "SIGNED", _SYM | {"algoType"}),
    ("GET", "/fapi/v1/allAlgoOrders"): Route(all_algo_orders, "SIGNED", _RANGE | {"algoId", "page"}),
    ("DELETE", "/fapi/v1/algoOpenOrders"): Route(cancel_algo_open_orders, "SIGNED", _SYM),
    ("DELETE", "/fapi/v1/allOpenOrders"): Route(cancel_all, "SIGNED", _SYM),
    ("GET", "/fapi/v1/openOrders"): Route(open_orders, "SIGNED", _SYM),
    ("GET", "/fapi/v1/allOrders"): Route(all_orders, "SIGNED", _RANGE | {"orderId"}),
    ("GET", "/fapi/v1/userTrades"): Route(user_trades, "SIGNED", _RANGE | {"fromId", "orderId"}),
    ("GET", "/fapi/v2/account"): Route(account_v2, "SIGNED"),
    ("GET", "/fapi/v3/account"): Route(account_v3, "SIGNED"),
    ("GET", "/fapi/v2/balance"): Route(balance, "SIGNED"),
    ("GET", "/fapi/v3/balance"): Route(balance, "SIGNED"),
    ("GET", "/fapi/v2/positionRisk"): Route(position_risk_v2, "SIGNED", _SYM),
    ("GET", "/fapi/v3/positionRisk"): Route(position_risk_v3, "SIGNED", _SYM),
    ("GET", "/fapi/v1/leverageBracket"): Route(leverage_bracket, "SIGNED", _SYM),
    ("POST", "/fapi/v1/leverage"): Route(set_leverage, "SIGNED", frozenset(("symbol", "leverage"))),
    ("POST", "/fapi/v1/marginType"): Route(margin_type, "SIGNED", frozenset(("symbol", "marginType"))),
    ("POST", "/fapi/v1/positionMargin"): Route(
        position_margin, "SIGNED", frozenset(("symbol", "amount", "type", "positionSide"))
    ),
    ("GET", "/fapi/v1/adlQuantile"): Route(adl_quantile, "SIGNED", _SYM),
    ("GET", "/fapi/v1/positionSide/dual"): Route(position_side_dual, "SIGNED"),
    ("POST", "/fapi/v1/positionSide/dual"): Route(set_position_side_dual, "SIGNED", frozenset(("dualSidePosition",))),
    ("GET", "/fapi/v1/commissionRate"): Route(commission_rate, "SIGNED", _SYM),
    ("GET", "/fapi/v1/symbolConfig"): Route(symbol_config, "SIGNED", _SYM),
    ("POST", "/fapi/v1/listenKey"): Route(listen_key_new, "USER_STREAM"),
    ("PUT", "/fapi/v1/listenKey"): Route(listen_key_keepalive, "USER_STREAM", frozenset(("listenKey",))),
    ("DELETE", "/fapi/v1/listenKey"): Route(listen_key_close, "USER_STREAM", frozenset(("listenKey",))),
}
