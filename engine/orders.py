"""Order commands: place, amend, cancel, cancel all (SPEC §3, §4).

A new order goes: validate (fields, client order id, §3 order size and price band, open-order
limit, reduce-only, post-only) → pre-trade risk (`_check_margin`: initial margin of the worst
case position plus the order's open loss) → accepted → `matching.execute`. An amend checks the
same rules for what it changes and keeps the order's time priority only when it lowers the
quantity at the same price. Every refusal raises `Rejected` before anything changed.
"""

from __future__ import annotations

from engine import commands as c
from engine import events as ev
from engine import matching
from engine.accounts import Account
from engine.book import Order
from engine.errors import Reject, Rejected
from engine.instruments import Instrument
from engine.risk import equity_atoms, initial_margin_atoms, open_loss_atoms, order_open_loss_atoms
from engine.state import ExchangeState
from engine.units import PPM, div_ceil, div_floor, e8_to_str

MAX_CLIENT_ORDER_ID_LEN = 64
_tuple_new = tuple.__new__


def _validate_place(st: ExchangeState, cmd: c.PlaceOrder) -> tuple[Account, Instrument, int, int]:
    """Stateless and stateful checks; returns (account, instrument, mark, qty_lots)."""
    acct = st.accounts.get(cmd.account_id)  # st.account / st.instrument, inline
    if acct is None or not cmd.account_id:
        acct = st.account(cmd.account_id)
    inst = st.instruments.get(cmd.symbol)
    if inst is None:
        inst = st.instrument(cmd.symbol)
    if cmd.side not in c.SIDES:
        raise Rejected(Reject.INVALID_SIDE, "side must be buy or sell")
    if cmd.order_type not in c.ORDER_TYPES:
        raise Rejected(Reject.INVALID_ORDER_TYPE, "type must be limit or market")
    if cmd.time_in_force not in c.TIMES_IN_FORCE:
        raise Rejected(Reject.INVALID_TIME_IN_FORCE, "time_in_force must be GTC, IOC or FOK")
    if cmd.stp not in c.STP_MODES:
        raise Rejected(Reject.INVALID_STP, f"stp must be one of {c.STP_MODES}")
    if type(cmd.qty_lots) is not int or cmd.qty_lots <= 0:
        raise Rejected(Reject.INVALID_QUANTITY, "qty must be positive")
    if cmd.order_type == c.LIMIT:
        if cmd.price_ticks is None:
            raise Rejected(Reject.PRICE_REQUIRED, "limit orders need a price")
        if type(cmd.price_ticks) is not int or cmd.price_ticks <= 0:
            raise Rejected(Reject.INVALID_PRICE, "price must be positive")
    else:
        if cmd.price_ticks is not None:
            raise Rejected(Reject.PRICE_NOT_ALLOWED, "market orders take no price")
        if cmd.post_only:
            raise Rejected(Reject.POST_ONLY_NOT_ALLOWED, "market orders cannot be post-only")
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
    # §3 order size and price band: inline comparisons, the helpers only build the refusal
    if cmd.qty_lots > inst.max_order_lots or cmd.qty_lots * mark * inst.atoms_per_lot_tick > inst.max_order_notional_atoms:
        _check_size(st, inst, cmd.qty_lots, mark)
    band = inst.price_band_ppm
    if band and cmd.order_type == c.LIMIT:
        scaled = cmd.price_ticks * PPM  # type: ignore[operator]
        if scaled > mark * (PPM + band) if cmd.side == c.BUY else scaled < mark * (PPM - band):
            _check_band(st, inst, cmd.side == c.BUY, cmd.price_ticks, mark)  # type: ignore[arg-type]
    rests = cmd.order_type == c.LIMIT and cmd.time_in_force == c.GTC
    if rests and len(acct.open_orders) >= st.max_open_orders:
        raise Rejected(Reject.TOO_MANY_OPEN_ORDERS, f"at most {st.max_open_orders} open orders")
    qty = cmd.qty_lots
    if cmd.reduce_only:
        size = acct.size(cmd.symbol)
        reducing = (size > 0 and cmd.side == c.SELL) or (size < 0 and cmd.side == c.BUY)
        if not reducing:
            raise Rejected(Reject.NOTHING_TO_REDUCE, "no position to reduce on that side")
        qty = min(qty, abs(size))
    if cmd.post_only and st.books[cmd.symbol].crosses(cmd.side == c.BUY, cmd.price_ticks or 0):
        raise Rejected(Reject.WOULD_TAKE, "post-only order would take liquidity")
    return acct, inst, mark, qty


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
    acct, inst, mark, qty = _validate_place(st, cmd)
    is_buy = cmd.side == c.BUY
    if cmd.order_type == c.MARKET:
        band = inst.market_band_ppm
        limit = div_floor(mark * (PPM + band), PPM) if is_buy else div_ceil(mark * (PPM - band), PPM)
    else:
        limit = cmd.price_ticks  # type: ignore[assignment]
    gap = limit - mark if is_buy else mark - limit
    loss = qty * gap * inst.atoms_per_lot_tick if gap > 0 else 0  # risk.order_open_loss_atoms
    _check_margin(st, acct, cmd.symbol, qty if is_buy else 0, 0 if is_buy else qty, loss)
    order = Order(
        st.next_order_id,
        acct.account_id,
        cmd.symbol,
        cmd.side,
        cmd.price_ticks,
        qty,
        cmd.order_type,
        c.IOC if cmd.order_type == c.MARKET and cmd.time_in_force == c.GTC else cmd.time_in_force,
        cmd.post_only,
        cmd.reduce_only,
        cmd.stp,
        cmd.client_order_id,
        cmd.ts_ns,
    )
    st.next_order_id += 1
    if cmd.client_order_id is not None:
        acct.client_order_ids[cmd.client_order_id] = order.order_id
    st.seq = seq = st.seq + 1  # st.emit, inline
    st.out.append(_tuple_new(ev.OrderAccepted, (
        seq, st.ts, acct.account_id, order.order_id, order.client_order_id, order.symbol, order.side,
        order.order_type, order.price_ticks, order.qty_lots, order.time_in_force, order.post_only,
        order.reduce_only, order.stp,
    )))
    matching.execute(st, order, acct, limit)


