"""Liquidation (SPEC §5): who is below maintenance, in what order, and the takeover.

After any command that moved a mark or changed balances, `run_liquidations` checks the
accounts that could have fallen below maintenance (the dirty ones, and those the liquidation
index says the mark crossed), lowest equity/maintenance first (ties by account id), and
repeats until nobody is below. A liquidated account's orders are canceled; if it is still
below, every position is taken over by the insurance fund at its bankruptcy value
`BV_p = q * M - E * MM_p / sum(MM)` (E's shares truncated, remainder to the last symbol),
which leaves the wallet at exactly 0. The fund then sends one IOC order into the book,
limited to what its balance can pay and to the liquidation band, and deleverage.py closes
what the book did not take. A flat account left with a negative wallet is covered by the
fund, the rest is bad debt.
"""

from __future__ import annotations

from fractions import Fraction

from engine import commands as c
from engine import deleverage, matching
from engine import events as ev
from engine.accounts import INSURANCE_FUND_ID, Account, Fill, Position
from engine.book import Order
from engine.errors import InvariantViolation
from engine.risk import equity_atoms, maintenance_atoms
from engine.state import ExchangeState
from engine.units import PPM, div_ceil, div_floor, div_half_even, div_trunc

_tuple_new = tuple.__new__


def run_liquidations(st: ExchangeState) -> None:
    """Liquidate every account below maintenance, lowest equity/MM first, until none is."""
    candidates = st.dirty
    st.dirty = set()
    if st.moved and st.index_stale:
        for aid in st.index_stale:
            st.liq_index.update(st.accounts[aid], st.instruments, st.marks)
        st.index_stale.clear()
    for sym in st.moved:
        for aid in st.liq_index.multi[sym]:
            st.rank_touched.add(aid)
        candidates |= st.liq_index.candidates(sym, st.marks[sym])
    st.moved.clear()
    while candidates:
        below: list[tuple[int, int, int]] = []  # (equity, maintenance, account id)
        accounts, instruments, marks, stale = st.accounts, st.instruments, st.marks, st.index_stale
        for aid in sorted(candidates) if len(candidates) > 1 else candidates:  # by id: flat debts are covered in that order
            if aid == INSURANCE_FUND_ID:
                continue
            acct = accounts[aid]
            stale.add(aid)
            positions = acct.positions
            if not positions:
                if acct.wallet_atoms < 0:
                    _cover_negative_balance(st, acct)
                continue
            if len(positions) == 1:  # risk.equity_atoms / maintenance_atoms, inline
                for sym, pos in positions.items():
                    inst = instruments[sym]
                    notional = pos.size_lots * marks[sym] * inst.atoms_per_lot_tick
                    eq = acct.wallet_atoms + notional - pos.entry_value_atoms
                    mm = inst.maintenance_atoms(notional)
            else:
                eq = equity_atoms(acct, instruments, marks)
                mm = maintenance_atoms(acct, instruments, marks)
            if eq < mm:
                below.append((eq, mm, aid))
        if not below:
            break
        for aid in _lowest_ratio_first(below):
            _maybe_liquidate(st, st.accounts[aid])
        candidates = st.dirty
        st.dirty = set()
    st.dirty.clear()


