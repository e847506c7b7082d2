"""Order commands: place, amend, cancel, cancel all (SPEC §3, §4, §12 stops).

A new order goes: validate (`_validate_place`: fields, client order id) → admit (`_admit`:
§3 order size and price band, open-order limit, reduce-only, post-only, then pre-trade risk
`_check_margin`: initial margin of the worst case position plus the order's open loss) →
accepted → `matching.execute` (`_accept`). A stop / take-profit order (SPEC §12) is
validated the same way plus its trigger fields, and stored untriggered (`_place_stop`,
rules in stops.py); when it fires, `enter_triggered` runs the same `_admit` → `_accept` on
it, so it is checked exactly like a new order. An amend checks the same rules for what it
changes and keeps the order's time priority only when it lowers the quantity at the same
price. Every refusal raises `Rejected` before anything changed.
"""

from __future__ import annotations

from engine import commands as c
from engine import events as ev
from engine import matching, stops
from engine.accounts import Account
from engine.book import Order
from engine.errors import Reject, Rejected
from engine.instruments import Instrument
from engine.risk import equity_atoms, initial_margin_atoms, open_loss_atoms, order_open_loss_atoms
from engine.state import ExchangeState
from engine.units import PPM, div_ceil, div_floor, e8_to_str

MAX_CLIENT_ORDER_ID_LEN = 64
TRIGGER_COMMAND = "OrderTriggered"  # the `command` of an `order_rejected` for a stop refused at trigger
_tuple_new = tuple.__new__


def _validate_place(st: ExchangeState, cmd: c.PlaceOrder) -> tuple[Account, Instrument, int]:
    """Checks of the command itself (fields, client order id, a mark to trade against);
    returns (account, instrument, mark). `_admit` checks the order against the market."""
    acct = st.accounts.get(cmd.account_id)  # st.account / st.instrument, inline
    if acct is None or not cmd.account_id:
        acct = st.account(cmd.account_id)
    inst = st.instruments.get(cmd.symbol)
    if inst is None:
        inst = st.instrument(cmd.symbol)
    if cmd.side not in c.SIDES:
        raise Rejected(Reject.INVALID_SIDE, "side must be buy or sell")
    kind = cmd.order_type
    if kind not in c.ORDER_TYPES:
        raise Rejected(Reject.INVALID_ORDER_TYPE, f"type must be one of {', '.join(c.ORDER_TYPES)}")
    if cmd.time_in_force not in c.TIMES_IN_FORCE:
        raise Rejected(Reject.INVALID_TIME_IN_FORCE, "time_in_force must be GTC, IOC or FOK")
    if cmd.stp not in c.STP_MODES:
        raise Rejected(Reject.INVALID_STP, f"stp must be one of {c.STP_MODES}")
    if kind == c.LIMIT or kind == c.MARKET:
        if cmd.trigger_price_ticks is not None or cmd.close_position or cmd.trigger_by != c.TRIGGER_BY_MARK:
            raise Rejected(Reject.TRIGGER_NOT_ALLOWED, "trigger_price, trigger_by and close_position are for stop and take-profit orders")
        limit_kind = kind == c.LIMIT
    else:
        stops.validate_fields(cmd)
        limit_kind = kind in stops.LIMIT_TYPES
    if cmd.close_position:  # the whole position at trigger: no quantity of its own
        if cmd.qty_lots != 0 or type(cmd.qty_lots) is not int:
            raise Rejected(Reject.INVALID_QUANTITY, "a close_position order takes no qty (0): it closes the whole position")
    elif type(cmd.qty_lots) is not int or cmd.qty_lots <= 0:
        raise Rejected(Reject.INVALID_QUANTITY, "qty must be positive")
    if limit_kind:
        if cmd.price_ticks is None:
            raise Rejected(Reject.PRICE_REQUIRED, f"{kind} orders need a price")
        if type(cmd.price_ticks) is not int or cmd.price_ticks <= 0:
            raise Rejected(Reject.INVALID_PRICE, "price must be positive")
    else:
        if cmd.price_ticks is not None:
            raise Rejected(Reject.PRICE_NOT_ALLOWED, f"{kind} orders take no price")
        if cmd.post_only:
            raise Rejected(Reject.POST_ONLY_NOT_ALLOWED, f"{kind} orders cannot be post-only")
    if cmd.post_only and cmd.time_in_force != c.GTC:
        raise Rejected(Reject.POST_ONLY_NOT_ALLOWED, "post-only orders must be GTC")
    coid = cmd.client_order_id
    if coid is not None and (not coid or len(coid) > MAX_CLIENT_ORDER_ID_LEN or not coid.isprintable()):
        raise Rejected(Reject.INVALID_CLIENT_ORDER_ID, "client_order_id must be 1..64 printable chars")
    mark = st.marks.get(cmd.symbol)
    if mark is None:
        mark = st.mark(cmd.symbol)
    if coid is not None and coid in acct.client_order_ids:
        original = acct.client_order_ids[coid]
        raise Rejected(
            Reject.DUPLICATE_CLIENT_ORDER_ID,
            f"client_order_id already used by order {original}",
            order_id=original,
        )
    return acct, inst, mark


