"""The ADL line of one side of one symbol, kept sorted and refreshed incrementally, and the
allocation policies run on it touching only the positions that receive lots (SPEC §6).

`engine/adl.py` has the rank key and each policy stated over the whole line; `AdlRanking`
here gives the same allocations, atom for atom (tests/property/test_adl_differential.py).
"""

from __future__ import annotations

from fractions import Fraction

from sortedcontainers import SortedList

from engine.accounts import Account
from engine.adl import ID_MASK, Alloc, RankKey, fast_rank_key, rank_key
from engine.instruments import Instrument
from engine.risk import equity_atoms


class _NeedExact(Exception):
    """A position's numbers are too large for an int key: the line switches to exact keys."""


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
    every score, so the engine marks the line `stale` then and it is rebuilt (one sort) on
    the next use, from its own members and the pending accounts (who holds this side: the
    other side's holders are not looked at).

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
        self.stale = False  # the mark moved: every key is out of date, rebuild on next use
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
        """Re-rank every pending account (the hot path of a cascade)."""
        pending = self.pending
        if not pending and not self.stale:
            return
        if self.stale or (not self.key_of and len(pending) > 64):
            self._build(accounts, instruments, marks)
            return
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
            try:
                found = self._entry(aid, accounts, instruments, marks, exact)
            except _NeedExact:
                self._build(accounts, instruments, marks, exact=True)
                return
            if found is None:
                continue
            key, row = found
            key_of[aid] = key
            entries.add(key)
            row_of[aid] = row
            if profits and row[1] > 0:
                self._profit(aid, row)
        pending.clear()

    def _entry(
        self, aid: int, accounts: dict[int, Account], instruments: dict[str, Instrument], marks: dict[str, int],
        exact: bool,
    ) -> tuple[RankKey, tuple[int, int, bool]] | None:
        """The account's key in this line and its row (|q|, upnl, equity <= 0), or None when
        it holds nothing on this side. Raises _NeedExact when the numbers are too large for
        an int key (then the whole line takes exact keys)."""
        symbol = self.symbol
        acct = accounts.get(aid)
        mark = marks.get(symbol)
        if acct is None or not aid or mark is None:
            return None
        pos = acct.positions.get(symbol)
        if pos is None:
            return None
        size = pos.size_lots
        if (size > 0) != (self.side > 0):
            return None
        entry = pos.entry_value_atoms
        notional = size * mark * instruments[symbol].atoms_per_lot_tick
        equity = _backing_equity(acct, symbol, notional - entry, instruments, marks)
        key = rank_key(aid, size, entry, notional, equity) if exact else fast_rank_key(aid, size, entry, notional, equity)
        if key is None:
            raise _NeedExact
        return key, (size if size > 0 else -size, notional - entry, equity <= 0)

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
        keys: list[RankKey] = []
        key_of: dict[int, RankKey] = {}
        row_of: dict[int, tuple[int, int, bool]] = {}
        for aid in (set(self.key_of) | self.pending) if self.key_of else self.pending:
            try:
                found = self._entry(aid, accounts, instruments, marks, exact)
            except _NeedExact:
                self._build(accounts, instruments, marks, exact=True)
                return
            if found is None:
                continue
            key, row_of[aid] = found
            keys.append(key)
            key_of[aid] = key
        self.exact = exact
        self.stale = False
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

    def _id(self, key: RankKey) -> int:
        # per key, not a generator over the line: compiled (native/), a generator expression
        # returned from here walked the whole line before the first id (13 ms a liquidation
        # at 100k accounts)
        return int(key[-1]) if self.exact else int(key & ID_MASK)

    def ordered_ids(self) -> list[int]:
        """Account ids, first in line first."""
        return [self._id(key) for key in self.entries]

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
        for i, key in enumerate(self.entries, 1):
            aid = self._id(key)
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
            for i, key in enumerate(entries.islice(0, head), 1):
                aid = self._id(key)
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
            for i, key in enumerate(entries, 1):
                aid = self._id(key)
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
        for i, key in enumerate(entries.islice(0, min(leftover, head)), 1):
            aid = self._id(key)
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
