"""Public rendering of engine values and events: the one place integers become decimal strings.

WebSocket messages, Redis stream entries and HTTP responses all go through here, so a price
or an amount reads the same everywhere. Rules for event fields (engine name -> public name):

- `*_ticks` -> price string without the suffix (`price_ticks` -> `price`,
  `mark_price_ticks` -> `mark_price`), using the event's symbol's tick size;
- `*_lots`  -> quantity string (`qty_lots` -> `qty`, `size_lots` -> `size`,
  `position_after_lots` -> `position_after`); names that would read badly without the
  suffix get `_qty` (`canceled_lots` -> `canceled_qty`, see `_RENAMES`);
- `*_atoms` -> money string, exact to the atom (`amount_atoms` -> `amount`);
- `*_e8`    -> decimal string (`bankruptcy_price_e8` -> `bankruptcy_price`);
- everything else as is (ids and ranks stay JSON integers).

SPEC §12 events, by these rules: `index_price_changed` -> `{symbol, price (the index), basis}`
(basis signed, in USD); `funding_rate_changed` -> `{symbol, rate, premium, samples,
mark_price}` (`rate_e8` / `premium_e8` are parts per 1e8, so `rate` is the fraction itself:
`10000` -> `"0.0001"`; `premium` null when the rate was given); `funding_paid` ->
`{account_id, symbol, size, rate, amount, wallet_balance}` (`amount` signed: negative paid,
positive received). `funding_state` renders a symbol's index, mark, premium and funding
schedule (GET /v1/funding/{symbol} and the `funding:<symbol>` snapshot).

`liquidation` and `adl` carry exactly the fields SPEC §8 names (`_EXACT_FIELDS`); their
other engine fields (bankruptcy value, policy, ...) stay in the engine's own log.
`liquidation` names its account both `account` (SPEC §8) and `account_id` (`_ALIASES`).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

from engine import events as ev
from engine.engine import Engine
from engine.funding import funding_rate, to_e8
from engine.instruments import Instrument
from engine.units import e8_to_str
from service.funding_times import next_funding_time_ns

NS_PER_MS = 1_000_000

_RENAMES = {
    "canceled_lots": "canceled_qty",
    "filled_lots": "filled_qty",
    "remaining_lots": "remaining_qty",
    "taker_remaining_lots": "taker_remaining_qty",
    "maker_remaining_lots": "maker_remaining_qty",
    "book_fill_lots": "book_fill_qty",
    "adl_lots": "adl_qty",
}

# SPEC §8 calls the liquidated account of `liquidation` "account"; every other event (and
# this one, since the first version) says `account_id`. Both are sent, with the same value.
_ALIASES: dict[tuple[type, str], tuple[str, ...]] = {(ev.AccountLiquidated, "account_id"): ("account",)}

_EXACT_FIELDS: dict[type, tuple[str, ...]] = {
    ev.AccountLiquidated: (
        "account_id",
        "symbol",
        "qty",
        "bankruptcy_price",
        "mark_price",
        "equity_before",
        "insurance_fund_delta",
        "book_fill_qty",
        "book_fill_avg_price",
        "adl_qty",
        "bad_debt",
    ),
    ev.PositionDeleveraged: (
        "symbol",
        "liquidated_account_id",
        "counterparty_account_id",
        "side",
        "qty",
        "price",
        "realized_pnl",
        "position_after",
        "haircut",
        "policy",
        "rank",
    ),
}


def price_str(inst: Instrument, ticks: int | None) -> str | None:
    """Ticks as a decimal price string (None stays None)."""
    return None if ticks is None else e8_to_str(ticks * inst.tick_size_e8)


def qty_str(inst: Instrument, lots: int | None) -> str | None:
    """Lots as a decimal quantity string (None stays None)."""
    return None if lots is None else e8_to_str(lots * inst.lot_size_e8)


def money_str(atoms: int) -> str:
    """Quote atoms as an exact USD decimal string (`99503500000` -> `"995.035"`)."""
    return e8_to_str(atoms)


def e8_str(value_e8: int | None) -> str | None:
    """An `_e8` fixed-point value as a decimal string (None stays None)."""
    return None if value_e8 is None else e8_to_str(value_e8)


def ppm_str(value_ppm: int) -> str:
    """Parts per million as a decimal fraction (`100` -> `"0.0001"`)."""
    return e8_to_str(value_ppm * 100)


def funding_state(engine: Engine, symbol: str, now_ns: int) -> dict[str, Any]:
    """Index, basis, mark, the premium since the last round, the rate a computed round would
    charge now, the schedule and the recent rounds (newest first) of one symbol.

    `premium` is the exact mean of the samples rounded half-even to 8 decimals (null without
    samples); `predicted_rate` is `funding_rate(mean or 0)` rounded like a round would.
    Times are epoch milliseconds; `next_funding_time` comes from `now_ns` (the service clock).
    """
    inst = engine.instruments[symbol]
    samples = engine.premium_samples.get(symbol, 0)
    premium = engine.premium_sum[symbol] / samples if samples else None
    predicted = funding_rate(
        premium if premium is not None else Fraction(0), inst.interest_ppm, inst.funding_cap_ppm
    )
    history = engine.funding_history[symbol]
    return {
        "symbol": symbol,
        "mark_source": inst.mark_source,
        "index_price": price_str(inst, engine.index.get(symbol)),
        "mark_price": price_str(inst, engine.marks.get(symbol)),
        "basis": price_str(inst, engine.basis.get(symbol, 0)),
        "premium": None if premium is None else e8_to_str(to_e8(premium)),
        "samples": samples,
        "predicted_rate": e8_to_str(to_e8(predicted)),
        "interest_rate": ppm_str(inst.interest_ppm),
        "funding_cap": ppm_str(inst.funding_cap_ppm),
        "funding_interval_s": inst.funding_interval_s,
        "next_funding_time": next_funding_time_ns(now_ns, inst.funding_interval_s) // NS_PER_MS,
        "recent": [
            {"time": ts_ns // NS_PER_MS, "rate": e8_to_str(rate_e8)}
            for ts_ns, rate_e8 in reversed(history)
        ],
    }


# A converter per field: (public name, function(instrument, value) -> public value).
Converter = tuple[str, Callable[[Instrument | None, Any], Any] | None]


def _converter(field: str) -> Converter:
    if field.endswith("_ticks"):
        return field[
            : -len("_ticks")
        ], lambda inst, v: None if v is None else e8_to_str(v * inst.tick_size_e8)
    if field.endswith("_lots"):
        name = _RENAMES.get(field, field[: -len("_lots")])
        return name, lambda inst, v: None if v is None else e8_to_str(v * inst.lot_size_e8)
    if field.endswith("_atoms"):
        return field[: -len("_atoms")], lambda _inst, v: None if v is None else e8_to_str(v)
    if field.endswith("_e8"):
        return field[: -len("_e8")], lambda _inst, v: None if v is None else e8_to_str(v)
    return field, None


def _plan(cls: type) -> tuple[tuple[int, str, Any], ...]:
    """(index in the tuple, public name, converter or None) for every published field."""
    exact = _EXACT_FIELDS.get(cls)
    plan = []
    for i, field in enumerate(cls._fields):  # type: ignore[attr-defined]
        if field in ("seq", "ts_ns"):
            continue
        name, conv = _converter(field)
        if exact is not None and name not in exact:
            continue
        plan.append((i, name, conv))
        for alias in _ALIASES.get((cls, name), ()):
            plan.append((i, alias, conv))
    return tuple(plan)


_PLANS: dict[type, tuple[tuple[int, str, Any], ...]] = {}


class EventFormatter:
    """Turns engine events into `{"type", "seq", "ts_ns", "data"}` with decimal strings."""

    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self.instruments = instruments

    def data(self, event: Any) -> dict[str, Any]:
        """The event's public fields (no seq/ts_ns), decimals as strings."""
        cls = type(event)
        plan = _PLANS.get(cls)
        if plan is None:
            plan = _PLANS[cls] = _plan(cls)
        symbol = getattr(event, "symbol", None)
        inst = self.instruments.get(symbol) if symbol is not None else None
        out: dict[str, Any] = {}
        for i, name, conv in plan:
            value = event[i]
            out[name] = value if conv is None else conv(inst, value)
        return out

    def envelope(self, event: Any) -> dict[str, Any]:
        """`{"type", "seq", "ts_ns", "data"}` for one event."""
        return {
            "type": event.TYPE,
            "seq": event.seq,
            "ts_ns": event.ts_ns,
            "data": self.data(event),
        }

    def fill_for(self, trade: ev.TradeExecuted, account_id: int) -> dict[str, Any]:
        """One side of a trade as the account that took part sees it (private channel)."""
        inst = self.instruments[trade.symbol]
        is_taker = trade.taker_account_id == account_id
        taker_buys = trade.taker_side == "buy"
        return {
            "type": "fill",
            "trade_id": trade.trade_id,
            "order_id": trade.taker_order_id if is_taker else trade.maker_order_id,
            "symbol": trade.symbol,
            "side": ("buy" if taker_buys else "sell")
            if is_taker
            else ("sell" if taker_buys else "buy"),
            "price": e8_to_str(trade.price_ticks * inst.tick_size_e8),
            "qty": e8_to_str(trade.qty_lots * inst.lot_size_e8),
            "fee": e8_to_str(trade.taker_fee_atoms if is_taker else trade.maker_fee_atoms),
            "liquidity": "taker" if is_taker else "maker",
            "remaining_qty": e8_to_str(
                (trade.taker_remaining_lots if is_taker else trade.maker_remaining_lots)
                * inst.lot_size_e8
            ),
        }

    def public_trade(self, trade: ev.TradeExecuted) -> dict[str, Any]:
        """A trade without account or order ids (public trades channel and REST)."""
        inst = self.instruments[trade.symbol]
        return {
            "trade_id": trade.trade_id,
            "symbol": trade.symbol,
            "price": e8_to_str(trade.price_ticks * inst.tick_size_e8),
            "qty": e8_to_str(trade.qty_lots * inst.lot_size_e8),
            "taker_side": trade.taker_side,
            "seq": trade.seq,
            "ts_ns": trade.ts_ns,
        }

    def book(
        self, symbol: str, bids: list[tuple[int, int]], asks: list[tuple[int, int]]
    ) -> dict[str, Any]:
        """`{symbol, bids: [[price, qty]], asks: [[price, qty]]}` from engine depth."""
        inst = self.instruments[symbol]
        tick, lot = inst.tick_size_e8, inst.lot_size_e8
        return {
            "symbol": symbol,
            "bids": [[e8_to_str(p * tick), e8_to_str(q * lot)] for p, q in bids],
            "asks": [[e8_to_str(p * tick), e8_to_str(q * lot)] for p, q in asks],
        }
