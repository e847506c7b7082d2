"""Hand-computed index, basis, mark-from-index and funding scenarios (SPEC §12).

BTC-PERP: tick 0.1 (price ticks = USD x 10), lot 0.001, maker 200 ppm, taker 500 ppm, MM 0.5%
below 100k notional. Basis weight 100,000 ppm (0.1), interest 100 ppm, cap 3,750 ppm, the
±500 ppm clamp. Every command is followed by check_invariants() (conservation to the atom).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest

from engine import commands as c
from engine.errors import Reject
from engine.instruments import default_instruments
from tests.scenario.harness import Sim, atoms, e8

BTC = "BTC-PERP"


def _index_sim() -> Sim:
    """BTC-PERP's mark follows its index."""
    instruments = default_instruments()
    instruments[BTC] = dataclasses.replace(instruments[BTC], mark_source="index")
    return Sim(instruments=instruments)


def _market(sim: Sim, last: str, bid: str, ask: str) -> None:
    """Index 10,000 (empty book: basis stays 0, mark = 10,000), one trade at `last`, then a
    bid and an ask resting from two other accounts."""
    sim.index(BTC, 10_000)
    assert sim.engine.marks[BTC] == 100_000
    a, b, mm1, mm2 = (sim.account(10_000) for _ in range(4))
    sim.limit(b, BTC, "sell", "0.01", last)
    sim.limit(a, BTC, "buy", "0.01", last)
    sim.limit(mm1, BTC, "buy", "0.01", bid)
    sim.limit(mm2, BTC, "sell", "0.01", ask)


# -- the mark: median(index, index + basis, last) -----------------------------------------------


def test_mark_when_index_plus_basis_is_the_middle_input() -> None:
    sim = _index_sim()
    _market(sim, last="10050", bid="9980", ask="10060")
    evs = sim.index(BTC, 10_000)
    # mid - index - basis in half ticks: 99,800 + 100,600 - 2 x 100,000 - 0 = 400
    # basis = trunc(400 x 100,000 / 2,000,000) = 20 ticks (2 USD)
    # M = median(100,000, 100,020, last 100,500) = 100,020 = index + basis -> 10,002
    (idx,) = sim.of_type(evs, "index_price_changed")
    (mark,) = sim.of_type(evs, "mark_price_changed")
    assert (idx.price_ticks, idx.basis_ticks, mark.price_ticks) == (100_000, 20, 100_020)
    assert [e.TYPE for e in evs] == ["index_price_changed", "mark_price_changed"]


def test_mark_when_index_is_the_middle_input() -> None:
    sim = _index_sim()
    _market(sim, last="10050", bid="9900", ask="9960")
    evs = sim.index(BTC, 10_000)
    # 99,000 + 99,600 - 200,000 = -1,400 half ticks; x 0.1 / 2 = -70 ticks: basis -70
    # M = median(100,000, 99,930, 100,500) = 100,000 = the index
    assert sim.engine.basis[BTC] == -70
    assert sim.of_type(evs, "mark_price_changed")[0].price_ticks == 100_000


def test_mark_when_last_trade_is_the_middle_input() -> None:
    sim = _index_sim()
    _market(sim, last="10005", bid="10040", ask="10100")
    sim.index(BTC, 10_000)
    # 100,400 + 101,000 - 200,000 = 1,400 -> basis +70 ticks
    # M = median(100,000, 100,070, last 100,050) = 100,050 = the last trade price
    assert sim.engine.basis[BTC] == 70
    assert sim.engine.marks[BTC] == 100_050


def test_mark_before_any_trade_uses_the_index_as_last() -> None:
    sim = _index_sim()
    sim.index(BTC, 10_000)
    a, b = sim.account(10_000), sim.account(10_000)
    sim.limit(a, BTC, "buy", "0.01", 10_100)  # open loss 0.01 x 100 = 1 at mark 10,000
    sim.limit(b, BTC, "sell", "0.01", 10_200)
    sim.index(BTC, 10_000)
    # mid 10,150: 101,000 + 102,000 - 200,000 = 3,000 -> basis 150 ticks
    # M = median(100,000, 100,150, last = index 100,000) = 100,000
    assert (sim.engine.basis[BTC], sim.engine.marks[BTC]) == (150, 100_000)


