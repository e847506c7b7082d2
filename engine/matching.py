"""Matching and settlement: a taker order against one symbol's book (SPEC §4).

`execute` fills a taker order in price-time priority up to its limit, with self-trade
prevention and reduce-only caps, then rests it (GTC limit) or cancels what is left (IOC,
market, FOK that cannot fill whole). Each fill settles both accounts (`risk.settle_fill`:
realized PnL, entry value), charges the maker and taker fees (rounded up to the atom; the
insurance fund pays none), records the trade in both accounts' histories and emits
`trade` and two `position_changed` events. The insurance fund's liquidation order goes
through here too (liquidation.py).
"""

from __future__ import annotations

from engine import commands as c
from engine import events as ev
from engine import isolated, stops
from engine.accounts import INSURANCE_FUND_ID, Account, Fill
from engine.book import Order, OrderBook
from engine.risk import settle_fill
from engine.state import ExchangeState
from engine.units import PPM

_tuple_new = tuple.__new__


def execute(st: ExchangeState, order: Order, acct: Account, limit_ticks: int) -> None:
    """Match a taker order, then rest it (GTC with a price) or cancel its rest. What rests is
    decided by the order's price, not its type, so a triggered stop-limit rests like a limit
    and a triggered stop-market is canceled like a market order (reason `market`)."""
    book = st.books[order.symbol]
    if order.time_in_force == c.FOK and _fok_fillable(st, order, book, limit_ticks) < order.remaining_lots:
        st.cancel_remaining(order, acct, "fok")
        return
    stopped = _match(st, order, acct, book, limit_ticks)
    if order.remaining_lots == 0:
        order.status = "filled"
        st.close_order(acct, order)
    elif stopped is not None:
        st.cancel_remaining(order, acct, stopped)
    elif order.time_in_force == c.GTC and order.price_ticks is not None:  # limit-like (a triggered stop-limit too)
        order.status = "partially_filled" if order.filled_lots else "new"
        book.add(order)
        acct.open_orders[order.order_id] = order
        acct.track_open(order, order.remaining_lots)
    else:  # market-like: no price of its own (market, triggered stop / take-profit market)
        st.cancel_remaining(order, acct, "market" if order.price_ticks is None else "ioc")


def _fok_fillable(st: ExchangeState, order: Order, book: OrderBook, limit_ticks: int) -> int:
    """Lots a FOK order would fill, with self-trade prevention and reduce-only caps applied."""
    need = order.remaining_lots
    got = 0
    caps: dict[int, int] = {}  # reduce-only makers: what each account may still reduce
    for maker in book.walk(order.is_buy, limit_ticks):
        if maker.account_id == order.account_id:
            if order.stp == c.STP_CANCEL_MAKER:
                continue
            break
        lots = maker.remaining_lots
        if maker.reduce_only:
            cap = caps.get(maker.account_id)
            if cap is None:
                cap = st.reduce_capacity(maker.account_id, maker.symbol, maker.is_buy)
            lots = min(lots, cap)
            caps[maker.account_id] = cap - lots
        got += lots
        if got >= need:
            break
    return got


def _match(st: ExchangeState, taker: Order, acct: Account, book: OrderBook, limit_ticks: int) -> str | None:
    """Fill `taker` against the book up to `limit_ticks`; return a stop reason or None."""
    is_buy = taker.is_buy
    best_maker = book.best_maker
    while taker.remaining_lots > 0:
        maker = best_maker(is_buy, limit_ticks)
        if maker is None:
            return None
        price = maker.price_ticks
        assert price is not None  # only limit orders rest
        if maker.account_id == taker.account_id:
            mode = taker.stp
            if mode == c.STP_CANCEL_TAKER:
                return "stp"
            st.cancel_resting(maker, "stp")
            if mode == c.STP_CANCEL_BOTH:
                return "stp"
            continue
        qty = min(taker.remaining_lots, maker.remaining_lots)
        if maker.reduce_only:
            cap = st.reduce_capacity(maker.account_id, maker.symbol, maker.is_buy)
            if cap == 0:
                st.cancel_resting(maker, "reduce_only")
                continue
            qty = min(qty, cap)
        if taker.reduce_only:
            cap = st.reduce_capacity(taker.account_id, taker.symbol, is_buy)
            if cap == 0:
                return "reduce_only"
            qty = min(qty, cap)
        _fill(st, taker, acct, maker, book, qty, price)
    return None


