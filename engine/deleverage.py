"""Executing an ADL allocation (SPEC §6, §5 step 5): what the fund took over and the book
did not take is closed against counterparties at the bankruptcy price.

The counterparties come from the side's ADL line (adl_line.AdlRanking) and the symbol's policy:
`queue` takes whole positions from the top, `pro_rata` spreads the lots over the profitable
ones (adl.allocate_* state the rules; the line's take_* apply them visiting only the
positions that receive lots, so a cascade costs what it touches, not the size of the side). The fund's entry value is split over them by quantity, cumulatively
(adl.split_value), so the fund closes flat to the atom. The bad-debt guard: a counterparty
that closing at the bankruptcy price would leave below zero equity is closed so that its
equity ends at exactly 0 (at the mark when it is already <= 0); the fund pays the
difference as far as its balance goes, the rest is bad debt. Each fill is an `adl` event
with the rank, price, realized PnL, position left, policy and haircut.
"""

from __future__ import annotations

from engine import commands as c
from engine import events as ev
from engine import isolated, stops
from engine.accounts import Fill
from engine.adl import Alloc, split_value
from engine.errors import InvariantViolation
from engine.instruments import Instrument
from engine.risk import equity_atoms, settle_fill
from engine.state import ExchangeState
from engine.units import div_half_even

_tuple_new = tuple.__new__


def deleverage(st: ExchangeState, liquidated_id: int, symbol: str, bv: int, original_size: int) -> tuple[int, int]:
    """Close what the fund holds of `symbol` against counterparties (§6) at the bankruptcy
    price, with the bad-debt guard (§5 step 5). Returns (fund delta, bad debt) of the guard."""
    fund = st.insurance_fund
    pos = fund.positions[symbol]
    q_r, ev_r = pos.size_lots, pos.entry_value_atoms
    inst = st.instruments[symbol]
    mark = st.marks[symbol]
    alloc, rank_of = allocate(st, symbol, -1 if q_r > 0 else 1, abs(q_r))
    if sum(lots for _, lots in alloc) != abs(q_r):
        raise InvariantViolation(f"ADL could not cover {q_r} lots in {symbol}")
    # Value per side, signed like a price: negative when a short was taken over at a negative
    # bankruptcy price (its deficit exceeded its notional); abs() would flip that sign.
    shares = split_value(ev_r if q_r > 0 else -ev_r, abs(q_r), [lots for _, lots in alloc])
    price_e8 = div_half_even(bv * 100_000_000, original_size * inst.lot_size_e8)
    k = inst.atoms_per_lot_tick
    guard_cost = 0  # what the bad-debt guard (§5 step 5) costs the fund, net
    # the hot loop of a cascade: lookups hoisted, events built in place (as matching._fill)
    accounts, holders, fills_side = st.accounts, st.holders[symbol], c.BUY if q_r > 0 else c.SELL
    dirty, touched, out, ts = st.dirty, st.rank_touched, st.out, st.ts
    policy = st.adl_policy[symbol]
    cp_buys = q_r > 0
    for (aid, lots), share in zip(alloc, shares, strict=True):
        cp = accounts[aid]
        if cp.open_orders:
            for order in [o for o in cp.open_orders.values() if o.symbol == symbol]:
                st.cancel_resting(order, "adl")
        if cp.stop_orders:
            stops.cancel_account_stops(st, cp, "adl", symbol)
        positions = cp.positions
        cp_pos = positions[symbol]
        cp_side = "long" if cp_pos.size_lots > 0 else "short"
        at_mark = lots * mark * k
        iso = cp.isolated
        if iso and symbol in iso:  # an isolated position answers with its own equity (§12)
            equity = iso[symbol] + cp_pos.size_lots * mark * k - cp_pos.entry_value_atoms
        elif len(positions) == 1 and not iso:
            equity = cp.wallet_atoms + cp_pos.size_lots * mark * k - cp_pos.entry_value_atoms
        else:
            equity = equity_atoms(cp, st.instruments, st.marks)
        size_before = cp_pos.size_lots
        value, fill_price_e8 = _adl_fill_value(inst, equity, cp_buys, lots, share, at_mark)
        if value == share:
            fill_price_e8 = price_e8
        # The counterparty closes at `value`: a short buys back (pays it), a long sells
        # (receives it). Its haircut is what that costs it against closing at the mark.
        haircut = value - at_mark if cp_buys else at_mark - value
        # the fund receives (q_r > 0) or pays (q_r < 0) `value` for lots it holds at `share`
        guard_cost += share - value if cp_buys else value - share
        realized = settle_fill(cp, symbol, lots if cp_buys else -lots, value)
        iso_delta = 0
        if iso and symbol in iso:
            iso_delta = isolated.after_fill(cp, inst, size_before, lots if cp_buys else -lots, value, realized, 0, False)
        cp.fills.append(_tuple_new(Fill, (None, ts, symbol, None, fills_side, fill_price_e8, lots, 0, "adl", realized)))
        left = positions.get(symbol)
        if left is None:
            holders.discard(aid)
        dirty.add(aid)
        touched.add(aid)
        # the fund hands over exactly `share` of entry: it closes flat
        pos.size_lots -= lots if cp_buys else -lots
        pos.entry_value_atoms -= share if cp_buys else -share
        seq = st.seq
        size_left = left.size_lots if left is not None else 0
        out.append(_tuple_new(ev.PositionDeleveraged, (
            seq + 1, ts, symbol, liquidated_id, aid, cp_side, lots, fill_price_e8, value, realized, size_left,
            rank_of[aid], policy, haircut,
        )))
        out.append(_tuple_new(ev.PositionChanged, (
            seq + 2, ts, aid, symbol, size_left, left.entry_value_atoms if left is not None else 0, realized,
            cp.wallet_atoms, "adl",
        )))
        st.seq = seq + 2
        if iso_delta:
            st.emit(ev.PositionMarginChanged, aid, symbol, iso_delta, iso[symbol], cp.wallet_atoms, "adl")
    if pos.size_lots != 0 or pos.entry_value_atoms != 0:
        raise InvariantViolation("fund position not closed flat by ADL")
    del fund.positions[symbol]
    st.emit_position(fund, symbol, 0, "adl")
    return st.fund_pays(guard_cost, "adl", liquidated_id, symbol)