def test_admin_mark_on_an_index_symbol_is_refused_and_changes_nothing() -> None:
    sim = _index_sim()
    sim.index(BTC, 10_000)
    before = sim.engine.state_hash()
    (rej,) = sim.do(c.SetMarkPrice(BTC, 90_000))
    assert rej.reason == Reject.MARK_SOURCE_IS_INDEX.name
    assert sim.engine.marks[BTC] == 100_000
    sim.engine.seq -= 1
    assert sim.engine.state_hash() == before


# -- the basis EMA and the premium samples -------------------------------------------------------


def test_basis_ema_over_several_updates_truncates_toward_zero_and_holds_with_one_side_empty() -> None:
    sim = Sim()  # an admin-mark symbol keeps basis and premium samples too (for funding)
    sim.mark(BTC, 10_000)
    bidder, asker = sim.account(10_000), sim.account(10_000)
    sim.limit(bidder, BTC, "buy", "0.01", "9980")
    (ask,) = sim.of_type(sim.limit(asker, BTC, "sell", "0.01", "10061"), "order_accepted")
    # mid = (99,800 + 100,610) / 2 = 100,205 ticks: half a tick
    # u1: 200,410 - 200,000 - 0   = 410 -> 410 x 100,000 / 2,000,000 = 20.5 -> 20
    # u2: 410 - 2 x 20  = 370 -> 18.5 -> 18: basis 38
    # u3: 410 - 2 x 38  = 334 -> 16.7 -> 16: basis 54
    # u4 at index 10,030: 200,410 - 200,600 - 108 = -298 -> -14.9 -> -14 (toward zero): basis 40
    for price, want in (("10000", 20), ("10000", 38), ("10000", 54), ("10030", 40)):
        sim.index(BTC, price)
        assert sim.engine.basis[BTC] == want
    # premium samples (mid - index) / index: 3 x 410/200,000 and -190/200,600, exact
    assert sim.engine.premium_samples[BTC] == 4
    assert sim.engine.premium_sum[BTC] == 3 * Fraction(410, 200_000) + Fraction(-190, 200_600)
    # one side empty: basis and samples unchanged, the index still recorded
    sim.ok(c.CancelOrder(asker, ask.order_id))
    (idx,) = sim.of_type(sim.index(BTC, 9_000), "index_price_changed")
    assert (idx.basis_ticks, sim.engine.premium_samples[BTC], sim.engine.index[BTC]) == (40, 4, 90_000)
    # the admin mark did not move with the index
    assert sim.engine.marks[BTC] == 100_000

    # Funding from those samples: P = (3 x 0.00205 - 0.000947158...) / 4 = 104,369 / 80,240,000
    # = 0.00130071037; r - P = 0.0001 - 0.0013007 = -0.0012007, clamped to -0.0005;
    # rate = P - 0.0005 = 0.00080071037 (inside the 0.375% cap) -> rate_e8 80,071 (half-even of
    # 80,071.0369); premium_e8 = 130,071 (of 130,071.0369)
    (rate,) = sim.of_type(sim.funding(BTC), "funding_rate_changed")
    assert (rate.rate_e8, rate.premium_e8, rate.samples, rate.mark_price_ticks) == (80_071, 130_071, 4, 100_000)
    assert BTC not in sim.engine.premium_samples  # a round starts the next interval's samples


# -- funding payments ---------------------------------------------------------------------------


def _longs_and_short(sim: Sim) -> tuple[int, int, int]:
    """L1 long 0.003, L2 long 0.007, S short 0.01, all at 10,000; then mark 10,000.1."""
    sim.mark(BTC, 10_000)
    l1, l2, s = sim.account(1_000), sim.account(1_000), sim.account(1_000)
    sim.limit(s, BTC, "sell", "0.01", 10_000)
    sim.limit(l1, BTC, "buy", "0.003", 10_000)
    sim.limit(l2, BTC, "buy", "0.007", 10_000)
    sim.mark(BTC, "10000.1")
    return l1, l2, s


