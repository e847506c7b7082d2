"""Hand-computed margin cases: liquidation price across a tier, withdrawals, reduce-only,
ADL quantiles (SPEC §3, §4, §6, §9)."""

from __future__ import annotations

import pytest

from engine import commands as c
from engine.adl import adl_quantile
from engine.views import account_view, positions_view
from tests.scenario.harness import Sim, atoms, e8

BTC = "BTC-PERP"


def test_liquidation_price_when_answer_lies_in_tier_two_uses_tier_two_rate_and_amount() -> None:
    # Alice bids 20 BTC @10000 as maker (fee 200000 * 0.0002 = 40): wallet 20000, EV 200000.
    # Tier 1 (0.5%) would give 20000 + 20M - 200000 = 0.1M  -> M = 9045.23 (notional 180,905:
    # outside tier 1). Tier 2 (1%, amount 500): 20000 + 20M - 200000 = 0.2M - 500
    # -> 19.8M = 179500 -> M = 9065.656565... -> "9065.65656566" (half-even, 8 dp).
    sim = Sim()
    sim.mark(BTC, 10000)
    bob = sim.account(1_000_000)
    alice = sim.account(20040)
    sim.limit(alice, BTC, "buy", "20", 10000)
    sim.limit(bob, BTC, "sell", "20", 10000)
    assert sim.wallet(alice) == atoms("20000")
    (pos,) = positions_view(sim.engine, alice)
    assert pos.liquidation_price_e8 == e8("9065.65656566")
    # At 9065.7: equity 1314 >= MM 181314 * 1% - 500 = 1313.14 -> nothing happens.
    assert not sim.of_type(sim.mark(BTC, "9065.7"), "liquidation")
    # At 9065.6: equity 1312 < MM 1313.12 -> liquidated.
    assert sim.of_type(sim.mark(BTC, "9065.6"), "liquidation")


def test_liquidation_price_when_long_is_fully_collateralised_is_none() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    bob = sim.account(1_000_000)
    alice = sim.account(10100, {BTC: 1})
    sim.limit(bob, BTC, "sell", "1", 10000)
    sim.limit(alice, BTC, "buy", "1", 10000)  # wallet 10095 >= entry value 10000
    (pos,) = positions_view(sim.engine, alice)
    assert pos.liquidation_price_e8 is None
    # Bob's short: 1,000,000 - 2 + (-1M... ) -> some finite price above the mark
    (bpos,) = positions_view(sim.engine, bob)
    assert bpos.liquidation_price_e8 is not None and bpos.liquidation_price_e8 > e8("10000")


def test_withdraw_when_amount_exceeds_available_rejected_and_exact_available_allowed() -> None:
    # Deposit 1000, long 0.5 @10000 at 10x: IM 500, fee 2.5 -> wallet 997.5, available 497.5.
    sim = Sim()
    sim.mark(BTC, 10000)
    bob = sim.account(100000)
    alice = sim.account(1000)
    sim.limit(bob, BTC, "sell", "0.5", 10000)
    sim.limit(alice, BTC, "buy", "0.5", 10000)
    assert account_view(sim.engine, alice).available_atoms == atoms("497.5")
    (rej,) = sim.do(c.Withdraw(alice, atoms("497.50000001")))
    assert rej.reason == "INSUFFICIENT_BALANCE"
    assert sim.wallet(alice) == atoms("997.5")
    sim.ok(c.Withdraw(alice, atoms("497.5")))
    assert sim.wallet(alice) == atoms("500")
    # Mark 10100: upnl +50, IM 505 -> available 45 (wallet 500 is not the limit).
    sim.mark(BTC, 10100)
    assert account_view(sim.engine, alice).available_atoms == atoms("45")
    assert sim.do(c.Withdraw(alice, atoms("45.00000001")))[0].reason == "INSUFFICIENT_BALANCE"
    sim.ok(c.Withdraw(alice, atoms("45")))


def test_reduce_only_when_larger_than_position_cut_then_nothing_to_reduce() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    bob = sim.account(100000)
    alice = sim.account(100000)
    sim.limit(bob, BTC, "sell", "0.5", 10000)
    sim.limit(alice, BTC, "buy", "0.5", 10000)
    sim.limit(bob, BTC, "buy", "2", 9990)
    evs = sim.limit(alice, BTC, "sell", "0.8", 9990, reduce_only=True)
    (accepted,) = sim.of_type(evs, "order_accepted")
    assert accepted.qty_lots == 500  # cut from 0.8 to the 0.5 position
    assert sim.size(alice, BTC) == 0
    (rej,) = sim.do(c.PlaceOrder(alice, BTC, "sell", 100, 99900, reduce_only=True))
    assert rej.reason == "NOTHING_TO_REDUCE"


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, [4]), (3, [4, 3, 1]), (5, [4, 3, 2, 1, 0]), (7, [4, 4, 3, 2, 2, 1, 0])],
    ids=["N1", "N3", "N5", "N7"],
)
def test_adl_quantile_when_n_positions_follows_4_minus_floor_5r_over_n(n: int, expected: list[int]) -> None:
    # 4 - floor(5r/N): N=3 -> r=1: 4-1=3, r=2: 4-3=1; N=7 -> 5r/7 = 0,0,1,2,2,3,4.
    assert [adl_quantile(r, n) for r in range(n)] == expected
    # The same through the engine: N shorts sell 0.1 each at 10000 + 50*i to one long (all
    # inside the 5% price band). At mark 10000 short i has pnl% = 50i/(10000+50i) and eff.
    # leverage 1000/equity, so
    # the higher i, the higher the score: rank r = N-1-i.
    sim = Sim()
    sim.mark(BTC, 10000)
    shorts = [sim.account(10000) for _ in range(n)]
    whale = sim.account(10_000_000)
    for i, aid in enumerate(shorts):
        sim.limit(aid, BTC, "sell", "0.1", 10000 + 50 * i)
    sim.limit(whale, BTC, "buy", str(n / 10), 10000 + 50 * n)
    q = sim.engine.adl_quantiles(BTC)
    assert [q[shorts[n - 1 - r]] for r in range(n)] == expected
    assert q[whale] == 4  # alone on its side
    assert [p.adl_quantile for p in positions_view(sim.engine, shorts[-1])] == [4]
