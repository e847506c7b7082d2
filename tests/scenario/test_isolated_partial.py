"""Hand-computed isolated-margin and partial-liquidation scenarios (SPEC §12, §5).

BTC-PERP: tick 0.1, lot 0.001, maker 200 ppm, taker 500 ppm, liquidation band 10%.
ETH-PERP: tick 0.01, lot 0.01. Maintenance tiers (both): up to 100k notional 0.5%; up to 1M
1% - 500; up to 10M 2.5% - 15,500. Every command is followed by check_invariants()
(conservation with the isolated margins, sizes sum to zero, the fund flat and >= 0, no
cross part and no isolated position below zero equity).
"""

from __future__ import annotations

from engine import commands as c
from tests.scenario.harness import Sim, atoms, e8

BTC = "BTC-PERP"
ETH = "ETH-PERP"


def _iso(sim: Sim, aid: int, symbol: str) -> int:
    return sim.engine.accounts[aid].isolated[symbol]


def _isolated_long(sim: Sim) -> dict[str, int]:
    """Alice opens 1 BTC long at 10000, isolated, 20x; Bob sold it to her."""
    sim.mark(BTC, 10000)
    ids = {"alice": sim.account(1000, {BTC: 20}), "bob": sim.account(10000), "carol": sim.account(10000)}
    sim.ok(c.SetMarginMode(ids["alice"], BTC, c.MARGIN_ISOLATED))
    sim.limit(ids["bob"], BTC, "sell", "1", 10000)
    # Alice takes 1 @ 10000: taker fee 10000 * 0.0005 = 5, from the wallet; the opening moves
    # IM at the fill price 10000 / 20 = 500 into the margin. Wallet 1000 - 5 - 500 = 495.
    sim.limit(ids["alice"], BTC, "buy", "1", 10000)
    return ids


def test_opening_an_isolated_position_moves_its_initial_margin_out_of_the_wallet() -> None:
    sim = Sim()
    ids = _isolated_long(sim)
    alice = ids["alice"]
    assert sim.wallet(alice) == atoms(495)
    assert _iso(sim, alice, BTC) == atoms(500)
    changed = sim.of_type(sim.events, "position_margin_changed")
    assert [(e.account_id, e.delta_atoms, e.isolated_margin_atoms, e.reason) for e in changed] == [
        (alice, atoms(500), atoms(500), "trade")
    ]
    view = sim.engine.accounts[alice]
    assert view.isolated == {BTC: atoms(500)}


def test_isolated_position_liquidated_alone_wallet_untouched() -> None:
    sim = Sim()
    ids = _isolated_long(sim)
    alice, carol = ids["alice"], ids["carol"]
    # Carol bids 1 BTC at 9600 (passive at mark 10000).
    sim.limit(carol, BTC, "buy", "1", 9600)
    # Mark 9520: isolated equity = margin 500 + upnl (9520 - 10000) = 20 < MM 9520 * 0.5% = 47.6.
    # Liquidated alone: BV = q*M - E = 9520 - 20 = 9500 (for an isolated long this is always
    # entry - margin = 10000 - 500). Alice realizes 9500 - 10000 = -500 into the margin: 0.
    # The fund (balance 0) sells 1 BTC, limit >= 9500, and hits Carol's 9600: it gains
    # 1 x (9600 - 9500) = 100. Alice's wallet stays 495.
    evs = sim.mark(BTC, 9520)
    (liq,) = sim.of_type(evs, "liquidation")
    assert liq.account_id == alice
    assert liq.equity_before_atoms == atoms(20)
    assert liq.maintenance_margin_atoms == atoms("47.6")
    assert liq.bankruptcy_price_e8 == e8(9500)
    assert liq.book_fill_lots == 1000 and liq.book_fill_avg_price_e8 == e8(9600)
    assert liq.insurance_fund_delta_atoms == atoms(100)
    assert sim.wallet(alice) == atoms(495)
    assert _iso(sim, alice, BTC) == 0
    assert sim.size(alice, BTC) == 0
    assert sim.fund == atoms(100)
    (moved,) = [e for e in sim.of_type(evs, "position_margin_changed") if e.account_id == alice]
    assert (moved.delta_atoms, moved.isolated_margin_atoms, moved.reason) == (atoms(-500), 0, "liquidation")


