"""Fill settlement, reduce-only, pre-trade margin, withdrawals, leverage (SPEC §3, §4).

BTC-PERP: price_ticks = USD * 10, qty_lots = BTC * 1000, one lot at one tick = 10_000 atoms.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine import commands as c
from engine.accounts import Account, Position
from engine.errors import Reject
from engine.events import (
    LeverageChanged,
    OrderAccepted,
    OrderCanceled,
    TradeExecuted,
    WithdrawalMade,
)
from engine.risk import (
    available_atoms,
    equity_atoms,
    initial_margin_atoms,
    leverage_of,
    settle_fill,
    worst_case_lots,
)
from tests.unit.helpers import BTC, ETH, K_BTC, MARK, USD, Ex, accepted_id, of

BUY, SELL = c.BUY, c.SELL


def _acct(size: int = 0, entry: int = 0, wallet: int = 0) -> Account:
    acct = Account(1)
    acct.wallet_atoms = wallet
    if size:
        pos = Position(BTC)
        pos.size_lots, pos.entry_value_atoms = size, entry
        acct.positions[BTC] = pos
    return acct


def _v(lots: int, price: int) -> int:
    return lots * price * K_BTC


# == settle_fill =============================================================================

# size, entry, delta, value, takeover -> realized, size_after, entry_after
SETTLE_CASES = [
    # opening and increasing: no realized PnL, entry value adds up
    ("open_long", 0, 0, 10, _v(10, MARK), None, 0, 10, _v(10, MARK)),
    ("open_short", 0, 0, -10, _v(10, MARK), None, 0, -10, -_v(10, MARK)),
    ("increase_long", 10, _v(10, MARK), 5, _v(5, 120_000), None, 0, 15, _v(10, MARK) + _v(5, 120_000)),
    ("increase_short", -10, -_v(10, MARK), -5, _v(5, 90_000), None, 0, -15, -_v(10, MARK) - _v(5, 90_000)),
    # partial reduce, exact pro rata
    ("reduce_long_profit", 10, _v(10, MARK), -4, _v(4, 110_000), None, _v(4, 10_000), 6, _v(6, MARK)),
    ("reduce_short_profit", -10, -_v(10, MARK), 4, _v(4, 90_000), None, _v(4, 10_000), -6, -_v(6, MARK)),
    ("reduce_long_loss", 10, _v(10, MARK), -4, _v(4, 90_000), None, -_v(4, 10_000), 6, _v(6, MARK)),
    # partial reduce with a remainder: closed entry = ceil(entry * closed / |q|) -> realized rounds down
    ("reduce_long_rounds_down", 3, 1_000, -1, 400, None, 66, 2, 666),  # 400 - 333.3 = 66.7 -> 66
    ("reduce_short_rounds_down", -3, -1_000, 1, 300, None, 33, -2, -667),  # -300 + 333.3 = 33.3 -> 33
    ("reduce_long_2_of_3", 3, 1_000, -2, 700, None, 33, 1, 333),  # 700 - 666.7 = 33.3 -> 33
    ("reduce_short_2_of_3", -3, -1_000, 2, 700, None, -34, -1, -334),  # -700 + 666.7 = -33.3 -> -34
    # the insurance fund closing a take-over (3 lots worth 1,000): rounds the other way
    ("fund_reduce_long", 3, 1_000, -1, 400, (3, 1_000), 67, 2, 667),
    ("fund_reduce_short", -3, -1_000, 1, 300, (3, -1_000), 34, -2, -666),
    # ... cumulatively: 1 of 3 lots closed before (333 of entry gone), now the 2nd: 666 - 333
    ("fund_reduce_long_after_earlier_fill", 2, 667, -1, 400, (3, 1_000), 67, 1, 334),
    # full close
    ("close_long", 10, _v(10, MARK), -10, _v(10, 110_000), None, _v(10, 10_000), 0, 0),
    ("close_short", -10, -_v(10, MARK), 10, _v(10, 110_000), None, -_v(10, 10_000), 0, 0),
    ("close_odd_entry", 3, 1_000, -3, 999, None, -1, 0, 0),
    # flip: the rest opens at the fill price
    ("flip_long_to_short", 10, _v(10, MARK), -15, _v(15, 110_000), None, _v(10, 10_000), -5, -_v(5, 110_000)),
    ("flip_short_to_long", -10, -_v(10, MARK), 15, _v(15, 110_000), None, -_v(10, 10_000), 5, _v(5, 110_000)),
]


@pytest.mark.parametrize(
    ("size", "entry", "delta", "value", "favour", "realized", "size_after", "entry_after"),
    [row[1:] for row in SETTLE_CASES],
    ids=[row[0] for row in SETTLE_CASES],
)
def test_settle_fill_when_position_changes_realizes_only_the_reducing_part(
    size: int, entry: int, delta: int, value: int, favour: tuple[int, int] | None, realized: int, size_after: int, entry_after: int
) -> None:
    wallet0 = 1_000 * USD
    acct = _acct(size, entry, wallet0)
    got = settle_fill(acct, BTC, delta, value, takeover=favour)
    assert got == realized
    assert acct.wallet_atoms == wallet0 + realized
    assert acct.size(BTC) == size_after
    pos = acct.positions.get(BTC)
    assert (pos.entry_value_atoms if pos else 0) == entry_after
    if size_after == 0:
        assert BTC not in acct.positions  # flat positions are removed
    # conservation: wallet - entry_value moves by exactly the cash of the fill, never by rounding
    signed_value = value if delta > 0 else -value
    assert (acct.wallet_atoms - entry_after) - (wallet0 - entry) == -signed_value


def test_settle_fill_when_reduced_in_many_steps_loses_no_atom() -> None:
    acct = _acct(7, 1_000_003, 0)
    total_cash = 0
    for lots, value in [(-1, 142_000), (-2, 290_001), (-1, 140_000), (-3, 433_333)]:
        settle_fill(acct, BTC, lots, value)
        total_cash += value
    assert BTC not in acct.positions
    assert acct.wallet_atoms == total_cash - 1_000_003  # total realized = cash in - cash out


# == reduce-only =============================================================================


def _long(ex: Ex, lots: int) -> tuple[int, int]:
    """Account `a` long `lots` (bought from `b`); returns (a, b)."""
    a, b = ex.account(), ex.account()
    ex.rest(b, SELL, lots, MARK)
    ex.place(a, BUY, lots, MARK)
    assert ex.size(a) == lots
    return a, b


@pytest.mark.parametrize(
    ("position", "side"),
    [(0, BUY), (0, SELL), (5, BUY), (-5, SELL)],
    ids=["flat_buy", "flat_sell", "long_buy", "short_sell"],
)
def test_place_reduce_only_when_nothing_to_reduce_rejected(ex: Ex, position: int, side: str) -> None:
    a, b = ex.account(), ex.account()
    if position:
        ex.rest(b, SELL if position > 0 else BUY, abs(position), MARK)
        ex.place(a, BUY if position > 0 else SELL, abs(position), MARK)
    ex.reject(c.PlaceOrder(a, BTC, side, 1, MARK - 500 if side == BUY else MARK + 500, reduce_only=True), Reject.NOTHING_TO_REDUCE)


@pytest.mark.parametrize(
    ("qty", "tif", "accepted_lots", "size_after"),
    [(12, c.IOC, 5, 0), (12, c.GTC, 5, 0), (3, c.IOC, 3, 2), (5, c.FOK, 5, 0), (12, c.FOK, 5, 0)],
    ids=["ioc_cut", "gtc_cut", "ioc_inside", "fok_exact", "fok_cut"],
)
def test_place_reduce_only_when_larger_than_position_is_cut_and_never_flips(
    ex: Ex, qty: int, tif: str, accepted_lots: int, size_after: int
) -> None:
    a, _ = _long(ex, 5)
    bidder = ex.account()
    ex.rest(bidder, BUY, 20, MARK - 10)
    evs = ex.place(a, SELL, qty, MARK - 10, reduce_only=True, time_in_force=tif)
    assert of(evs, OrderAccepted)[0].qty_lots == accepted_lots
    assert sum(t.qty_lots for t in of(evs, TradeExecuted)) == accepted_lots
    assert ex.size(a) == size_after
    assert ex.open_ids(a) == set()


def test_place_reduce_only_when_resting_and_position_closes_canceled_at_once(ex: Ex) -> None:
    a, _ = _long(ex, 5)
    other_seller = ex.account()
    ro = ex.rest(a, SELL, 5, MARK + 100, reduce_only=True)
    behind = ex.rest(other_seller, SELL, 5, MARK + 100)
    # a closes the position with another order: the reduce-only order can no longer reduce
    bidder = ex.account()
    ex.rest(bidder, BUY, 5, MARK - 10)
    evs = ex.place(a, SELL, 5, MARK - 10, time_in_force=c.IOC)
    assert ex.size(a) == 0
    cancels = of(evs, OrderCanceled)
    assert [(e.order_id, e.reason, e.canceled_lots) for e in cancels] == [(ro, "reduce_only", 5)]
    assert ro not in ex.engine.books[BTC].orders
    assert ex.open_ids(a) == set()  # no longer counts toward IM or the open-order limit
    buyer = ex.account()
    evs = ex.place(buyer, BUY, 5, MARK + 100)
    trades = of(evs, TradeExecuted)
    assert [(t.maker_order_id, t.qty_lots) for t in trades] == [(behind, 5)]
    assert ex.size(a) == 0  # never opened a short


def test_place_reduce_only_when_resting_and_position_shrank_fills_only_the_rest(ex: Ex) -> None:
    a, _ = _long(ex, 5)
    ro = ex.rest(a, SELL, 5, MARK + 100, reduce_only=True)
    bidder = ex.account()
    ex.rest(bidder, BUY, 3, MARK - 10)
    ex.place(a, SELL, 3, MARK - 10, time_in_force=c.IOC)  # position now 2
    buyer = ex.account()
    evs = ex.place(buyer, BUY, 5, MARK + 100)
    assert [(t.maker_order_id, t.qty_lots) for t in of(evs, TradeExecuted)] == [(ro, 2)]
    assert [(e.order_id, e.reason, e.canceled_lots, e.filled_lots) for e in of(evs, OrderCanceled)] == [
        (ro, "reduce_only", 3, 2)
    ]
    assert ex.size(a) == 0
    assert ex.depth() == ([(MARK + 100, 3)], [])  # the buyer's rest


def test_place_fok_when_reduce_only_makers_capped_counts_only_what_they_can_fill(ex: Ex) -> None:
    a, _ = _long(ex, 5)
    ex.rest(a, SELL, 5, MARK + 100, reduce_only=True)
    bidder = ex.account()
    ex.rest(bidder, BUY, 3, MARK - 10)
    ex.place(a, SELL, 3, MARK - 10, time_in_force=c.IOC)  # position 2: the order may fill only 2
    other = ex.account()
    ex.rest(other, SELL, 2, MARK + 100)
    buyer = ex.account()
    before = ex.depth()
    evs = ex.place(buyer, BUY, 5, MARK + 100, time_in_force=c.FOK)
    assert of(evs, TradeExecuted) == []  # only 4 fillable
    assert ex.depth() == before
    evs = ex.place(buyer, BUY, 4, MARK + 100, time_in_force=c.FOK)
    assert sum(t.qty_lots for t in of(evs, TradeExecuted)) == 4


# == pre-trade margin ========================================================================

IM_10_LOTS = _v(10, MARK) // 10  # 10 lots at 10,000 USD, leverage 10: 10 USD


@pytest.mark.parametrize(
    ("deposit", "leverage", "side", "ok"),
    [
        (IM_10_LOTS, 10, BUY, True),
        (IM_10_LOTS - 1, 10, BUY, False),
        (IM_10_LOTS, 10, SELL, True),
        (IM_10_LOTS - 1, 10, SELL, False),
        (IM_10_LOTS // 2, 20, BUY, True),
        (IM_10_LOTS // 2 - 1, 20, BUY, False),
        (IM_10_LOTS * 10, 1, SELL, True),
        (IM_10_LOTS * 10 - 1, 1, SELL, False),
    ],
    ids=["buy_exact", "buy_one_atom_short", "sell_exact", "sell_one_atom_short",
         "lev20_exact", "lev20_short", "lev1_exact", "lev1_short"],
)
def test_place_when_margin_at_boundary_accepts_exact_and_rejects_one_atom_short(
    ex: Ex, deposit: int, leverage: int, side: str, ok: bool
) -> None:
    a = ex.account(deposit)
    if leverage != 10:
        ex.ok(c.SetLeverage(a, BTC, leverage))
    # IM uses the mark, not the limit price
    cmd = c.PlaceOrder(a, BTC, side, 10, MARK - 3_000 if side == BUY else MARK + 3_000)
    if ok:
        ex.rest(a, side, 10, cmd.price_ticks)
        acct = ex.engine.accounts[a]
        assert available_atoms(acct, ex.engine.instruments, ex.engine.marks) == 0
    else:
        ex.reject(cmd, Reject.INSUFFICIENT_MARGIN)


def test_place_when_opposite_side_within_worst_case_needs_no_extra_margin(ex: Ex) -> None:
    a = ex.account(IM_10_LOTS)
    ex.rest(a, BUY, 10, MARK - 100)
    # max(|0 + 10|, |0 - 10|) stays 10: accepted with available == 0
    ex.rest(a, SELL, 10, MARK + 100)
    ex.reject(c.PlaceOrder(a, BTC, SELL, 1, MARK + 100), Reject.INSUFFICIENT_MARGIN)
    ex.reject(c.PlaceOrder(a, BTC, BUY, 1, MARK - 100), Reject.INSUFFICIENT_MARGIN)
    ex.reject(c.PlaceOrder(a, ETH, BUY, 1, 299_000), Reject.INSUFFICIENT_MARGIN)  # cross margin


def _underwater_long(ex: Ex) -> int:
    """Account long 10 lots with available < 0 but above maintenance."""
    a, b = ex.account(11 * USD), ex.account()
    ex.rest(b, SELL, 10, MARK)
    ex.place(a, BUY, 10, MARK)  # taker fee 0.05 USD: wallet 10.95
    ex.mark(95_000)  # upnl -5: equity 5.95, IM 9.5, MM 0.475
    eng = ex.engine
    acct = eng.accounts[a]
    assert available_atoms(acct, eng.instruments, eng.marks) < 0
    assert ex.size(a) == 10
    return a


@pytest.mark.parametrize(
    ("orders", "ok"),
    [
        ([(SELL, 5)], True),  # worst case stays |10|
        ([(SELL, 20)], True),  # max(|10|, |10 - 20|) = 10: not raised
        ([(SELL, 21)], False),  # |10 - 21| = 11: raised
        ([(BUY, 1)], False),  # |10 + 1| = 11
        ([(SELL, 5), (SELL, 15)], True),
        ([(SELL, 5), (SELL, 16)], False),
    ],
    ids=["reduce_half", "reduce_to_flip_even", "flip_beyond", "add", "two_sells_even", "two_sells_beyond"],
)
def test_place_when_available_negative_accepts_only_orders_not_raising_worst_case(
    ex: Ex, orders: list[tuple[str, int]], ok: bool
) -> None:
    a = _underwater_long(ex)
    *first, last = orders
    for side, qty in first:
        ex.rest(a, side, qty, 200_000 if side == SELL else 50_000)
    side, qty = last
    cmd = c.PlaceOrder(a, BTC, side, qty, 200_000 if side == SELL else 50_000)
    if ok:
        ex.rest(a, side, qty, cmd.price_ticks)
    else:
        ex.reject(cmd, Reject.INSUFFICIENT_MARGIN)


def test_amend_when_raising_worst_case_without_margin_rejected_lowering_accepted(ex: Ex) -> None:
    a = _underwater_long(ex)
    oid = ex.rest(a, SELL, 20, 200_000)
    ex.reject(c.AmendOrder(a, oid, qty_lots=21), Reject.INSUFFICIENT_MARGIN)
    ex.ok(c.AmendOrder(a, oid, qty_lots=15))
    ex.ok(c.AmendOrder(a, oid, price_ticks=190_000))  # same quantity: worst case unchanged


@pytest.mark.parametrize(
    ("size", "buys", "sells", "worst"),
    [(0, 0, 0, 0), (10, 0, 0, 10), (10, 5, 0, 15), (10, 0, 25, 15), (-10, 25, 0, 15), (-10, 5, 5, 15), (3, 4, 4, 7)],
    ids=["flat", "long", "long_buys", "long_big_sells", "short_big_buys", "short_both", "both_sides"],
)
def test_worst_case_lots_when_orders_on_both_sides_takes_the_larger(size: int, buys: int, sells: int, worst: int) -> None:
    assert worst_case_lots(size, buys, sells) == worst


def test_initial_margin_when_computed_rounds_up_per_symbol(ex: Ex) -> None:
    a = ex.account()
    ex.ok(c.SetLeverage(a, BTC, 7))
    ex.rest(a, BUY, 1, MARK - 1)  # 1 lot at 10,000: 1e9 atoms / 7 = 142,857,142.86
    eng = ex.engine
    acct = eng.accounts[a]
    assert initial_margin_atoms(acct, eng.instruments, eng.marks) == 142_857_143
    assert leverage_of(acct, eng.instruments[BTC]) == 7
    assert leverage_of(acct, eng.instruments[ETH]) == 10  # default


# == withdrawals =============================================================================


def test_withdraw_when_open_orders_hold_margin_allows_only_available(ex: Ex) -> None:
    a = ex.account(10 * USD)
    ex.rest(a, BUY, 5, MARK - 100)  # IM 5 USD
    ex.reject(c.Withdraw(a, 5 * USD + 1), Reject.INSUFFICIENT_BALANCE)
    (w,) = of(ex.ok(c.Withdraw(a, 5 * USD)), WithdrawalMade)
    assert (w.amount_atoms, w.wallet_balance_atoms) == (5 * USD, 5 * USD)
    ex.reject(c.Withdraw(a, 1), Reject.INSUFFICIENT_BALANCE)
    assert ex.engine.withdrawals_atoms == 5 * USD


def test_withdraw_when_unrealized_profit_exceeds_wallet_never_goes_below_zero(ex: Ex) -> None:
    a, b = ex.account(1_000 * USD), ex.account()
    ex.rest(b, SELL, 10, MARK)
    ex.place(a, BUY, 10, MARK)
    ex.mark(200_000)  # upnl +100 USD, IM 20 USD
    eng = ex.engine
    acct = eng.accounts[a]
    wallet = acct.wallet_atoms
    assert available_atoms(acct, eng.instruments, eng.marks) > wallet
    ex.reject(c.Withdraw(a, wallet + 1), Reject.INSUFFICIENT_BALANCE)
    ex.ok(c.Withdraw(a, wallet))
    assert acct.wallet_atoms == 0
    assert equity_atoms(acct, eng.instruments, eng.marks) == _v(10, 100_000)


def test_withdraw_when_position_underwater_limited_by_available(ex: Ex) -> None:
    a = _underwater_long(ex)
    ex.reject(c.Withdraw(a, 1), Reject.INSUFFICIENT_BALANCE)


@pytest.mark.parametrize("aid", [0, 999], ids=["insurance_fund", "unknown"])
def test_withdraw_when_account_not_a_trader_rejected(ex: Ex, aid: int) -> None:
    ex.reject(c.Withdraw(aid, 1), Reject.ACCOUNT_NOT_FOUND)


# == leverage ================================================================================


@pytest.mark.parametrize(
    ("leverage", "reason"),
    [(1, None), (10, None), (50, None), (0, Reject.INVALID_LEVERAGE), (-3, Reject.INVALID_LEVERAGE), (51, Reject.INVALID_LEVERAGE)],
    ids=["one", "ten", "max", "zero", "negative", "above_max"],
)
def test_set_leverage_when_flat_accepts_one_to_max(ex: Ex, leverage: int, reason: Reject | None) -> None:
    a = ex.account()
    cmd = c.SetLeverage(a, BTC, leverage)
    if reason is None:
        (changed,) = of(ex.ok(cmd), LeverageChanged)
        assert (changed.account_id, changed.symbol, changed.leverage) == (a, BTC, leverage)
        assert ex.engine.accounts[a].leverage[BTC] == leverage
    else:
        ex.reject(cmd, reason)


@pytest.mark.parametrize(
    ("lots", "leverage", "reason"),
    [
        (10_000, 50, None),  # 100,000 USD: still tier 1
        (10_001, 25, None),  # tier 2 allows 25
        (10_001, 26, Reject.LEVERAGE_TOO_HIGH_FOR_POSITION),
        (100_001, 10, None),  # tier 3 allows 10
        (100_001, 11, Reject.LEVERAGE_TOO_HIGH_FOR_POSITION),
        (100_001, 51, Reject.INVALID_LEVERAGE),
    ],
    ids=["tier1_edge_50", "tier2_25", "tier2_26", "tier3_10", "tier3_11", "above_instrument_max"],
)
def test_set_leverage_when_position_in_tier_capped_by_tier(ex: Ex, lots: int, leverage: int, reason: Reject | None) -> None:
    a, b = ex.account(), ex.account()
    ex.rest(b, SELL, lots, MARK)
    ex.place(a, BUY, lots, MARK)
    cmd = c.SetLeverage(a, BTC, leverage)
    if reason is None:
        ex.ok(cmd)
    else:
        ex.reject(cmd, reason)


@pytest.mark.parametrize("previously_set", [False, True], ids=["default", "set_before"])
def test_set_leverage_when_lowering_leaves_available_negative_rejected_and_kept(ex: Ex, previously_set: bool) -> None:
    a = ex.account(IM_10_LOTS)
    if previously_set:
        ex.ok(c.SetLeverage(a, BTC, 10))
    ex.rest(a, BUY, 10, MARK - 100)  # available exactly 0 at 10x
    ex.reject(c.SetLeverage(a, BTC, 9), Reject.INSUFFICIENT_MARGIN)
    assert (BTC in ex.engine.accounts[a].leverage) == previously_set
    ex.ok(c.SetLeverage(a, BTC, 20))  # raising frees margin
    ex.ok(c.SetLeverage(a, BTC, 10))  # and back down to exactly available == 0


@pytest.mark.parametrize(
    ("cmd_factory", "reason"),
    [
        (lambda a: c.SetLeverage(a, "DOGE-PERP", 5), Reject.INVALID_SYMBOL),
        (lambda a: c.SetLeverage(0, BTC, 5), Reject.ACCOUNT_NOT_FOUND),
        (lambda a: c.SetLeverage(999, BTC, 5), Reject.ACCOUNT_NOT_FOUND),
    ],
    ids=["unknown_symbol", "insurance_fund", "unknown_account"],
)
def test_set_leverage_when_target_invalid_rejected(ex: Ex, cmd_factory: Any, reason: Reject) -> None:
    a = ex.account()
    ex.reject(cmd_factory(a), reason)


def test_place_when_leverage_raised_accepts_larger_order(ex: Ex) -> None:
    a = ex.account(IM_10_LOTS)
    ex.reject(c.PlaceOrder(a, BTC, BUY, 20, MARK - 100), Reject.INSUFFICIENT_MARGIN)
    ex.ok(c.SetLeverage(a, BTC, 20))
    oid = accepted_id(ex.place(a, BUY, 20, MARK - 100))
    assert oid in ex.engine.books[BTC].orders


# -- ADL value split (SPEC §6: "value split by quantity, exact to the atom") -------------------


def test_split_value_when_many_counterparties_each_share_is_within_one_atom() -> None:
    from fractions import Fraction

    from engine.adl import split_value

    # an audit's case: 84 lots worth 69,608,666,667 atoms against twelve shorts of 7 lots;
    # the remainder-to-the-last rule put 2.75 atoms too much on the last one
    for total, parts in (
        (69_608_666_667, [7] * 12),
        (69_608_666_667, [2] * 40 + [4]),
        (-1_000_000_007, [1, 5, 3, 3, 1]),  # negative: a short taken over below zero
        (10, [3]),
    ):
        shares = split_value(total, sum(parts), parts)
        assert sum(shares) == total
        for share, lots in zip(shares, parts, strict=True):
            assert abs(share - Fraction(total * lots, sum(parts))) < 1, (share, lots)
