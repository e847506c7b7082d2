"""Hand-computed scenarios for the version 2 risk rules (SPEC §3 open loss, price band, order
size; §5 step 5 bad debt; §6 haircut; §8 liquidation fields).

Units in comments are USD, BTC and ETH. BTC-PERP: tick 0.1, lot 0.001; ETH-PERP: tick 0.01,
lot 0.01. Maker 200 ppm, taker 500 ppm, MM 0.5% below 100k notional. Every command is
followed by check_invariants(): conservation with bad debt, nobody below zero equity.
"""

from __future__ import annotations

from engine import commands as c
from engine.risk import available_atoms
from tests.scenario.harness import Sim, atoms, e8

BTC = "BTC-PERP"
ETH = "ETH-PERP"


def _available(sim: Sim, aid: int) -> int:
    return available_atoms(sim.engine.accounts[aid], sim.engine.instruments, sim.engine.marks)


def _rejection(evs: list, reason: str) -> str:
    (rej,) = evs
    assert rej.reason == reason, rej
    return rej.message


# -- SPEC §3: open loss -------------------------------------------------------------------


def test_resting_buy_above_mark_when_placed_counts_its_open_loss_in_available() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    eve = sim.account(1000)
    # Buy 0.1 @10400 rests in an empty book (inside the 5% band: at most 10500).
    # IM = 0.1 x 10000 / 10 = 100; open loss = 0.1 x (10400 - 10000) = 40.
    # available = 1000 - 100 - 40 = 860
    sim.limit(eve, BTC, "buy", "0.1", 10400)
    assert _available(sim, eve) == atoms(860)
    # withdrawals stop at available: 860.00000001 is refused, 860 goes through
    _rejection(sim.do(c.Withdraw(eve, atoms("860.00000001"))), "INSUFFICIENT_BALANCE")
    sim.ok(c.Withdraw(eve, atoms(860)))
    assert _available(sim, eve) == 0
    # One more lot at the mark raises the worst case by 0.001: IM + 0.001 x 10000 / 10 = 1.
    msg = _rejection(sim.do(c.PlaceOrder(eve, BTC, c.BUY, 1, sim.ticks(BTC, 10000))), "INSUFFICIENT_MARGIN")
    assert msg == "order requires 1 USD of margin (initial margin 1 + open loss 0), available 0 USD"
    # Mark 10200: IM = 0.1 x 10200 / 10 = 102, open loss = 0.1 x 200 = 20, equity 140 (flat):
    # available = 140 - 102 - 20 = 18
    sim.mark(BTC, 10200)
    assert _available(sim, eve) == atoms(18)


def test_market_buy_when_placed_is_valued_at_its_band_limit() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    maker = sim.account(100000)
    sim.limit(maker, BTC, "sell", "0.1", 10000)
    frank, gina = sim.account(70), sim.account(100)
    # Market buy 0.05: IM = 0.05 x 10000 / 10 = 50; valued at its market-band limit
    # floor(10000 x 1.05) = 10500: open loss 0.05 x 500 = 25. Needs 75.
    market = c.PlaceOrder(frank, BTC, c.BUY, 50, None, c.MARKET)
    msg = _rejection(sim.do(market), "INSUFFICIENT_MARGIN")
    assert msg == "order requires 75 USD of margin (initial margin 50 + open loss 25), available 70 USD"
    # Gina has 100 >= 75: accepted, and it fills at 10000 (the open loss was a bound, not a cost)
    evs = sim.ok(c.PlaceOrder(gina, BTC, c.BUY, 50, None, c.MARKET))
    (trade,) = sim.of_type(evs, "trade")
    assert trade.price_ticks == sim.ticks(BTC, 10000)


