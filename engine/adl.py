"""Auto-deleveraging: who is first in line, and how much each counterparty gives up (SPEC §6).

Ranking (BitMEX-style), per position, compared exactly as rationals:
    pnl_pct = upnl / |entry_value|,  eff_lev = |q * M| / equity
    score   = pnl_pct * eff_lev  if upnl > 0  else  pnl_pct / eff_lev
Higher score first; ties: larger |q| first, then lower account id. Accounts whose equity is
<= 0 come last, by account id. `rank_key` turns that into one ascending sort key.

Allocation policies return [(account_id, lots)] in ranking order:
- queue: walk the ranking, take min(remaining, |q|) from each;
- pro-rata: split over all profitable counterparties by |q| (lots rounded down, leftover lots
  one by one in ranking order); if they hold less than the remainder, the rest by queue;
- capped pro-rata (SPEC §6, `allocate_capped_pro_rata`): split by unrealized profit,
  water-filled up to each position's size.
`allocate_queue` / `allocate_pro_rata` / `allocate_capped_pro_rata` state each rule over the
whole line; the line the engine keeps per side (`adl_line.AdlRanking`: `take_queue` /
`take_pro_rata` / `take_capped_pro_rata`) gives the same result touching only the positions
that receive lots (plus O(log N)), which is what the engine runs (a differential test holds
the two to the atom).

The ADL fill value is split by quantity with `split_value`, cumulatively: after the first k
counterparties exactly trunc(V * lots_so_far / Q) has been handed over, so every share is
within one atom of bankruptcy price x its qty and the shares add up to V exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from engine.units import div_trunc

# (not ranked?, score prefix, exact score or 0, -size, id); see rank_key
# A line's keys are plain ints (`fast_rank_key`) or, in the exact mode of a line that met
# numbers too large for them, tuples (not ranked?, score prefix, exact score, -size, id).
RankKey = Any

PREFIX_BITS = 256  # the score prefix is floor(-score * 2**256)
FAST_DEN_BITS = 128  # below this many bits of denominator the prefix alone is exact
FAST_NUM_BITS = 192  # and with a numerator below 2**192 the prefix is below 2**448 in size
ID_BITS = 64  # account ids and sizes packed below the prefix in an int key
ID_MASK = (1 << ID_BITS) - 1
LOW_BITS = 2 * ID_BITS
UNRANKED = 1 << 449  # the prefix of equity <= 0: after every ranked prefix


class ExactScore:
    """An exact rational -score = num / den (den > 0), compared by cross-multiplication.

    Only in the keys of a line in exact mode (a denominator too large for the prefix to be
    exact, see `rank_key`); never met in practice, kept so the order is exact for any input."""

    __slots__ = ("den", "num")

    def __init__(self, num: int, den: int) -> None:
        self.num = num
        self.den = den

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExactScore) and self.num * other.den == other.num * self.den

    def __lt__(self, other: ExactScore) -> bool:
        return self.num * other.den < other.num * self.den

    def __le__(self, other: ExactScore) -> bool:
        return self.num * other.den <= other.num * self.den

    def __gt__(self, other: ExactScore) -> bool:
        return self.num * other.den > other.num * self.den

    def __ge__(self, other: ExactScore) -> bool:
        return self.num * other.den >= other.num * self.den

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return ExactScore, (self.num, self.den)


def _score(size_lots: int, entry_value_atoms: int, notional_atoms: int, equity_atoms: int) -> tuple[int, int]:
    """(num, den) with den > 0 and -num/den the §6 score of a position whose equity is > 0."""
    upnl = notional_atoms - entry_value_atoms
    abs_ev = abs(entry_value_atoms) or 1
    abs_n = abs(notional_atoms) or 1
    if upnl > 0:
        return upnl * abs_n, abs_ev * equity_atoms
    return upnl * equity_atoms, abs_ev * abs_n


def rank_key(account_id: int, size_lots: int, entry_value_atoms: int, notional_atoms: int, equity_atoms: int) -> RankKey:
    """Ascending sort key, exact for any numbers: the first key is the first in the ADL queue.

    (0, prefix, exact score, -|q|, id), or (1, 0, 0, 0, id) when equity <= 0. The prefix
    floor(-score * 2**256) decides the order alone unless two prefixes tie; the exact score
    (compared by cross-multiplication) then breaks the tie."""
    if equity_atoms <= 0:
        return (1, 0, 0, 0, account_id)
    num, den = _score(size_lots, entry_value_atoms, notional_atoms, equity_atoms)
    return (0, (-num << PREFIX_BITS) // den, ExactScore(-num, den), -abs(size_lots), account_id)


def fast_rank_key(
    account_id: int, size_lots: int, entry_value_atoms: int, notional_atoms: int, equity_atoms: int
) -> int | None:
    """The same order as `rank_key` as one int, or None when the numbers are too large for it.

    key = prefix * 2**128 + (2**64 - 1 - |q|) * 2**64 + id, with prefix = floor(-score * 2**256)
    (UNRANKED and |q| taken as 2**64 - 1 when equity <= 0, so those come last, by id).
    Exact: with both denominators below 2**128 two different scores differ by at least
    1/(d1*d2) > 2**-256, so their prefixes differ, and equal scores have equal prefixes; ties
    then go to the larger |q|, then the lower id. Needs den < 2**128 (|entry value| and
    equity below 2**64 atoms each), |num| < 2**192 (so |prefix| < 2**448 < UNRANKED),
    |q| < 2**64 and 0 <= id < 2**64."""
    if not 0 <= account_id <= ID_MASK:
        return None
    if equity_atoms <= 0:
        return (UNRANKED << LOW_BITS) + account_id
    upnl = notional_atoms - entry_value_atoms  # _score, inline: this runs per position per mark move
    abs_ev = (entry_value_atoms if entry_value_atoms > 0 else -entry_value_atoms) or 1
    abs_n = (notional_atoms if notional_atoms > 0 else -notional_atoms) or 1
    if upnl > 0:
        num, den = upnl * abs_n, abs_ev * equity_atoms
    else:
        num, den = upnl * equity_atoms, abs_ev * abs_n
    lots = size_lots if size_lots > 0 else -size_lots
    if den.bit_length() > FAST_DEN_BITS or num.bit_length() > FAST_NUM_BITS or lots > ID_MASK:
        return None
    return (((-num << PREFIX_BITS) // den) << LOW_BITS) + ((ID_MASK - lots) << ID_BITS) + account_id


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


def water_level(caps_and_weights: list[tuple[Fraction | int, Fraction | int]], remaining: Fraction | int) -> Fraction:
    """The `λ` with sum(min(cap, λ * weight)) = remaining (weights > 0, caps >= 0, remaining <
    sum of caps), exactly: positions saturate in order of cap / weight."""
    by_ratio = sorted(caps_and_weights, key=lambda cw: Fraction(cw[0], cw[1]))
    capped = Fraction(0)  # sum of the caps of saturated positions
    weight = Fraction(sum(w for _, w in by_ratio))  # sum of the weights of the others
    for cap, w in by_ratio:
        level = Fraction(remaining - capped, weight)
        if level * w <= cap:
            return level
        capped += cap
        weight -= w
    raise ValueError("remaining is not below the sum of the caps")


def allocate_capped_pro_rata(
    ranked: list[tuple[int, int, int]], remaining_lots: int
) -> list[tuple[int, int]]:
    """Capped pro-rata (SPEC §6) over `ranked` = [(account_id, |q|, upnl atoms)] in ranking order.

    The profitable (upnl > 0) give up lots in proportion to their unrealized profit, each at
    most its size: the water level λ solves sum(min(|q|, λ * upnl)) = R exactly; each takes
    floor(min(|q|, λ * upnl)), the leftover lots go one by one in ranking order to those
    still below their size. If the profitable hold no more than R, they are closed whole and
    the rest follows the queue policy over the others."""
    profitable = [(a, lots, u) for a, lots, u in ranked if u > 0 and lots > 0]
    total = sum(lots for _, lots, _ in profitable)
    if total <= remaining_lots:
        return allocate_pro_rata([(a, lots, u > 0) for a, lots, u in ranked], remaining_lots)
    level = water_level([(lots, u) for _, lots, u in profitable], remaining_lots)
    shares = {a: min(lots, math.floor(level * u)) for a, lots, u in profitable}
    leftover = remaining_lots - sum(shares.values())
    for a, lots, _ in profitable:
        if leftover == 0:
            break
        if shares[a] < lots:
            shares[a] += 1
            leftover -= 1
    return [(a, shares[a]) for a, _, _ in profitable if shares[a] > 0]


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


Alloc = tuple[list[tuple[int, int]], dict[int, int]]  # [(account_id, lots)] in line order, account_id -> rank
