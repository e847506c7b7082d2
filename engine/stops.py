"""Stop and take-profit orders (SPEC §12): storage outside the book, triggers, cancels.

Types: `stop_market`, `stop_limit`, `take_profit_market`, `take_profit_limit`, each with a
`trigger_price_ticks` and a `trigger_by` (`mark`, or `last`: the last trade price).

Direction. A stop sell and a take-profit buy fire on a FALL: when the reference price is at
or below the trigger (`ref <= trigger`). A stop buy and a take-profit sell fire on a RISE:
`ref >= trigger`. A `last` stop with no trade yet in its symbol waits.

Storage (`StopBook`, on the state as `st.stops`): per symbol and per trigger_by two
`SortedList`s, the fall list keyed `(-trigger, order_id)` and the rise list keyed
`(trigger, order_id)`, so the head of each is the order the price reaches first; a check
with nothing to fire peeks one head per list (O(1)). `count` is the total, so
`Engine.apply` skips all of this when there are no stops. Each account's untriggered stops
are also in `Account.stop_orders` (found by `find_order`, cancel and amend like open ones).

Placement (orders.place dispatches the four types here for their own rules): the trigger
fields (`validate_fields`), then the checks every order gets at placement (account,
symbol, side, stp, time in force, client order id, NO_MARK_PRICE, ORDER_TOO_LARGE at the
mark, the open-order limit, which stops count toward), and WOULD_TRIGGER_IMMEDIATELY when
the reference already satisfies the trigger. NOT checked at placement: margin, the price
band, reduce-only capacity and post-only: an untriggered stop reserves no margin, is not
in the open quantities nor the price bounds, and all of these are checked at trigger,
like a new order. It is `order_accepted` with status `untriggered`.

Triggering (`fire_next`, called by `Engine.apply` after the command's handler). One stop
at a time: symbols in name order, for each `mark` then `last`, the fall list then the rise
list; the first head whose trigger is reached fires, then the scan starts again (its fills
may move the last price). So on a fall the highest trigger fires first, on a rise the
lowest, ties by order id. Firing takes it out of the index and `stop_orders` and emits
`order_triggered` (with the mark or last price that reached it); orders.enter_triggered
then enters it exactly like a new order of its underlying kind (market: IOC within the
market band; limit: its time in force and post-only), with the same order id, client
order id and type: `order_accepted` then matching, or `order_rejected` naming the order id
(closed into history as `rejected`). `close_position` orders take the whole position, on
the reducing side, as their quantity at trigger (NOTHING_TO_REDUCE when there is none).
Triggers run before the liquidation check of the same command: a trader's stop is their
own protection and gets its chance first (Engine.apply alternates the two until neither
has work).

Cancel: by the user like any order (reason `user`); all of an account's by liquidation
(`liquidation`), those in a symbol of a deleveraged counterparty (`adl`), and, when a
position closes or flips, the reduce-only and close-position ones that can no longer
reduce it (`reduce_only`).

Invariants (`check_invariants`): the index and the accounts' `stop_orders` hold the same
orders, each once, in the list its type and side say, keyed by its own trigger; `count`
is right; every untriggered stop is not yet triggered at the current references.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sortedcontainers import SortedList

from engine import commands as c
from engine import events as ev
from engine.errors import InvariantViolation, Reject, Rejected
from engine.pickling import as_dict, restore, state_of
from engine.units import e8_to_str

if TYPE_CHECKING:
    from engine.accounts import Account
    from engine.book import Order
    from engine.state import ExchangeState

MARKET_TYPES = (c.STOP_MARKET, c.TAKE_PROFIT_MARKET)  # enter as market orders; close_position allowed
LIMIT_TYPES = (c.STOP_LIMIT, c.TAKE_PROFIT_LIMIT)  # enter as limit orders at their price
UNTRIGGERED = "untriggered"


def fires_on_fall(order_type: str, side: str) -> bool:
    """Whether this type and side fire when the price falls to the trigger (stop sell,
    take-profit buy); otherwise they fire when it rises to it (stop buy, take-profit sell)."""
    is_stop = order_type in (c.STOP_MARKET, c.STOP_LIMIT)
    return is_stop == (side == c.SELL)


def reached(on_fall: bool, reference_ticks: int, trigger_ticks: int) -> bool:
    """Whether a reference price satisfies a trigger: at or below it on a fall, at or above on a rise."""
    return reference_ticks <= trigger_ticks if on_fall else reference_ticks >= trigger_ticks


class StopBook:
    """Every untriggered stop, per (symbol, trigger_by), in the order the price reaches them.

    Besides the lists it keeps, per (symbol, trigger_by), the trigger of each list's head
    (`tops`: the highest fall trigger and the lowest rise trigger, None for an empty list)
    and the reference price it last checked without finding anything to fire (`checked`):
    a check at a price already checked costs one dict lookup, one at a new price two
    comparisons (placement and amend refuse a trigger the current price already reaches, so
    a price once checked stays quiet until it moves)."""

    __slots__ = ("active", "checked", "count", "lists", "orders", "tops")

    def __init__(self, symbols: list[str] | tuple[()] = ()) -> None:
        # (symbol, trigger_by) -> (fall list keyed (-trigger, id), rise list keyed (trigger, id))
        self.lists: dict[tuple[str, str], tuple[SortedList, SortedList]] = {
            (s, by): (SortedList(), SortedList()) for s in symbols for by in c.TRIGGER_BY
        }
        self.orders: dict[int, Order] = {}  # order_id -> order
        self.count = 0
        # (symbol, trigger_by) -> [highest fall trigger, lowest rise trigger], only while non-empty
        self.tops: dict[tuple[str, str], list[int | None]] = {}
        self.checked: dict[tuple[str, str], int] = {}
        self.active: list[tuple[str, str]] = []  # the keys of `tops`, in scan order

    def __getstate__(self) -> dict[str, Any]:
        return state_of(self, ("active", "checked", "count", "lists", "orders", "tops"))

    def __setstate__(self, state: Any) -> None:
        """Unpickle (snapshots), also one written before `tops` and `checked` existed."""
        values = as_dict(state)
        restore(self, values)
        if "active" not in values:
            self.tops, self.checked, self.active = {}, {}, []
            for key in self.lists:
                self._retop(key)

    def _retop(self, key: tuple[str, str]) -> None:
        fall, rise = self.lists[key]
        if fall or rise:
            if key not in self.tops:
                self.active = sorted([*self.active, key], key=lambda k: (k[0], c.TRIGGER_BY.index(k[1])))
            self.tops[key] = [-fall[0][0] if fall else None, rise[0][0] if rise else None]
        elif key in self.tops:
            del self.tops[key]
            self.checked.pop(key, None)
            self.active = [k for k in self.active if k != key]

    def add(self, order: Order) -> None:
        """Index an untriggered stop."""
        trigger = order.trigger_price_ticks
        assert trigger is not None
        key = (order.symbol, order.trigger_by)
        fall, rise = self.lists[key]
        if fires_on_fall(order.order_type, order.side):
            fall.add((-trigger, order.order_id))
        else:
            rise.add((trigger, order.order_id))
        self.orders[order.order_id] = order
        self.count += 1
        self._retop(key)

    def remove(self, order: Order) -> None:
        """Take a stop out of the index (fired, canceled, or about to be re-keyed by an amend)."""
        trigger = order.trigger_price_ticks
        assert trigger is not None
        key = (order.symbol, order.trigger_by)
        fall, rise = self.lists[key]
        if fires_on_fall(order.order_type, order.side):
            fall.remove((-trigger, order.order_id))
        else:
            rise.remove((trigger, order.order_id))
        del self.orders[order.order_id]
        self.count -= 1
        self._retop(key)

    def next_triggered(self, st: ExchangeState) -> tuple[Order, int] | None:
        """The first stop whose trigger the current references reach (scan order above), and
        the reference price that reached it; None when none is."""
        tops, checked, marks, last = self.tops, self.checked, st.marks, st.last_price
        for key in self.active:  # symbols in name order, mark before last
            sym, by = key
            ref = marks.get(sym) if by == c.TRIGGER_BY_MARK else last.get(sym)
            if ref is None or checked.get(key) == ref:
                continue
            fall_top, rise_low = tops[key]
            if fall_top is not None and ref <= fall_top:
                return self.orders[self.lists[key][0][0][1]], ref
            if rise_low is not None and ref >= rise_low:
                return self.orders[self.lists[key][1][0][1]], ref
            checked[key] = ref
        return None


# == placement ==============================================================================


def validate_fields(cmd: c.PlaceOrder) -> None:
    """The trigger fields of a stop / take-profit order (stateless)."""
    trigger = cmd.trigger_price_ticks
    if type(trigger) is not int or trigger <= 0:
        raise Rejected(Reject.INVALID_TRIGGER_PRICE, "trigger_price must be a positive price")
    if cmd.trigger_by not in c.TRIGGER_BY:
        raise Rejected(Reject.INVALID_TRIGGER_BY, "trigger_by must be mark or last")
    if cmd.close_position is not False and cmd.close_position is not True:
        raise Rejected(Reject.TRIGGER_NOT_ALLOWED, "close_position must be a boolean")
    if cmd.close_position and cmd.order_type not in MARKET_TYPES:
        raise Rejected(Reject.TRIGGER_NOT_ALLOWED, "close_position only on stop_market and take_profit_market")


def reference_price(st: ExchangeState, symbol: str, trigger_by: str) -> int | None:
    """The price a stop of `symbol` watches: the mark, or the last trade price (None before the first trade)."""
    return st.marks.get(symbol) if trigger_by == c.TRIGGER_BY_MARK else st.last_price.get(symbol)


def check_not_reached(st: ExchangeState, symbol: str, order_type: str, side: str, trigger_by: str,
                      trigger_ticks: int) -> None:
    """Refuse a trigger the reference price already satisfies (placement and amend)."""
    ref = reference_price(st, symbol, trigger_by)
    if ref is not None and reached(fires_on_fall(order_type, side), ref, trigger_ticks):
        inst = st.instruments[symbol]
        direction = "at or below" if fires_on_fall(order_type, side) else "at or above"
        raise Rejected(
            Reject.WOULD_TRIGGER_IMMEDIATELY,
            f"the {trigger_by} price {e8_to_str(inst.price_e8(ref))} is already {direction} the trigger "
            f"{e8_to_str(inst.price_e8(trigger_ticks))}",
        )


def add(st: ExchangeState, acct: Account, order: Order) -> None:
    """Store an accepted stop: untriggered, outside the book."""
    order.status = UNTRIGGERED
    acct.stop_orders[order.order_id] = order
    st.stops.add(order)


# == triggering =============================================================================


def fire_next(st: ExchangeState) -> Order | None:
    """Fire the first triggered stop (scan order in the module docstring): take it out of
    the index and its account, emit `order_triggered`, return it (None: nothing to fire).
    The caller enters it (orders.enter_triggered)."""
    found = st.stops.next_triggered(st)
    if found is None:
        return None
    order, ref = found
    st.stops.remove(order)
    del st.accounts[order.account_id].stop_orders[order.order_id]
    st.emit(
        ev.OrderTriggered,
        order.account_id,
        order.order_id,
        order.client_order_id,
        order.symbol,
        order.side,
        order.order_type,
        order.trigger_price_ticks,
        order.trigger_by,
        ref,
    )
    return order


# == cancel =================================================================================


def cancel_stop(st: ExchangeState, acct: Account, order: Order, reason: str) -> None:
    """Cancel one untriggered stop (`order_canceled` with `reason`)."""
    st.stops.remove(order)
    del acct.stop_orders[order.order_id]
    st.cancel_remaining(order, acct, reason)


def cancel_account_stops(st: ExchangeState, acct: Account, reason: str, symbol: str | None = None) -> None:
    """Cancel the account's untriggered stops (only those in `symbol` when given), by order id."""
    if not acct.stop_orders:
        return
    for order in [o for o in acct.stop_orders.values() if symbol is None or o.symbol == symbol]:
        cancel_stop(st, acct, order, reason)


