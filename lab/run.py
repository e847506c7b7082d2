"""One ADL policy over one price path, from a copy of the starting state.

`run_policy` unpickles a fresh engine from the scenario's snapshot (every policy starts
from the same bytes), sets the policy on every symbol, then per step of the path: the
market maker requotes around the new price (scenario.quote), the mark moves
(`SetMarkPrice` / `SetIndexPrice`), and the engine liquidates and deleverages whoever it
must inside that command. `Recorder` folds the events as they come (no event is kept):

- per counterparty: the sum of its `adl` events' `haircut` and lots;
- per liquidation (`liquidation` event): the ADL fills it caused, their haircuts (the budget
  *taken*), its *shortfall* at the mark, and its *needed* budget (below);
- after every step: mark, fund balance, bad debt, and the running totals (the series plots).

Shortfall and needed budget of a liquidation whose remainder went to ADL. The fund took the
position over at its bankruptcy value and its book order closed part of it; the rest,
`adl_lots`, was closed against counterparties at the bankruptcy price. Closing those lots at
the mark instead would have cost `shortfall` = (their bankruptcy value - their value at
the mark) for a long, the opposite for a short: exactly the sum of the fills' haircuts plus
what the bad-debt guard moved to the fund (its `adl` fund delta and the liquidation's
`bad_debt`), so it is read from the events, to the atom. A *virtual* fund pays the
shortfalls first, in the order they come, from the balance the real fund had at the start
of the run plus its real book-fill results, top-ups and funding, minus the negative balances
it really covered; `needed` is the part of a shortfall that virtual fund could not pay
(and a negative shortfall, a liquidation with equity left, feeds it). That is the least any
policy must take from winners to stay solvent.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from engine import commands as c
from engine import events as ev
from lab.paths import PricePath
from lab.scenario import Scenario, mark_command, quote


class RunError(RuntimeError):
    """The engine refused a step of the path, or ended a command with a broken invariant."""


@dataclass(frozen=True, slots=True)
class LiquidationRecord:
    seq: int
    ts_ns: int
    account_id: int
    symbol: str
    qty_lots: int  # signed size taken over
    mark_ticks: int
    equity_before_atoms: int
    book_fill_lots: int
    adl_lots: int
    counterparties: int  # ADL fills
    shortfall_atoms: int  # 0 without ADL
    needed_atoms: int
    taken_atoms: int  # sum of the haircuts of its ADL fills
    bad_debt_atoms: int


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    ts_ns: int
    symbol: str
    mark_ticks: int
    fund_atoms: int
    bad_debt_atoms: int  # since the start of the run
    taken_atoms: int
    needed_atoms: int
    liquidations: int


@dataclass
class RunResult:
    policy: str
    fund_start_atoms: int
    fund_end_atoms: int = 0
    bad_debt_atoms: int = 0
    haircut: dict[int, int] = field(default_factory=dict)  # counterparty id -> sum of haircuts
    adl_lots: dict[int, int] = field(default_factory=dict)  # counterparty id -> lots closed by ADL
    adl_fills: int = 0
    liquidations: list[LiquidationRecord] = field(default_factory=list)
    series: list[SeriesPoint] = field(default_factory=list)
    negative_balance_atoms: int = 0  # deficits of flat accounts covered (paid + bad debt)
    maker_refused: int = 0  # maker quotes the engine refused (margin, risk limit)
    copy_seconds: float = 0.0  # wall time of unpickling the starting state (never written to JSON)
    seconds: float = 0.0  # wall time of the whole run, copy included (never written to JSON)


class Recorder:
    """Folds a run's events into a `RunResult` (module docstring)."""

    def __init__(self, result: RunResult) -> None:
        self.r = result
        self.fund = result.fund_start_atoms
        self.virtual_fund = result.fund_start_atoms
        self.taken = 0
        self.needed = 0
        self._fills = 0
        self._taken_here = 0
        self._guard_delta = 0

    def feed(self, events: list[Any]) -> None:
        r = self.r
        haircut, lots = r.haircut, r.adl_lots
        for e in events:
            t = type(e)
            if t is ev.PositionDeleveraged:
                cp = e.counterparty_account_id
                haircut[cp] = haircut.get(cp, 0) + e.haircut_atoms
                lots[cp] = lots.get(cp, 0) + e.qty_lots
                self._fills += 1
                self._taken_here += e.haircut_atoms
            elif t is ev.InsuranceFundChanged:
                self.fund = e.balance_atoms
                if e.reason == "adl":
                    self._guard_delta += e.delta_atoms
                elif e.reason != "negative_balance":  # liquidation_fill, top_up, funding
                    self.virtual_fund += e.delta_atoms
            elif t is ev.AccountLiquidated:
                self._liquidated(e)
            elif t is ev.NegativeBalanceCovered:
                deficit = e.amount_atoms + e.bad_debt_atoms
                r.negative_balance_atoms += deficit
                self.virtual_fund = max(0, self.virtual_fund - deficit)
            elif t is ev.OrderRejected and e.command == "PlaceOrder":
                r.maker_refused += 1

    def _liquidated(self, e: ev.AccountLiquidated) -> None:
        taken = self._taken_here
        shortfall = needed = 0
        if e.adl_lots:
            # haircuts + what the guard moved to the fund (its payment, or bad debt)
            shortfall = taken - self._guard_delta + e.bad_debt_atoms
            needed = max(0, shortfall - self.virtual_fund)
            self.virtual_fund = max(0, self.virtual_fund - shortfall)
        self.r.liquidations.append(LiquidationRecord(
            e.seq, e.ts_ns, e.account_id, e.symbol, e.qty_lots, e.mark_price_ticks, e.equity_before_atoms,
            e.book_fill_lots, e.adl_lots, self._fills, shortfall, needed, taken, e.bad_debt_atoms,
        ))
        self.r.adl_fills += self._fills
        self.taken += taken
        self.needed += needed
        self._fills = self._taken_here = self._guard_delta = 0