def test_funding_with_a_positive_rate_longs_pay_up_shorts_receive_down_residue_to_fund() -> None:
    sim = Sim()
    l1, l2, s = _longs_and_short(sim)
    wallets = {a: sim.wallet(a) for a in (l1, l2, s)}
    fund = sim.fund
    evs = sim.funding(BTC, rate_e8=12_345)  # 0.00012345 per interval
    # L1: 0.003 x 10,000.1 x 0.00012345 = 0.003703537035 USD = 370,353.7035 atoms -> pays 370,354
    # L2: 0.007 x ... = 864,158.6415 atoms -> pays 864,159
    # S:  0.01 x ...  = 1,234,512.345 atoms -> receives 1,234,512
    # residue 370,354 + 864,159 - 1,234,512 = 1 atom -> the insurance fund
    paid = {e.account_id: e.amount_atoms for e in sim.of_type(evs, "funding_paid")}
    assert paid == {l1: -370_354, l2: -864_159, s: 1_234_512}
    assert {a: sim.wallet(a) - wallets[a] for a in paid} == paid
    assert sim.fund - fund == 1
    (fund_ev,) = sim.of_type(evs, "insurance_fund_changed")
    assert (fund_ev.delta_atoms, fund_ev.reason) == (1, "funding")
    assert [sim.engine.accounts[a].positions[BTC].funding_atoms for a in (l1, l2, s)] == [-370_354, -864_159, 1_234_512]


def test_funding_with_a_negative_rate_shorts_pay_up_longs_receive_down() -> None:
    sim = Sim()
    l1, l2, s = _longs_and_short(sim)
    fund = sim.fund
    evs = sim.funding(BTC, rate_e8=-12_345)
    # S pays ceil(1,234,512.345) = 1,234,513; L1 receives floor(370,353.7035) = 370,353,
    # L2 floor(864,158.6415) = 864,158; residue 1,234,513 - 370,353 - 864,158 = 2
    paid = {e.account_id: e.amount_atoms for e in sim.of_type(evs, "funding_paid")}
    assert paid == {l1: 370_353, l2: 864_158, s: -1_234_513}
    assert sim.fund - fund == 2


def test_funding_without_samples_or_rate_charges_the_interest_rate() -> None:
    sim = Sim()
    l1, _, _ = _longs_and_short(sim)
    evs = sim.funding(BTC)
    # no premium samples: P = 0, rate = clamp(0 + clamp(0.0001 - 0)) = 0.0001 -> rate_e8 10,000
    (rate,) = sim.of_type(evs, "funding_rate_changed")
    assert (rate.rate_e8, rate.premium_e8, rate.samples) == (10_000, 0, 0)
    # L1: 0.003 x 10,000.1 x 0.0001 = 0.00300003 USD exactly = 300,003 atoms
    assert {e.account_id: e.amount_atoms for e in sim.of_type(evs, "funding_paid")}[l1] == -300_003
    assert sim.engine.funding_history[BTC][-1] == (0, 10_000)


@pytest.mark.parametrize("rate_e8", [100_000_000, -100_000_000, None])
def test_funding_given_rate_out_of_range_is_refused(rate_e8: int | None) -> None:
    sim = Sim()
    _longs_and_short(sim)
    if rate_e8 is None:
        (rej,) = sim.do(c.ApplyFunding("NOPE-PERP", 1))
        assert rej.reason == "INVALID_SYMBOL"
        return
    (rej,) = sim.do(c.ApplyFunding(BTC, rate_e8))
    assert rej.reason == Reject.INVALID_FUNDING_RATE.name


