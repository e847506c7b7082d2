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
whole line; `AdlRanking.take_queue` / `take_pro_rata` / `take_capped_pro_rata` give the same result touching only the
positions that receive lots (plus O(log N)), which is what the engine runs (a differential
test holds the two to the atom).

The ADL fill value is split by quantity with `split_value`, cumulatively: after the first k
counterparties exactly trunc(V * lots_so_far / Q) has been handed over, so every share is
within one atom of bankruptcy price x its qty and the shares add up to V exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from sortedcontainers import SortedList

from engine.accounts import Account
from engine.instruments import Instrument
from engine.risk import equity_atoms
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


def _backing_equity(
    acct: Account, symbol: str, upnl: int, instruments: dict[str, Instrument], marks: dict[str, int]
) -> int:
    """The equity behind a position with unrealized PnL `upnl` (risk.position_equity_atoms,
    with the one-position and isolated cases inline: they need no walk of the positions)."""
    iso = acct.isolated
    if iso and symbol in iso:  # an isolated position: its own equity (SPEC §12)
        return iso[symbol] + upnl
    if len(acct.positions) == 1 and not iso:
        return acct.wallet_atoms + upnl
    return equity_atoms(acct, instruments, marks)


class AdlRanking:
    """The ADL line of one side (`side` = +1 longs, -1 shorts) of one symbol, kept sorted.

    Built on first use, then refreshed only for accounts listed in `pending` (the engine adds
    every account whose wallet or positions changed). A move of this symbol's mark changes
    every score, so the engine drops the line then and it is rebuilt (one sort) on the next
    use.

    Besides the order it keeps what the allocation policies need, updated with each entry:
    (|q|, upnl, equity <= 0) of every position (`row_of`) and, from the first pro-rata
    allocation after a build on, the profitable ones (upnl > 0): by size (`by_lots`, the
    sizes sorted in `lot_sizes`), those whose account has equity <= 0 (ranked last, by id:
    `underwater`), and the totals of their sizes and profits. Profitable positions
    with equity > 0 are exactly the keys with a negative score prefix, the head of the line.
    So pro-rata finds its receivers without walking the line: those whose share rounds to
    at least one lot are the largest (|q| * R >= T: a range of `lot_sizes`), and the leftover
    lots go to the first of the head. Capped pro-rata, once it asks, also keeps the
    profitable by cap / weight (`by_ratio`: |q| / upnl) and by profit (`by_upnl`): the water
    level is found walking the positions it saturates, the positions whose share rounds to
    a lot are the largest profits.
    """

    def __init__(self, symbol: str, side: int) -> None:
        self.symbol = symbol
        self.side = side
        self.entries: SortedList = SortedList()
        self.key_of: dict[int, RankKey] = {}
        self.pending: set[int] = set()
        self.exact = False  # tuple keys with the exact score (numbers too large for int keys met)
        self.row_of: dict[int, tuple[int, int, bool]] = {}  # id -> (|q|, upnl, equity <= 0)
        # the profitable positions, kept once a pro-rata allocation asked for them
        self.profits = False
        self.profit_of: dict[int, int] = {}  # upnl of the profitable positions
        self.by_lots: dict[int, set[int]] = {}  # |q| -> the profitable positions of that size
        self.lot_sizes: SortedList = SortedList()  # the keys of by_lots
        self.underwater: SortedList = SortedList()  # profitable with equity <= 0: account ids
        self.profitable_lots = 0
        self.profitable_upnl = 0
        # capped pro-rata's orders of the profitable set, kept once it asked for them
        self.capped = False
        self.by_ratio: SortedList = SortedList()  # (Fraction(|q|, upnl), id)
        self.by_upnl: SortedList = SortedList()  # (upnl, id)

    # -- upkeep ---------------------------------------------------------------------------

    def refresh(self, accounts: dict[int, Account], instruments: dict[str, Instrument], marks: dict[str, int]) -> None:
        """Re-rank every pending account (the hot path of a cascade: kept inline)."""
        pending = self.pending
        if not pending:
            return
        if not self.key_of and len(pending) > 64:
            self._build(accounts, instruments, marks)
            return
        symbol = self.symbol
        mark = marks.get(symbol)
        k = instruments[symbol].atoms_per_lot_tick
        longs = self.side > 0
        exact = self.exact
        profits = self.profits
        key_of, entries, row_of = self.key_of, self.entries, self.row_of
        for aid in pending:
            old = key_of.pop(aid, None)
            if old is not None:
                entries.remove(old)
                row = row_of.pop(aid)
                if profits and row[1] > 0:
                    self._unprofit(aid, row)
            acct = accounts.get(aid)
            if acct is None or not aid or mark is None:
                continue
            pos = acct.positions.get(symbol)
            if pos is None:
                continue
            size = pos.size_lots
            if (size > 0) != longs:
                continue
            entry = pos.entry_value_atoms
            notional = size * mark * k
            equity = _backing_equity(acct, symbol, notional - entry, instruments, marks)
            key = rank_key(aid, size, entry, notional, equity) if exact else fast_rank_key(aid, size, entry, notional, equity)
            if key is None:  # numbers too large for an int key: exact keys for the whole line
                self._build(accounts, instruments, marks, exact=True)
                return
            key_of[aid] = key
            entries.add(key)
            row = (size if size > 0 else -size, notional - entry, equity <= 0)
            row_of[aid] = row
            if profits and row[1] > 0:
                self._profit(aid, row)
        pending.clear()

    def _profit(self, aid: int, row: tuple[int, int, bool]) -> None:
        lots, upnl, under = row
        self.profit_of[aid] = upnl
        bucket = self.by_lots.get(lots)
        if bucket is None:
            self.by_lots[lots] = bucket = set()
            self.lot_sizes.add(lots)
        bucket.add(aid)
        self.profitable_lots += lots
        self.profitable_upnl += upnl
        if under:
            self.underwater.add(aid)
        if self.capped:
            self.by_ratio.add((Fraction(lots, upnl), aid))
            self.by_upnl.add((upnl, aid))

    def _unprofit(self, aid: int, row: tuple[int, int, bool]) -> None:
        lots, upnl, under = row
        del self.profit_of[aid]
        bucket = self.by_lots[lots]
        bucket.discard(aid)
        if not bucket:
            del self.by_lots[lots]
            self.lot_sizes.remove(lots)
        self.profitable_lots -= lots
        self.profitable_upnl -= upnl
        if under:
            self.underwater.remove(aid)
        if self.capped:
            self.by_ratio.remove((Fraction(lots, upnl), aid))
            self.by_upnl.remove((upnl, aid))

    def _build(
        self, accounts: dict[int, Account], instruments: dict[str, Instrument], marks: dict[str, int],
        exact: bool = False,
    ) -> None:
        """(Re)build the whole line from its entries and the pending accounts, in one sort.
        The profitable set is left to the first pro-rata allocation (`_keep_profits`)."""
        symbol = self.symbol
        mark = marks.get(symbol)
        k = instruments[symbol].atoms_per_lot_tick
        longs = self.side > 0
        keys: list[RankKey] = []
        key_of: dict[int, RankKey] = {}
        row_of: dict[int, tuple[int, int, bool]] = {}
        make_key = rank_key if exact else fast_rank_key
        for aid in (set(self.key_of) | self.pending) if self.key_of else self.pending:
            acct = accounts.get(aid)
            if acct is None or not aid or mark is None:
                continue
            positions = acct.positions
            pos = positions.get(symbol)
            if pos is None:
                continue
            size = pos.size_lots
            if (size > 0) != longs:
                continue
            entry = pos.entry_value_atoms
            notional = size * mark * k
            equity = _backing_equity(acct, symbol, notional - entry, instruments, marks)
            key = make_key(aid, size, entry, notional, equity)
            if key is None:
                self._build(accounts, instruments, marks, exact=True)
                return
            keys.append(key)
            key_of[aid] = key
            row_of[aid] = (size if size > 0 else -size, notional - entry, equity <= 0)
        self.exact = exact
        self.key_of, self.row_of = key_of, row_of
        self.entries = SortedList(keys)
        self.profits = False
        self.profit_of, self.by_lots = {}, {}
        self.lot_sizes, self.underwater = SortedList(), SortedList()
        self.profitable_lots = self.profitable_upnl = 0
        self.capped = False
        self.by_ratio, self.by_upnl = SortedList(), SortedList()
        self.pending.clear()

    def _keep_profits(self) -> None:
        """Collect the profitable set from the rows (once per build), then keep it up to date."""
        if self.profits:
            return
        profit_of: dict[int, int] = {}
        by_lots: dict[int, set[int]] = {}
        underwater: list[int] = []
        total = 0
        for aid, (lots, upnl, under) in self.row_of.items():
            if upnl > 0:
                profit_of[aid] = upnl
                bucket = by_lots.get(lots)
                if bucket is None:
                    by_lots[lots] = bucket = set()
                bucket.add(aid)
                total += lots
                if under:
                    underwater.append(aid)
        self.profit_of, self.by_lots = profit_of, by_lots
        self.lot_sizes = SortedList(by_lots)
        self.underwater = SortedList(underwater)
        self.profitable_lots = total
        self.profitable_upnl = sum(profit_of.values())
        self.profits = True

    def _keep_capped(self) -> None:
        """Capped pro-rata's orders of the profitable set (once per build), then kept."""
        self._keep_profits()
        if self.capped:
            return
        row_of = self.row_of
        self.by_ratio = SortedList((Fraction(row_of[aid][0], upnl), aid) for aid, upnl in self.profit_of.items())
        self.by_upnl = SortedList((upnl, aid) for aid, upnl in self.profit_of.items())
        self.capped = True

    # -- reading --------------------------------------------------------------------------

    def _ids(self, keys: Iterable[RankKey]) -> Iterable[int]:
        return (key[-1] for key in keys) if self.exact else (key & ID_MASK for key in keys)

    def ordered_ids(self) -> list[int]:
        """Account ids, first in line first."""
        return list(self._ids(self.entries))

    def rank(self, account_id: int) -> int:
        """1-based place of the account in the line (O(log N))."""
        return int(self.entries.index(self.key_of[account_id])) + 1

    def take_queue(self, remaining_lots: int) -> Alloc:
        """`allocate_queue` over the line: walks only the positions it takes from."""
        out: list[tuple[int, int]] = []
        ranks: dict[int, int] = {}
        row_of = self.row_of
        if remaining_lots <= 0:
            return out, ranks
        for i, aid in enumerate(self._ids(self.entries), 1):
            lots = row_of[aid][0]
            take = lots if lots < remaining_lots else remaining_lots
            out.append((aid, take))
            ranks[aid] = i
            remaining_lots -= take
            if remaining_lots == 0:
                break
        return out, ranks

    def take_capped_pro_rata(self, remaining_lots: int) -> Alloc:
        """`allocate_capped_pro_rata` over the line, touching only the positions that receive
        lots (and O(log N) per lookup).

        With T the profitable lots and R the remainder: if T <= R it is pro-rata's (every
        profitable position whole, the queue for the rest). Else the water level λ solves
        sum(min(|q|, λ * upnl)) = R: walking the profitable by |q| / upnl ascending, a
        position saturates (takes its whole size) while (R - C) * upnl > |q| * W, C the sizes
        saturated so far and W the profits not saturated; then λ = (R - C) / W. An unsaturated
        position's share floor(λ * upnl) is nonzero exactly when upnl >= W / (R - C): the
        largest profits. The leftover lots go one each, in line order, to the profitable
        positions still below their size: the head of the line, then `underwater` by id."""
        self._keep_capped()
        if self.profitable_lots <= remaining_lots:
            return self.take_pro_rata(remaining_lots)
        row_of = self.row_of
        shares: dict[int, int] = {}
        capped = 0  # C
        weight = self.profitable_upnl  # W
        for _, aid in self.by_ratio:
            lots, upnl, _ = row_of[aid]
            if (remaining_lots - capped) * upnl <= lots * weight:
                break
            shares[aid] = lots
            capped += lots
            weight -= upnl
        free = remaining_lots - capped  # λ = free / W; > 0: a saturated |q| < R - C before it
        threshold = -(-weight // free)  # upnl * free >= W
        for upnl, aid in self.by_upnl.irange((threshold, -1), reverse=True):
            if aid not in shares:
                lots = row_of[aid][0]
                share = free * upnl // weight
                shares[aid] = share if share < lots else lots
        leftover = remaining_lots - sum(shares.values())
        ranks: dict[int, int] = {}
        if leftover:
            entries = self.entries
            head = int(entries.bisect_left((0, 0) if self.exact else 0))
            for i, aid in enumerate(self._ids(entries.islice(0, head)), 1):
                if shares.get(aid, 0) < row_of[aid][0]:
                    shares[aid] = shares.get(aid, 0) + 1
                    ranks[aid] = i
                    leftover -= 1
                    if leftover == 0:
                        break
            if leftover:
                for aid in self.underwater:
                    if shares.get(aid, 0) < row_of[aid][0]:
                        shares[aid] = shares.get(aid, 0) + 1
                        leftover -= 1
                        if leftover == 0:
                            break
        for aid in shares:
            if aid not in ranks:
                ranks[aid] = self.rank(aid)
        out = sorted(((aid, n) for aid, n in shares.items() if n > 0), key=lambda item: ranks[item[0]])
        return out, {aid: ranks[aid] for aid, _ in out}

    def take_pro_rata(self, remaining_lots: int) -> Alloc:
        """`allocate_pro_rata` over the line, touching only the positions that receive lots
        (and O(log N) per lookup).

        With T the profitable lots and R the remainder: if T <= R every profitable position
        closes whole and the queue takes the rest from the others, in line order. Else share
        = floor(R * |q| / T) < |q|, nonzero exactly when |q| >= ceil(T / R) (a range of
        `by_lots`); the leftover R - sum(shares) < count(profitable) lots go one each to the
        first profitable positions in line order: the head of the line (the keys with a
        negative score prefix), then `underwater` by id, as they are ranked."""
        self._keep_profits()
        total = self.profitable_lots
        profit_of = self.profit_of
        entries = self.entries
        out: list[tuple[int, int]] = []
        ranks: dict[int, int] = {}
        if total <= remaining_lots:
            rest = remaining_lots - total
            unseen = len(profit_of)
            row_of = self.row_of
            for i, aid in enumerate(self._ids(entries), 1):
                lots = row_of[aid][0]
                if aid in profit_of:
                    take = lots
                    unseen -= 1
                elif rest:
                    take = lots if lots < rest else rest
                    rest -= take
                else:  # covered; any profitable left are underwater (ranked last, by id)
                    break
                out.append((aid, take))
                ranks[aid] = i
                if rest == 0 and not unseen:
                    break
            if unseen:  # profitable positions of accounts with equity <= 0 past the walk
                for aid in self.underwater:
                    if aid not in ranks:
                        out.append((aid, row_of[aid][0]))
                        ranks[aid] = self.rank(aid)
            return out, ranks
        threshold = -(-total // remaining_lots)  # |q| * R >= T
        shares = {
            aid: remaining_lots * lots // total for lots in self.lot_sizes.irange(threshold) for aid in self.by_lots[lots]
        }
        leftover = remaining_lots - sum(shares.values())
        # profitable positions with equity > 0: the keys with a negative score prefix
        head = int(entries.bisect_left((0, 0) if self.exact else 0))
        for i, aid in enumerate(self._ids(entries.islice(0, min(leftover, head))), 1):
            shares[aid] = shares.get(aid, 0) + 1
            ranks[aid] = i
        if leftover > head:
            for aid in self.underwater.islice(0, leftover - head):
                shares[aid] = shares.get(aid, 0) + 1
        for aid in shares:
            if aid not in ranks:
                ranks[aid] = self.rank(aid)
        out = sorted(shares.items(), key=lambda item: ranks[item[0]])
        return out, ranks
