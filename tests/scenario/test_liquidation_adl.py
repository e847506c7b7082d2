"""Hand-computed liquidation, insurance-fund and ADL scenarios (SPEC §3, §5, §6).

Units in comments are USD and BTC/ETH. BTC-PERP: tick 0.1, lot 0.001, maker 200 ppm, taker
500 ppm, MM 0.5% below 100k notional. Every command is followed by check_invariants()
(conservation to the atom, sizes sum to zero, fund flat and non-negative).
"""

from __future__ import annotations

from engine import commands as c
from tests.scenario.harness import Sim, atoms, e8

BTC = "BTC-PERP"
ETH = "ETH-PERP"


def _long_wiped_out_setup(sim: Sim) -> dict[str, int]:
    """Alice buys 1 BTC sweeping three shorts at 10000 / 10100 / 10200; Lee buys 0.2 more."""
    sim.mark(BTC, 10000)
    ids = {
        "bob": sim.account(10000),
        "carol": sim.account(1000),
        "dave": sim.account(5000),
        "lee": sim.account(10000),
        # 20x: her sweep up to 10200 needs IM 10000/20 = 500 + open loss 1 x (10200 - 10000)
        # = 200 (SPEC §3) = 700 <= 1100 (at the default 10x it would need 1200)
        "alice": sim.account(1100, {BTC: 20}),
    }
    sim.limit(ids["bob"], BTC, "sell", "0.5", 10000)
    sim.limit(ids["carol"], BTC, "sell", "0.3", 10100)
    sim.limit(ids["dave"], BTC, "sell", "0.4", 10200)
    # Alice (taker) fills 0.5@10000, 0.3@10100, 0.2@10200: entry value 5000+3030+2040 = 10070,
    # taker fees 2.5 + 1.515 + 1.02 = 5.035 -> wallet 1094.965
    sim.limit(ids["alice"], BTC, "buy", "1", 10200)
    # Lee takes Dave's remaining 0.2@10200 (fee 1.02); Dave now -0.4 with entry -4080
    sim.limit(ids["lee"], BTC, "buy", "0.2", 10200)
    # Dave also has a resting bid, which ADL must cancel
    sim.limit(ids["dave"], BTC, "buy", "0.1", 8000)
    return ids