def test_isolated_liquidation_price_is_entry_minus_margin_over_maintenance() -> None:
    sim = Sim()
    ids = _isolated_long(sim)
    from engine.views import positions_view

    (p,) = positions_view(sim.engine, ids["alice"])
    # 500 + (M - 10000) = 0.005 M  ->  M = 9500 / 0.995 = 9547.73869...; rounded half-even
    # to 8 decimals: 9547.73869347
    assert p.liquidation_price_e8 == e8("9547.73869347")
    assert (p.margin_mode, p.isolated_margin_atoms) == ("isolated", atoms(500))
    sim.mark(BTC, "9547.8")  # just above: equity 47.8 >= MM 47.739
    assert sim.size(ids["alice"], BTC) == 1000
    sim.mark(BTC, "9547.7")  # equity 47.7 < MM 47.7385
    assert sim.size(ids["alice"], BTC) == 0


def test_cross_part_liquidated_isolated_position_kept() -> None:
    sim = Sim()
    ids = _isolated_long(sim)
    alice, bob = ids["alice"], ids["bob"]
    sim.mark(ETH, 1000)
    sim.ok(c.Deposit(alice, atoms(600)))  # wallet 495 + 600 = 1095
    sim.limit(bob, ETH, "sell", "10", 1000)
    # Alice buys 10 ETH @ 1000 cross at 10x: IM 1000, fee 10000 * 0.0005 = 5 -> wallet 1090.
    sim.limit(alice, ETH, "buy", "10", 1000)
    assert sim.wallet(alice) == atoms(1090)
    # ETH mark 890: cross equity = 1090 + 10 x (890 - 1000) = -10 < cross MM 8900 x 0.5% = 44.5.
    # (The isolated BTC part, margin 500, is not part of it.) BV = 8900 - (-10) = 8910,
    # bankruptcy price 891. No bids: the fund's order fills nothing, ADL closes Bob's short
    # 10 @ 1000 at 891: Bob realizes 10000 - 8910 = 1090. Alice's wallet: 1090 + (8910 - 10000) = 0.
    bob_wallet = sim.wallet(bob)
    evs = sim.mark(ETH, 890)
    (liq,) = sim.of_type(evs, "liquidation")
    assert (liq.account_id, liq.symbol, liq.equity_before_atoms) == (alice, ETH, atoms(-10))
    assert liq.bankruptcy_price_e8 == e8(891)
    (adl,) = sim.of_type(evs, "adl")
    assert (adl.counterparty_account_id, adl.qty_lots, adl.realized_pnl_atoms) == (bob, 1000, atoms(1090))
    assert sim.wallet(bob) == bob_wallet + atoms(1090)
    assert sim.wallet(alice) == 0
    # the isolated BTC position is untouched: same size, same margin
    assert sim.size(alice, BTC) == 1000
    assert _iso(sim, alice, BTC) == atoms(500)
    # The fund paid the 10 of negative equity? No: ADL at the bankruptcy price covers it
    # (Bob closes at 891 instead of the mark 890: haircut 10 x 1 = 10).
    assert adl.haircut_atoms == atoms(10)
    assert sim.fund == 0


def test_closing_an_isolated_position_returns_margin_plus_pnl() -> None:
    sim = Sim()
    ids = _isolated_long(sim)
    alice, carol = ids["alice"], ids["carol"]
    sim.mark(BTC, 10400)
    sim.limit(carol, BTC, "buy", "1", 10400)
    # Alice sells 1 @ 10400 (taker): realized +400, fee 10400 x 0.0005 = 5.2, and the close
    # returns the whole margin 500: wallet 495 + 400 - 5.2 + 500 = 1389.8.
    evs = sim.limit(alice, BTC, "sell", "1", 10400)
    assert sim.size(alice, BTC) == 0
    assert _iso(sim, alice, BTC) == 0
    assert sim.wallet(alice) == atoms("1389.8")
    (moved,) = [e for e in sim.of_type(evs, "position_margin_changed") if e.account_id == alice]
    assert (moved.delta_atoms, moved.wallet_balance_atoms) == (atoms(-500), atoms("1389.8"))