def cancel_stale_reduce_only(st: ExchangeState, acct: Account, symbol: str) -> None:
    """After the account's position in `symbol` closed or flipped: cancel its reduce-only and
    close-position stops there that can no longer reduce it (reason `reduce_only`)."""
    if not acct.stop_orders:
        return
    for order in [o for o in acct.stop_orders.values() if o.symbol == symbol and o.reduce_only]:
        if st.reduce_capacity(acct.account_id, symbol, order.is_buy) == 0:
            cancel_stop(st, acct, order, "reduce_only")


# == invariants ===============================================================================


def check_invariants(st: ExchangeState) -> None:
    """Raise InvariantViolation if the stop index and the accounts disagree, or a stop that
    the current prices reach is still waiting."""
    book: StopBook = st.stops
    seen = 0
    for acct in st.accounts.values():
        for oid, order in acct.stop_orders.items():
            seen += 1
            if book.orders.get(oid) is not order or order.account_id != acct.account_id:
                raise InvariantViolation(f"stop {oid} of account {acct.account_id} not indexed")
            if order.order_type not in c.TRIGGER_TYPES or order.status != UNTRIGGERED:
                raise InvariantViolation(f"stop {oid}: type {order.order_type} status {order.status}")
            if oid in acct.open_orders or oid in st.books[order.symbol].orders:
                raise InvariantViolation(f"stop {oid} also rests in the book")
            trigger = order.trigger_price_ticks
            if type(trigger) is not int or trigger <= 0 or order.trigger_by not in c.TRIGGER_BY:
                raise InvariantViolation(f"stop {oid}: bad trigger {trigger} by {order.trigger_by}")
            on_fall = fires_on_fall(order.order_type, order.side)
            fall, rise = book.lists[(order.symbol, order.trigger_by)]
            if (-trigger, oid) not in fall if on_fall else (trigger, oid) not in rise:
                raise InvariantViolation(f"stop {oid} not in its trigger list")
            ref = reference_price(st, order.symbol, order.trigger_by)
            if ref is not None and reached(on_fall, ref, trigger):
                raise InvariantViolation(f"stop {oid} reached by the {order.trigger_by} price {ref} but not fired")
    for key, (fall, rise) in book.lists.items():
        want = [-fall[0][0] if fall else None, rise[0][0] if rise else None] if fall or rise else None
        if book.tops.get(key) != want:
            raise InvariantViolation(f"stop list heads of {key} cached as {book.tops.get(key)}, are {want}")
    if book.active != sorted(book.tops, key=lambda k: (k[0], c.TRIGGER_BY.index(k[1]))):
        raise InvariantViolation(f"active stop lists {book.active} out of step with {sorted(book.tops)}")
    listed = sum(len(fall) + len(rise) for fall, rise in book.lists.values())
    if not seen == listed == len(book.orders) == book.count:
        raise InvariantViolation(f"stop counts disagree: {seen} {listed} {len(book.orders)} {book.count}")