def _admit(
    st: ExchangeState, acct: Account, inst: Instrument, mark: int, symbol: str, is_buy: bool,
    price_ticks: int | None, qty: int, time_in_force: str, post_only: bool, reduce_only: bool,
) -> tuple[int, int]:
    """The checks of an order entering the market now (a new one, or a stop at trigger):
    §3 order size and price band, the open-order limit, reduce-only, post-only, and the
    pre-trade margin check. `price_ticks` None is a market order. Returns (qty after the
    reduce-only cut, the limit price it matches up to: its price, or the market-band limit)."""
    # §3 order size and price band: inline comparisons, the helpers only build the refusal
    if qty > inst.max_order_lots or qty * mark * inst.atoms_per_lot_tick > inst.max_order_notional_atoms:
        _check_size(st, inst, qty, mark)
    if price_ticks is None:
        band = inst.market_band_ppm
        limit = div_floor(mark * (PPM + band), PPM) if is_buy else div_ceil(mark * (PPM - band), PPM)
    else:
        limit = price_ticks
        band = inst.price_band_ppm
        if band:
            scaled = price_ticks * PPM
            if scaled > mark * (PPM + band) if is_buy else scaled < mark * (PPM - band):
                _check_band(st, inst, is_buy, price_ticks, mark)
        if time_in_force == c.GTC and len(acct.open_orders) + len(acct.stop_orders) >= st.max_open_orders:
            raise Rejected(Reject.TOO_MANY_OPEN_ORDERS, f"at most {st.max_open_orders} open orders")
    if reduce_only:
        size = acct.size(symbol)
        reducing = (size > 0 and not is_buy) or (size < 0 and is_buy)
        if not reducing:
            raise Rejected(Reject.NOTHING_TO_REDUCE, "no position to reduce on that side")
        qty = min(qty, abs(size))
    if post_only and st.books[symbol].crosses(is_buy, price_ticks or 0):
        raise Rejected(Reject.WOULD_TAKE, "post-only order would take liquidity")
    gap = limit - mark if is_buy else mark - limit
    loss = qty * gap * inst.atoms_per_lot_tick if gap > 0 else 0  # risk.order_open_loss_atoms
    _check_margin(st, acct, symbol, qty if is_buy else 0, 0 if is_buy else qty, loss)
    return qty, limit


def _check_size(st: ExchangeState, inst: Instrument, qty_lots: int, mark: int) -> None:
    """§3 order size: at most `max_order_lots` and `max_order_notional` at the mark per order."""
    if qty_lots > inst.max_order_lots:
        raise Rejected(
            Reject.ORDER_TOO_LARGE,
            f"qty {e8_to_str(inst.qty_e8(qty_lots))} exceeds the maximum order size "
            f"{e8_to_str(inst.qty_e8(inst.max_order_lots))}",
        )
    notional = inst.notional_atoms(qty_lots, mark)
    if notional > inst.max_order_notional_atoms:
        raise Rejected(
            Reject.ORDER_TOO_LARGE,
            f"order notional {e8_to_str(notional)} USD at the mark exceeds the maximum "
            f"{e8_to_str(inst.max_order_notional_atoms)} USD",
        )