def test_amend_when_it_moves_a_buy_through_the_mark_adds_open_loss() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    hal = sim.account(120)
    # Bid 0.1 @9900: IM 100, open loss 0 -> available 20
    (acc,) = sim.of_type(sim.limit(hal, BTC, "buy", "0.1", 9900), "order_accepted")
    assert _available(sim, hal) == atoms(20)
    # Amend to 10300: IM unchanged, open loss 0.1 x 300 = 30 > 20
    msg = _rejection(sim.do(c.AmendOrder(hal, acc.order_id, sim.ticks(BTC, 10300))), "INSUFFICIENT_MARGIN")
    assert msg == "order requires 30 USD of margin (initial margin 0 + open loss 30), available 20 USD"
    # ...to 10200: open loss 20 = available: accepted, available 0
    sim.ok(c.AmendOrder(hal, acc.order_id, sim.ticks(BTC, 10200)))
    assert _available(sim, hal) == 0


# -- SPEC §3: price band and order size ------------------------------------------------------


def test_bid_far_above_mark_when_placed_is_refused_so_two_accounts_cannot_mint_money() -> None:
    """Issue finding 1: X (deposit 100) bid 0.01 @1,000,000,000 at mark 50,000, Y sold into it
    and withdrew 9,000,000; ADL then closed an innocent short at the bankruptcy price."""
    sim = Sim()
    sim.mark(BTC, 50000)
    x = sim.account(100)
    msg = _rejection(
        sim.do(c.PlaceOrder(x, BTC, c.BUY, 10, sim.ticks(BTC, 1_000_000_000))), "PRICE_OUT_OF_BAND"
    )
    # band limit = floor(50000 x 1.05) = 52500
    assert msg == "buy price 1000000000 is above the band limit 52500 (mark 50000 + 5%)"
    # the edge itself is inside; one tick above is not
    sim.limit(x, BTC, "buy", "0.001", 52500)
    _rejection(sim.do(c.PlaceOrder(x, BTC, c.BUY, 1, sim.ticks(BTC, "52500.1"))), "PRICE_OUT_OF_BAND")
    # a passive order far from the mark is allowed: a sell at 1,000,000,000
    sim.limit(sim.account(100000), BTC, "sell", "0.001", 1_000_000_000)
    # sells at least ceil(50000 x 0.95) = 47500
    _rejection(sim.do(c.PlaceOrder(x, BTC, c.SELL, 1, sim.ticks(BTC, "47499.9"))), "PRICE_OUT_OF_BAND")


def test_order_when_larger_than_limits_is_refused_order_too_large() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    whale = sim.account(100_000_000)
    # 1,000.001 BTC > max_order_qty 1,000 BTC
    _rejection(sim.do(c.PlaceOrder(whale, BTC, c.BUY, 1_000_001, sim.ticks(BTC, 9000))), "ORDER_TOO_LARGE")
    # ETH at 60,000: 1,000 ETH = 60,000,000 USD > max_order_notional 50,000,000
    sim.mark(ETH, 60000)
    _rejection(sim.do(c.PlaceOrder(whale, ETH, c.BUY, 100_000, sim.ticks(ETH, 59000))), "ORDER_TOO_LARGE")
    # 1,000 BTC at 10,000 = 10,000,000 USD: inside both limits and exactly at the last tier's
    # notional (allowed); one lot more in worst case is past it: RISK_LIMIT_EXCEEDED
    sim.ok(c.PlaceOrder(whale, BTC, c.BUY, 1_000_000, sim.ticks(BTC, 9000)))
    _rejection(sim.do(c.PlaceOrder(whale, BTC, c.BUY, 1, sim.ticks(BTC, 9000))), "RISK_LIMIT_EXCEEDED")


# -- SPEC §5 step 5: bad debt ---------------------------------------------------------------


