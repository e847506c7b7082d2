"""The §15 metrics against a case computed by hand, and the metric helpers alone."""

from __future__ import annotations

from fractions import Fraction

import pytest

from engine import commands as c
from lab import metrics
from lab.numbers import percent, ratio, usd, usd_short
from lab.run import RunResult
from lab.scenario import Scenario
from tests.lab.cases import CRASH_TO, SYMBOL, USD, build_and_run, crash25, two_winners

# The two-winner case (tests/lab/cases.py), BTC-PERP from 10,000 to 7,500 USD in one step,
# insurance fund 2 USD, no book (the fund's order finds nothing: all of it goes to ADL).
#
# liq: long 10 lots = 0.01 BTC, wallet 20. At 7,500: upnl = 0.01 * (7,500 - 10,000) = -25,
#      equity E = 20 - 25 = -5 < maintenance (0.5% of 75 = 0.375): liquidated.
#      Bankruptcy value = notional - E = 75 + 5 = 80 USD, bankruptcy price 8,000.
#      All 10 lots go to ADL; shorts buy back at 8,000 against a mark of 7,500:
#      haircut 0.001 * 500 = 0.50 USD per lot. Shortfall at the mark = 10 * 0.50 = 5 = -E.
# safe: long 10 lots, wallet 100: equity 75 at 7,500, not liquidated, not a winner.
# Winners (profit at the stress mark 7,500): a = 12 * 0.001 * 2,500 = 30, b = 8 * 2.5 = 20.
# Queue rank, score = pnl% * eff. leverage (SPEC §6):
#      a: pnl% = 30 / 120 = 0.25, eff. lev = 90 / (120 + 30) = 0.6   -> 0.15
#      b: pnl% = 20 / 80 = 0.25,  eff. lev = 60 / (16 + 20) = 1.667  -> 0.4167: b first.
# queue:    b closes all its 8 lots (haircut 8 * 0.5 = 4), a closes 2 (haircut 1).
# pro_rata: T = 20 profitable lots, R = 10: a floor(10 * 12 / 20) = 6 (haircut 3),
#           b floor(10 * 8 / 20) = 4 (haircut 2), no leftover lot.
# Needed: the fund (2 USD) pays first: needed = 5 - 2 = 3 USD. Taken = 5, overshoot = 2.
# Largest haircut: queue b 4 (share 4 / 5 = 0.8); pro_rata a 3 (share 3 / 5 = 0.6).
# Gini over the winners' haircuts, sum |xi - xj| / (2 n sum x):
#      queue [1, 4]: 2 * 3 / (2 * 2 * 5) = 0.3;  pro_rata [3, 2]: 2 * 1 / (2 * 2 * 5) = 0.1.
# Top winner a (profit 30): surviving queue 30 - 1 = 29, PTSR 29 / 3 = 9.666667;
#      pro_rata 30 - 3 = 27, PTSR 27 / 3 = 9.
# Bad debt 0 (every counterparty's equity covers its haircut); the fund ends at 2 USD.
EXPECTED = {
    #              taken needed  largest  holder share           gini             surviving ptsr
    c.ADL_QUEUE: (5, 3, 4, "b", Fraction(4, 5), Fraction(3, 10), 29, Fraction(29, 3)),
    c.ADL_PRO_RATA: (5, 3, 3, "a", Fraction(3, 5), Fraction(1, 10), 27, Fraction(9)),
}
HAIRCUTS = {c.ADL_QUEUE: {"a": 1, "b": 4}, c.ADL_PRO_RATA: {"a": 3, "b": 2}}
LOTS = {c.ADL_QUEUE: {"a": 2, "b": 8}, c.ADL_PRO_RATA: {"a": 6, "b": 4}}


HandCase = tuple[Scenario, dict[str, metrics.PolicyMetrics], dict[str, RunResult]]


@pytest.fixture(scope="module")
def hand_case() -> HandCase:
    sc, results = build_and_run(two_winners(), list(EXPECTED), fund_usd=2)
    winners = metrics.find_winners(sc.engine, crash25().stress_marks({SYMBOL: 100_000}), sc.names)
    return sc, {p: metrics.compute(r, winners, sc.names) for p, r in results.items()}, dict(results)


