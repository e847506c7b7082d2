"""The ADL allocation as it was before the line kept its own totals: the reference that the
engine's `take_queue` / `take_pro_rata` / `take_capped_pro_rata` are held to, atom for atom
(test_adl_differential.py). Capped pro-rata is SPEC §6's formula over the whole line
(`engine.adl.allocate_capped_pro_rata`, checked by hand in tests/unit/test_adl_capped.py).

Deliberately naive: the line is sorted from scratch on every call with the original rank key
(exact `Fraction` scores), every position is looked up, and the policies walk the whole line
(SPEC §6 as written). Slow (O(N log N) per liquidation), obviously right.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from engine import commands as c
from engine.adl import allocate_capped_pro_rata
from engine.risk import equity_atoms


def rank_key(account_id: int, size_lots: int, entry_value_atoms: int, notional_atoms: int, equity: int) -> tuple[Any, ...]:
    if equity <= 0:
        return (1, Fraction(0), 0, account_id)
    upnl = notional_atoms - entry_value_atoms
    abs_ev = abs(entry_value_atoms) or 1
    abs_n = abs(notional_atoms) or 1
    if upnl > 0:
        score = Fraction(upnl * abs_n, abs_ev * equity)
    else:
        score = Fraction(upnl * equity, abs_ev * abs_n)
    return (0, -score, -abs(size_lots), account_id)


def line(st: Any, symbol: str, side: int) -> list[int]:
    """Account ids holding `side` in `symbol`, first in the ADL line first (SPEC §6)."""
    inst = st.instruments[symbol]
    mark = st.marks[symbol]
    keys = []
    for aid, acct in st.accounts.items():
        pos = acct.positions.get(symbol)
        if aid == 0 or pos is None or (pos.size_lots > 0) != (side > 0):
            continue
        keys.append(rank_key(aid, pos.size_lots, pos.entry_value_atoms, inst.notional_atoms(pos.size_lots, mark),
                             equity_atoms(acct, st.instruments, st.marks)))
    return [key[-1] for key in sorted(keys)]


def allocate_queue(ranked: Iterable[tuple[int, int]], remaining_lots: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for account_id, lots in ranked:
        if remaining_lots <= 0:
            break
        take = min(remaining_lots, lots)
        if take > 0:
            out.append((account_id, take))
            remaining_lots -= take
    return out


def allocate_pro_rata(ranked: list[tuple[int, int, bool]], remaining_lots: int) -> list[tuple[int, int]]:
    profitable = [(a, lots) for a, lots, p in ranked if p and lots > 0]
    total = sum(lots for _, lots in profitable)
    if total <= remaining_lots:
        taken = {a: lots for a, lots in profitable}
        rest = remaining_lots - total
        others = [(a, lots) for a, lots, p in ranked if not (p and lots > 0)]
        for a, lots in allocate_queue(others, rest):
            taken[a] = taken.get(a, 0) + lots
        return [(a, taken[a]) for a, _, _ in ranked if taken.get(a)]
    shares = {a: (remaining_lots * lots) // total for a, lots in profitable}
    leftover = remaining_lots - sum(shares.values())
    for a, lots in profitable:
        if leftover == 0:
            break
        if shares[a] < lots:
            shares[a] += 1
            leftover -= 1
    return [(a, shares[a]) for a, _ in profitable if shares[a] > 0]


def allocate(st: Any, symbol: str, side: int, lots: int) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """Same contract as `engine.deleverage.allocate`, the old way."""
    ranked_ids = line(st, symbol, side)
    inst = st.instruments[symbol]
    mark = st.marks[symbol]
    sizes = {aid: st.accounts[aid].positions[symbol] for aid in ranked_ids}
    if st.adl_policy[symbol] == c.ADL_CAPPED_PRO_RATA:  # SPEC §6's formula over the whole line
        rank_of = {aid: i + 1 for i, aid in enumerate(ranked_ids)}
        rows3 = [(aid, abs(sizes[aid].size_lots),
                  sizes[aid].size_lots * mark * inst.atoms_per_lot_tick - sizes[aid].entry_value_atoms)
                 for aid in ranked_ids]
        return allocate_capped_pro_rata(rows3, lots), rank_of
    if st.adl_policy[symbol] == c.ADL_PRO_RATA:
        rank_of = {aid: i + 1 for i, aid in enumerate(ranked_ids)}
        rows = []
        for aid in ranked_ids:
            p = sizes[aid]
            profitable = p.size_lots * mark * inst.atoms_per_lot_tick - p.entry_value_atoms > 0
            rows.append((aid, abs(p.size_lots), profitable))
        return allocate_pro_rata(rows, lots), rank_of
    alloc = allocate_queue(((aid, abs(sizes[aid].size_lots)) for aid in ranked_ids), lots)
    return alloc, {aid: i + 1 for i, (aid, _) in enumerate(alloc)}