def snapshot(sc: Scenario) -> bytes:
    """The starting state as bytes: every run unpickles its own copy."""
    return pickle.dumps(sc.engine, protocol=pickle.HIGHEST_PROTOCOL)


def run_policy(
    sc: Scenario,
    state: bytes,
    path: PricePath,
    policy: str,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Walk `path` under `policy` from the starting state `state` (see `snapshot`)."""
    t0 = time.perf_counter()
    eng = pickle.loads(state)
    copied = time.perf_counter() - t0
    run_sc = replace(sc, engine=eng)
    for sym in sorted(sc.population.marks):
        for e in eng.apply(c.SetAdlPolicy(sym, policy)):
            if isinstance(e, ev.REJECTION_TYPES):
                raise RunError(f"policy {policy!r} refused: {e.message}")
    result = RunResult(policy, eng.insurance_fund.wallet_atoms, copy_seconds=copied)
    rec = Recorder(result)
    bad_debt_start = eng.bad_debt_atoms
    quoted = set(sc.book_lots)
    if path.steps:  # where the series starts: the state before the first step
        first = path.steps[0].symbol
        result.series.append(SeriesPoint(0, first, eng.marks[first], rec.fund, 0, 0, 0, 0))
    tick = progress or (lambda n: None)
    for i, step in enumerate(path.steps, 1):
        if step.symbol in quoted:
            rec.feed(quote(run_sc, step.symbol, step.price_ticks, step.ts_ns))
        out = eng.apply(mark_command(eng.instruments[step.symbol], step.price_ticks, step.ts_ns))
        for e in out:
            if isinstance(e, ev.REJECTION_TYPES):
                raise RunError(f"step {i} ({step.symbol} {step.price_ticks} ticks) refused: {e.message}")
        rec.feed(out)
        result.series.append(SeriesPoint(
            step.ts_ns, step.symbol, eng.marks[step.symbol], rec.fund, eng.bad_debt_atoms - bad_debt_start,
            rec.taken, rec.needed, len(result.liquidations),
        ))
        if i % 16 == 0:
            tick(16)
    tick(len(path.steps) % 16)
    eng.check_invariants()
    result.fund_end_atoms = eng.insurance_fund.wallet_atoms
    result.bad_debt_atoms = eng.bad_debt_atoms - bad_debt_start
    result.seconds = time.perf_counter() - t0
    return result