def test_crash_when_long_wiped_out_into_empty_book_adl_queue_closes_shorts_by_rank() -> None:
    sim = Sim()
    ids = _long_wiped_out_setup(sim)
    assert sim.wallet(ids["alice"]) == atoms("1094.965")
    assert sim.wallet(ids["bob"]) == atoms("9999")  # maker fee 5000 * 0.0002 = 1
    assert sim.wallet(ids["carol"]) == atoms("999.394")  # 3030 * 0.0002 = 0.606
    assert sim.wallet(ids["dave"]) == atoms("4999.184")  # 2 x 2040 * 0.0002 = 0.816

    # Mark 9000: Alice upnl = 9000 - 10070 = -1070, equity = 24.965 < MM = 9000*0.5% = 45.
    # E = 24.965, BV = 9000 - 24.965 = 8975.035 = bankruptcy price (q = 1).
    # Fund is 0: its sell limit = ceil(8975.035 / 0.1) ticks = 8975.1; the only bid is Dave's
    # 8000 -> nothing fills, all 1 BTC goes to ADL at 8975.035.
    # Ranking of shorts at 9000 (score = pnl% * notional / equity):
    #   Carol: 330/3030 * 2700/1329.394 = 0.2212
    #   Dave:  480/4080 * 3600/5479.184 = 0.0773
    #   Bob:   500/5000 * 4500/10499    = 0.0429
    # Queue: Carol 0.3 (all), Dave 0.4 (all), Bob 0.3 of 0.5.
    evs = sim.mark(BTC, 9000)
    adl = sim.of_type(evs, "adl")
    assert [(e.counterparty_account_id, e.qty_lots, e.rank) for e in adl] == [
        (ids["carol"], 300, 1),
        (ids["dave"], 400, 2),
        (ids["bob"], 300, 3),
    ]
    assert all(e.price_e8 == e8("8975.035") and e.side == "short" for e in adl)
    # Values: 0.3 * 8975.035 = 2692.5105, 0.4 * ... = 3590.014, Bob the rest = 2692.5105
    assert [e.value_atoms for e in adl] == [atoms("2692.5105"), atoms("3590.014"), atoms("2692.5105")]
    # Carol: realized = 3030 - 2692.5105 = 337.4895 -> wallet 999.394 + 337.4895 = 1336.8835
    assert sim.wallet(ids["carol"]) == atoms("1336.8835")
    assert sim.size(ids["carol"], BTC) == 0
    # Dave: realized = 4080 - 3590.014 = 489.986 -> 5489.17; his 8000 bid canceled (reason adl)
    assert sim.wallet(ids["dave"]) == atoms("5489.17")
    assert sim.size(ids["dave"], BTC) == 0
    # §5.3: the fund's one IOC order is placed even though nothing can fill it (sell 1 BTC,
    # limit 8975.1 = the bankruptcy price rounded up to the tick: the fund holds 0); it
    # ends canceled with nothing filled, then ADL runs
    (fund_order,) = [e for e in sim.of_type(evs, "order_accepted") if e.account_id == 0]
    assert (fund_order.side, fund_order.price_ticks, fund_order.qty_lots, fund_order.time_in_force) == (
        "sell", 89751, 1000, "IOC"
    )
    assert [(e.account_id, e.reason, e.filled_lots) for e in sim.of_type(evs, "order_canceled")] == [
        (0, "ioc", 0),
        (ids["dave"], "adl", 0),
    ]
    # Bob: closes 0.3 of 0.5, closed entry 3000, realized = 3000 - 2692.5105 = 307.4895
    assert sim.wallet(ids["bob"]) == atoms("10306.4895")
    assert sim.size(ids["bob"], BTC) == -200
    assert sim.entry_value(ids["bob"], BTC) == -atoms("2000")
    assert adl[2].position_after_lots == -200
    assert adl[0].realized_pnl_atoms == atoms("337.4895")
    # Alice: wallet exactly 0, flat; fund unchanged at 0
    assert sim.wallet(ids["alice"]) == 0
    assert sim.size(ids["alice"], BTC) == 0
    assert sim.fund == 0
    (liq,) = sim.of_type(evs, "liquidation")
    assert (liq.account_id, liq.qty_lots, liq.bankruptcy_price_e8) == (ids["alice"], 1000, e8("8975.035"))
    assert (liq.equity_before_atoms, liq.insurance_fund_delta_atoms) == (atoms("24.965"), 0)
    assert (liq.book_fill_lots, liq.adl_lots) == (0, 1000)


def _single_long(sim: Sim, fund: str = "0", bid: str | None = None) -> dict[str, int]:
    """Alice long 1 BTC @10000 from Sam (wallet 1095 after the 5 taker fee); Xena may bid."""
    sim.mark(BTC, 10000)
    ids = {"sam": sim.account(100000), "xena": sim.account(100000), "alice": sim.account(1100)}
    if fund != "0":
        sim.fund_top_up(fund)
    sim.limit(ids["sam"], BTC, "sell", "1", 10000)
    sim.limit(ids["alice"], BTC, "buy", "1", 10000)
    if bid is not None:
        sim.limit(ids["xena"], BTC, "buy", "1", bid)
    assert sim.wallet(ids["alice"]) == atoms("1095")
    return ids


def test_liquidation_when_fund_can_pay_fund_buys_down_to_a_bid_below_bankruptcy() -> None:
    # Mark 8940: equity = 1095 - 1060 = 35 < MM 44.7. BV = 8940 - 35 = 8905.
    # Fund 100: sell limit = 8905 - 100/1 = 8805 (band floor 8046). Xena's bid 8850 fills:
    # fund realized 8850 - 8905 = -55 -> fund 45. Xena pays maker fee 8850 * 0.0002 = 1.77.
    sim = Sim()
    ids = _single_long(sim, fund="100", bid="8850")
    evs = sim.mark(BTC, 8940)
    assert sim.fund == atoms("45")
    assert sim.size(ids["xena"], BTC) == 1000
    assert sim.wallet(ids["xena"]) == atoms("100000") - atoms("1.77")
    assert not sim.of_type(evs, "adl")
    (liq,) = sim.of_type(evs, "liquidation")
    assert liq.insurance_fund_delta_atoms == -atoms("55")
    assert liq.bankruptcy_price_e8 == e8("8905")
    assert (liq.book_fill_lots, liq.adl_lots) == (1000, 0)
    (trade,) = sim.of_type(evs, "trade")
    assert (trade.price_ticks, trade.taker_account_id, trade.taker_fee_atoms) == (88500, 0, 0)