def test_partial_close_releases_its_share_of_the_margin() -> None:
    sim = Sim()
    ids = _isolated_long(sim)
    alice, carol = ids["alice"], ids["carol"]
    sim.limit(carol, BTC, "buy", "0.4", 10000)
    # Alice sells 0.4 @ 10000: realized 0, fee 4000 x 0.0005 = 2 from the wallet (493); the
    # closed part's share of the margin, floor(500 x 0.4 / 1) = 200, goes back to the wallet:
    # margin 300 for the 0.6 left, wallet 693.
    sim.limit(alice, BTC, "sell", "0.4", 10000)
    assert _iso(sim, alice, BTC) == atoms(300)
    assert sim.wallet(alice) == atoms(693)


def test_position_margin_add_and_remove() -> None:
    sim = Sim()
    ids = _isolated_long(sim)
    alice = ids["alice"]
    # add 200: wallet 495 -> 295, margin 700
    sim.ok(c.AdjustPositionMargin(alice, BTC, atoms(200)))
    assert (sim.wallet(alice), _iso(sim, alice, BTC)) == (atoms(295), atoms(700))
    # more than available (295) is refused, nothing changes
    (rej,) = sim.do(c.AdjustPositionMargin(alice, BTC, atoms(296)))
    assert rej.reason == "INSUFFICIENT_BALANCE"
    # remove down to the initial margin at the mark: 1 x 10000 / 20 = 500 -> at most 200
    (rej,) = sim.do(c.AdjustPositionMargin(alice, BTC, atoms("-200.00000001")))
    assert rej.reason == "INSUFFICIENT_MARGIN"
    sim.ok(c.AdjustPositionMargin(alice, BTC, atoms(-200)))
    assert (sim.wallet(alice), _iso(sim, alice, BTC)) == (atoms(495), atoms(500))
    # cross symbol, no position, zero amount
    assert sim.do(c.AdjustPositionMargin(alice, ETH, atoms(1)))[0].reason == "NOT_ISOLATED"
    sim.ok(c.SetMarginMode(alice, ETH, c.MARGIN_ISOLATED))
    assert sim.do(c.AdjustPositionMargin(alice, ETH, atoms(1)))[0].reason == "NO_POSITION"
    assert sim.do(c.AdjustPositionMargin(alice, BTC, 0))[0].reason == "INVALID_AMOUNT"


def test_margin_mode_changes_only_when_flat_and_without_orders() -> None:
    sim = Sim()
    ids = _isolated_long(sim)
    alice, bob = ids["alice"], ids["bob"]
    assert sim.do(c.SetMarginMode(alice, BTC, c.MARGIN_CROSS))[0].reason == "POSITION_OR_ORDERS_OPEN"
    sim.limit(bob, BTC, "buy", "0.1", 9000)
    assert sim.do(c.SetMarginMode(bob, BTC, c.MARGIN_ISOLATED))[0].reason == "POSITION_OR_ORDERS_OPEN"
    carol = ids["carol"]
    assert sim.do(c.SetMarginMode(carol, BTC, "portfolio"))[0].reason == "INVALID_MARGIN_MODE"
    (changed,) = sim.ok(c.SetMarginMode(carol, BTC, c.MARGIN_ISOLATED))
    assert (changed.TYPE, changed.mode) == ("margin_mode_changed", "isolated")
    sim.ok(c.SetMarginMode(carol, BTC, c.MARGIN_CROSS))
    assert BTC not in sim.engine.accounts[carol].isolated


def test_isolated_order_reserves_only_what_it_adds() -> None:
    sim = Sim()
    ids = _isolated_long(sim)
    alice = ids["alice"]
    # A resting isolated buy of 0.5 @ 9000 needs IM(1.5) - IM(1) at the mark from the cross
    # wallet: 15000/20 - 10000/20 = 250 (the position's 500 is already set aside).
    from engine.risk import available_atoms

    before = available_atoms(sim.engine.accounts[alice], sim.engine.instruments, sim.engine.marks)
    assert before == atoms(495)
    sim.limit(alice, BTC, "buy", "0.5", 9000)
    after = available_atoms(sim.engine.accounts[alice], sim.engine.instruments, sim.engine.marks)
    assert after == atoms(245)
    # a reduce-side order adds nothing: sell 1 @ 11000 keeps max(|1+0.5|, |1-1|) = 1.5
    sim.limit(alice, BTC, "sell", "1", 11000)
    assert available_atoms(sim.engine.accounts[alice], sim.engine.instruments, sim.engine.marks) == atoms(245)


