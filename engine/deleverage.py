"""Executing an ADL allocation (SPEC §6, §5 step 5): what the fund took over and the book
did not take is closed against counterparties at the bankruptcy price.

The counterparties come from the side's ADL line (adl.AdlRanking) and the symbol's policy:
`queue` takes whole positions from the top, `pro_rata` spreads the lots over the profitable
ones (adl.allocate_*). The fund's entry value is split over them by quantity, cumulatively
(adl.split_value), so the fund closes flat to the atom. The bad-debt guard: a counterparty
that closing at the bankruptcy price would leave below zero equity is closed so that its
equity ends at exactly 0 (at the mark when it is already <= 0); the fund pays the
difference as far as its balance goes, the rest is bad debt. Each fill is an `adl` event
with the rank, price, realized PnL, position left, policy and haircut.
"""

from __future__ import annotations

from engine import commands as c
from engine import events as ev
from engine.accounts import Account, Fill
from engine.adl import allocate_pro_rata, allocate_queue, split_value
from engine.errors import InvariantViolation
from engine.risk import equity_atoms, settle_fill
from engine.state import ExchangeState
from engine.units import div_half_even


def deleverage(st: ExchangeState, liquidated_id: int, symbol: str, bv: int, original_size: int) -> tuple[int, int]:
    """Close what the fund holds of `symbol` against counterparties (§6) at the bankruptcy
    price, with the bad-debt guard (§5 step 5). Returns (fund delta, bad debt) of the guard."""
    fund = st.insurance_fund
    pos = fund.positions[symbol]
    q_r, ev_r = pos.size_lots, pos.entry_value_atoms
    inst = st.instruments[symbol]
    mark = st.marks[symbol]
    ranking = st.adl_ranking(symbol, -1 if q_r > 0 else 1)
    accounts = st.accounts
    if st.adl_policy[symbol] == c.ADL_PRO_RATA:
        ranked_ids = ranking.ordered_ids()
        rank_of = {aid: i + 1 for i, aid in enumerate(ranked_ids)}
        rows = []
        for aid in ranked_ids:
            p = accounts[aid].positions[symbol]
            profitable = p.size_lots * mark * inst.atoms_per_lot_tick - p.entry_value_atoms > 0
            rows.append((aid, abs(p.size_lots), profitable))
        alloc = allocate_pro_rata(rows, abs(q_r))
    else:
        # lazily: the walk stops as soon as the remainder is covered (a crash liquidates
        # many accounts against the same long line)
        line = ((key[-1], abs(accounts[key[-1]].positions[symbol].size_lots)) for key in ranking.entries)
        alloc = allocate_queue(line, abs(q_r))
        rank_of = {aid: i + 1 for i, (aid, _) in enumerate(alloc)}  # the queue takes a prefix
    if sum(lots for _, lots in alloc) != abs(q_r):
        raise InvariantViolation(f"ADL could not cover {q_r} lots in {symbol}")
    # Value per side, signed like a price: negative when a short was taken over at a negative
    # bankruptcy price (its deficit exceeded its notional); abs() would flip that sign.
    shares = split_value(ev_r if q_r > 0 else -ev_r, abs(q_r), [lots for _, lots in alloc])
    price_e8 = div_half_even(bv * 100_000_000, original_size * inst.lot_size_e8)
    k = inst.atoms_per_lot_tick
    guard_cost = 0  # what the bad-debt guard (§5 step 5) costs the fund, net
    for (aid, lots), share in zip(alloc, shares, strict=True):
        cp = st.accounts[aid]
        for order in [o for o in cp.open_orders.values() if o.symbol == symbol]:
            st.cancel_resting(order, "adl")
        cp_side = "long" if cp.positions[symbol].size_lots > 0 else "short"
        value, fill_price_e8 = _adl_fill_value(st, cp, symbol, q_r > 0, lots, share, mark * k * lots)
        if value == share:
            fill_price_e8 = price_e8
        # The counterparty closes at `value`: a short buys back (pays it), a long sells
        # (receives it). Its haircut is what that costs it against closing at the mark.
        haircut = value - lots * mark * k if q_r > 0 else lots * mark * k - value
        # the fund receives (q_r > 0) or pays (q_r < 0) `value` for lots it holds at `share`
        guard_cost += share - value if q_r > 0 else value - share
        realized = settle_fill(cp, symbol, lots if q_r > 0 else -lots, value)
        cp.fills.append(Fill(None, st.ts, symbol, None, c.BUY if q_r > 0 else c.SELL, fill_price_e8, lots, 0,
                             "adl", realized))
        st.holders_update(cp, symbol)
        st.touch(aid)
        # the fund hands over exactly `share` of entry: it closes flat
        pos.size_lots -= lots if q_r > 0 else -lots
        pos.entry_value_atoms -= share if q_r > 0 else -share
        st.emit(
            ev.PositionDeleveraged,
            symbol,
            liquidated_id,
            aid,
            cp_side,
            lots,
            fill_price_e8,
            value,
            realized,
            cp.size(symbol),
            rank_of[aid],
            st.adl_policy[symbol],
            haircut,
        )
        st.emit_position(cp, symbol, realized, "adl")
    if pos.size_lots != 0 or pos.entry_value_atoms != 0:
        raise InvariantViolation("fund position not closed flat by ADL")
    del fund.positions[symbol]
    st.emit_position(fund, symbol, 0, "adl")
    return st.fund_pays(guard_cost, "adl", liquidated_id, symbol)


def _adl_fill_value(
    st: ExchangeState, cp: Account, symbol: str, cp_buys: bool, lots: int, share: int, at_mark: int
) -> tuple[int, int]:
    """§5 step 5: the value a counterparty's ADL fill settles at, and its price in e8.

    Normally its `share` of the bankruptcy value. If closing there would leave it below zero
    equity, the fill is valued so that its equity becomes exactly 0; if its equity is
    already <= 0, at the mark (ADL never lowers it further). Closing at the mark leaves
    equity unchanged, so the equity after closing at value V is `equity - haircut(V)`.
    """
    equity = equity_atoms(cp, st.instruments, st.marks)
    if equity <= 0:
        value = at_mark
    else:
        haircut = share - at_mark if cp_buys else at_mark - share
        if haircut <= equity:
            return share, 0
        value = at_mark + equity if cp_buys else at_mark - equity
    inst = st.instruments[symbol]
    return value, div_half_even(value * 100_000_000, lots * inst.lot_size_e8)
