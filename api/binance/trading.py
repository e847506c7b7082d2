"""Order routes of `/fapi` (SIGNED): new / query / cancel orders, open and all orders, user
trades, and conditional orders through both the classic order endpoint and the algo-order
endpoints ccxt 4.5 uses (api/binance/rest.py's docstring describes both).

Every parameter is checked here, before the `PlaceOrder` / `CancelOrder` / `CancelAllOrders`
command is built: a refused request never reaches the engine or the journal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from api.binance import errors as err
from api.binance.common import MAX_PRICE_E8, limit_of, rejection, submit, symbol_of
from api.binance.signing import boolean, decimal_e8, integer
from api.binance.views import STP_IN, TYPE_IN, WORKING_TYPE_IN, Venue, ms
from engine.accounts import Fill
from engine.commands import CancelAllOrders, CancelOrder, PlaceOrder
from engine.engine import Engine
from engine.events import OrderCanceled
from engine.instruments import Instrument
from engine.units import e8_to_str

if TYPE_CHECKING:
    from api.binance.edge import Call

_CLIENT_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_STOP_TYPES = frozenset(("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"))
_STOP_MARKET_TYPES = frozenset(("STOP_MARKET", "TAKE_PROFIT_MARKET"))  # closePosition allowed
# new-order parameters that need no further check beyond their own (the common case)
_PLAIN_ORDER = frozenset(
    ("symbol", "side", "type", "quantity", "price", "timeInForce", "newClientOrderId", "reduceOnly",
     "newOrderRespType", "selfTradePreventionMode")
)


# -- trading (SIGNED) --------------------------------------------------------------------------


def _order_after(venue: Venue, account_id: int, order_id: int | None, cum_qty: bool = True) -> Callable[[Engine, list[Any]], Any]:
    def after(engine: Engine, events: list[Any]) -> Any:
        rejected = rejection(events)
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
        rejected = rejection(events)
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
        if rejection(events) is not None:  # triggered or canceled meanwhile
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
    limit = limit_of(call, 500, 1000)
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
        rejected = rejection(events)
        if rejected is not None:  # filled or canceled meanwhile
            return err.unknown_order_cancel()
        return after(engine, events)

    return await submit(call, command, canceled)


async def cancel_all(call: Call) -> Any:
    symbol = symbol_of(call)

    def done(engine: Engine, events: list[Any]) -> Any:
        rejected = rejection(events)
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
    limit = limit_of(call, 500, 1000)
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
    limit = limit_of(call, 500, 1000)
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
