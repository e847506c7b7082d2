"""Capped pro-rata (SPEC §6, Chitra 2025): the pure allocation function the engine's policy uses.

The paper's toy example: winners' PnL (8, 4, 0.5), a budget of 7.5 -> the pro-rata haircut
fraction is 0.6 and the haircuts (4.8, 2.4, 0.3), no one capped.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from engine import commands as c
from engine.adl import allocate_capped_pro_rata, allocate_pro_rata, water_level


def test_water_level_when_paper_toy_example_gives_fraction_0_6() -> None:
    pnl = [Fraction(8), Fraction(4), Fraction(1, 2)]
    level = water_level([(p, p) for p in pnl], Fraction(15, 2))  # haircut capped at the PnL
    assert level == Fraction(3, 5)
    assert [level * p for p in pnl] == [Fraction(24, 5), Fraction(12, 5), Fraction(3, 10)]


@pytest.mark.parametrize(
    ("caps_weights", "remaining", "level"),
    [
        ([(10, 8), (10, 4), (10, 1)], 13, Fraction(1)),  # nobody reaches the cap
        ([(1, 8), (10, 4), (10, 1)], 11, Fraction(2)),  # the first saturates at 1: (11 - 1) / 5
        ([(1, 8), (1, 4), (10, 1)], 7, Fraction(5)),  # two saturate: (7 - 2) / 1
    ],
    ids=["none_capped", "one_capped", "two_capped"],
)
def test_water_level_when_caps_bind_solves_the_sum_exactly(
    caps_weights: list[tuple[int, int]], remaining: int, level: Fraction
) -> None:
    assert water_level(caps_weights, remaining) == level  # type: ignore[arg-type]
    assert sum(min(Fraction(cap), level * w) for cap, w in caps_weights) == remaining


def test_capped_pro_rata_when_profit_splits_lots_floors_then_leftover_in_rank_order() -> None:
    # (account, |q| lots, upnl atoms), ranking order; R = 10 lots by profit 8:4:1 -> λ = 10/13
    ranked = [(1, 20, 8), (2, 20, 4), (3, 20, 1)]
    # exact shares 6.15, 3.08, 0.77 -> floors 6, 3, 0; one leftover lot to the first in rank
    assert allocate_capped_pro_rata(ranked, 10) == [(1, 7), (2, 3)]


def test_capped_pro_rata_when_a_position_is_small_caps_it_at_its_size() -> None:
    # the top profit holds 2 lots only: capped at 2, the rest water-fills the others
    ranked = [(1, 2, 100), (2, 20, 4), (3, 20, 4)]
    assert allocate_capped_pro_rata(ranked, 10) == [(1, 2), (2, 4), (3, 4)]


def test_capped_pro_rata_when_profitable_cannot_cover_takes_them_whole_then_queue() -> None:
    ranked = [(1, 2, 5), (2, 3, -1), (3, 4, 7), (4, 5, 0)]
    assert allocate_capped_pro_rata(ranked, 9) == allocate_pro_rata([(a, q, u > 0) for a, q, u in ranked], 9)
    assert allocate_capped_pro_rata(ranked, 9) == [(1, 2), (2, 3), (3, 4)]


def test_capped_pro_rata_when_profits_are_equal_splits_evenly_leftover_to_the_first() -> None:
    # equal PnL: λ = 10 / 15, each 3.33 -> 3; the one leftover lot to the first in line
    assert allocate_capped_pro_rata([(1, 10, 5), (2, 10, 5), (3, 10, 5)], 10) == [(1, 4), (2, 3), (3, 3)]


def test_capped_pro_rata_is_an_engine_policy() -> None:
    assert c.ADL_CAPPED_PRO_RATA == "capped_pro_rata" and c.ADL_CAPPED_PRO_RATA in c.ADL_POLICIES