def allocate(st: ExchangeState, symbol: str, side: int, lots: int) -> Alloc:
    """The counterparties on `side` of `symbol` that close `lots` under the symbol's policy,
    [(account_id, lots)] in line order, and their 1-based ranks in the line. Only the
    positions that receive lots are visited (adl_line.AdlRanking.take_*)."""
    line = st.adl_ranking(symbol, side)
    policy = st.adl_policy[symbol]
    if policy == c.ADL_PRO_RATA:
        return line.take_pro_rata(lots)
    if policy == c.ADL_CAPPED_PRO_RATA:
        return line.take_capped_pro_rata(lots)
    return line.take_queue(lots)


def _adl_fill_value(inst: Instrument, equity: int, cp_buys: bool, lots: int, share: int, at_mark: int) -> tuple[int, int]:
    """§5 step 5: the value a counterparty's ADL fill settles at, and its price in e8.

    Normally its `share` of the bankruptcy value (the price is then the caller's). If closing
    there would leave it below zero equity, the fill is valued so that its equity becomes
    exactly 0; if its `equity` is already <= 0, at the mark (ADL never lowers it further).
    Closing at the mark leaves equity unchanged, so the equity after closing at value V is
    `equity - haircut(V)`.
    """
    if equity <= 0:
        value = at_mark
    else:
        haircut = share - at_mark if cp_buys else at_mark - share
        if haircut <= equity:
            return share, 0
        value = at_mark + equity if cp_buys else at_mark - equity
    return value, div_half_even(value * 100_000_000, lots * inst.lot_size_e8)