def _cross_bankruptcy(sim: Sim, b_deposit: str, b_btc: str | None) -> dict[str, int]:
    """A long 0.5 BTC and 1 ETH at 50x; B short 1 ETH (maybe long some BTC) at 50x; M made
    both markets and pulled its quotes, so the books are empty for the crash."""
    sim.mark(BTC, 10000)
    sim.mark(ETH, 2000)
    ids = {
        "m": sim.account(1_000_000),
        "a": sim.account(300, {BTC: 50, ETH: 50}),
        "b": sim.account(b_deposit, {BTC: 50, ETH: 50}),
    }
    sim.limit(ids["m"], BTC, "sell", "0.56", 10000)
    # A: taker fees 5000 x 0.0005 = 2.5 and 2000 x 0.0005 = 1 -> wallet 296.5
    sim.limit(ids["a"], BTC, "buy", "0.5", 10000, time_in_force=c.IOC)
    sim.limit(ids["b"], ETH, "sell", "1", 2000)  # B's maker fee 0.4
    sim.limit(ids["a"], ETH, "buy", "1", 2000, time_in_force=c.IOC)
    if b_btc:
        sim.limit(ids["b"], BTC, "buy", b_btc, 10000, time_in_force=c.IOC)
    sim.ok(c.CancelAllOrders(ids["m"]))
    assert sim.wallet(ids["a"]) == atoms("296.5")
    return ids


def test_adl_when_bankruptcy_price_would_leave_counterparty_negative_fill_stops_at_zero_equity() -> None:
    sim = Sim()
    ids = _cross_bankruptcy(sim, "50", None)
    assert sim.wallet(ids["b"]) == atoms("49.6")
    # BTC 9000: A equity = 296.5 + 0.5 x (9000 - 10000) = -203.5 < MM 22.5 + 10 = 32.5.
    # E splits by MM: BTC trunc(-203.5 x 22.5 / 32.5) = -140.88461538, ETH the rest -62.61538462.
    # ETH is taken over at 2000 + 62.61538462 = 2062.61538462 (above the ETH mark).
    # BTC: no bids, ADL against M (only short) at 9281.76923076: M's haircut 140.88461538.
    # ETH: no bids, ADL against B at 2062.61538462 would cost B 62.61538462 > its equity 49.6:
    # B's fill is valued at 2000 + 49.6 = 2049.6 (equity exactly 0), haircut 49.6. The fund
    # (0) owes 2062.61538462 - 2049.6 = 13.01538462: all of it bad debt.
    evs = sim.mark(BTC, 9000)
    liq_btc, liq_eth = sim.of_type(evs, "liquidation")
    adl_btc, adl_eth = sim.of_type(evs, "adl")
    assert (adl_btc.counterparty_account_id, adl_btc.price_e8, adl_btc.haircut_atoms) == (
        ids["m"], e8("9281.76923076"), atoms("140.88461538"))
    assert (adl_eth.counterparty_account_id, adl_eth.value_atoms, adl_eth.price_e8) == (
        ids["b"], atoms("2049.6"), e8("2049.6"))
    assert adl_eth.haircut_atoms == atoms("49.6") and adl_eth.policy == c.ADL_QUEUE
    assert (liq_btc.bad_debt_atoms, liq_eth.bad_debt_atoms) == (0, atoms("13.01538462"))
    assert liq_eth.bankruptcy_price_e8 == e8("2062.61538462")
    assert (liq_eth.book_fill_lots, liq_eth.book_fill_avg_price_e8, liq_eth.adl_lots) == (0, None, 100)
    assert sim.wallet(ids["b"]) == 0 and sim.size(ids["b"], ETH) == 0
    assert sim.engine.bad_debt_atoms == atoms("13.01538462") and sim.fund == 0
    # A's deficit 203.5 = M's haircut 140.88461538 + B's 49.6 + bad debt 13.01538462
    assert atoms("140.88461538") + atoms("49.6") + atoms("13.01538462") == atoms("203.5")


def test_adl_guard_when_fund_has_money_it_pays_first_and_only_the_rest_is_bad_debt() -> None:
    sim = Sim()
    ids = _cross_bankruptcy(sim, "50", None)
    sim.fund_top_up(10)
    # As above; the fund's BTC and ETH IOCs find no bids. The guard costs 13.01538462:
    # the fund pays its 10, bad debt 3.01538462.
    evs = sim.mark(BTC, 9000)
    _, liq_eth = sim.of_type(evs, "liquidation")
    assert liq_eth.insurance_fund_delta_atoms == -atoms(10)
    assert liq_eth.bad_debt_atoms == atoms("3.01538462")
    assert sim.fund == 0 and sim.wallet(ids["b"]) == 0
    (paid,) = [e for e in sim.of_type(evs, "insurance_fund_changed") if e.reason == "adl"]
    assert (paid.delta_atoms, paid.balance_atoms) == (-atoms(10), 0)


