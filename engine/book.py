"""Central limit order book of one symbol: strict price-time priority.

Structure: per side a `SortedDict` from a price key to a `Level` (bids keyed by -price so
that the best level is always index 0); each level keeps its orders in a dict, whose
insertion order is time priority. `orders` indexes every resting order once.

Invariants (`check_invariants`): never crossed; each level's `total_lots` is the sum of its
orders' remaining lots; no empty level; every resting order indexed exactly once, at its
own price and side, with positive remaining quantity.

The book only stores and walks orders. Deciding what a fill *does* (fees, positions,
self-trade prevention, reduce-only caps) belongs to the caller: `walk` yields makers in
priority order and the caller fills or removes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sortedcontainers import SortedDict

from engine.errors import InvariantViolation
from engine.pickling import restore, state_of

_ORDER_ATTRS = (
    "account_id",
    "client_order_id",
    "close_position",
    "filled_lots",
    "filled_value_ticks",
    "fills",
    "is_buy",
    "order_id",
    "order_type",
    "post_only",
    "price_ticks",
    "qty_lots",
    "reduce_only",
    "remaining_lots",
    "side",
    "status",
    "stp",
    "symbol",
    "time_in_force",
    "trigger_by",
    "trigger_price_ticks",
    "ts_ns",
)


class Order:
    """A live or finished order. Mutable only by the engine thread of control."""

    __slots__ = _ORDER_ATTRS

    def __init__(
        self,
        order_id: int = 0,
        account_id: int = 0,
        symbol: str = "",
        side: str = "buy",
        price_ticks: int | None = None,
        qty_lots: int = 0,
        order_type: str = "limit",
        time_in_force: str = "GTC",
        post_only: bool = False,
        reduce_only: bool = False,
        stp: str = "cancel_taker",
        client_order_id: str | None = None,
        ts_ns: int = 0,
    ) -> None:
        self.order_id = order_id
        self.account_id = account_id
        self.symbol = symbol
        self.side = side
        self.is_buy = side == "buy"
        self.price_ticks = price_ticks
        self.qty_lots = qty_lots
        self.remaining_lots = qty_lots
        self.filled_lots = 0
        self.filled_value_ticks = 0  # sum(price_ticks * qty_lots) of fills, for the average price
        self.order_type = order_type
        self.time_in_force = time_in_force
        self.post_only = post_only
        self.reduce_only = reduce_only
        self.stp = stp
        self.client_order_id = client_order_id
        self.status = "new"
        self.ts_ns = ts_ns
        # (trade_id, price_ticks, qty_lots, fee_atoms, liquidity); () until the first fill, so
        # that the many orders that rest and go unfilled allocate no list (nor GC-tracked object)
        self.fills: list[tuple[int, int, int, int, str]] | tuple[()] = ()
        # SPEC §12 conditional orders: set on stop / take-profit types (engine/stops.py)
        self.trigger_price_ticks: int | None = None
        self.trigger_by = "mark"
        self.close_position = False

    def __getstate__(self) -> dict[str, Any]:
        return state_of(self, _ORDER_ATTRS)

    def __setstate__(self, state: Any) -> None:
        """Unpickle (snapshots), also one written before the conditional-order fields."""
        self.trigger_price_ticks = None
        self.trigger_by = "mark"
        self.close_position = False
        restore(self, state)


class Level:
    """Orders resting at one price, in time priority."""

    __slots__ = ("orders", "price_ticks", "total_lots")

    def __init__(self, price_ticks: int = 0) -> None:
        self.price_ticks = price_ticks
        self.total_lots = 0
        self.orders: dict[int, Order] = {}

    def __getstate__(self) -> dict[str, Any]:
        return state_of(self, ("orders", "price_ticks", "total_lots"))

    def __setstate__(self, state: Any) -> None:
        restore(self, state)


class OrderBook:
    """Bids and asks of one symbol.

    The best level of each side is cached (`top_bid`, `top_ask`), kept by `add` and `remove`:
    the matching loop reads it once per maker, and a `SortedDict.peekitem` would cost an
    interpreted call each time (check_invariants compares the cache with the sides)."""

    __slots__ = ("asks", "bids", "orders", "symbol", "top_ask", "top_bid")

    def __init__(self, symbol: str = "") -> None:
        self.symbol = symbol
        self.bids: SortedDict = SortedDict()  # -price -> Level
        self.asks: SortedDict = SortedDict()  # price -> Level
        self.orders: dict[int, Order] = {}
        self.top_bid: Level | None = None
        self.top_ask: Level | None = None

    def __getstate__(self) -> dict[str, Any]:
        return state_of(self, ("asks", "bids", "orders", "symbol"))  # the tops are derived

    def __setstate__(self, state: Any) -> None:
        restore(self, state)
        self.top_bid = self.bids.peekitem(0)[1] if self.bids else None
        self.top_ask = self.asks.peekitem(0)[1] if self.asks else None

    # -- queries -------------------------------------------------------------------------

    def best_bid(self) -> int | None:
        """Highest bid price, or None."""
        top = self.top_bid
        return top.price_ticks if top is not None else None

    def best_ask(self) -> int | None:
        """Lowest ask price, or None."""
        top = self.top_ask
        return top.price_ticks if top is not None else None

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Top `levels` of each side as (price_ticks, total_lots), best first."""
        bids = [(lv.price_ticks, lv.total_lots) for lv in self.bids.values()[:levels]]
        asks = [(lv.price_ticks, lv.total_lots) for lv in self.asks.values()[:levels]]
        return bids, asks

    def crosses(self, is_buy: bool, price_ticks: int) -> bool:
        """Whether an order at this price would meet the opposite side."""
        if is_buy:
            return self.top_ask is not None and self.top_ask.price_ticks <= price_ticks
        return self.top_bid is not None and self.top_bid.price_ticks >= price_ticks

    def walk(self, is_buy: bool, limit_ticks: int) -> Iterator[Order]:
        """Resting orders a taker on `is_buy` side limited at `limit_ticks` would meet, in priority.

        Read-only: use it for pre-checks (FOK). Do not mutate the book while iterating.
        """
        if is_buy:
            for price, level in self.asks.items():
                if price > limit_ticks:
                    return
                yield from level.orders.values()
        else:
            for key, level in self.bids.items():
                if -key < limit_ticks:
                    return
                yield from level.orders.values()

    # -- mutation ------------------------------------------------------------------------

    def add(self, order: Order) -> None:
        """Rest `order` at the back of its price level."""
        price = order.price_ticks
        assert price is not None
        side = self.bids if order.is_buy else self.asks
        key = -price if order.is_buy else price
        level = side.get(key)
        if level is None:
            level = Level(price)
            side[key] = level
            if order.is_buy:
                if self.top_bid is None or price > self.top_bid.price_ticks:
                    self.top_bid = level
            elif self.top_ask is None or price < self.top_ask.price_ticks:
                self.top_ask = level
        level.orders[order.order_id] = order
        level.total_lots += order.remaining_lots
        self.orders[order.order_id] = order

    def remove(self, order: Order) -> None:
        """Take a resting order out of the book (cancel, or fully filled)."""
        del self.orders[order.order_id]
        side = self.bids if order.is_buy else self.asks
        key = -order.price_ticks if order.is_buy else order.price_ticks  # type: ignore[operator]
        level = side[key]
        del level.orders[order.order_id]
        level.total_lots -= order.remaining_lots
        if not level.orders:
            del side[key]
            if level is self.top_bid:
                self.top_bid = side.peekitem(0)[1] if side else None
            elif level is self.top_ask:
                self.top_ask = side.peekitem(0)[1] if side else None

    def reduce(self, order: Order, lots: int) -> None:
        """Lower a resting order's remaining quantity in place (keeps time priority)."""
        side = self.bids if order.is_buy else self.asks
        key = -order.price_ticks if order.is_buy else order.price_ticks  # type: ignore[operator]
        side[key].total_lots -= lots
        order.remaining_lots -= lots

    def best_maker(self, is_buy_taker: bool, limit_ticks: int) -> Order | None:
        """The first order of the best opposite level if it crosses `limit_ticks`, else None:
        the next maker a taker meets in price-time priority (matching.py loops on it)."""
        level = self.top_ask if is_buy_taker else self.top_bid
        if level is None:
            return None
        price = level.price_ticks
        if (price > limit_ticks) if is_buy_taker else (price < limit_ticks):
            return None
        for order in level.orders.values():  # the first (a loop: no view or iterator object)
            return order
        return None  # pragma: no cover - a level in the book is never empty (check_invariants)

    def take(self, maker: Order, qty_lots: int) -> bool:
        """A fill of `qty_lots` against a resting maker: it leaves the book with its remaining
        quantity set to 0 when filled whole (True), or is reduced in place (False)."""
        if qty_lots == maker.remaining_lots:
            self.remove(maker)
            maker.remaining_lots = 0
            return True
        self.reduce(maker, qty_lots)
        return False

    def best_level(self, is_buy_taker: bool) -> Level | None:
        """The best opposite level for a taker on the given side."""
        return self.top_ask if is_buy_taker else self.top_bid

    # -- invariants ----------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise InvariantViolation if the book is crossed or its indexes disagree."""
        for side, top in ((self.bids, self.top_bid), (self.asks, self.top_ask)):
            if top is not (side.peekitem(0)[1] if side else None):
                raise InvariantViolation(f"{self.symbol}: cached best level is not the best")
        bb, ba = self.best_bid(), self.best_ask()
        if bb is not None and ba is not None and bb >= ba:
            raise InvariantViolation(f"{self.symbol}: book crossed {bb} >= {ba}")
        seen = 0
        for is_buy, side in ((True, self.bids), (False, self.asks)):
            for key, level in side.items():
                price = -key if is_buy else key
                if level.price_ticks != price or not level.orders:
                    raise InvariantViolation(f"{self.symbol}: bad level at {price}")
                total = 0
                for oid, order in level.orders.items():
                    lots = order.remaining_lots
                    if (
                        order.order_id != oid
                        or order.price_ticks != price
                        or order.is_buy != is_buy
                        or lots <= 0
                        or self.orders.get(oid) is not order
                    ):
                        raise InvariantViolation(f"{self.symbol}: order {oid} misindexed")
                    total += lots
                    seen += 1
                if total != level.total_lots:
                    raise InvariantViolation(f"{self.symbol}: level {price} total mismatch")
        if seen != len(self.orders):
            raise InvariantViolation(f"{self.symbol}: {len(self.orders) - seen} orders not in levels")
