"""Auto-deleveraging: who is first in line, and how much each counterparty gives up (SPEC §6).

Ranking (BitMEX-style), per position, compared exactly as rationals:
    pnl_pct = upnl / |entry_value|,  eff_lev = |q * M| / equity
    score   = pnl_pct * eff_lev  if upnl > 0  else  pnl_pct / eff_lev
Higher score first; ties: larger |q| first, then lower account id. Accounts whose equity is
<= 0 come last, by account id. `rank_key` turns that into one ascending sort key.

Allocation policies return [(account_id, lots)] in ranking order:
- queue: walk the ranking, take min(remaining, |q|) from each;
- pro-rata: split over all profitable counterparties by |q| (lots rounded down, leftover lots
  one by one in ranking order); if they hold less than the remainder, the rest by queue.

The ADL fill value is split by quantity with `split_value`, cumulatively: after the first k
counterparties exactly trunc(V * lots_so_far / Q) has been handed over, so every share is
within one atom of bankruptcy price x its qty and the shares add up to V exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

from sortedcontainers import SortedList

from engine.accounts import Account
from engine.instruments import Instrument
from engine.risk import equity_atoms
from engine.units import div_trunc

RankKey = tuple[int, int, Fraction, int, int]  # (not ranked?, score prefix, score, -size, id)


def rank_key(account_id: int, size_lots: int, entry_value_atoms: int, notional_atoms: int, equity_atoms: int) -> RankKey:
    """Ascending sort key: the first key is the first position in the ADL queue."""
    if equity_atoms <= 0:
        return (1, 0, Fraction(0), 0, account_id)
    upnl = notional_atoms - entry_value_atoms
    abs_ev = abs(entry_value_atoms) or 1
    abs_n = abs(notional_atoms) or 1
    if upnl > 0:
        num, den = upnl * abs_n, abs_ev * equity_atoms
    else:
        num, den = upnl * equity_atoms, abs_ev * abs_n
    # integer prefix floor(-score * 2**32) is monotone in -score: it orders exactly whenever it
    # differs, and the Fraction breaks its ties (so no Fraction comparison in the common case)
    return (0, (-num << 32) // den, Fraction(-num, den), -abs(size_lots), account_id)


def adl_quantile(rank: int, count: int) -> int:
    """Binance-style light: 4 = first in line, for 0-based `rank` among `count` positions."""
    return 4 - (5 * rank) // count


def allocate_queue(ranked: Iterable[tuple[int, int]], remaining_lots: int) -> list[tuple[int, int]]:
    """Queue policy over `ranked` = (account_id, |q|) in ranking order; stops once covered."""
    out: list[tuple[int, int]] = []
    for account_id, lots in ranked:
        if remaining_lots <= 0:
            break
        take = min(remaining_lots, lots)
        if take > 0:
            out.append((account_id, take))
            remaining_lots -= take
    return out


def allocate_pro_rata(
    ranked: list[tuple[int, int, bool]], remaining_lots: int
) -> list[tuple[int, int]]:
    """Pro-rata policy over `ranked` = [(account_id, |q|, profitable)] in ranking order."""
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
    for a, lots in profitable:  # ranking order; each share < lots, so +1 always fits
        if leftover == 0:
            break
        if shares[a] < lots:
            shares[a] += 1
            leftover -= 1
    return [(a, shares[a]) for a, _ in profitable if shares[a] > 0]


def split_value(total_atoms: int, total_lots: int, parts: list[int]) -> list[int]:
    """Split `total_atoms` for `total_lots` over `parts` (lots each, summing to total_lots).

    Cumulative rounding: share k is trunc(total * (p_1 + .. + p_k) / total_lots) minus the
    same for k - 1. Each share is within one atom of its exact value `total * p_k /
    total_lots` (rounding each share alone and giving the last one the remainder would pile
    up to n - 1 atoms of error on the last counterparty), and the shares add up to
    `total_atoms` exactly.
    """
    shares = []
    handed = 0  # trunc(total * cum / total_lots) so far
    cum = 0
    for p in parts:
        cum += p
        upto = div_trunc(total_atoms * cum, total_lots)
        shares.append(upto - handed)
        handed = upto
    return shares


class AdlRanking:
    """The ADL line of one side (`side` = +1 longs, -1 shorts) of one symbol, kept sorted.

    Built on first use, then refreshed only for accounts listed in `pending` (the engine adds
    every account whose wallet or positions changed). A move of this symbol's mark changes
    every score, so the engine drops the ranking then and it is rebuilt on the next use.
    """

    def __init__(self, symbol: str, side: int) -> None:
        self.symbol = symbol
        self.side = side
        self.entries: SortedList = SortedList()
        self.key_of: dict[int, RankKey] = {}
        self.pending: set[int] = set()

    def refresh(self, accounts: dict[int, Account], instruments: dict[str, Instrument], marks: dict[str, int]) -> None:
        """Re-rank every pending account."""
        if not self.pending:
            return
        inst = instruments[self.symbol]
        mark = marks.get(self.symbol)
        for aid in self.pending:
            old = self.key_of.pop(aid, None)
            if old is not None:
                self.entries.remove(old)
            acct = accounts.get(aid)
            pos = acct.positions.get(self.symbol) if acct is not None and aid != 0 else None
            if pos is None or mark is None or (pos.size_lots > 0) != (self.side > 0):
                continue
            assert acct is not None
            key = rank_key(
                aid,
                pos.size_lots,
                pos.entry_value_atoms,
                inst.notional_atoms(pos.size_lots, mark),
                equity_atoms(acct, instruments, marks),
            )
            self.key_of[aid] = key
            self.entries.add(key)
        self.pending.clear()

    def ordered_ids(self) -> list[int]:
        """Account ids, first in line first."""
        return [key[-1] for key in self.entries]