def test_liquidation_when_fund_is_zero_bid_below_bankruptcy_untouched_and_adl_at_bankruptcy() -> None:
    # Same, fund 0: the sell limit is the bankruptcy price 8905; the 8850 bid is not hit.
    # Sam (short 1 @10000, maker fee 2) is deleveraged at 8905: realized 1095.
    sim = Sim()
    ids = _single_long(sim, bid="8850")
    evs = sim.mark(BTC, 8940)
    assert not sim.of_type(evs, "trade")
    assert sim.fund == 0
    assert sim.size(ids["xena"], BTC) == 0
    (adl,) = sim.of_type(evs, "adl")
    assert (adl.counterparty_account_id, adl.qty_lots, adl.price_e8) == (ids["sam"], 1000, e8("8905"))
    assert sim.wallet(ids["sam"]) == atoms("100000") - atoms("2") + atoms("1095")


def test_liquidation_when_fill_beats_bankruptcy_price_fund_gains_the_difference() -> None:
    # Bid 8920 > bankruptcy 8905: fund sells there, realized +15.
    sim = Sim()
    ids = _single_long(sim, bid="8920")
    evs = sim.mark(BTC, 8940)
    assert sim.fund == atoms("15")
    (liq,) = sim.of_type(evs, "liquidation")
    assert liq.insurance_fund_delta_atoms == atoms("15")
    fund_events = sim.of_type(evs, "insurance_fund_changed")
    assert [(e.balance_atoms, e.delta_atoms) for e in fund_events] == [(atoms("15"), atoms("15"))]
    assert sim.size(ids["xena"], BTC) == 1000


def test_cross_margin_when_eth_crash_wipes_account_equity_split_by_maintenance_and_adl_cascades() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    sim.mark(ETH, 1000)
    ids = {
        "carol": sim.account(100, {BTC: 50}),  # thin BTC short
        "bob": sim.account(100000),
        "sam": sim.account(100000),
        "alice": sim.account(1200),
    }
    # Carol sells 0.3 BTC @10000 (maker fee 0.6 -> wallet 99.4): 0.1 to Alice, 0.2 to Bob.
    sim.limit(ids["carol"], BTC, "sell", "0.3", 10000)
    sim.limit(ids["alice"], BTC, "buy", "0.1", 10000)  # taker fee 0.5
    sim.limit(ids["bob"], BTC, "buy", "0.2", 10000)  # taker fee 1
    # Sam sells 10 ETH @1000 to Alice (Alice's taker fee 5; Sam's maker fee 2).
    sim.limit(ids["sam"], ETH, "sell", "10", 1000)
    sim.limit(ids["alice"], ETH, "buy", "10", 1000)
    assert sim.wallet(ids["alice"]) == atoms("1194.5")
    assert sim.wallet(ids["carol"]) == atoms("99.4")

    # ETH mark 800: Alice equity = 1194.5 + 0 (BTC) - 2000 (ETH) = -805.5.
    # MM_BTC = 1000 * 0.5% = 5, MM_ETH = 8000 * 0.5% = 40, total 45.
    # Shares of E by MM (BTC first, toward zero; ETH the remainder):
    #   BTC: -805.5 * 5/45 = -89.5,  ETH: -805.5 + 89.5 = -716
    # BV_BTC = 1000 + 89.5 = 1089.5 -> bankruptcy 10895 (above the BTC mark 10000!)
    # BV_ETH = 8000 + 716  = 8716   -> bankruptcy 871.6
    # BTC: fund (0) cannot buy below... empty book -> ADL: Carol buys back 0.1 at 1089.5:
    #   realized = 1000 - 1089.5 = -89.5 -> wallet 9.9; left short 0.2 @10000 at mark 10000:
    #   equity 9.9 < MM 2000 * 0.5% = 10 -> Carol is liquidated in the next round (cascade).
    # Carol: E = 9.9, BV = -2000 - 9.9 = -2009.9 -> bankruptcy 10049.5; ADL against Bob's long
    #   0.2: Bob sells at 2009.9, realized +9.9.
    # ETH: Sam buys back 10 at 8716: realized 10000 - 8716 = 1284.
    evs = sim.mark(ETH, 800)
    liqs = sim.of_type(evs, "liquidation")
    assert [(e.account_id, e.symbol, e.qty_lots, e.bankruptcy_price_e8, e.equity_before_atoms) for e in liqs] == [
        (ids["alice"], BTC, 100, e8("10895"), -atoms("805.5")),
        (ids["alice"], ETH, 1000, e8("871.6"), -atoms("805.5")),
        (ids["carol"], BTC, -200, e8("10049.5"), atoms("9.9")),
    ]
    adl = sim.of_type(evs, "adl")
    assert [
        (e.symbol, e.liquidated_account_id, e.counterparty_account_id, e.side, e.qty_lots, e.realized_pnl_atoms, e.position_after_lots, e.rank)
        for e in adl
    ] == [
        (BTC, ids["alice"], ids["carol"], "short", 100, -atoms("89.5"), -200, 1),
        (ETH, ids["alice"], ids["sam"], "short", 1000, atoms("1284"), 0, 1),
        (BTC, ids["carol"], ids["bob"], "long", 200, atoms("9.9"), 0, 1),
    ]
    assert sim.wallet(ids["alice"]) == 0 and sim.wallet(ids["carol"]) == 0
    assert sim.wallet(ids["bob"]) == atoms("100000") - atoms("1") + atoms("9.9")
    assert sim.wallet(ids["sam"]) == atoms("100000") - atoms("2") + atoms("1284")
    assert sim.fund == 0
    for aid in ids.values():
        assert sim.size(aid, BTC) == 0 and sim.size(aid, ETH) == 0


