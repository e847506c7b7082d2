"""The SPEC §15 metrics of one policy run, exact (integer atoms, `Fraction` ratios).

Definitions (docs/lab.md states them for readers, with units):

- **winner**: an account whose positions at the start of the path would be in profit at the
  path's *stress marks* (per symbol, the price farthest from the start; paths.py):
  `profit = sum(q * M_stress * K - entry_value) > 0`. Chosen before any run, from the
  shared starting state, so every policy is judged over the same winners.
- **haircut** of an account: the sum of the `haircut` of its `adl` events (SPEC §6: what
  closing at the fill's value cost it against closing at the mark; signed).
- **taken**: the sum of all haircuts; **shortfall**, **needed**: per liquidation, run.py;
  **overshoot** = taken - needed.
- **touched**: accounts with at least one ADL fill.
- **largest haircut**: the largest positive haircut of one account (0 when nobody lost
  anything); its **share** of the sum of the positive haircuts (None then).
- **Gini** of the winners' haircuts, negative ones counted as 0 (winners never touched
  count, with 0): `G = sum_i sum_j |x_i - x_j| / (2 n sum x)`, None when sum x = 0.
- **top winner**: the winner with the largest profit (lowest account id on ties); its
  **surviving profit** = profit - its haircut; **PTSR** = surviving profit / needed budget
  (None when nothing was needed).
- **bad debt**: what the insurance fund could not pay during the run (engine's total).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from engine.engine import Engine
from lab.run import RunResult

TOP_N = 10


@dataclass(frozen=True, slots=True)
class Winner:
    account_id: int
    name: str
    profit_atoms: int  # at the stress marks, of the starting positions


@dataclass(frozen=True, slots=True)
class PolicyMetrics:
    policy: str
    liquidations: int
    adl_liquidations: int  # liquidations that went (partly) to ADL
    adl_fills: int
    adl_lots: int
    shortfall_atoms: int
    needed_atoms: int
    taken_atoms: int
    overshoot_atoms: int
    touched: int
    winners_touched: int
    largest_haircut_atoms: int
    largest_haircut_account: str | None
    largest_share: Fraction | None
    gross_haircut_atoms: int  # sum of the positive haircuts of accounts
    gini: Fraction | None
    top_winner: str | None
    top_profit_atoms: int
    top_haircut_atoms: int
    top_surviving_atoms: int
    ptsr: Fraction | None
    bad_debt_atoms: int
    fund_start_atoms: int
    fund_end_atoms: int


def find_winners(eng: Engine, stress_marks: dict[str, int], names: dict[int, str]) -> list[Winner]:
    """The winners of the starting state `eng` (module docstring), largest profit first."""
    out = []
    for aid, acct in eng.accounts.items():
        if aid == 0 or not acct.positions:
            continue
        profit = 0
        for sym, pos in acct.positions.items():
            mark = stress_marks.get(sym, eng.marks[sym])
            profit += pos.size_lots * mark * eng.instruments[sym].atoms_per_lot_tick - pos.entry_value_atoms
        if profit > 0:
            out.append(Winner(aid, names.get(aid, str(aid)), profit))
    out.sort(key=lambda w: (-w.profit_atoms, w.account_id))
    return out


def gini(values: list[int]) -> Fraction | None:
    """Gini coefficient of non-negative `values`, exactly; None when they sum to 0.

    With x sorted ascending and i = 1..n: G = 2 * sum(i * x_i) / (n * sum x) - (n + 1) / n,
    the same as sum_i sum_j |x_i - x_j| / (2 n sum x)."""
    if any(v < 0 for v in values):
        raise ValueError("gini of negative values")
    total = sum(values)
    n = len(values)
    if total == 0:
        return None
    ranked = sum(i * x for i, x in enumerate(sorted(values), 1))
    return Fraction(2 * ranked, n * total) - Fraction(n + 1, n)


def winner_haircuts(result: RunResult, winners: list[Winner]) -> list[int]:
    """Each winner's haircut in this run, negative ones as 0, in the winners' order."""
    return [max(0, result.haircut.get(w.account_id, 0)) for w in winners]


def compute(result: RunResult, winners: list[Winner], names: dict[int, str]) -> PolicyMetrics:
    """The metrics of one run."""
    liq = result.liquidations
    taken = sum(r.taken_atoms for r in liq)
    needed = sum(r.needed_atoms for r in liq)
    largest_id = None
    largest = 0  # the largest positive haircut (lowest id on ties); 0 when nobody lost
    for aid in sorted(result.haircut):
        h = result.haircut[aid]
        if h > largest:
            largest_id, largest = aid, h
    gross = sum(h for h in result.haircut.values() if h > 0)
    top = winners[0] if winners else None
    top_haircut = result.haircut.get(top.account_id, 0) if top else 0
    surviving = top.profit_atoms - top_haircut if top else 0
    winner_ids = {w.account_id for w in winners}
    return PolicyMetrics(
        policy=result.policy,
        liquidations=len(liq),
        adl_liquidations=sum(1 for r in liq if r.adl_lots),
        adl_fills=result.adl_fills,
        adl_lots=sum(result.adl_lots.values()),
        shortfall_atoms=sum(r.shortfall_atoms for r in liq),
        needed_atoms=needed,
        taken_atoms=taken,
        overshoot_atoms=taken - needed,
        touched=len(result.haircut),
        winners_touched=sum(1 for aid in result.haircut if aid in winner_ids),
        largest_haircut_atoms=largest,
        largest_haircut_account=None if largest_id is None else names.get(largest_id, str(largest_id)),
        largest_share=Fraction(largest, gross) if largest > 0 else None,
        gross_haircut_atoms=gross,
        gini=gini(winner_haircuts(result, winners)) if winners else None,
        top_winner=top.name if top else None,
        top_profit_atoms=top.profit_atoms if top else 0,
        top_haircut_atoms=top_haircut,
        top_surviving_atoms=surviving,
        ptsr=Fraction(surviving, needed) if top and needed > 0 else None,
        bad_debt_atoms=result.bad_debt_atoms,
        fund_start_atoms=result.fund_start_atoms,
        fund_end_atoms=result.fund_end_atoms,
    )


def top_winners(result: RunResult, winners: list[Winner], n: int = TOP_N) -> list[tuple[Winner, int, int]]:
    """(winner, haircut, surviving profit) of the `n` largest winners, largest first."""
    return [(w, result.haircut.get(w.account_id, 0), w.profit_atoms - result.haircut.get(w.account_id, 0)) for w in winners[:n]]
