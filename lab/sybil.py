"""The sybil test (SPEC §15): does splitting one account into k change what ADL takes from it?

The top winner is replaced by k accounts that hold the same total: every position and the
wallet divided as evenly as lots allow, at the same entry price (so each piece has the
same profit per lot and, up to rounding, the same effective leverage). Everything else is
as in the main run: the same accounts with the same ids, the same insurance fund, book and
path. Each policy runs again on that population, and the pieces' haircuts and ADL lots are
added up and compared with the single account's.

A sybil-resistant policy leaves both unchanged, up to lot rounding (at most k lots per
liquidation that reached the account: each piece's share is rounded down separately, and
leftover lots go one by one). `pro_rata` and `capped_pro_rata` are meant to be; the
queue is not: it ranks each position by its own score and, on ties, the larger first, so
smaller pieces can fall behind a position that used to wait behind the whole account.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.instruments import Instrument
from lab.paths import PricePath
from lab.population import Population, split
from lab.run import RunResult, run_policy, snapshot
from lab.scenario import BookSpec, FundSpec, Scenario, build


@dataclass(frozen=True, slots=True)
class SybilRow:
    policy: str
    haircut_single_atoms: int
    haircut_split_atoms: int  # the k pieces together
    lots_single: int
    lots_split: int

    @property
    def change_atoms(self) -> int:
        return self.haircut_split_atoms - self.haircut_single_atoms


@dataclass(frozen=True, slots=True)
class SybilResult:
    target: str
    k: int
    rows: tuple[SybilRow, ...]


def piece_names(target: str, k: int) -> list[str]:
    """The names `population.split` gives the pieces."""
    return [f"{target}#{j}" for j in range(1, k + 1)]


def _no_phase(label: str, size: int) -> Callable[[int], None]:
    return lambda n: None


def run_split(
    pop: Population,
    target: str,
    k: int,
    instruments: dict[str, Instrument],
    fund_atoms: int,
    book: BookSpec,
    path: PricePath,
    policies: list[str],
    phase: Callable[[str, int], Callable[[int], None]] | None = None,
) -> tuple[Scenario, dict[str, RunResult], int]:
    """Build the split population and run every policy on it; returns (scenario, results, k
    actually used: at most the account's smallest position in lots). `phase(label, size)`,
    when given, starts a progress phase (the build, then each run) and returns its ticker."""
    split_pop = split(pop, target, k)
    used = len(split_pop.accounts) - len(pop.accounts) + 1
    start = phase or _no_phase
    positions = sum(len(a.positions) for a in split_pop.accounts)
    sc = build(split_pop, instruments, FundSpec(atoms=fund_atoms), book, start(f"sybil: {target} in {used}, building", positions))
    state = snapshot(sc)
    results = {p: run_policy(sc, state, path, p, start(f"sybil: {p}", len(path.steps))) for p in policies}
    return sc, results, used


def compare(
    target: str,
    k: int,
    single_id: int,
    single: dict[str, RunResult],
    split_sc: Scenario,
    split_results: dict[str, RunResult],
) -> SybilResult:
    """Per policy, the single account's haircut and ADL lots against its k pieces'."""
    ids = [split_sc.ids[n] for n in piece_names(target, k)]
    rows = []
    for policy, one in single.items():
        many = split_results[policy]
        rows.append(SybilRow(
            policy,
            one.haircut.get(single_id, 0),
            sum(many.haircut.get(i, 0) for i in ids),
            one.adl_lots.get(single_id, 0),
            sum(many.adl_lots.get(i, 0) for i in ids),
        ))
    return SybilResult(target, k, tuple(rows))
