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
from engine import deleverage, matching, stops
from engine import events as ev
from engine.accounts import INSURANCE_FUND_ID, Account, Fill, Position
from engine.book import Order
from engine.errors import InvariantViolation
from engine.risk import equity_atoms, isolated_equity_atoms, maintenance_atoms
from engine.state import ExchangeState
from engine.units import PPM, div_ceil, div_floor, div_half_even, div_trunc

_tuple_new = tuple.__new__


def run_liquidations(st: ExchangeState) -> None:
    """Liquidate every account below maintenance, lowest equity/MM first, until none is.

    The parts of an account are checked apart: its cross part (cross equity against cross
    maintenance) and each isolated position (its own equity against its own maintenance,
    SPEC §12). Order: lowest ratio first, ties by account id, then the cross part before the
    isolated positions in symbol order."""
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
        below: list[tuple[int, int, int, str]] = []  # (equity, maintenance, account id, part)
        flat_debts: list[int] = []  # flat accounts below zero, covered by id before any liquidation
        accounts, instruments, marks, stale = st.accounts, st.instruments, st.marks, st.index_stale
        for aid in candidates:
            if aid == INSURANCE_FUND_ID:
                continue
            acct = accounts[aid]
            stale.add(aid)
            positions = acct.positions
            if acct.isolated:
                _check_parts(st, acct, below, flat_debts)
                continue
            if not positions:
                if acct.wallet_atoms < 0:
                    flat_debts.append(aid)
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
                below.append((eq, mm, aid, CROSS))
        if flat_debts:  # the fund pays what it can, in account id order
            for aid in sorted(flat_debts):
                _cover_negative_balance(st, accounts[aid])
        if not below:
            break
        for aid, part in _lowest_ratio_first(below):
            if part == CROSS:
                _maybe_liquidate(st, st.accounts[aid])
            else:
                _maybe_liquidate_isolated(st, st.accounts[aid], part)
        candidates = st.dirty
        st.dirty = set()
    st.dirty.clear()


CROSS = ""  # the part name of an account's cross positions (isolated parts are named by symbol)


def _check_parts(
    st: ExchangeState, acct: Account, below: list[tuple[int, int, int, str]], flat_debts: list[int]
) -> None:
    """An account with isolated symbols: its cross part and each isolated position apart
    (a flat cross part below zero goes to `flat_debts`)."""
    instruments, marks, iso = st.instruments, st.marks, acct.isolated
    cross = [s for s in acct.positions if s not in iso]
    if cross:
        eq = equity_atoms(acct, instruments, marks)
        mm = maintenance_atoms(acct, instruments, marks)
        if eq < mm:
            below.append((eq, mm, acct.account_id, CROSS))
    elif acct.wallet_atoms < 0:
        flat_debts.append(acct.account_id)
    for sym, pos in acct.positions.items():
        if sym in iso:
            inst = instruments[sym]
            notional = pos.size_lots * marks[sym] * inst.atoms_per_lot_tick
            eq = iso[sym] + notional - pos.entry_value_atoms
            mm = inst.maintenance_atoms(notional)
            if eq < mm:
                below.append((eq, mm, acct.account_id, sym))