def test_funding_is_paid_from_the_isolated_margin() -> None:
    sim = Sim()
    ids = _isolated_long(sim)
    alice = ids["alice"]
    # rate 0.001 (100,000 e8): the long pays 1 x 10000 x 0.001 = 10 from its margin
    evs = sim.funding(BTC, 100_000)
    assert _iso(sim, alice, BTC) == atoms(490)
    assert sim.wallet(alice) == atoms(495)
    (moved,) = [e for e in sim.of_type(evs, "position_margin_changed") if e.account_id == alice]
    assert (moved.delta_atoms, moved.reason) == (atoms(-10), "funding")


def test_adl_ranks_an_isolated_position_by_its_own_equity() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    # Two shorts of 1 BTC @ 10000. Sam is isolated at 20x (margin 500), Tom cross with a
    # large wallet. At mark 9000 both have upnl +1000 (pnl% 10%); effective leverage =
    # notional / equity: Sam 9000 / (500 - 5... ) is far higher than Tom's, so Sam is first.
    sam = sim.account(1000, {BTC: 20})
    tom = sim.account(100_000)
    longs = sim.account(100_000)
    sim.ok(c.SetMarginMode(sam, BTC, c.MARGIN_ISOLATED))
    sim.limit(longs, BTC, "buy", "2", 10000)
    sim.limit(tom, BTC, "sell", "1", 10000)
    sim.limit(sam, BTC, "sell", "1", 10000)
    sim.mark(BTC, 9000)
    assert sim.engine.ranking(BTC, -1) == [sam, tom]


def _tier3_long(sim: Sim, bob_bid: int) -> dict[str, int]:
    """Alice: 25 BTC long @ 50000 (notional 1.25M: tier 3), 10x; Bob bids 30 BTC at `bob_bid`."""
    sim.mark(BTC, 50000)
    ids = {"alice": sim.account(130_000), "bob": sim.account(200_000), "carol": sim.account(200_000)}
    sim.limit(ids["carol"], BTC, "sell", "25", 50000)
    # IM 1.25M / 10 = 125,000 <= 130,000; taker fee 1.25M x 0.0005 = 625 -> wallet 129,375
    sim.limit(ids["alice"], BTC, "buy", "25", 50000)
    sim.limit(ids["bob"], BTC, "buy", "30", bob_bid)
    assert sim.wallet(ids["alice"]) == atoms(129_375)
    return ids


def test_tier3_position_reduced_to_tier1_and_saved() -> None:
    sim = Sim()
    ids = _tier3_long(sim, 44900)
    alice, bob = ids["alice"], ids["bob"]
    # Mark 45000: equity = 129,375 + 25 x (45000 - 50000) = 4,375; notional 1,125,000 is in
    # tier 3: MM = 2.5% x 1,125,000 - 15,500 = 12,625 > 4,375: liquidation. No open orders.
    # Partial liquidation: keep floor(100,000 / (45000 x 0.001)) = 2,222 lots (notional
    # 99,990 <= the first tier's 100,000), so sell 25,000 - 2,222 = 22,778 lots, IOC,
    # reduce-only, limit = the band ceil(45000 x 0.9) = 40500. Fills 22.778 @ 44900 (Bob):
    #   value 1,022,732.2; closed entry 1,250,000 x 22,778 / 25,000 = 1,138,900
    #   realized -116,167.8; taker fee 511.3661 -> wallet 129,375 - 116,167.8 - 511.3661 = 12,695.8339
    # Left: 2.222 BTC, entry 111,100, upnl 99,990 - 111,100 = -11,110: equity 1,585.8339 >=
    # MM 99,990 x 0.5% = 499.95: saved, no takeover.
    evs = sim.mark(BTC, 45000)
    assert sim.of_type(evs, "liquidation") == []
    (reduced,) = sim.of_type(evs, "position_reduced")
    assert (reduced.account_id, reduced.qty_lots, reduced.filled_lots) == (alice, 22_778, 22_778)
    assert (reduced.avg_price_e8, reduced.fee_atoms) == (e8(44900), atoms("511.3661"))
    assert (reduced.size_after_lots, reduced.reason) == (2_222, "partial_liquidation")
    (order,) = [e for e in sim.of_type(evs, "order_accepted") if e.account_id == alice]
    assert (order.side, order.price_ticks, order.qty_lots, order.time_in_force, order.reduce_only) == (
        "sell", 405_000, 22_778, "IOC", True
    )
    assert sim.wallet(alice) == atoms("12695.8339")
    assert sim.size(alice, BTC) == 2_222
    assert sim.entry_value(alice, BTC) == atoms(111_100)
    assert sim.size(bob, BTC) == 22_778


