"""Sybil resistance: a profitable counterparty split into k accounts with the same total.

Under `pro_rata` (and `capped_pro_rata` when the engine has it) its total ADL quantity stays
the same up to lot rounding (at most k lots per liquidation that reached it); under `queue`
a constructed case shows it can change a lot.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import commands as c
from lab import sybil
from lab.population import Population
from tests.lab.cases import INSTRUMENTS, NO_BOOK, START, SYMBOL, account, build_and_run, crash25

FAIR_POLICIES = [p for p in (c.ADL_PRO_RATA, "capped_pro_rata") if p in c.ADL_POLICIES]


def split_lots(pop: Population, target: str, k: int, policies: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per policy: (ADL lots of `target` alone, of its k pieces together, liquidations that went to ADL)."""
    sc, single = build_and_run(pop, policies)
    split_sc, split_results, used = sybil.run_split(pop, target, k, INSTRUMENTS, 0, NO_BOOK, crash25(), policies)
    assert used == k
    res = sybil.compare(target, k, sc.ids[target], single, split_sc, split_results)
    adl_rounds = {p: sum(1 for r in single[p].liquidations if r.adl_lots) for p in policies}
    return {r.policy: (r.lots_single, r.lots_split, adl_rounds[r.policy]) for r in res.rows}


@st.composite
def populations(draw: st.DrawFn) -> tuple[Population, str, int]:
    """Winning shorts of random sizes, entries and leverages; one long bankrupt at -25%
    (10x) that ADL closes against them, and one 1x long that holds the rest and survives."""
    n = draw(st.integers(2, 6))
    shorts = []
    for i in range(n):
        lots = draw(st.integers(5, 60))
        entry = START + draw(st.integers(-3_000, 3_000))  # within 3% of 10,000 USD
        wallet = lots * 10 // draw(st.integers(1, 20)) + 1  # leverage about 1..20 at the start
        shorts.append(account(f"s{i}", -lots, wallet, entry))
    total = sum(-a.positions[0].size_lots for a in shorts)
    liq_lots = draw(st.integers(1, total))
    longs = [account("liq", liq_lots, liq_lots * 10 // 10)]  # 10x: equity -15% of notional at -25%
    if total > liq_lots:
        longs.append(account("safe", total - liq_lots, (total - liq_lots) * 10))
    target = draw(st.sampled_from([a.name for a in shorts if -a.positions[0].size_lots >= 5]))
    k = draw(st.integers(2, 5))
    return Population({SYMBOL: START}, tuple(longs + shorts), "property"), target, k


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(populations())
def test_split_when_pro_rata_keeps_total_adl_lots_up_to_rounding(case: tuple[Population, str, int]) -> None:
    pop, target, k = case
    for policy, (single, split, rounds) in split_lots(pop, target, k, FAIR_POLICIES).items():
        assert rounds == 1, "one liquidation, one ADL round"
        assert abs(split - single) <= k * rounds, (policy, single, split)


def test_split_when_queue_on_tied_scores_moves_the_pieces_behind() -> None:
    # w (10 lots) and b (4 lots) are shorts with the same entry and the same leverage, so
    # the same score; ties go to the larger position: w first. The bankrupt long's 6 lots
    # are all taken from w. Split into 5 pieces of 2 lots (same score still), b (4 lots)
    # now goes first: b gives 4, the first piece 2, so w's total falls from 6 to 2 lots.
    # pro_rata: T = 14, R = 6: w floor(60/14) = 4, b floor(24/14) = 1, the leftover lot to
    # the first in line (w): 5. Split: pieces floor(12/14) = 0, b 1, the 5 leftover lots
    # one by one in line order: b (2), then four pieces: 4 in all, within k of 5.
    pop = Population({SYMBOL: START}, (
        account("liq", 6, 6),  # 10x: bankrupt at -25%
        account("safe", 8, 80),
        account("w", -10, 50),  # 2x
        account("b", -4, 20),  # 2x
    ), "queue case")
    policies = [c.ADL_QUEUE, c.ADL_PRO_RATA]
    lots = split_lots(pop, "w", 5, policies)
    assert lots[c.ADL_QUEUE][:2] == (6, 2)
    assert lots[c.ADL_PRO_RATA][:2] == (5, 4)
