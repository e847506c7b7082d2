"""Shared pieces of the `/fapi` REST routes (api/binance/rest.py is the route table).

`Route` is one endpoint of the table, `Handler` the type of its handler. The helpers are what
the route modules (market.py, trading.py, account.py) share: `submit` hands a command to the
engine loop, `rejection` turns an engine refusal into a `BinanceError`, `symbol_of` /
`symbols` / `one_or_all` read the `symbol` parameter, `limit_of` the `limit` parameter, and
`ppm` renders parts per million as a decimal fraction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from api.binance import errors as err
from api.binance.signing import integer
from engine.engine import Engine
from engine.events import REJECTION_TYPES
from engine.units import E8, e8_to_str
from service.engine_loop import EngineHalted

if TYPE_CHECKING:
    from api.binance.edge import Call

Handler = Callable[["Call"], Awaitable[Any]]

MAX_PRICE_E8 = 1_000_000_000 * E8  # PRICE_FILTER.maxPrice: one billion USD


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


def rejection(events: list[Any]) -> err.BinanceError | None:
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


def symbols(call: Call) -> list[str]:
    symbol = symbol_of(call, required=False)
    return [symbol] if symbol is not None else list(call.engine.symbols)


def one_or_all(call: Call, render: Callable[[str], dict[str, Any]]) -> Any:
    symbol = symbol_of(call, required=False)
    if symbol is not None:
        return render(symbol)
    return [render(s) for s in call.engine.symbols]


def limit_of(call: Call, default: int, high: int) -> int:
    value = integer(call.params, "limit", low=1, high=high)
    return default if value is None else value


def ppm(value: int) -> str:
    return e8_to_str(value * 100)