def test_cross_margin_when_two_positions_shares_round_toward_zero_remainder_to_last_symbol() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    sim.mark(ETH, 1000)
    s1 = sim.account(100000)
    s2 = sim.account(100000)
    alice = sim.account(1000, {BTC: 20, ETH: 20})
    sim.limit(s1, BTC, "sell", "0.5", 10000)
    sim.limit(alice, BTC, "buy", "0.5", 10000)  # fee 2.5
    sim.limit(s2, ETH, "sell", "5", 1000)
    sim.limit(alice, ETH, "buy", "5", 1000)  # fee 2.5 -> wallet 995
    sim.mark(BTC, 9000)  # equity 495 >= MM 22.5 + 25
    # ETH 820: equity = 995 - 500 - 900 = -405; MM_BTC = 22.5, MM_ETH = 4100 * 0.5% = 20.5.
    # BTC share = trunc(-405 * 22.5 / 43) = -211.91860465 (atoms, toward zero)
    # ETH share = -405 + 211.91860465 = -193.08139535
    # BV_BTC = 4500 + 211.91860465 = 4711.91860465 -> bankruptcy 9423.8372093
    # BV_ETH = 4100 + 193.08139535 = 4293.08139535 -> bankruptcy 858.61627907
    # The two add up to 9005 = entry values 10000 - wallet 995.
    evs = sim.mark(ETH, 820)
    liqs = sim.of_type(evs, "liquidation")
    assert [(e.symbol, e.bankruptcy_value_atoms, e.bankruptcy_price_e8) for e in liqs] == [
        (BTC, atoms("4711.91860465"), e8("9423.8372093")),
        (ETH, atoms("4293.08139535"), e8("858.61627907")),
    ]
    assert sim.wallet(s1) == atoms("100000") - atoms("1") + atoms("5000") - atoms("4711.91860465")
    assert sim.wallet(s2) == atoms("100000") - atoms("1") + atoms("5000") - atoms("4293.08139535")


def test_adl_when_pro_rata_policy_shares_follow_size_and_leftover_lot_goes_to_first_in_rank() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    s1, s2, s3 = sim.account(5000), sim.account(5000), sim.account(5000)
    lee, alice = sim.account(100000), sim.account(1100)
    sim.ok(c.SetAdlPolicy(BTC, "pro_rata"))
    sim.limit(s1, BTC, "sell", "0.333", 10000)
    sim.limit(s2, BTC, "sell", "0.5", 10000)
    sim.limit(s3, BTC, "sell", "0.667", 10000)
    sim.limit(alice, BTC, "buy", "1", 10000)  # wallet 1095
    sim.limit(lee, BTC, "buy", "0.5", 10000)
    # Mark 8000: Alice equity 1095 - 2000 = -905 -> bankruptcy 8905 for 1 BTC.
    # Shorts hold 1.5 BTC, all profitable (+2000/BTC, pnl% 20% each); rank by notional/equity:
    #   s3: 5336/6332.666 = 0.84 > s2: 4000/5999 = 0.67 > s1: 2664/5665.334 = 0.47
    # Pro-rata of 1000 lots over 333/500/667: floor -> 222, 333, 444 (sum 999);
    # the leftover lot goes to the first in rank (s3): 445.
    # Values at 8905/BTC: s3 3962.725, s2 2965.365, s1 (the rest) 1976.91.
    evs = sim.mark(BTC, 8000)
    adl = sim.of_type(evs, "adl")
    assert [(e.counterparty_account_id, e.qty_lots, e.rank, e.value_atoms) for e in adl] == [
        (s3, 445, 1, atoms("3962.725")),
        (s2, 333, 2, atoms("2965.365")),
        (s1, 222, 3, atoms("1976.91")),
    ]
    assert all(e.policy == "pro_rata" for e in adl)
    # each realizes (10000 - 8905) per BTC closed: s3 487.275, s2 364.635, s1 243.09
    assert [e.realized_pnl_atoms for e in adl] == [atoms("487.275"), atoms("364.635"), atoms("243.09")]
    assert [sim.size(a, BTC) for a in (s1, s2, s3)] == [-111, -167, -222]