def test_tier3_position_reduced_and_still_taken_over() -> None:
    sim = Sim()
    ids = _tier3_long(sim, 41000)
    alice, carol = ids["alice"], ids["carol"]
    # Same, but Bob's bid is 41000 (inside the band 40500): 22.778 @ 41000 = 933,898;
    # realized 933,898 - 1,138,900 = -205,002; fee 466.949 -> wallet -76,093.949.
    # Equity = -76,093.949 - 11,110 = -87,203.949 < MM 499.95: the 2.222 BTC left are taken
    # over at BV = 99,990 - (-87,203.949) = 187,193.949 (bankruptcy price 84,245.70162016).
    # The fund (0) cannot sell that high: ADL closes Carol's short at that price; her haircut
    # is 187,193.949 - 99,990 = 87,203.949.
    evs = sim.mark(BTC, 45000)
    (reduced,) = sim.of_type(evs, "position_reduced")
    assert (reduced.filled_lots, reduced.avg_price_e8, reduced.fee_atoms) == (22_778, e8(41000), atoms("466.949"))
    (liq,) = sim.of_type(evs, "liquidation")
    assert (liq.account_id, liq.qty_lots, liq.equity_before_atoms) == (alice, 2_222, atoms("-87203.949"))
    assert liq.bankruptcy_value_atoms == atoms("187193.949")
    assert liq.bankruptcy_price_e8 == e8("84245.70162016")
    assert liq.maintenance_margin_atoms == atoms("499.95")
    (adl,) = sim.of_type(evs, "adl")
    assert (adl.counterparty_account_id, adl.qty_lots, adl.haircut_atoms) == (carol, 2_222, atoms("87203.949"))
    assert sim.wallet(alice) == 0 and sim.size(alice, BTC) == 0
    # order of events: the reduction comes before the takeover
    names = [e.TYPE for e in evs]
    assert names.index("position_reduced") < names.index("liquidation")


def test_no_partial_order_when_nothing_in_the_band_could_fill_it() -> None:
    sim = Sim()
    ids = _tier3_long(sim, 40000)  # below the band limit 40500 at mark 45000
    evs = sim.mark(BTC, 45000)
    assert sim.of_type(evs, "position_reduced") == []
    assert [e for e in sim.of_type(evs, "order_accepted") if e.account_id == ids["alice"]] == []
    (liq,) = sim.of_type(evs, "liquidation")
    assert liq.qty_lots == 25_000


def test_a_close_that_loses_more_than_its_margin_takes_the_rest_from_the_wallet() -> None:
    sim = Sim()
    ids = _isolated_long(sim)
    alice, carol = ids["alice"], ids["carol"]
    sim.ok(c.Deposit(alice, atoms(1000)))  # wallet 1495
    sim.mark(BTC, 9700)  # isolated equity 500 - 300 = 200 >= MM 48.5
    sim.limit(carol, BTC, "buy", "1", 9300)  # a bid 4.1% under the mark (inside the 5% band)
    # Alice sells 1 @ 9300: realized 9300 - 10000 = -700, fee 9300 x 0.0005 = 4.65; the close
    # returns the margin 500: the closed part nets 500 - 700 - 4.65 = -204.65, which her own
    # trade pays from the wallet: 1495 - 204.65 = 1290.35. (The pre-trade check held the open
    # loss 1 x (9700 - 9300) = 400 in reserve.)
    sim.limit(alice, BTC, "sell", "1", 9300)
    assert sim.size(alice, BTC) == 0 and _iso(sim, alice, BTC) == 0
    assert sim.wallet(alice) == atoms("1290.35")
