"""Index of accounts by the mark price at which they would breach maintenance.

Why: a mark update that liquidates nobody must not scan every account with a position.
Per symbol, longs are kept sorted by a key K such that the account can only be below
maintenance when mark <= K, and shorts with a key such that it can only be when mark >= K
(the §9 liquidation price, widened by one tick to cover the rounding of maintenance).
A mark move then visits only the accounts beyond it.

Known limit, handled explicitly: an account's key in symbol t depends on the marks of its
other symbols. Accounts holding two or more positions are therefore listed in `multi[s]`
for each symbol s they hold and are re-checked (and re-indexed) whenever any of their marks
moves; the cost of a mark move grows with such accounts, not with idle single-symbol ones.
Entries are refreshed by the engine for every account whose wallet or positions changed.
"""

from __future__ import annotations

from sortedcontainers import SortedList

from engine.accounts import Account
from engine.instruments import Instrument
from engine.risk import liquidation_price_frac
from engine.units import div_ceil, div_floor

_NEVER = 1 << 62


class LiquidationIndex:
    """Candidate lookup for liquidation after a mark move."""

    def __init__(self, symbols: list[str]) -> None:
        self.longs: dict[str, SortedList] = {s: SortedList() for s in symbols}
        self.shorts: dict[str, SortedList] = {s: SortedList() for s in symbols}
        self.multi: dict[str, set[int]] = {s: set() for s in symbols}
        self._entries: dict[int, list[tuple[str, bool, int]]] = {}
        self._multi_of: dict[int, list[str]] = {}

    def remove(self, account_id: int) -> None:
        """Forget every entry of the account."""
        for sym, is_long, key in self._entries.pop(account_id, ()):
            (self.longs if is_long else self.shorts)[sym].remove((key, account_id))
        for sym in self._multi_of.pop(account_id, ()):
            self.multi[sym].discard(account_id)

    def update(self, acct: Account, instruments: dict[str, Instrument], marks: dict[str, int]) -> None:
        """Recompute the account's entries from its current wallet, positions and marks."""
        aid = acct.account_id
        if len(acct.positions) > 1:  # multi-symbol accounts are always candidates, via `multi`
            if self._multi_of.get(aid) == list(acct.positions):
                return
            self.remove(aid)
            symbols = list(acct.positions)
            self._multi_of[aid] = symbols
            for sym in symbols:
                self.multi[sym].add(aid)
            return
        self.remove(aid)
        if not acct.positions:
            return
        entries: list[tuple[str, bool, int]] = []
        for sym, pos in acct.positions.items():
            frac = liquidation_price_frac(acct, sym, instruments, marks)
            if pos.size_lots > 0:
                if frac is None:
                    continue
                key = div_floor(frac[0], frac[1]) + 1
                self.longs[sym].add((key, aid))
                entries.append((sym, True, key))
            else:
                key = -1 if frac is None else div_ceil(frac[0], frac[1]) - 1
                self.shorts[sym].add((key, aid))
                entries.append((sym, False, key))
        if entries:
            self._entries[aid] = entries
        if len(acct.positions) > 1:
            symbols = list(acct.positions)
            self._multi_of[aid] = symbols
            for sym in symbols:
                self.multi[sym].add(aid)

    def candidates(self, symbol: str, mark_ticks: int) -> set[int]:
        """Accounts that may be below maintenance once `symbol`'s mark is `mark_ticks`."""
        out = {aid for _, aid in self.longs[symbol].irange((mark_ticks, -1), None)}
        out.update(aid for _, aid in self.shorts[symbol].irange(None, (mark_ticks, _NEVER)))
        out.update(self.multi[symbol])
        return out