def _lowest_ratio_first(below: list[tuple[int, int, int, str]]) -> list[tuple[int, str]]:
    """(account id, part) by equity / maintenance ascending, exactly, ties by id, then part.

    The key floor(eq * 2**256 / mm) is exact while every mm < 2**128: two different ratios
    then differ by at least 1/(mm1 * mm2) > 2**-256, so their keys differ, and equal ratios
    have equal keys. Larger margins (not met in practice) are compared as fractions."""
    if all(mm.bit_length() <= 128 for _, mm, _, _ in below):
        return [(aid, part) for _, aid, part in sorted(((eq << 256) // mm, aid, part) for eq, mm, aid, part in below)]
    return [(aid, part) for _, aid, part in sorted((Fraction(eq, mm), aid, part) for eq, mm, aid, part in below)]


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


def _cross_positions(acct: Account) -> list[str]:
    """The account's cross positions, in symbol-name order."""
    iso = acct.isolated
    return sorted(s for s in acct.positions if not (iso and s in iso))


def _maybe_liquidate(st: ExchangeState, acct: Account) -> None:
    """Liquidate the cross part of `acct` if it is (still) below maintenance (§5): cancel
    its orders, reduce positions above the first tier (§12 partial liquidation), then take
    over every cross position."""
    instruments, marks = st.instruments, st.marks
    eq = equity_atoms(acct, instruments, marks)
    mm = maintenance_atoms(acct, instruments, marks)
    if not _cross_positions(acct) or eq >= mm:
        return
    if acct.open_orders or acct.stop_orders:  # canceling can only change margin when there was something to cancel
        for order in list(acct.open_orders.values()):
            st.cancel_resting(order, "liquidation")
        stops.cancel_account_stops(st, acct, "liquidation")
        eq = equity_atoms(acct, instruments, marks)
        if eq >= maintenance_atoms(acct, instruments, marks):
            return
    reduced = False
    for s in _cross_positions(acct):
        reduced |= _reduce_partially(st, acct, s)
    if reduced:
        eq = equity_atoms(acct, instruments, marks)
        if eq >= maintenance_atoms(acct, instruments, marks):
            return
    symbols = _cross_positions(acct)
    if not symbols:  # the reduction closed every cross position (a fee may leave the wallet short)
        if acct.wallet_atoms < 0:
            _cover_negative_balance(st, acct)
        return
    # Take over every position at its bankruptcy value: the shares of E follow MM_p.
    mm_p = {
        s: instruments[s].maintenance_atoms(instruments[s].notional_atoms(acct.positions[s].size_lots, marks[s]))
        for s in symbols
    }
    total_mm = sum(mm_p.values())
    shares = {s: div_trunc(eq * mm_p[s], total_mm) for s in symbols[:-1]}
    shares[symbols[-1]] = eq - sum(shares.values())
    taken = [(s, *_take_over(st, acct, s, shares[s]), mm_p[s]) for s in symbols]
    if acct.wallet_atoms != 0:
        raise InvariantViolation(f"liquidated account {acct.account_id} wallet {acct.wallet_atoms} != 0")
    st.touch(acct.account_id)
    st.liq_index.update(acct, instruments, marks)
    for s, size, bv, mmp in taken:
        _close_taken_over(st, acct.account_id, s, size, bv, eq, mmp)


def _maybe_liquidate_isolated(st: ExchangeState, acct: Account, symbol: str) -> None:
    """Liquidate the isolated position of `acct` in `symbol` alone (SPEC §12): cancel the
    account's orders in that symbol, reduce it to the first tier if it is above, then take it
    over at `BV = q * M - isolated equity`, which leaves its margin at exactly 0: the loss is
    capped at the margin and the wallet is not touched."""
    pos = acct.positions.get(symbol)
    if pos is None:
        return
    inst = st.instruments[symbol]
    mark = st.marks[symbol]
    eq = isolated_equity_atoms(acct, symbol, inst, mark)
    mm = inst.maintenance_atoms(inst.notional_atoms(pos.size_lots, mark))
    if eq >= mm:
        return
    for order in [o for o in acct.open_orders.values() if o.symbol == symbol]:
        st.cancel_resting(order, "liquidation")
    stops.cancel_account_stops(st, acct, "liquidation", symbol)
    if _reduce_partially(st, acct, symbol):
        pos = acct.positions.get(symbol)
        if pos is None:
            return
        eq = isolated_equity_atoms(acct, symbol, inst, mark)
        mm = inst.maintenance_atoms(inst.notional_atoms(pos.size_lots, mark))
        if eq >= mm:
            return
    margin = acct.isolated[symbol]
    size, bv = _take_over(st, acct, symbol, eq)
    if acct.isolated[symbol] != 0:
        raise InvariantViolation(f"liquidated isolated {symbol} of {acct.account_id}: margin {acct.isolated[symbol]} != 0")
    if margin:
        st.emit(ev.PositionMarginChanged, acct.account_id, symbol, -margin, 0, acct.wallet_atoms, "liquidation")
    st.touch(acct.account_id)
    st.liq_index.update(acct, st.instruments, st.marks)
    _close_taken_over(st, acct.account_id, symbol, size, bv, eq, mm)


def _take_over(st: ExchangeState, acct: Account, symbol: str, share: int) -> tuple[int, int]:
    """Move the position to the insurance fund at `BV = q * M - share` (§5 step 2): the
    account realizes BV - entry value, into its wallet (cross) or its margin (isolated).
    Returns (size, bankruptcy value)."""
    fund = st.insurance_fund
    pos = acct.positions.pop(symbol)
    inst = st.instruments[symbol]
    bv = inst.notional_atoms(pos.size_lots, st.marks[symbol]) - share
    realized = bv - pos.entry_value_atoms
    if symbol in acct.isolated:
        acct.isolated[symbol] += realized
    else:
        acct.wallet_atoms += realized
    acct.fills.append(_tuple_new(Fill, (
        None, st.ts, symbol, None, c.SELL if pos.size_lots > 0 else c.BUY,
        div_half_even(bv * 100_000_000, pos.size_lots * inst.lot_size_e8), abs(pos.size_lots), 0,
        "liquidation", realized,
    )))
    st.holders_update(acct, symbol)
    if symbol in fund.positions:
        raise InvariantViolation("insurance fund already holds a position")
    fund_pos = Position(symbol)
    fund_pos.size_lots, fund_pos.entry_value_atoms = pos.size_lots, bv
    fund.positions[symbol] = fund_pos
    st.emit_position(acct, symbol, realized, "liquidation")
    st.emit_position(fund, symbol, 0, "liquidation")
    return pos.size_lots, bv


def _reduce_partially(st: ExchangeState, acct: Account, symbol: str) -> bool:
    """Partial liquidation (SPEC §12): a position whose notional at the mark is above the
    first maintenance tier is reduced by one reduce-only IOC order of the account, for the
    lots that bring it down to the tier's limit (rounded up to the lot), limited to the
    liquidation band, taker fee charged. No order when the other side of the book holds
    nothing inside the band (nothing could fill it). Returns whether anything was filled."""
    pos = acct.positions.get(symbol)
    if pos is None:
        return False
    inst = st.instruments[symbol]
    mark = st.marks[symbol]
    per_lot = mark * inst.atoms_per_lot_tick
    size = pos.size_lots
    first = inst.tiers[0].max_notional_atoms
    if abs(size) * per_lot <= first or len(inst.tiers) == 1:
        return False
    lots = abs(size) - first // per_lot  # keep floor(first / per-lot) lots: the cut rounds up
    band = inst.liquidation_band_ppm
    book = st.books[symbol]
    if size > 0:  # sell into the bids, not below the band
        limit = max(div_ceil(mark * (PPM - band), PPM), 1)
        best = book.best_bid()
        if best is None or best < limit:
            return False
    else:
        limit = div_floor(mark * (PPM + band), PPM)
        best = book.best_ask()
        if best is None or best > limit:
            return False
    side = c.SELL if size > 0 else c.BUY
    order = Order(st.next_order_id, acct.account_id, symbol, side, limit, lots, c.LIMIT, c.IOC, reduce_only=True, ts_ns=st.ts)
    st.next_order_id += 1
    st.emit(ev.OrderAccepted, acct.account_id, order.order_id, None, symbol, side, c.LIMIT, limit, lots, c.IOC, False, True, c.STP_CANCEL_TAKER)
    st.partial_order_id = order.order_id
    try:
        matching.execute(st, order, acct, limit)
    finally:
        st.partial_order_id = None
    filled = order.filled_lots
    if not filled:
        return False
    fee = sum(f[3] for f in order.fills)
    avg = div_half_even(order.filled_value_ticks * inst.tick_size_e8, filled)
    st.emit(ev.PositionReduced, acct.account_id, symbol, order.order_id, lots, filled, avg, fee,
            acct.size(symbol), mark, "partial_liquidation")
    return True


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
