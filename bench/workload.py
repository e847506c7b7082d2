"""Deterministic order-book workloads for the engine-vs-peers benchmark (stdlib only).

The generator is fully specified so any implementation reproduces it op for op:

* ``rng = random.Random(seed)``; the mid is fixed at ``MID`` (10000 ticks).
* Per op, draw ``r = rng.randrange(100)``:

  - ``r < passive_pct``: passive limit order. ``side = rng.choice(("buy", "sell"))``,
    then price ``MID - rng.randint(1, 20)`` (buy) or ``MID + rng.randint(1, 20)`` (sell),
    then ``qty = rng.randint(1, 100)``.
  - ``r < passive_pct + cancel_pct``: cancel ``resting[rng.randrange(len(resting))]``,
    where ``resting`` lists the ids of the currently resting orders in ascending id
    order (oldest first). If nothing rests, a passive limit order is drawn instead
    (same draws as above).
  - otherwise: marketable limit order. ``side = rng.choice(("buy", "sell"))``, price
    ``MID + 100`` (buy) or ``MID - 100`` (sell), then ``qty = rng.randint(1, 100)``.
    It sweeps every crossing level; any remainder rests at its limit price.

* Order ids are 1, 2, 3, ... in generation order; only limit ops take an id (a cancel
  carries the id of the order it cancels, plus that order's side and price, qty 0).
* Resting state comes from a strict price-time book (best price first, then oldest;
  trades print at the maker's price). A "passive" order can still trade, e.g. against
  the rested remainder of a marketable order at ``MID -/+ 100``.

Nothing depends on ``n_ops`` except the loop count, so ``make_workload(n, p, c)`` is
exactly the first ``n`` ops of ``make_workload(N, p, c)`` for any ``N >= n``.
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from functools import cache

__all__ = [
    "DEFAULT_SEED",
    "MID",
    "W1_SPEC",
    "W2_SPEC",
    "Fill",
    "Op",
    "ReferenceBook",
    "make_workload",
    "replay_reference",
    "w1",
    "w2",
]

MID = 10_000
DEFAULT_SEED = 20240601
PASSIVE_MAX_OFFSET = 20
MARKETABLE_OFFSET = 100
MAX_QTY = 100

#: (n_ops, passive_pct, cancel_pct); the remainder are marketable orders.
W1_SPEC: tuple[int, int, int] = (200_000, 60, 25)
W2_SPEC: tuple[int, int, int] = (200_000, 50, 35)

#: (taker_id, maker_id, price_ticks, qty_lots)
Fill = tuple[int, int, int, int]

_SIDES = ("buy", "sell")


@dataclass(frozen=True, slots=True)
class Op:
    """One order-book operation. For ``kind == "cancel"`` only ``order_id`` matters."""

    kind: str  # "limit" or "cancel"
    order_id: int
    side: str  # "buy" / "sell"
    price_ticks: int
    qty_lots: int


class ReferenceBook:
    """Minimal strict price-time limit order book for one symbol (the oracle).

    Each side keeps sorted price keys (asks: ``price``, bids: ``-price``, so the best
    key is always index 0) and a FIFO deque of order ids per level. Cancels are lazy:
    the id leaves ``orders`` and ``resting`` at once and its stale deque entry is
    skipped when matching reaches it.
    """

    __slots__ = ("_keys", "_levels", "orders", "resting")

    def __init__(self) -> None:
        # index 0 = bids, 1 = asks
        self._keys: tuple[list[int], list[int]] = ([], [])
        self._levels: tuple[dict[int, deque[int]], dict[int, deque[int]]] = ({}, {})
        #: order_id -> [side_index, price_ticks, remaining_qty] for resting orders
        self.orders: dict[int, list[int]] = {}
        #: ids of resting orders, ascending (oldest first)
        self.resting: list[int] = []

    def limit(
        self, order_id: int, is_buy: bool, price: int, qty: int, fills: list[Fill] | None = None
    ) -> int:
        """Match an incoming limit order, rest any remainder; return the filled qty."""
        own, opp = (0, 1) if is_buy else (1, 0)
        limit_key = price if is_buy else -price
        keys = self._keys[opp]
        levels = self._levels[opp]
        orders = self.orders
        resting = self.resting
        left = qty
        while left and keys and keys[0] <= limit_key:
            key = keys[0]
            queue = levels[key]
            while left and queue:
                maker_id = queue[0]
                maker = orders.get(maker_id)
                if maker is None:  # cancelled earlier
                    queue.popleft()
                    continue
                avail = maker[2]
                traded = avail if avail <= left else left
                if fills is not None:
                    fills.append((order_id, maker_id, maker[1], traded))
                left -= traded
                if traded == avail:
                    queue.popleft()
                    del orders[maker_id]
                    del resting[bisect_left(resting, maker_id)]
                else:
                    maker[2] = avail - traded
            if not queue:
                del levels[key]
                keys.pop(0)
        if left:
            key = -limit_key
            own_levels = self._levels[own]
            if key not in own_levels:
                own_levels[key] = deque()
                insort(self._keys[own], key)
            own_levels[key].append(order_id)
            orders[order_id] = [own, price, left]
            resting.append(order_id)  # ids only grow, so this keeps ``resting`` sorted
        return qty - left

    def cancel(self, order_id: int) -> bool:
        """Cancel a resting order; return False if it is not resting."""
        if self.orders.pop(order_id, None) is None:
            return False
        resting = self.resting
        del resting[bisect_left(resting, order_id)]
        return True


def make_workload(
    n_ops: int, passive_pct: int, cancel_pct: int, seed: int = DEFAULT_SEED
) -> list[Op]:
    """Generate ``n_ops`` ops as described in the module docstring."""
    if passive_pct < 0 or cancel_pct < 0 or passive_pct + cancel_pct > 100:
        raise ValueError("need 0 <= passive_pct, cancel_pct and passive_pct + cancel_pct <= 100")
    rng = random.Random(seed)
    randrange, randint, choice = rng.randrange, rng.randint, rng.choice
    book = ReferenceBook()
    resting, orders, limit = book.resting, book.orders, book.limit
    cancel_cut = passive_pct + cancel_pct
    ops: list[Op] = []
    append = ops.append
    next_id = 1
    for _ in range(n_ops):
        r = randrange(100)
        if passive_pct <= r < cancel_cut and resting:
            target = resting[randrange(len(resting))]
            side_index, price, _left = orders[target]
            book.cancel(target)
            append(Op("cancel", target, _SIDES[side_index], price, 0))
            continue
        side = choice(_SIDES)
        is_buy = side == "buy"
        if r < cancel_cut:  # passive (or a cancel with nothing resting)
            offset = randint(1, PASSIVE_MAX_OFFSET)
            price = MID - offset if is_buy else MID + offset
        else:
            price = MID + MARKETABLE_OFFSET if is_buy else MID - MARKETABLE_OFFSET
        qty = randint(1, MAX_QTY)
        append(Op("limit", next_id, side, price, qty))
        limit(next_id, is_buy, price, qty)
        next_id += 1
    return ops


def replay_reference(ops: list[Op]) -> list[Fill]:
    """Replay ``ops`` on a fresh :class:`ReferenceBook`; return every fill in order.

    Fills are ``(taker_id, maker_id, price_ticks, qty_lots)``, strict price-time,
    at the maker's price. Cancels of ids that are not resting are ignored.
    """
    book = ReferenceBook()
    fills: list[Fill] = []
    for op in ops:
        if op.kind == "limit":
            book.limit(op.order_id, op.side == "buy", op.price_ticks, op.qty_lots, fills)
        elif op.kind == "cancel":
            book.cancel(op.order_id)
        else:
            raise ValueError(f"unknown op kind {op.kind!r}")
    return fills


@cache
def w1() -> list[Op]:
    """Workload W1: ``make_workload(*W1_SPEC)`` (cached; do not mutate)."""
    return make_workload(*W1_SPEC)


@cache
def w2() -> list[Op]:
    """Workload W2: ``make_workload(*W2_SPEC)`` (cached; do not mutate)."""
    return make_workload(*W2_SPEC)