def test_adl_when_queue_policy_same_book_takes_from_first_in_rank_only() -> None:
    # Same book as the pro-rata case under the default queue: s3 gives up all 0.667 first,
    # then s2 0.333 of its 0.5; s1 keeps everything.
    sim = Sim()
    sim.mark(BTC, 10000)
    s1, s2, s3 = sim.account(5000), sim.account(5000), sim.account(5000)
    lee, alice = sim.account(100000), sim.account(1100)
    sim.limit(s1, BTC, "sell", "0.333", 10000)
    sim.limit(s2, BTC, "sell", "0.5", 10000)
    sim.limit(s3, BTC, "sell", "0.667", 10000)
    sim.limit(alice, BTC, "buy", "1", 10000)
    sim.limit(lee, BTC, "buy", "0.5", 10000)
    evs = sim.mark(BTC, 8000)
    assert [(e.counterparty_account_id, e.qty_lots) for e in sim.of_type(evs, "adl")] == [(s3, 667), (s2, 333)]
    assert [sim.size(a, BTC) for a in (s1, s2, s3)] == [-333, -167, 0]


def test_adl_after_many_fund_fills_closes_at_bankruptcy_value_rounded_once() -> None:
    # Alice long 1 BTC @10000 with wallet 1095.00000002: BV = 10000 - 1095.00000002
    # = 8904.99999998 (890,499,999,998 atoms), bp 8904.99999998. Mark 8940: equity 35.00000002
    # < MM 44.7. Fund 0: its sell limit is bp rounded up to the tick, 8905.0, so Xena's forty
    # 0.001 bids at 8920 all fill (40 lots, one fill each); the other 960 lots go to Sam by ADL.
    sim = Sim()
    sim.mark(BTC, 10000)
    ids = {"sam": sim.account(100000), "xena": sim.account(100000), "alice": sim.account("1100.00000002")}
    sim.limit(ids["sam"], BTC, "sell", "1", 10000)
    sim.limit(ids["alice"], BTC, "buy", "1", 10000)
    for _ in range(40):
        sim.limit(ids["xena"], BTC, "buy", "0.001", 8920)
    evs = sim.mark(BTC, 8940)
    (liq,) = sim.of_type(evs, "liquidation")
    bv = 890_499_999_998
    assert (liq.bankruptcy_value_atoms, liq.book_fill_lots, liq.adl_lots) == (bv, 40, 960)
    assert len(sim.of_type(evs, "trade")) == 40
    # The fund's 40 lots carry floor(bv * 40/1000) = floor(35,619,999,999.92) of entry,
    # attributed once over all forty fills: its gain 40 * 8.92 USD - that = 0.60000001.
    assert liq.insurance_fund_delta_atoms == 40 * 892_000_000 - 35_619_999_999 == 60_000_001
    # Sam closes the other 960 lots at the bankruptcy price: bv * 960/1000 = 854,879,999,998.08,
    # which he pays, rounded up once: 854,879,999,999. (Rounding the fund's entry down on every
    # fill instead left 854,880,000,000 for ADL: Sam paid an atom more than the bankruptcy price.)
    (adl,) = sim.of_type(evs, "adl")
    assert (adl.counterparty_account_id, adl.qty_lots, adl.value_atoms) == (ids["sam"], 960, 854_879_999_999)
    # Sam's closed entry is 960/1000 of 10000: realized = 9600 - 8548.79999999 = 1051.20000001
    assert adl.realized_pnl_atoms == 960_000_000_000 - 854_879_999_999
    assert sim.fund == 60_000_001
    assert sim.wallet(ids["alice"]) == 0 and sim.size(ids["alice"], BTC) == 0