def test_find_winners_when_crash_25_the_shorts_in_profit_at_the_stress_mark(hand_case: HandCase) -> None:
    sc, _, _ = hand_case
    winners = metrics.find_winners(sc.engine, {SYMBOL: CRASH_TO}, sc.names)
    assert [(w.name, w.profit_atoms) for w in winners] == [("a", 30 * USD), ("b", 20 * USD)]


@pytest.mark.parametrize("policy", list(EXPECTED), ids=list(EXPECTED))
def test_compute_when_two_winners_matches_the_hand_computation(hand_case: HandCase, policy: str) -> None:
    sc, table, results = hand_case
    m = table[policy]
    taken, needed, largest, holder, share, gini, surviving, ptsr = EXPECTED[policy]
    assert (m.liquidations, m.adl_liquidations, m.adl_lots, m.adl_fills) == (1, 1, 10, 2)
    assert m.shortfall_atoms == 5 * USD
    assert m.taken_atoms == taken * USD
    assert m.needed_atoms == needed * USD
    assert m.overshoot_atoms == (taken - needed) * USD
    assert m.touched == m.winners_touched == 2
    assert (m.largest_haircut_atoms, m.largest_haircut_account, m.largest_share) == (largest * USD, holder, share)
    assert m.gini == gini
    assert (m.top_winner, m.top_profit_atoms, m.top_surviving_atoms) == ("a", 30 * USD, surviving * USD)
    assert m.ptsr == ptsr
    assert (m.bad_debt_atoms, m.fund_start_atoms, m.fund_end_atoms) == (0, 2 * USD, 2 * USD)
    result = results[policy]
    assert {sc.names[i]: h // USD for i, h in result.haircut.items()} == HAIRCUTS[policy]
    assert {sc.names[i]: q for i, q in result.adl_lots.items()} == LOTS[policy]


def test_run_when_liquidated_the_shortfall_is_minus_its_equity_share(hand_case: HandCase) -> None:
    # the ADL part's shortfall at the mark is -E * adl_lots / |qty| (here all of it: 5 USD)
    _, _, results = hand_case
    for result in results.values():
        (liq,) = result.liquidations
        assert liq.equity_before_atoms == -5 * USD
        assert liq.shortfall_atoms == -liq.equity_before_atoms * liq.adl_lots // abs(liq.qty_lots)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5, 5, 5], Fraction(0)),
        ([0, 0, 0, 10], Fraction(3, 4)),  # sum |xi - xj| = 2 * 3 * 10 = 60; 60 / (2 * 4 * 10)
        ([1, 4], Fraction(3, 10)),
        ([2, 3], Fraction(1, 10)),
        ([0, 0], None),
    ],
    ids=["equal", "one-pays-all-of-4", "queue-case", "pro-rata-case", "nobody-pays"],
)
def test_gini_when_values_given_is_exact(values: list[int], expected: Fraction | None) -> None:
    assert metrics.gini(values) == expected
    if expected is not None:  # against the definition, pair by pair
        n, total = len(values), sum(values)
        assert expected == Fraction(sum(abs(x - y) for x in values for y in values), 2 * n * total)


def test_gini_when_negative_value_raises() -> None:
    with pytest.raises(ValueError):
        metrics.gini([1, -1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [(usd(150_000_000), "1.5"), (usd(-1), "-0.00000001"), (usd_short(123_456_789_000_000), "1,234,568"),
     (ratio(Fraction(29, 3)), "9.666667"), (ratio(Fraction(-1, 8), 2), "-0.12"), (ratio(None), None),
     (percent(Fraction(4, 5)), "80.0%"), (percent(None), "n/a")],
    ids=["usd", "usd-negative", "usd-short", "ratio", "ratio-half-even", "ratio-none", "percent", "percent-none"],
)
def test_numbers_when_formatted_are_exact_decimal_strings(text: str | None, expected: str | None) -> None:
    assert text == expected