def test_funding_that_pushes_a_high_leverage_account_under_maintenance_liquidates_it() -> None:
    sim = Sim()
    sim.mark(BTC, 10_000)
    a = sim.account(100, {BTC: 50})
    b = sim.account(10_000)
    sim.limit(b, BTC, "sell", "0.1", 10_000)
    sim.limit(a, BTC, "buy", "0.1", 10_000)  # taker fee 1,000 x 0.0005 = 0.5: wallet 99.5
    # IM at 50x = 20: A withdraws down to a wallet of 20
    sim.ok(c.Withdraw(a, atoms("79.5")))
    # mark 9,850: upnl -15, equity 5 >= MM 985 x 0.5% = 4.925: not liquidated
    assert not sim.of_type(sim.mark(BTC, 9_850), "liquidation")
    evs = sim.funding(BTC, rate_e8=100_000)  # 0.1%
    # A pays 0.1 x 9,850 x 0.001 = 0.985 -> wallet 19.015, equity 4.015 < 4.925: liquidated.
    # BV = 985 - 4.015 = 980.985 -> bankruptcy price 9,809.85; the book is empty, so B (the
    # only short) is deleveraged at that price
    (liq,) = sim.of_type(evs, "liquidation")
    assert (liq.account_id, liq.equity_before_atoms, liq.bankruptcy_price_e8) == (a, atoms("4.015"), e8("9809.85"))
    (adl,) = sim.of_type(evs, "adl")
    assert (adl.counterparty_account_id, adl.qty_lots, adl.price_e8) == (b, 100, e8("9809.85"))
    # B: received 0.985 of funding; its short (entry -1,000) closed at 980.985: +19.015
    assert adl.realized_pnl_atoms == atoms("19.015")
    types = [e.TYPE for e in evs]
    assert types.index("funding_paid") < types.index("liquidation")
    assert sim.wallet(a) == 0


def test_a_crash_of_the_index_liquidates_and_deleverages() -> None:
    sim = _index_sim()
    sim.index(BTC, 10_000)
    a, b = sim.account(1_000), sim.account(10_000)
    sim.limit(b, BTC, "sell", "0.5", 10_000)
    sim.limit(a, BTC, "buy", "0.5", 10_000)  # A: IM 500, fee 2.5 -> wallet 997.5; B fee 1
    # The book is now empty, so the basis stays 0 and M = median(index, index, last 10,000) =
    # the index on the way down.
    # 9,000: equity 997.5 - 500 = 497.5 >= MM 4,500 x 0.5% = 22.5
    # 8,100: equity 47.5 >= 20.25
    for price in (9_000, 8_100):
        assert not sim.of_type(sim.index(BTC, price), "liquidation")
    # 7,500 (-25%): equity 997.5 - 1,250 = -252.5 < 0: BV = 3,750 + 252.5 = 4,002.5, bankruptcy
    # price 8,005; the fund (0) cannot buy; B buys back 0.5 at 8,005 (ADL), realizing
    # 5,000 - 4,002.5 = 997.5; its haircut against the mark: 4,002.5 - 3,750 = 252.5
    evs = sim.index(BTC, 7_500)
    assert sim.engine.marks[BTC] == 75_000
    (liq,) = sim.of_type(evs, "liquidation")
    assert (liq.account_id, liq.bankruptcy_price_e8, liq.adl_lots) == (a, e8("8005"), 500)
    (adl,) = sim.of_type(evs, "adl")
    assert (adl.counterparty_account_id, adl.realized_pnl_atoms, adl.haircut_atoms) == (
        b, atoms("997.5"), atoms("252.5")
    )
    assert sim.wallet(b) == atoms(10_000 - 1 + 997.5)


def test_state_hash_when_premium_samples_span_thousands_of_index_prices_still_works() -> None:
    # The exact premium sum's denominator is the lcm of 2 x every index seen since the last
    # round: after ~2,000 distinct prices it has more digits than repr() of an int may print.
    sim = Sim()
    sim.mark(BTC, 10_000)
    bidder, asker = sim.account(10_000), sim.account(10_000)
    sim.limit(bidder, BTC, "buy", "0.01", "9000")
    sim.limit(asker, BTC, "sell", "0.01", "11000")
    for i in range(3_000):
        sim.engine.apply(c.SetIndexPrice(BTC, 90_001 + 7 * i))
    assert sim.engine.premium_sum[BTC].denominator.bit_length() > 15_000  # > 4,300 digits
    assert len(sim.engine.state_hash()) == 64
    (rate,) = sim.of_type(sim.funding(BTC), "funding_rate_changed")
    assert rate.samples == 3_000
