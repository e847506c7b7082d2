"""An account's trade history (`Account.fills`, GET /v1/fills) and orders named by their
client order id (cancel / amend, SPEC §9), hand-computed.

BTC-PERP: tick 0.1, lot 0.001, maker 200 ppm, taker 500 ppm. Every command is followed by
check_invariants().
"""

from __future__ import annotations

from engine import commands as c
from engine.accounts import Fill
from engine.errors import Reject
from tests.scenario.harness import Sim, atoms, e8
from tests.scenario.test_liquidation_adl import BTC, _long_wiped_out_setup


def _fills(sim: Sim, aid: int) -> list[Fill]:
    return list(sim.engine.accounts[aid].fills)


def test_book_trades_liquidation_and_adl_each_leave_one_line_in_the_trade_history() -> None:
    sim = Sim()
    ids = _long_wiped_out_setup(sim)
    alice, carol, bob = ids["alice"], ids["carol"], ids["bob"]
    # Alice's sweep: three taker fills, fees 0.5 x 10000 x 0.0005 = 2.5, 0.3 x 10100 x 0.0005
    # = 1.515, 0.2 x 10200 x 0.0005 = 1.02; opening a position realizes nothing
    assert [(f.side, f.price, f.qty_lots, f.fee_atoms, f.liquidity, f.realized_atoms) for f in _fills(sim, alice)] == [
        ("buy", 100_000, 500, atoms("2.5"), "taker", 0),
        ("buy", 101_000, 300, atoms("1.515"), "taker", 0),
        ("buy", 102_000, 200, atoms("1.02"), "taker", 0),
    ]
    # Bob's resting ask was the maker of the first: 5000 x 0.0002 = 1
    (bob_fill,) = _fills(sim, bob)
    assert (bob_fill.side, bob_fill.qty_lots, bob_fill.fee_atoms, bob_fill.liquidity) == ("sell", 500, atoms(1), "maker")
    assert bob_fill.trade_id == _fills(sim, alice)[0].trade_id

    sim.mark(BTC, 9000)
    # Alice's 1 BTC is taken over at its bankruptcy value 8975.035 (equity 24.965): she
    # "sells" at 8975.035, realizing 8975.035 - 10070 = -1094.965, which leaves her wallet
    # (1094.965 after fees) at exactly 0. No fee, no trade or order id.
    liq = _fills(sim, alice)[-1]
    assert liq == Fill(None, 0, BTC, None, "sell", e8("8975.035"), 1000, 0, "liquidation", -atoms("1094.965"))
    assert sim.wallet(alice) == 0
    # Carol, first in the ADL line, buys back her 0.3 short at 8975.035: value 2692.5105,
    # realized 3030 - 2692.5105 = 337.4895, no fee
    adl = _fills(sim, carol)[-1]
    assert adl == Fill(None, 0, BTC, None, "buy", e8("8975.035"), 300, 0, "adl", atoms("337.4895"))
    # Bob: 0.3 of his 0.5, realized 3000 - 2692.5105 = 307.4895
    assert _fills(sim, bob)[-1][4:] == ("buy", e8("8975.035"), 300, 0, "adl", atoms("307.4895"))


def test_trade_history_keeps_the_newest_fills_kept_lines() -> None:
    sim = Sim(fills_kept=3)
    sim.mark(BTC, 10000)
    maker, taker = sim.account(100_000), sim.account(100_000)
    for i in range(5):
        sim.limit(maker, BTC, "sell", "0.001", 10000 + i)
        sim.limit(taker, BTC, "buy", "0.001", 10000 + i)
    # five trades, the last three kept, oldest first
    assert [f.price for f in _fills(sim, taker)] == [100_020, 100_030, 100_040]
    assert [f.liquidity for f in _fills(sim, maker)] == ["maker"] * 3


def test_cancel_and_amend_by_client_order_id() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    a = sim.account(10_000)
    b = sim.account(10_000)
    sim.limit(a, BTC, "buy", "0.1", 9900, client_order_id="grid-1")
    evs = sim.limit(a, BTC, "buy", "0.1", 9800, client_order_id="grid-2")
    oid2 = evs[0].order_id
    # amend by client id: the event names both ids
    (amended,) = sim.of_type(sim.ok(c.AmendOrder(a, 0, price_ticks=97_000, client_order_id="grid-2")), "order_amended")
    assert (amended.order_id, amended.client_order_id, amended.price_ticks) == (oid2, "grid-2", 97_000)
    # cancel by client id
    (canceled,) = sim.of_type(sim.ok(c.CancelOrder(a, 0, client_order_id="grid-1")), "order_canceled")
    assert canceled.client_order_id == "grid-1" and canceled.reason == "user"
    assert [o.client_order_id for o in sim.engine.accounts[a].open_orders.values()] == ["grid-2"]
    # a closed order's client id, another account's, or an unknown one: ORDER_NOT_FOUND, and
    # nothing but the rejection event happens
    for aid, cid in ((a, "grid-1"), (b, "grid-2"), (a, "nope")):
        for cmd in (c.CancelOrder(aid, 0, client_order_id=cid), c.AmendOrder(aid, 0, qty_lots=50, client_order_id=cid)):
            hash_before = sim.engine.state_hash()
            (rej,) = sim.do(cmd)
            assert (rej.code, rej.client_order_id) == (int(Reject.ORDER_NOT_FOUND), cid)
            sim.engine.seq -= 1  # the rejection consumed a seq; compare the rest of the state
            assert sim.engine.state_hash() == hash_before
            sim.engine.seq += 1
