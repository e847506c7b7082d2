"""Index of accounts by the mark price at which they would breach maintenance.

Why: a mark update that liquidates nobody must not scan every account with a position.
Per symbol, longs are kept sorted by a key K such that the account can only be below
maintenance when mark <= K, and shorts with a key such that it can only be when mark >= K.
A mark move then visits only the accounts beyond it.

- One position: K is the §9 liquidation price, widened by one tick to cover the rounding
  of maintenance. It does not depend on the mark, only on wallet and position.
- An isolated position (SPEC §12): its own liquidation price, from its margin alone.
- Several cross positions: the liquidation price of one symbol depends on the
  other marks, so each position gets a *trigger* instead. With slack = equity - MM (minus
  one atom per position for the rounding of MM) at the marks of the last refresh, each
  position gets a share of the slack by notional, and its trigger is the mark at which
  that position alone could have used up its share: a long loses at most q*K per tick down
  (its MM only falls); a short at most |q|*K*(1 + r) per tick up, r being the steepest
  maintenance rate of the symbol's tiers. While no mark has crossed its position's trigger,
  the total loss is below the slack, so the account is above maintenance and need not be
  looked at. Crossing one makes it a candidate; the engine checks it and refreshes its
  triggers at the new marks. An account without slack, or a symbol whose tiers are not
  continuous (a jump in MM would break the bound), is a candidate on every move.

Entries are refreshed by the engine for every account whose wallet or positions changed.
"""

from __future__ import annotations

import itertools
from typing import Any

from sortedcontainers import SortedList

from engine.accounts import Account, Position
from engine.instruments import Instrument, Tier
from engine.pickling import restore, state_of
from engine.risk import equity_atoms, liquidation_price_frac, maintenance_atoms
from engine.units import PPM, div_ceil, div_floor

_NEVER = 1 << 62


class LiquidationIndex:
    """Candidate lookup for liquidation after a mark move."""

    def __init__(self, symbols: list[str] | tuple[()] = ()) -> None:
        self.longs: dict[str, SortedList] = {s: SortedList() for s in symbols}
        self.shorts: dict[str, SortedList] = {s: SortedList() for s in symbols}
        self.multi: dict[str, set[int]] = {s: set() for s in symbols}
        self._entries: dict[int, list[tuple[str, bool, int]]] = {}
        self._multi_of: dict[int, list[str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return state_of(self, ("longs", "shorts", "multi", "_entries", "_multi_of"))

    def __setstate__(self, state: Any) -> None:
        restore(self, state)

    def remove(self, account_id: int) -> None:
        """Forget every entry of the account."""
        for sym, is_long, key in self._entries.pop(account_id, ()):
            (self.longs if is_long else self.shorts)[sym].remove((key, account_id))
        for sym in self._multi_of.pop(account_id, ()):
            self.multi[sym].discard(account_id)

    def update(self, acct: Account, instruments: dict[str, Instrument], marks: dict[str, int]) -> None:
        """Recompute the account's entries from its current wallet, positions and marks."""
        aid = acct.account_id
        self.remove(aid)
        if not acct.positions:
            return
        entries: list[tuple[str, bool, int]] = []
        iso = acct.isolated
        cross = {s: p for s, p in acct.positions.items() if s not in iso} if iso else acct.positions
        if len(cross) > 1:
            symbols = list(cross)
            self._multi_of[aid] = symbols
            for sym in symbols:
                self.multi[sym].add(aid)
            entries = _triggers(acct, cross, instruments, marks)
            singles = [s for s in acct.positions if s in iso] if iso else []
        else:
            singles = list(acct.positions)
        # one cross position, and every isolated one: their own liquidation price
        for sym in singles:
            pos = acct.positions[sym]
            frac = liquidation_price_frac(acct, sym, instruments, marks)
            if pos.size_lots > 0:
                if frac is None:
                    continue
                entries.append((sym, True, div_floor(frac[0], frac[1]) + 1))
            else:
                entries.append((sym, False, -1 if frac is None else div_ceil(frac[0], frac[1]) - 1))
        for sym, is_long, key in entries:
            (self.longs if is_long else self.shorts)[sym].add((key, aid))
        if entries:
            self._entries[aid] = entries

    def candidates(self, symbol: str, mark_ticks: int) -> set[int]:
        """Accounts that may be below maintenance once `symbol`'s mark is `mark_ticks`."""
        out = {aid for _, aid in self.longs[symbol].irange((mark_ticks, -1), None)}
        out.update(aid for _, aid in self.shorts[symbol].irange(None, (mark_ticks, _NEVER)))
        # a multi-symbol account without entries (restored from a snapshot written before
        # triggers existed) is checked until the engine refreshes it
        entries = self._entries
        out.update(aid for aid in self.multi[symbol] if aid not in entries)
        return out


def _triggers(
    acct: Account, positions: dict[str, Position], instruments: dict[str, Instrument], marks: dict[str, int]
) -> list[tuple[str, bool, int]]:
    """Per-position triggers of the cross positions of a multi-symbol account (see the module
    docstring; cross equity and maintenance leave isolated positions out)."""
    slopes = [_mm_slope_ppm(instruments[s].tiers) for s in positions]
    slack = -1
    if all(s in marks for s in positions) and None not in slopes:
        slack = equity_atoms(acct, instruments, marks) - maintenance_atoms(acct, instruments, marks) - len(positions)
    if slack <= 0:  # no room (or no bound): a candidate on every move of any of its marks
        return [(s, p.size_lots > 0, _NEVER if p.size_lots > 0 else -1) for s, p in positions.items()]
    notionals = {s: abs(p.size_lots) * marks[s] * instruments[s].atoms_per_lot_tick for s, p in positions.items()}
    total = sum(notionals.values())
    out: list[tuple[str, bool, int]] = []
    for (sym, pos), slope in zip(positions.items(), slopes, strict=True):
        share = slack * notionals[sym] // total
        per_tick = abs(pos.size_lots) * instruments[sym].atoms_per_lot_tick
        mark = marks[sym]
        if pos.size_lots > 0:  # loses q*K per tick down at most
            out.append((sym, True, mark - share // per_tick))
        else:  # loses |q|*K*(1 + slope) per tick up at most
            assert slope is not None
            out.append((sym, False, mark + share * PPM // (per_tick * (PPM + slope))))
    return out


_SLOPES: dict[tuple[Tier, ...], int | None] = {}


def _mm_slope_ppm(tiers: tuple[Tier, ...]) -> int | None:
    """The steepest maintenance rate of a tier table whose MM is continuous in the notional
    (None if a boundary jumps: then no per-tick bound holds)."""
    if tiers not in _SLOPES:
        continuous = all(
            a.max_notional_atoms * a.maintenance_ppm - a.maintenance_amount_atoms * PPM
            == a.max_notional_atoms * b.maintenance_ppm - b.maintenance_amount_atoms * PPM
            for a, b in itertools.pairwise(tiers)
        )
        steepest = max(t.maintenance_ppm for t in tiers)
        # a rate of 100% or more would let a long lose on a move up: no bound either
        _SLOPES[tiers] = steepest if continuous and steepest < PPM else None
    return _SLOPES[tiers]
