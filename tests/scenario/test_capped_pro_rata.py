"""Capped pro-rata ADL through the engine, hand-computed (SPEC §6): shares by unrealized profit.

BTC-PERP at 10,000. Shorts: A 0.3 @ 10,000, B 0.3 @ 10,100 (0.1 to L, 0.2 to R), C 0.2 @
10,200 (to R). L (500 USD, 20x) buys 0.4: 0.3 @ 10,000 + 0.1 @ 10,100, entry 4,010, taker fees
1.5 + 0.505 = 2.005. R (rich) buys the other 0.4. The book is then empty.

Mark 8,000: L's equity 500 - 2.005 + (3,200 - 4,010) = -312.005 < 0: bankrupt. BV = 3,200 +
312.005 = 3,512.005, bankruptcy price 8,780.0125; the fund (0) cannot buy, so ADL closes 0.4
(400 lots) against the shorts. Their unrealized profit at 8,000: A 3,000 - 2,400 = 600,
B 3,030 - 2,400 = 630, C 2,040 - 1,600 = 440 (caps: 300, 300, 200 lots).
Line (pnl% x eff. leverage, equity = 10,000 - maker fee + upnl):
  B: 630/3,030 x 2,400/10,629.394 = 0.04695; A: 600/3,000 x 2,400/10,599.4 = 0.04529;
  C: 440/2,040 x 1,600/10,439.592 = 0.03306  ->  B, A, C.
"""

from __future__ import annotations

from engine import commands as c
from tests.scenario.harness import Sim, e8

BTC = "BTC-PERP"


def _crash(policy: str) -> tuple[Sim, dict[str, int], list]:
    sim = Sim()
    sim.mark(BTC, 10_000)
    ids = {name: sim.account(10_000) for name in ("a", "b", "c")}
    ids["r"] = sim.account(100_000)
    ids["l"] = sim.account(500, {BTC: 20})
    sim.limit(ids["a"], BTC, "sell", "0.3", 10_000)
    sim.limit(ids["b"], BTC, "sell", "0.3", 10_100)
    sim.limit(ids["c"], BTC, "sell", "0.2", 10_200)
    sim.limit(ids["l"], BTC, "buy", "0.4", 10_100)
    sim.limit(ids["r"], BTC, "buy", "0.4", 10_200)
    sim.ok(c.SetAdlPolicy(BTC, policy))
    evs = sim.mark(BTC, 8_000)
    return sim, ids, evs


def test_capped_pro_rata_when_no_cap_binds_splits_by_profit_leftover_in_line_order() -> None:
    sim, ids, evs = _crash(c.ADL_CAPPED_PRO_RATA)
    (liq,) = sim.of_type(evs, "liquidation")
    assert (liq.account_id, liq.bankruptcy_price_e8, liq.adl_lots) == (ids["l"], e8("8780.0125"), 400)
    # λ = 400 lots / 1,670 USD of profit: A 143.71, B 150.90, C 105.39 (all under their
    # caps) -> floors 143, 150, 105 = 398; the 2 leftover lots to B then A (line order)
    adl = sim.of_type(evs, "adl")
    assert [(e.counterparty_account_id, e.qty_lots, e.rank, e.policy) for e in adl] == [
        (ids["b"], 151, 1, "capped_pro_rata"),
        (ids["a"], 144, 2, "capped_pro_rata"),
        (ids["c"], 105, 3, "capped_pro_rata"),
    ]
    # everyone closes at the bankruptcy price: the haircut is qty x (8,780.0125 - 8,000),
    # so B, A, C give up 117.78, 112.32, 81.90 USD: 18.7%, 18.7%, 18.6% of their profit
    assert [e.haircut_atoms for e in adl] == [11_778_188_750, 11_232_180_000, 8_190_131_250]
    assert all(e.price_e8 == e8("8780.0125") for e in adl)


def test_pro_rata_on_the_same_crash_splits_by_size_instead() -> None:
    sim, ids, evs = _crash(c.ADL_PRO_RATA)
    # 400 x (300, 300, 200) / 800 = 150, 150, 100 exactly, in line order B, A, C
    assert [(e.counterparty_account_id, e.qty_lots) for e in sim.of_type(evs, "adl")] == [
        (ids["b"], 150), (ids["a"], 150), (ids["c"], 100)
    ]
