"""Small populations for the lab tests, written out by hand (BTC-PERP, start 10,000 USD).

Units: BTC-PERP has 0.1 USD ticks and 0.001 BTC lots, so one lot at one tick is
K = 10,000 atoms (1e-8 USD), and one lot at 10,000 USD is worth 10 USD.
"""

from __future__ import annotations

from engine.units import E8
from lab.paths import PricePath, crash
from lab.population import AccountSpec, Population, PositionSpec
from lab.run import RunResult, run_policy, snapshot
from lab.scenario import BookSpec, FundSpec, Scenario, build, lab_instruments

SYMBOL = "BTC-PERP"
START = 100_000  # ticks: 10,000 USD
CRASH_TO = 75_000  # ticks: 7,500 USD (-25%)
USD = E8
INSTRUMENTS = lab_instruments()
NO_BOOK = BookSpec(levels=0)


def account(name: str, lots: int, wallet_usd: int, entry: int = START) -> AccountSpec:
    return AccountSpec(name, wallet_usd * USD, (PositionSpec(SYMBOL, lots, entry),))


def crash25() -> PricePath:
    return crash({SYMBOL: START}, 250_000)


def two_winners() -> Population:
    """One bankrupt long, one safe long, two winning shorts (the hand-computed case).

    - liq: long 10 lots (100 USD), wallet 20 USD (5x)      -> bankrupt at 7,500
    - safe: long 10 lots, wallet 100 USD (1x)                -> survives
    - a: short 12 lots (120 USD), wallet 120 USD (1x)        -> winner, profit 30 USD
    - b: short 8 lots (80 USD), wallet 16 USD (5x)           -> winner, profit 20 USD
    """
    accounts = (account("liq", 10, 20), account("safe", 10, 100), account("a", -12, 120), account("b", -8, 16))
    return Population({SYMBOL: START}, accounts, "two winners")


def build_and_run(pop: Population, policies: list[str], fund_usd: int = 0, book: BookSpec = NO_BOOK,
                  path: PricePath | None = None) -> tuple[Scenario, dict[str, RunResult]]:
    sc = build(pop, INSTRUMENTS, FundSpec(atoms=fund_usd * USD), book)
    state = snapshot(sc)
    p = path or crash25()
    return sc, {policy: run_policy(sc, state, p, policy) for policy in policies}