def _open_order(st: ExchangeState, cmd: c.CancelOrder | c.AmendOrder) -> tuple[Account, Order]:
    """The open order a cancel or amend names, by order id or else by client order id."""
    acct = st.account(cmd.account_id)
    cid = cmd.client_order_id
    if cid is not None:
        order_id = acct.client_order_ids.get(cid) if type(cid) is str else None
        order = acct.open_orders.get(order_id) if order_id is not None else None
        if order is None:
            raise Rejected(Reject.ORDER_NOT_FOUND, f"no open order with client_order_id {cid!r}", order_id)
        return acct, order
    order = acct.open_orders.get(cmd.order_id)
    if order is None:
        raise Rejected(Reject.ORDER_NOT_FOUND, f"no open order {cmd.order_id}")
    return acct, order


def cancel(st: ExchangeState, cmd: c.CancelOrder) -> None:
    _, order = _open_order(st, cmd)
    st.cancel_resting(order, "user")


def cancel_all(st: ExchangeState, cmd: c.CancelAllOrders) -> None:
    acct = st.account(cmd.account_id)
    if cmd.symbol is not None:
        st.instrument(cmd.symbol)
    for order in list(acct.open_orders.values()):
        if cmd.symbol is None or order.symbol == cmd.symbol:
            st.cancel_resting(order, "user")


def amend(st: ExchangeState, cmd: c.AmendOrder) -> None:
    acct, order = _open_order(st, cmd)
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
    """Whether the account has positions or open orders in no symbol other than `symbol`."""
    for held in (acct.positions, acct.open_buy_lots, acct.open_sell_lots):
        if len(held) > 1 or (held and symbol not in held):
            return False
    return True