def _lowest_ratio_first(below: list[tuple[int, int, int]]) -> list[int]:
    """Account ids by equity / maintenance ascending, exactly, ties by id.

    The key floor(eq * 2**256 / mm) is exact while every mm < 2**128: two different ratios
    then differ by at least 1/(mm1 * mm2) > 2**-256, so their keys differ, and equal ratios
    have equal keys. Larger margins (not met in practice) are compared as fractions."""
    if all(mm.bit_length() <= 128 for _, mm, _ in below):
        return [aid for _, aid in sorted(((eq << 256) // mm, aid) for eq, mm, aid in below)]
    return [aid for _, aid in sorted((Fraction(eq, mm), aid) for eq, mm, aid in below)]


def _cover_negative_balance(st: ExchangeState, acct: Account) -> None:
    """A flat account left below zero (an account with equity <= 0 closed at the mark by
    ADL before its own liquidation came, or a fee on a nearly empty account): the
    insurance fund pays the deficit as far as its balance goes, as for any bankruptcy
    loss; the rest is bad debt (§5 step 5), and the account is left at exactly 0."""
    deficit = -acct.wallet_atoms
    paid, bad_debt = st.fund_pays(deficit, "negative_balance", acct.account_id, None)
    acct.wallet_atoms = 0
    st.touch(acct.account_id)
    st.emit(ev.NegativeBalanceCovered, acct.account_id, -paid, acct.wallet_atoms, bad_debt)


def _maybe_liquidate(st: ExchangeState, acct: Account) -> None:
    """Liquidate `acct` if it is (still) below maintenance."""
    eq = equity_atoms(acct, st.instruments, st.marks)
    mm = maintenance_atoms(acct, st.instruments, st.marks)
    if not acct.positions or eq >= mm:
        return
    if acct.open_orders:  # canceling can only change margin when there was something to cancel
        for order in list(acct.open_orders.values()):
            st.cancel_resting(order, "liquidation")
        eq = equity_atoms(acct, st.instruments, st.marks)
        if eq >= maintenance_atoms(acct, st.instruments, st.marks):
            return
    fund = st.insurance_fund
    # Take over every position at its bankruptcy value: the shares of E follow MM_p.
    symbols = sorted(acct.positions)
    mm_p = {
        s: st.instruments[s].maintenance_atoms(
            st.instruments[s].notional_atoms(acct.positions[s].size_lots, st.marks[s])
        )
        for s in symbols
    }
    total_mm = sum(mm_p.values())
    shares = {s: div_trunc(eq * mm_p[s], total_mm) for s in symbols[:-1]}
    shares[symbols[-1]] = eq - sum(shares.values())
    taken: list[tuple[str, int, int, int]] = []  # symbol, size, bankruptcy value, MM_p
    for s in symbols:
        pos = acct.positions.pop(s)
        inst = st.instruments[s]
        bv = inst.notional_atoms(pos.size_lots, st.marks[s]) - shares[s]
        realized = bv - pos.entry_value_atoms
        acct.wallet_atoms += realized
        acct.fills.append(_tuple_new(Fill, (
            None, st.ts, s, None, c.SELL if pos.size_lots > 0 else c.BUY,
            div_half_even(bv * 100_000_000, pos.size_lots * inst.lot_size_e8), abs(pos.size_lots), 0,
            "liquidation", realized,
        )))
        st.holders_update(acct, s)
        if s in fund.positions:
            raise InvariantViolation("insurance fund already holds a position")
        fund_pos = Position(s)
        fund_pos.size_lots, fund_pos.entry_value_atoms = pos.size_lots, bv
        fund.positions[s] = fund_pos
        taken.append((s, pos.size_lots, bv, mm_p[s]))
        st.emit_position(acct, s, realized, "liquidation")
        st.emit_position(fund, s, 0, "liquidation")
    if acct.wallet_atoms != 0:
        raise InvariantViolation(f"liquidated account {acct.account_id} wallet {acct.wallet_atoms} != 0")
    st.touch(acct.account_id)
    st.liq_index.update(acct, st.instruments, st.marks)
    for s, size, bv, mmp in taken:
        _close_taken_over(st, acct.account_id, s, size, bv, eq, mmp)


def _close_taken_over(st: ExchangeState, liquidated_id: int, symbol: str, size: int, bv: int, equity_before: int, mm: int) -> None:
    """Insurance fund: one IOC inside its budget and the band, then ADL for the rest."""
    inst = st.instruments[symbol]
    fund = st.insurance_fund
    mark = st.marks[symbol]
    k = inst.atoms_per_lot_tick
    balance_before = fund.wallet_atoms
    aq = abs(size)
    band = inst.liquidation_band_ppm
    if size > 0:  # the fund sells: lowest price it can afford, not below the band
        limit = max(div_ceil(bv - balance_before, aq * k), div_ceil(mark * (PPM - band), PPM), 1)
    else:  # the fund buys back: highest price it can afford, not above the band
        limit = min(div_floor(-bv + balance_before, aq * k), div_floor(mark * (PPM + band), PPM))
    book_filled = 0
    book_avg_e8: int | None = None
    if limit > 0:  # §5.3: one IOC order, placed even when nothing in the book can fill it
        order = Order(st.next_order_id, INSURANCE_FUND_ID, symbol, c.SELL if size > 0 else c.BUY, limit, aq, c.LIMIT, c.IOC, ts_ns=st.ts)
        st.next_order_id += 1
        st.emit(ev.OrderAccepted, INSURANCE_FUND_ID, order.order_id, None, symbol, order.side, c.LIMIT, limit, aq, c.IOC, False, False, c.STP_CANCEL_TAKER)
        st.takeover = (aq, bv)  # the fund's entry value of the taken-over position
        try:
            matching.execute(st, order, fund, limit)  # fills, then cancels the rest ("ioc")
        finally:
            st.takeover = None
        book_filled = order.filled_lots
        if book_filled:
            book_avg_e8 = div_half_even(order.filled_value_ticks * inst.tick_size_e8, book_filled)
    delta = fund.wallet_atoms - balance_before
    if fund.wallet_atoms < 0:
        raise InvariantViolation("insurance fund below zero")
    if delta:
        st.emit(ev.InsuranceFundChanged, fund.wallet_atoms, delta, "liquidation_fill", liquidated_id, symbol)
    pos = fund.positions.get(symbol)
    adl_lots = bad_debt = 0
    if pos is not None:
        adl_lots = abs(pos.size_lots)
        guard_delta, bad_debt = deleverage.deleverage(st, liquidated_id, symbol, bv, size)
        delta += guard_delta
    if symbol in fund.positions:
        raise InvariantViolation("insurance fund kept a position")
    bp = div_half_even(bv * 100_000_000, size * inst.lot_size_e8)
    st.emit(
        ev.AccountLiquidated,
        liquidated_id,
        symbol,
        size,
        bv,
        bp,
        mark,
        equity_before,
        mm,
        delta,
        book_filled,
        adl_lots,
        book_avg_e8,
        bad_debt,
    )