def test_adl_when_counterparty_equity_already_negative_closes_it_at_the_mark() -> None:
    sim = Sim()
    ids = _cross_bankruptcy(sim, "60", "0.06")
    # B: maker fee 0.4, taker fee 600 x 0.0005 = 0.3 -> wallet 59.3; long 0.06 BTC @10000.
    assert sim.wallet(ids["b"]) == atoms("59.3")
    # BTC 9000: A equity -203.5 (ratio -6.26) goes before B: equity 59.3 - 60 = -0.7, MM 2.7 + 10
    # (ratio -0.055). A's BTC goes to M at 9281.76923076. A's ETH: B is the only ETH short and
    # its equity -0.7 <= 0, so it closes at the ETH mark 2000 (haircut 0, realized 0); the fund
    # owes 2062.61538462 - 2000 = 62.61538462, all bad debt.
    # Then B: BV = 0.06 x 9000 + 0.7 = 540.7 (bp 9011.66666667), ADL against M: haircut 0.7.
    evs = sim.mark(BTC, 9000)
    liqs = sim.of_type(evs, "liquidation")
    assert [(e.account_id, e.symbol) for e in liqs] == [(ids["a"], BTC), (ids["a"], ETH), (ids["b"], BTC)]
    adls = sim.of_type(evs, "adl")
    assert [(e.counterparty_account_id, e.symbol, e.price_e8, e.haircut_atoms) for e in adls] == [
        (ids["m"], BTC, e8("9281.76923076"), atoms("140.88461538")),
        (ids["b"], ETH, e8("2000"), 0),
        (ids["m"], BTC, e8("9011.66666667"), atoms("0.7")),
    ]
    assert adls[1].realized_pnl_atoms == 0
    assert [e.bad_debt_atoms for e in liqs] == [0, atoms("62.61538462"), 0]
    assert sim.engine.bad_debt_atoms == atoms("62.61538462")
    assert sim.wallet(ids["b"]) == 0 and not sim.engine.accounts[ids["b"]].positions


def test_liquidation_when_partly_filled_in_the_book_reports_the_fill_average_price() -> None:
    # Alice long 1 BTC @10000, wallet 1095. Mark 8940: equity 35 < MM 44.7; BV = 8905.
    # Fund 0: sell limit 8905.0. Bids: 0.3 @8950 and 0.2 @8920 fill (avg (2685 + 1784) / 0.5
    # = 8938); the other 0.5 goes to Sam by ADL.
    sim = Sim()
    sim.mark(BTC, 10000)
    sam, xena, alice = sim.account(100000), sim.account(100000), sim.account(1100)
    sim.limit(sam, BTC, "sell", "1", 10000)
    sim.limit(alice, BTC, "buy", "1", 10000)
    sim.mark(BTC, 9000)
    sim.limit(xena, BTC, "buy", "0.3", 8950)
    sim.limit(xena, BTC, "buy", "0.2", 8920)
    evs = sim.mark(BTC, 8940)
    (liq,) = sim.of_type(evs, "liquidation")
    assert (liq.book_fill_lots, liq.book_fill_avg_price_e8, liq.adl_lots) == (500, e8(8938), 500)
    assert liq.bad_debt_atoms == 0
    # the fund sold 0.5 for 4469 against its entry 0.5 x 8905 = 4452.5: +16.5
    assert liq.insurance_fund_delta_atoms == atoms("16.5")
    (adl,) = sim.of_type(evs, "adl")
    # Sam buys back 0.5 at 8905 vs the mark 8940: haircut 0.5 x (8905 - 8940) = -17.5 (better
    # than the mark for him)
    assert adl.haircut_atoms == -atoms("17.5")