def _check_band(st: ExchangeState, inst: Instrument, is_buy: bool, price_ticks: int, mark: int) -> None:
    """§3 price band (Binance PERCENT_PRICE on the aggressive side): buys at most
    M * (1 + band), sells at least M * (1 - band), compared exactly (no rounding)."""
    band = inst.price_band_ppm
    if not band:
        return
    if is_buy and price_ticks * PPM > mark * (PPM + band):
        limit = div_floor(mark * (PPM + band), PPM)
        raise Rejected(
            Reject.PRICE_OUT_OF_BAND,
            f"buy price {e8_to_str(inst.price_e8(price_ticks))} is above the band limit "
            f"{e8_to_str(inst.price_e8(limit))} (mark {e8_to_str(inst.price_e8(mark))} + {band / 10_000:g}%)",
        )
    if not is_buy and price_ticks * PPM < mark * (PPM - band):
        limit = div_ceil(mark * (PPM - band), PPM)
        raise Rejected(
            Reject.PRICE_OUT_OF_BAND,
            f"sell price {e8_to_str(inst.price_e8(price_ticks))} is below the band limit "
            f"{e8_to_str(inst.price_e8(limit))} (mark {e8_to_str(inst.price_e8(mark))} - {band / 10_000:g}%)",
        )


def _check_margin(st: ExchangeState, acct: Account, symbol: str, add_buy: int, add_sell: int, add_loss: int) -> None:
    """Pre-trade check (§3): pass if the worst-case position does not grow and no open loss
    is added (`add_loss` <= 0), else need available >= 0 after the order.

    available = equity - sum(IM_s) - sum(open loss); the order's own open loss `add_loss`
    is what it would lose at once against the mark if filled at its price (a market order
    at its market-band limit). A position that could grow past the last maintenance tier's
    notional is refused first (RISK_LIMIT_EXCEEDED).
    """
    pos = acct.positions.get(symbol)
    size = pos.size_lots if pos is not None else 0
    b = acct.open_buy_lots.get(symbol, 0)
    s = acct.open_sell_lots.get(symbol, 0)
    lo, hi = size - s, size + b
    before = hi if hi >= -lo else -lo
    lo -= add_sell
    hi += add_buy
    after = hi if hi >= -lo else -lo
    if after <= before and add_loss <= 0:
        return
    inst = st.instruments[symbol]
    mark = st.marks[symbol]
    k = inst.atoms_per_lot_tick
    if after > before and after * mark * k > inst.tiers[-1].max_notional_atoms:
        raise Rejected(
            Reject.RISK_LIMIT_EXCEEDED,
            f"the order could take the position to {e8_to_str(after * mark * k)} USD notional, "
            f"past the last maintenance tier ({e8_to_str(inst.tiers[-1].max_notional_atoms)} USD)",
        )
    single = _only_in(acct, symbol)
    if single:  # the common one-symbol account: no dict walks
        equity = acct.wallet_atoms
        if pos is not None:
            equity += size * mark * k - pos.entry_value_atoms
        lev = acct.leverage.get(symbol, inst.default_leverage)
        im_after = -((-(after * mark * k)) // lev)
    else:
        equity = equity_atoms(acct, st.instruments, st.marks)
        im_after = initial_margin_atoms(acct, st.instruments, st.marks, override=(symbol, after))
    loss = open_loss_atoms(acct, st.instruments, st.marks) if acct.open_orders else 0
    if equity - im_after - loss - add_loss >= 0:
        return
    if single:
        im_before = div_ceil(before * mark * k, lev)
    else:
        im_before = initial_margin_atoms(acct, st.instruments, st.marks)
    required = im_after - im_before + add_loss
    available = equity - im_before - loss
    if available < required:
        raise Rejected(
            Reject.INSUFFICIENT_MARGIN,
            f"order requires {e8_to_str(required)} USD of margin (initial margin "
            f"{e8_to_str(im_after - im_before)} + open loss {e8_to_str(add_loss)}), "
            f"available {e8_to_str(available)} USD",
        )


def place(st: ExchangeState, cmd: c.PlaceOrder) -> None:
    acct, inst, mark = _validate_place(st, cmd)
    kind = cmd.order_type
    if kind != c.LIMIT and kind != c.MARKET:
        _place_stop(st, cmd, acct, inst, mark)
        return
    is_buy = cmd.side == c.BUY
    qty, limit = _admit(st, acct, inst, mark, cmd.symbol, is_buy, cmd.price_ticks, cmd.qty_lots,
                        cmd.time_in_force, cmd.post_only, cmd.reduce_only)
    tif = c.IOC if kind == c.MARKET and cmd.time_in_force == c.GTC else cmd.time_in_force
    _accept(st, acct, _new_order(st, acct, cmd, qty, tif, cmd.reduce_only), limit)


def _new_order(st: ExchangeState, acct: Account, cmd: c.PlaceOrder, qty: int, tif: str, reduce_only: bool) -> Order:
    """The accepted order of `cmd`: the next order id, its client order id registered."""
    order = Order(
        st.next_order_id, acct.account_id, cmd.symbol, cmd.side, cmd.price_ticks, qty, cmd.order_type, tif,
        cmd.post_only, reduce_only, cmd.stp, cmd.client_order_id, cmd.ts_ns,
    )
    st.next_order_id += 1
    if cmd.client_order_id is not None:
        acct.client_order_ids[cmd.client_order_id] = order.order_id
    return order


def _accept(st: ExchangeState, acct: Account, order: Order, limit: int) -> None:
    """`order_accepted`, then match (and rest or cancel what is left)."""
    st.seq = seq = st.seq + 1  # st.emit, inline
    st.out.append(_tuple_new(ev.OrderAccepted, (
        seq, st.ts, acct.account_id, order.order_id, order.client_order_id, order.symbol, order.side,
        order.order_type, order.price_ticks, order.qty_lots, order.time_in_force, order.post_only,
        order.reduce_only, order.stp,
    )))
    matching.execute(st, order, acct, limit)


def _place_stop(st: ExchangeState, cmd: c.PlaceOrder, acct: Account, inst: Instrument, mark: int) -> None:
    """A stop / take-profit order (SPEC §12, stops.py): size at the mark, the open-order
    limit (stops count toward it) and not already triggered; then stored untriggered.
    Margin, band, reduce-only capacity and post-only wait for the trigger."""
    qty = cmd.qty_lots
    if qty > inst.max_order_lots or qty * mark * inst.atoms_per_lot_tick > inst.max_order_notional_atoms:
        _check_size(st, inst, qty, mark)
    if len(acct.open_orders) + len(acct.stop_orders) >= st.max_open_orders:
        raise Rejected(Reject.TOO_MANY_OPEN_ORDERS, f"at most {st.max_open_orders} open orders (stop orders count)")
    trigger = cmd.trigger_price_ticks
    assert trigger is not None  # stops.validate_fields
    stops.check_not_reached(st, cmd.symbol, cmd.order_type, cmd.side, cmd.trigger_by, trigger)
    # time in force as given while it waits; a *_market one enters as IOC (enter_triggered)
    order = _new_order(st, acct, cmd, qty, cmd.time_in_force, cmd.reduce_only or cmd.close_position)
    order.trigger_price_ticks = trigger
    order.trigger_by = cmd.trigger_by
    order.close_position = cmd.close_position
    st.emit(
        ev.OrderAccepted, acct.account_id, order.order_id, order.client_order_id, order.symbol, order.side,
        order.order_type, order.price_ticks, order.qty_lots, order.time_in_force, order.post_only,
        order.reduce_only, order.stp,
    )
    stops.add(st, acct, order)


def enter_triggered(st: ExchangeState, order: Order) -> None:
    """A stop that just fired (stops.fire_next) enters like a new order of its underlying
    kind, with every check of a new one (`_admit`); a close-position order takes the whole
    position on its reducing side as its qty. Refused: `order_rejected` naming the order,
    closed as `rejected` (never raised: the command that moved the price stands)."""
    acct = st.accounts[order.account_id]
    try:
        qty = order.qty_lots
        if order.close_position:
            qty = st.reduce_capacity(acct.account_id, order.symbol, order.is_buy)
            if qty == 0:
                raise Rejected(Reject.NOTHING_TO_REDUCE, "close_position: no position to close on that side")
        qty, limit = _admit(st, acct, st.instruments[order.symbol], st.marks[order.symbol], order.symbol,
                            order.is_buy, order.price_ticks, qty, order.time_in_force, order.post_only,
                            order.reduce_only)
    except Rejected as r:
        order.remaining_lots = 0
        order.status = "rejected"
        st.close_order(acct, order)
        st.emit(ev.OrderRejected, acct.account_id, TRIGGER_COMMAND, int(r.reason), r.reason.name, r.message,
                order.order_id, order.client_order_id)
        return
    order.qty_lots = order.remaining_lots = qty
    order.status = "new"
    if order.price_ticks is None and order.time_in_force == c.GTC:  # a market order is IOC (as in place)
        order.time_in_force = c.IOC
    _accept(st, acct, order, limit)


def _open_order(st: ExchangeState, cmd: c.CancelOrder | c.AmendOrder) -> tuple[Account, Order]:
    """The open (or untriggered stop) order a cancel or amend names, by order id or else by
    client order id."""
    acct = st.account(cmd.account_id)
    cid = cmd.client_order_id
    if cid is not None:
        order_id = acct.client_order_ids.get(cid) if type(cid) is str else None
        order = None
        if order_id is not None:
            order = acct.open_orders.get(order_id) or acct.stop_orders.get(order_id)
        if order is None:
            raise Rejected(Reject.ORDER_NOT_FOUND, f"no open order with client_order_id {cid!r}", order_id)
        return acct, order
    order = acct.open_orders.get(cmd.order_id)
    if order is None:
        order = acct.stop_orders.get(cmd.order_id) if acct.stop_orders else None
        if order is None:
            raise Rejected(Reject.ORDER_NOT_FOUND, f"no open order {cmd.order_id}")
    return acct, order


def cancel(st: ExchangeState, cmd: c.CancelOrder) -> None:
    acct, order = _open_order(st, cmd)
    if order.status == stops.UNTRIGGERED:
        stops.cancel_stop(st, acct, order, "user")
    else:
        st.cancel_resting(order, "user")


def cancel_all(st: ExchangeState, cmd: c.CancelAllOrders) -> None:
    """Every open order (in the book, by order id), then every untriggered stop."""
    acct = st.account(cmd.account_id)
    if cmd.symbol is not None:
        st.instrument(cmd.symbol)
    for order in list(acct.open_orders.values()):
        if cmd.symbol is None or order.symbol == cmd.symbol:
            st.cancel_resting(order, "user")
    stops.cancel_account_stops(st, acct, "user", cmd.symbol)


def amend(st: ExchangeState, cmd: c.AmendOrder) -> None:
    acct, order = _open_order(st, cmd)
    if order.status == stops.UNTRIGGERED:
        _amend_stop(st, acct, order, cmd)
        return
    if cmd.trigger_price_ticks is not None:
        raise Rejected(Reject.TRIGGER_NOT_ALLOWED, "only an untriggered stop order has a trigger price to amend")
    price = order.price_ticks if cmd.price_ticks is None else cmd.price_ticks
    assert price is not None
    if cmd.price_ticks is not None and (type(cmd.price_ticks) is not int or cmd.price_ticks <= 0):
        raise Rejected(Reject.INVALID_PRICE, "price must be positive")
    new_total = order.qty_lots if cmd.qty_lots is None else cmd.qty_lots
    if type(new_total) is not int or new_total <= order.filled_lots:
        raise Rejected(Reject.INVALID_QUANTITY, "new qty must exceed the filled quantity")
    new_remaining = new_total - order.filled_lots
    if order.reduce_only:
        new_remaining = min(new_remaining, st.reduce_capacity(acct.account_id, order.symbol, order.is_buy))
        if new_remaining <= 0:
            raise Rejected(Reject.NOTHING_TO_REDUCE, "no position left to reduce")
    if price == order.price_ticks and new_remaining == order.remaining_lots:
        raise Rejected(Reject.NOTHING_TO_AMEND, "price and qty unchanged")
    book = st.books[order.symbol]
    # the order rests on its own side, so `crosses` looks only at the other side
    if order.post_only and book.crosses(order.is_buy, price):
        raise Rejected(Reject.WOULD_TAKE, "post-only order would take liquidity")
    mark = st.mark(order.symbol)
    inst = st.instruments[order.symbol]
    delta = new_remaining - order.remaining_lots
    if new_total > order.qty_lots:
        _check_size(st, inst, new_total, mark)
    if price != order.price_ticks or delta > 0:  # only lowering the qty needs no band check
        _check_band(st, inst, order.is_buy, price, mark)
    loss_delta = order_open_loss_atoms(inst, order.is_buy, price, new_remaining, mark) - order_open_loss_atoms(
        inst, order.is_buy, order.price_ticks, order.remaining_lots, mark  # type: ignore[arg-type]
    )
    _check_margin(st,
        acct, order.symbol, delta if order.is_buy else 0, 0 if order.is_buy else delta, loss_delta
    )
    keep = price == order.price_ticks and delta < 0
    if keep:
        book.reduce(order, -delta)
        acct.track_open(order, delta)
        order.qty_lots = order.filled_lots + new_remaining
        _emit_amended(st, order, True)
        return
    book.remove(order)
    acct.track_open(order, -order.remaining_lots)
    del acct.open_orders[order.order_id]
    order.price_ticks = price
    order.remaining_lots = new_remaining
    order.qty_lots = order.filled_lots + new_remaining
    _emit_amended(st, order, False)
    matching.execute(st, order, acct, price)


def _amend_stop(st: ExchangeState, acct: Account, order: Order, cmd: c.AmendOrder) -> None:
    """Amend an untriggered stop (SPEC §12): its trigger price, qty (the new total; not on a
    close-position order) and, for the *_limit types, its price. It stays untriggered;
    a trigger the reference price already reaches is refused (WOULD_TRIGGER_IMMEDIATELY).
    Only the size is checked now: the rest is checked at trigger, as at placement."""
    trigger = order.trigger_price_ticks if cmd.trigger_price_ticks is None else cmd.trigger_price_ticks
    if type(trigger) is not int or trigger <= 0:
        raise Rejected(Reject.INVALID_TRIGGER_PRICE, "trigger_price must be a positive price")
    price = order.price_ticks
    if cmd.price_ticks is not None:
        if price is None:
            raise Rejected(Reject.PRICE_NOT_ALLOWED, f"{order.order_type} orders take no price")
        if type(cmd.price_ticks) is not int or cmd.price_ticks <= 0:
            raise Rejected(Reject.INVALID_PRICE, "price must be positive")
        price = cmd.price_ticks
    qty = order.qty_lots
    if cmd.qty_lots is not None:
        if order.close_position:
            raise Rejected(Reject.INVALID_QUANTITY, "a close_position order takes no qty: it closes the whole position")
        if type(cmd.qty_lots) is not int or cmd.qty_lots <= 0:
            raise Rejected(Reject.INVALID_QUANTITY, "qty must be positive")
        qty = cmd.qty_lots
    if trigger == order.trigger_price_ticks and price == order.price_ticks and qty == order.qty_lots:
        raise Rejected(Reject.NOTHING_TO_AMEND, "trigger price, price and qty unchanged")
    inst = st.instruments[order.symbol]
    mark = st.mark(order.symbol)
    if qty > order.qty_lots:
        _check_size(st, inst, qty, mark)
    stops.check_not_reached(st, order.symbol, order.order_type, order.side, order.trigger_by, trigger)
    st.stops.remove(order)
    order.trigger_price_ticks = trigger
    order.price_ticks = price
    order.qty_lots = order.remaining_lots = qty
    st.stops.add(order)
    # a stop keeps its order id, hence its place among equal triggers: priority kept
    _emit_amended(st, order, True)


def _emit_amended(st: ExchangeState, order: Order, kept: bool) -> None:
    st.emit(
        ev.OrderAmended,
        order.account_id,
        order.order_id,
        order.symbol,
        order.side,
        order.price_ticks,
        order.qty_lots,
        order.remaining_lots,
        kept,
        order.client_order_id,
    )


def _only_in(acct: Account, symbol: str) -> bool:
    """Whether the account has positions or open orders in no symbol other than `symbol`
    (and no isolated symbol: those take the general path)."""
    if acct.isolated:
        return False
    for held in (acct.positions, acct.open_buy_lots, acct.open_sell_lots):
        if len(held) > 1 or (held and symbol not in held):
            return False
    return True
