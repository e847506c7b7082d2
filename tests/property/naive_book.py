"""A deliberately naive reference order book for one symbol (the oracle of the book property test).

Written from SPEC §4 alone, without looking at `engine/book.py`'s data structures: every
resting order sits in one plain list, in no particular order, and every question ("what is
the best maker?", "what is the depth?") is answered by a linear scan. It is slow on purpose;
what matters is that it is obviously right.

Model:
- time priority is a global counter, assigned every time an order (re)enters the book;
- the best maker for a buyer is the lowest ask, then the lowest counter; for a seller the
  highest bid, then the lowest counter;
- trades print at the maker's price;
- self-trade prevention looks at the maker the taker is about to meet (`cancel_taker`: the
  taker's rest is canceled; `cancel_maker`: that maker is canceled and matching goes on;
  `cancel_both`: both are canceled);
- FOK is tried on a copy of the book and committed only if it fills completely, so a killed
  FOK leaves no trace (no fills, no self-trade cancels);
- a market order is an IOC (a FOK if asked for) whose limit is the mark moved by the band
  (rounded to the tick inside the band: down for a buyer, up for a seller);
- price band (SPEC §3): a limit buy priced above mark x (1 + band), or a sell below
  mark x (1 - band), is rejected `PRICE_OUT_OF_BAND` (after the post-only/time-in-force check,
  before WOULD_TAKE); an amend that moves the price or raises the qty is checked the same
  way (after its WOULD_TAKE check);
- amend: `qty` is the new total (filled included). Lowering it at the same price keeps the
  order where it is; any other change takes the order out and sends it in again as a taker
  at its new price, so a crossing amend trades at the resting orders' prices, and its rest
  joins the back of its level.

Results use the engine's public vocabulary: rejection reasons are the `Reject` names, cancel
reasons the `OrderCanceled.reason` strings.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from fractions import Fraction
from math import ceil, floor

Fill = tuple[int, int, int, int]  # taker_order_id, maker_order_id, price_ticks, qty_lots
Cancel = tuple[int, int, str]  # order_id, canceled_lots, reason


@dataclass
class RefOrder:
    order_id: int
    account_id: int
    side: str  # "buy" | "sell"
    price_ticks: int
    total_lots: int  # the order's quantity, filled part included
    remaining_lots: int
    filled_lots: int
    stp: str
    post_only: bool
    priority: int = -1


@dataclass
class RefResult:
    rejected: str | None = None
    fills: list[Fill] = field(default_factory=list)
    canceled: list[Cancel] = field(default_factory=list)


class NaiveBook:
    """Plain-list price-time priority book with the SPEC §4 order types."""

    def __init__(self, market_band_ppm: int = 50_000, price_band_ppm: int = 50_000) -> None:
        self.market_band = Fraction(market_band_ppm, 1_000_000)
        self.price_band = Fraction(price_band_ppm, 1_000_000)
        self.resting: list[RefOrder] = []
        self.clock = 0

    # -- queries -------------------------------------------------------------------------

    def depth(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks) as lists of (price_ticks, total_lots), best first."""
        out = []
        for side, best_first in (("buy", True), ("sell", False)):
            totals: dict[int, int] = {}
            for o in self.resting:
                if o.side == side:
                    totals[o.price_ticks] = totals.get(o.price_ticks, 0) + o.remaining_lots
            out.append(sorted(totals.items(), reverse=best_first))
        return out[0], out[1]

    def queues(self) -> tuple[list[tuple[int, list[tuple[int, int]]]], ...]:
        """Per side, per level best first: (price, [(order_id, remaining_lots)] in priority)."""
        out = []
        for side, best_first in (("buy", True), ("sell", False)):
            prices = sorted({o.price_ticks for o in self.resting if o.side == side}, reverse=best_first)
            levels = []
            for p in prices:
                at_p = sorted((o for o in self.resting if o.side == side and o.price_ticks == p), key=lambda o: o.priority)
                levels.append((p, [(o.order_id, o.remaining_lots) for o in at_p]))
            out.append(levels)
        return tuple(out)

    def find(self, order_id: int) -> RefOrder | None:
        for o in self.resting:
            if o.order_id == order_id:
                return o
        return None

    def open_ids(self, account_id: int | None = None) -> list[int]:
        return sorted(o.order_id for o in self.resting if account_id is None or o.account_id == account_id)

    def would_cross(self, side: str, price_ticks: int) -> bool:
        for o in self.resting:
            if side == "buy" and o.side == "sell" and o.price_ticks <= price_ticks:
                return True
            if side == "sell" and o.side == "buy" and o.price_ticks >= price_ticks:
                return True
        return False

    def market_limit(self, side: str, mark_ticks: int) -> int:
        if side == "buy":
            return floor(mark_ticks * (1 + self.market_band))
        return ceil(mark_ticks * (1 - self.market_band))

    # -- commands ------------------------------------------------------------------------

    def place(
        self,
        order_id: int,
        account_id: int,
        side: str,
        qty_lots: int,
        price_ticks: int | None,
        order_type: str = "limit",
        time_in_force: str = "GTC",
        post_only: bool = False,
        stp: str = "cancel_taker",
        mark_ticks: int | None = None,
    ) -> RefResult:
        if order_type == "market":
            if post_only:
                return RefResult(rejected="POST_ONLY_NOT_ALLOWED")
            assert mark_ticks is not None
            limit = self.market_limit(side, mark_ticks)
            tif = "FOK" if time_in_force == "FOK" else "IOC"  # a market order never rests
            leftover_reason = "market"
        else:
            assert price_ticks is not None
            if post_only and time_in_force != "GTC":
                return RefResult(rejected="POST_ONLY_NOT_ALLOWED")
            if not self.in_band(side, price_ticks, mark_ticks):
                return RefResult(rejected="PRICE_OUT_OF_BAND")
            if post_only and self.would_cross(side, price_ticks):
                return RefResult(rejected="WOULD_TAKE")
            limit = price_ticks
            tif = time_in_force
            leftover_reason = "ioc"
        taker = RefOrder(order_id, account_id, side, limit, qty_lots, qty_lots, 0, stp, post_only)
        result = RefResult()
        if tif == "FOK":
            saved = copy.deepcopy(self.resting), self.clock
            trial = RefResult()
            self._take(taker, limit, trial)
            if taker.remaining_lots > 0:
                self.resting, self.clock = saved
                result.canceled.append((order_id, qty_lots, "fok"))
                return result
            return trial
        stopped = self._take(taker, limit, result)
        if taker.remaining_lots == 0:
            return result
        if stopped:
            result.canceled.append((order_id, taker.remaining_lots, "stp"))
        elif tif == "GTC":
            self._rest(taker)
        else:
            result.canceled.append((order_id, taker.remaining_lots, leftover_reason))
        return result

    def cancel(self, account_id: int, order_id: int) -> RefResult:
        o = self.find(order_id)
        if o is None or o.account_id != account_id:
            return RefResult(rejected="ORDER_NOT_FOUND")
        self.resting.remove(o)
        return RefResult(canceled=[(o.order_id, o.remaining_lots, "user")])

    def cancel_all(self, account_id: int) -> RefResult:
        mine = [o for o in self.resting if o.account_id == account_id]
        self.resting = [o for o in self.resting if o.account_id != account_id]
        return RefResult(canceled=[(o.order_id, o.remaining_lots, "user") for o in mine])

    def in_band(self, side: str, price_ticks: int, mark_ticks: int | None) -> bool:
        """SPEC §3's price band on the aggressive side (no band without a mark or at 0)."""
        if mark_ticks is None or not self.price_band:
            return True
        if side == "buy":
            return price_ticks <= mark_ticks * (1 + self.price_band)
        return price_ticks >= mark_ticks * (1 - self.price_band)

    def amend(
        self,
        account_id: int,
        order_id: int,
        price_ticks: int | None,
        qty_lots: int | None,
        mark_ticks: int | None = None,
    ) -> RefResult:
        o = self.find(order_id)
        if o is None or o.account_id != account_id:
            return RefResult(rejected="ORDER_NOT_FOUND")
        new_price = o.price_ticks if price_ticks is None else price_ticks
        new_total = o.total_lots if qty_lots is None else qty_lots
        if new_total <= o.filled_lots:
            return RefResult(rejected="INVALID_QUANTITY")
        new_remaining = new_total - o.filled_lots
        if new_price == o.price_ticks and new_remaining == o.remaining_lots:
            return RefResult(rejected="NOTHING_TO_AMEND")
        if o.post_only and self.would_cross(o.side, new_price):
            return RefResult(rejected="WOULD_TAKE")
        moves = new_price != o.price_ticks or new_total > o.total_lots
        if moves and not self.in_band(o.side, new_price, mark_ticks):
            return RefResult(rejected="PRICE_OUT_OF_BAND")
        o.total_lots = new_total
        if new_price == o.price_ticks and new_remaining < o.remaining_lots:
            o.remaining_lots = new_remaining  # same place in the queue
            return RefResult()
        self.resting.remove(o)
        o.price_ticks = new_price
        o.remaining_lots = new_remaining
        result = RefResult()
        stopped = self._take(o, new_price, result)
        if o.remaining_lots == 0:
            return result
        if stopped:
            result.canceled.append((o.order_id, o.remaining_lots, "stp"))
        else:
            self._rest(o)
        return result

    # -- matching ------------------------------------------------------------------------

    def _rest(self, order: RefOrder) -> None:
        self.clock += 1
        order.priority = self.clock
        self.resting.append(order)

    def _best_maker(self, taker_side: str, limit_ticks: int) -> RefOrder | None:
        best: RefOrder | None = None
        for o in self.resting:
            if o.side == taker_side:
                continue
            if taker_side == "buy" and o.price_ticks > limit_ticks:
                continue
            if taker_side == "sell" and o.price_ticks < limit_ticks:
                continue
            if best is None:
                best = o
                continue
            better_price = o.price_ticks < best.price_ticks if taker_side == "buy" else o.price_ticks > best.price_ticks
            if better_price or (o.price_ticks == best.price_ticks and o.priority < best.priority):
                best = o
        return best

    def _take(self, taker: RefOrder, limit_ticks: int, result: RefResult) -> bool:
        """Fill `taker` against the book; True if self-trade prevention stopped it."""
        while taker.remaining_lots > 0:
            maker = self._best_maker(taker.side, limit_ticks)
            if maker is None:
                return False
            if maker.account_id == taker.account_id:
                if taker.stp == "cancel_taker":
                    return True
                self.resting.remove(maker)
                result.canceled.append((maker.order_id, maker.remaining_lots, "stp"))
                if taker.stp == "cancel_both":
                    return True
                continue
            qty = min(taker.remaining_lots, maker.remaining_lots)
            result.fills.append((taker.order_id, maker.order_id, maker.price_ticks, qty))
            taker.remaining_lots -= qty
            taker.filled_lots += qty
            maker.remaining_lots -= qty
            maker.filled_lots += qty
            if maker.remaining_lots == 0:
                self.resting.remove(maker)
        return False