def _fill(st: ExchangeState, taker: Order, tacct: Account, maker: Order, book: OrderBook, qty: int, price: int) -> None:
    # the hot path: lookups hoisted, maker/taker unrolled, events built in place (seq+1..3)
    symbol = taker.symbol
    inst = st.instruments[symbol]
    notional = qty * price * inst.atoms_per_lot_tick
    maker_aid = maker.account_id
    taker_aid = taker.account_id
    macct = st.accounts[maker_aid]
    maker_fee = -((-notional * inst.maker_fee_ppm) // PPM)
    taker_fee = 0 if taker_aid == INSURANCE_FUND_ID else -((-notional * inst.taker_fee_ppm) // PPM)
    if book.take(maker, qty):
        maker.status = "filled"
        del macct.open_orders[maker.order_id]
        st.close_order(macct, maker)
    else:
        maker.status = "partially_filled"
    macct.track_open(maker, -qty)
    taker.remaining_lots -= qty
    trade_id = st.next_trade_id
    st.next_trade_id = trade_id + 1
    value_ticks = qty * price
    maker.filled_lots += qty
    maker.filled_value_ticks += value_ticks
    if maker.fills:
        maker.fills.append((trade_id, price, qty, maker_fee, "maker"))
    else:
        maker.fills = [(trade_id, price, qty, maker_fee, "maker")]
    taker.filled_lots += qty
    taker.filled_value_ticks += value_ticks
    if taker.fills:
        taker.fills.append((trade_id, price, qty, taker_fee, "taker"))
    else:
        taker.fills = [(trade_id, price, qty, taker_fee, "taker")]
    mpos = macct.positions.get(symbol)
    tpos = tacct.positions.get(symbol)
    m_before = mpos.size_lots if mpos is not None else 0
    t_before = tpos.size_lots if tpos is not None else 0
    m_real = settle_fill(macct, symbol, qty if maker.is_buy else -qty, notional)
    t_real = settle_fill(
        tacct, symbol, qty if taker.is_buy else -qty, notional,
        st.takeover if taker_aid == INSURANCE_FUND_ID else None,
    )
    macct.wallet_atoms -= maker_fee
    tacct.wallet_atoms -= taker_fee
    macct.fills.append(_tuple_new(Fill, (trade_id, st.ts, symbol, maker.order_id, maker.side, price, qty,
                                         maker_fee, "maker", m_real)))
    tacct.fills.append(_tuple_new(Fill, (trade_id, st.ts, symbol, taker.order_id, taker.side, price, qty,
                                         taker_fee, "taker", t_real)))
    st.fees_collected_atoms += maker_fee + taker_fee
    m_iso = t_iso = None  # isolated margin moves (SPEC §12), emitted after the position events
    if macct.isolated and symbol in macct.isolated:
        m_iso = isolated.after_fill(macct, inst, m_before, qty if maker.is_buy else -qty, notional, m_real,
                                    maker_fee, True)
    if tacct.isolated and symbol in tacct.isolated:
        t_iso = isolated.after_fill(tacct, inst, t_before, qty if taker.is_buy else -qty, notional, t_real,
                                    taker_fee, taker.order_id != st.partial_order_id)
    mpos = macct.positions.get(symbol)
    tpos = tacct.positions.get(symbol)
    m_after = mpos.size_lots if mpos is not None else 0
    t_after = tpos.size_lots if tpos is not None else 0
    if (m_before == 0) != (m_after == 0):
        st.holders_update(macct, symbol)
    if (t_before == 0) != (t_after == 0):
        st.holders_update(tacct, symbol)
    dirty, touched = st.dirty, st.rank_touched
    dirty.add(maker_aid)
    dirty.add(taker_aid)
    touched.add(maker_aid)
    touched.add(taker_aid)
    seq = st.seq
    ts = st.ts
    events = st.out
    trade = _tuple_new(ev.TradeExecuted, (seq + 1, ts, trade_id, symbol, price, qty, taker.side, taker.order_id,
                                          taker_aid, taker_fee, taker.remaining_lots, maker.order_id,
                                          maker_aid, maker_fee, maker.remaining_lots))
    events.append(trade)
    st.recent_trades[symbol].append(trade)
    st.last_price[symbol] = price
    events.append(_tuple_new(ev.PositionChanged, (seq + 2, ts, maker_aid, symbol, m_after,
                                                  mpos.entry_value_atoms if mpos else 0, m_real - maker_fee,
                                                  macct.wallet_atoms, "trade")))
    events.append(_tuple_new(ev.PositionChanged, (seq + 3, ts, taker_aid, symbol, t_after,
                                                  tpos.entry_value_atoms if tpos else 0, t_real - taker_fee,
                                                  tacct.wallet_atoms, "trade")))
    st.seq = seq + 3
    if m_iso:
        st.emit(ev.PositionMarginChanged, maker_aid, symbol, m_iso, macct.isolated[symbol], macct.wallet_atoms, "trade")
    if t_iso:
        st.emit(ev.PositionMarginChanged, taker_aid, symbol, t_iso, tacct.isolated[symbol], tacct.wallet_atoms, "trade")
    if m_before and (m_after == 0 or (m_after > 0) != (m_before > 0)):
        _cancel_stale_reduce_only(st, macct, symbol)
    if t_before and (t_after == 0 or (t_after > 0) != (t_before > 0)):
        _cancel_stale_reduce_only(st, tacct, symbol)


def _cancel_stale_reduce_only(st: ExchangeState, acct: Account, symbol: str) -> None:
    """After a position closed or flipped, cancel reduce-only orders that can no longer reduce
    it, the untriggered reduce-only and close-position stops among them (SPEC §12)."""
    for order in [o for o in acct.open_orders.values() if o.reduce_only and o.symbol == symbol]:
        if st.reduce_capacity(acct.account_id, symbol, order.is_buy) == 0:
            st.cancel_resting(order, "reduce_only")
    if acct.stop_orders:
        stops.cancel_stale_reduce_only(st, acct, symbol)
