"""Decimal <-> engine integers at the API edge (the only place the two meet).

Schemas (api/schemas.py) parse decimals into exact `_e8` integers; here they go onto the
instrument's grid: price -> ticks, quantity -> lots. Off-grid values are refused with the
engine's own codes (INVALID_PRICE / INVALID_QUANTITY), before the engine sees anything.
"""

from __future__ import annotations

from api.errors import ApiError
from engine.engine import Engine
from engine.errors import Reject
from engine.instruments import Instrument
from engine.units import e8_to_str


def instrument(engine: Engine, symbol: str, in_path: bool = False) -> Instrument:
    """The instrument of `symbol`; 404 when it names a path resource, else 400."""
    inst = engine.instruments.get(symbol)
    if inst is None:
        raise ApiError.reject(
            Reject.INVALID_SYMBOL, f"unknown symbol {symbol!r}", status=404 if in_path else 400
        )
    return inst


def ticks(inst: Instrument, price_e8: int, field: str = "price", code: Reject = Reject.INVALID_PRICE) -> int:
    """A price on the tick grid, in ticks (`code` naming `field` when it is off the grid)."""
    t = inst.ticks_from_e8(price_e8)
    if t is None:
        raise ApiError.reject(
            code, f"{field} {e8_to_str(price_e8)} is not a multiple of the tick size {e8_to_str(inst.tick_size_e8)}"
        )
    return t


def trigger_ticks(inst: Instrument, price_e8: int) -> int:
    """A trigger price (SPEC §12) on the tick grid, in ticks (INVALID_TRIGGER_PRICE when off it)."""
    return ticks(inst, price_e8, "trigger_price", Reject.INVALID_TRIGGER_PRICE)


def lots(inst: Instrument, qty_e8: int) -> int:
    """A quantity on the lot grid, in lots."""
    n = inst.lots_from_e8(qty_e8)
    if n is None:
        raise ApiError.reject(
            Reject.INVALID_QUANTITY,
            f"qty {e8_to_str(qty_e8)} is not a multiple of the lot size {e8_to_str(inst.lot_size_e8)}",
        )
    return n
