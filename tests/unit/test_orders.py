"""Order types, matching, STP, cancel/amend, client ids, limits, fees, rejections (SPEC §4).

BTC-PERP: price_ticks = USD * 10, qty_lots = BTC * 1000, one lot at one tick = 10_000 atoms.
Mark 10,000 USD = 100_000 ticks unless a test says otherwise. Deposits are large so that
margin never interferes. Every command goes through `Ex.do`, which calls check_invariants().
"""

from __future__ import annotations

from typing import Any

import pytest

from engine import commands as c
from engine.errors import Reject
from engine.events import (
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    TradeExecuted,
)
from engine.instruments import Instrument
from tests.builds import COMPILED
from tests.unit.helpers import (
    BTC,
    ETH,
    K_BTC,
    MARK,
    Ex,
    accepted_id,
    assert_no_self_trade,
    of,
)

BUY, SELL = c.BUY, c.SELL


def _opp(side: str) -> str:
    return SELL if side == BUY else BUY


def _away(side: str, ticks: int) -> int:
    """A price `ticks` on the passive side of the mark for an order on `side`."""
    return MARK - ticks if side == BUY else MARK + ticks


def _through(side: str, ticks: int) -> int:
    """A price `ticks` through the mark (aggressive) for an order on `side`."""
    return MARK + ticks if side == BUY else MARK - ticks


SIDES = pytest.mark.parametrize("side", [BUY, SELL], ids=["buy", "sell"])


# == limit GTC ===============================================================================


@SIDES
def test_place_limit_gtc_when_book_empty_rests_at_its_price(ex: Ex, side: str) -> None:
    a = ex.account()
    price = _away(side, 100)
    evs = ex.place(a, side, 10, price)
    oid = accepted_id(evs)
    assert [type(e) for e in evs] == [OrderAccepted]
    bids, asks = ex.depth()
    assert (bids, asks) == (([(price, 10)], []) if side == BUY else ([], [(price, 10)]))
    order = ex.engine.accounts[a].open_orders[oid]
    assert (order.status, order.remaining_lots, order.filled_lots) == ("new", 10, 0)
    assert ex.engine.accounts[a].open_lots(BTC) == ((10, 0) if side == BUY else (0, 10))


@SIDES
def test_place_limit_gtc_when_partially_matched_rests_the_remainder(ex: Ex, side: str) -> None:
    maker, taker = ex.account(), ex.account()
    ex.rest(maker, _opp(side), 4, MARK)
    evs = ex.place(taker, side, 10, MARK)
    oid = accepted_id(evs)
    trades = of(evs, TradeExecuted)
    assert [(t.price_ticks, t.qty_lots, t.taker_remaining_lots) for t in trades] == [(MARK, 4, 6)]
    assert not of(evs, OrderCanceled)
    order = ex.engine.accounts[taker].open_orders[oid]
    assert (order.status, order.remaining_lots, order.filled_lots) == ("partially_filled", 6, 4)
    bids, asks = ex.depth()
    assert (bids or asks) == [(MARK, 6)]


# == IOC =====================================================================================


@SIDES
def test_place_ioc_when_partially_matchable_fills_then_cancels_rest(ex: Ex, side: str) -> None:
    maker, taker = ex.account(), ex.account()
    ex.rest(maker, _opp(side), 4, MARK)
    ex.rest(maker, _opp(side), 5, _through(_opp(side), -100))  # beyond the IOC's limit
    before = ex.depth()
    evs = ex.place(taker, side, 10, MARK, time_in_force=c.IOC)
    trades = of(evs, TradeExecuted)
    assert [(t.price_ticks, t.qty_lots) for t in trades] == [(MARK, 4)]
    (cancel,) = of(evs, OrderCanceled)
    assert (cancel.reason, cancel.canceled_lots, cancel.filled_lots) == ("ioc", 6, 4)
    assert ex.open_ids(taker) == set()
    assert ex.size(taker) == (4 if side == BUY else -4)
    # only the filled level left the book
    remaining = before[1][1:] if side == BUY else before[0][1:]
    assert ex.depth() == (([], remaining) if side == BUY else (remaining, []))


@SIDES
def test_place_ioc_when_nothing_crosses_cancels_with_zero_fills(ex: Ex, side: str) -> None:
    maker, taker = ex.account(), ex.account()
    ex.rest(maker, _opp(side), 4, _away(_opp(side), 50))
    before = ex.depth()
    evs = ex.place(taker, side, 10, MARK, time_in_force=c.IOC)
    assert not of(evs, TradeExecuted)
    (cancel,) = of(evs, OrderCanceled)
    assert (cancel.reason, cancel.canceled_lots, cancel.filled_lots) == ("ioc", 10, 0)
    assert ex.depth() == before
    assert ex.size(taker) == 0


# == FOK =====================================================================================


@pytest.mark.parametrize(
    ("qty", "limit_offset", "fills"),
    [
        (8, 100, False),  # 7 lots within the limit: not enough
        (7, 100, True),  # exactly what the two levels hold
        (5, 100, True),  # inside the first two levels
        (7, 0, False),  # only the first level (4) is within the limit
        (4, 0, True),
    ],
    ids=["qty_short", "exact_two_levels", "inside", "limit_short", "exact_one_level"],
)
@SIDES
def test_place_fok_when_liquidity_varies_fills_all_or_nothing(
    ex: Ex, side: str, qty: int, limit_offset: int, fills: bool
) -> None:
    maker, taker = ex.account(), ex.account()
    opp = _opp(side)
    ex.rest(maker, opp, 4, MARK)
    ex.rest(maker, opp, 3, _through(side, 100))  # second level, worse for the taker
    ex.rest(maker, opp, 9, _through(side, 200))  # beyond every limit used here
    before_depth, before_wallets = ex.depth(), (ex.wallet(maker), ex.wallet(taker))
    evs = ex.place(taker, side, qty, _through(side, limit_offset), time_in_force=c.FOK)
    trades = of(evs, TradeExecuted)
    if fills:
        assert sum(t.qty_lots for t in trades) == qty
        assert not of(evs, OrderCanceled)
        assert abs(ex.size(taker)) == qty
    else:
        assert trades == []
        (cancel,) = of(evs, OrderCanceled)
        assert (cancel.reason, cancel.canceled_lots, cancel.filled_lots) == ("fok", qty, 0)
        assert ex.depth() == before_depth
        assert (ex.wallet(maker), ex.wallet(taker)) == before_wallets
        assert ex.size(taker) == ex.size(maker) == 0
    assert ex.open_ids(taker) == set()


# Own orders on the path of a FOK: the pre-check must count what STP lets through.
# Book (asks, priority order): other@MARK 5, own@MARK 5, other2@MARK+100 (size in the table).
@pytest.mark.parametrize(
    ("stp", "qty", "other2_lots", "fills", "own_left"),
    [
        (c.STP_CANCEL_TAKER, 10, 5, False, True),  # would stop at own order after 5
        (c.STP_CANCEL_BOTH, 10, 5, False, True),
        (c.STP_CANCEL_MAKER, 10, 5, True, False),  # own order skipped and canceled, 5 + 5 fill
        (c.STP_CANCEL_MAKER, 10, 3, False, True),  # 5 + 3 < 10: fails, own order untouched
        (c.STP_CANCEL_TAKER, 5, 5, True, True),  # own order is beyond what is needed
        (c.STP_CANCEL_BOTH, 5, 5, True, True),
    ],
    ids=[
        "cancel_taker_blocked", "cancel_both_blocked", "cancel_maker_skips", "cancel_maker_short",
        "cancel_taker_not_reached", "cancel_both_not_reached",
    ],
)
def test_place_fok_when_own_order_in_path_counts_stp_in_precheck(
    ex: Ex, stp: str, qty: int, other2_lots: int, fills: bool, own_left: bool
) -> None:
    me, other, other2 = ex.account(), ex.account(), ex.account()
    ex.rest(other, SELL, 5, MARK)
    own = ex.rest(me, SELL, 5, MARK)
    ex.rest(other2, SELL, other2_lots, MARK + 100)
    before = ex.depth()
    evs = ex.place(me, BUY, qty, MARK + 100, time_in_force=c.FOK, stp=stp)
    assert_no_self_trade(evs)
    trades = of(evs, TradeExecuted)
    if fills:
        assert sum(t.qty_lots for t in trades) == qty
        assert ex.size(me) == qty
    else:
        assert trades == []  # never a partial fill
        assert [e.reason for e in of(evs, OrderCanceled)] == ["fok"]
        assert ex.depth() == before
        assert ex.size(me) == 0
    assert (own in ex.engine.books[BTC].orders) == own_left
    if not own_left:
        assert [(e.order_id, e.reason) for e in of(evs, OrderCanceled)] == [(own, "stp")]


# == market ==================================================================================


@SIDES
def test_place_market_when_book_beyond_band_fills_only_inside_band(ex: Ex, side: str) -> None:
    maker, taker = ex.account(), ex.account()
    # 5% band around 100_000: buy limit 105_000, sell limit 95_000 (both inclusive)
    inside, edge, outside = (
        (104_900, 105_000, 105_100) if side == BUY else (95_100, 95_000, 94_900)
    )
    for price in (inside, edge, outside):
        ex.rest(maker, _opp(side), 10, price)
    evs = ex.place(taker, side, 30, None)
    assert accepted_id(evs)
    assert of(evs, OrderAccepted)[0].order_type == c.MARKET
    trades = of(evs, TradeExecuted)
    assert [(t.price_ticks, t.qty_lots) for t in trades] == [(inside, 10), (edge, 10)]
    (cancel,) = of(evs, OrderCanceled)
    assert (cancel.reason, cancel.canceled_lots, cancel.filled_lots) == ("market", 10, 20)
    bids, asks = ex.depth()
    assert (asks if side == BUY else bids) == [(outside, 10)]
    assert ex.open_ids(taker) == set()


@pytest.mark.parametrize("book", ["empty", "only_outside_band", "only_own_side"], ids=["empty", "outside_band", "own_side"])
@SIDES
def test_place_market_when_nothing_fillable_cancels_with_zero_fills(ex: Ex, side: str, book: str) -> None:
    maker, taker = ex.account(), ex.account()
    if book == "only_outside_band":
        ex.rest(maker, _opp(side), 10, 105_100 if side == BUY else 94_900)
    elif book == "only_own_side":
        ex.rest(maker, side, 10, _away(side, 10))
    before = ex.depth()
    evs = ex.place(taker, side, 5, None)
    assert of(evs, TradeExecuted) == []
    (cancel,) = of(evs, OrderCanceled)
    assert (cancel.reason, cancel.canceled_lots, cancel.filled_lots) == ("market", 5, 0)
    assert ex.depth() == before
    assert ex.size(taker) == 0
    assert ex.open_ids(taker) == set()


def test_place_market_when_mark_moves_band_follows_mark(ex: Ex) -> None:
    maker, taker = ex.account(), ex.account()
    ex.rest(maker, SELL, 10, 110_000)
    assert of(ex.place(taker, BUY, 5, None), TradeExecuted) == []
    ex.mark(106_000)  # band now reaches 111_300
    trades = of(ex.place(taker, BUY, 5, None), TradeExecuted)
    assert [(t.price_ticks, t.qty_lots) for t in trades] == [(110_000, 5)]


# == post-only ===============================================================================


@pytest.mark.parametrize("offset", [0, 50], ids=["touching", "through"])
@SIDES
def test_place_post_only_when_crossing_rejected_would_take(ex: Ex, side: str, offset: int) -> None:
    maker, me = ex.account(), ex.account()
    ex.rest(maker, _opp(side), 5, MARK)
    ex.reject(c.PlaceOrder(me, BTC, side, 3, _through(side, offset), post_only=True), Reject.WOULD_TAKE)


@SIDES
def test_place_post_only_when_not_crossing_rests(ex: Ex, side: str) -> None:
    maker, me = ex.account(), ex.account()
    ex.rest(maker, _opp(side), 5, MARK)
    oid = ex.rest(me, side, 3, _away(side, 1), post_only=True)
    assert ex.engine.books[BTC].orders[oid].post_only


# == self-trade prevention ===================================================================

# Asks at MARK in priority order given by `makers` ("own" = the taker's own account, "other" =
# someone else, 5 lots each). The taker buys 10 @ MARK with `stp`.
STP_CASES = [
    # stp, makers, lots filled, own maker left, taker rests (lots), taker cancel reason
    (c.STP_CANCEL_TAKER, ["own", "other"], 0, True, 0, "stp"),
    (c.STP_CANCEL_MAKER, ["own", "other"], 5, False, 5, None),
    (c.STP_CANCEL_BOTH, ["own", "other"], 0, False, 0, "stp"),
    (c.STP_CANCEL_TAKER, ["other", "own"], 5, True, 0, "stp"),
    (c.STP_CANCEL_MAKER, ["other", "own"], 5, False, 5, None),
    (c.STP_CANCEL_BOTH, ["other", "own"], 5, False, 0, "stp"),
]


@pytest.mark.parametrize(
    ("stp", "makers", "filled", "own_left", "rests", "cancel_reason"),
    STP_CASES,
    ids=[f"{s}-{'_then_'.join(m)}" for s, m, *_ in STP_CASES],
)
def test_place_when_taker_meets_own_order_applies_stp_mode(
    ex: Ex, stp: str, makers: list[str], filled: int, own_left: bool, rests: int, cancel_reason: str | None
) -> None:
    me, other = ex.account(), ex.account()
    ids = {who: ex.rest(me if who == "own" else other, SELL, 5, MARK) for who in makers}
    evs = ex.place(me, BUY, 10, MARK, stp=stp)
    taker = accepted_id(evs)
    assert_no_self_trade(evs)
    trades = of(evs, TradeExecuted)
    assert sum(t.qty_lots for t in trades) == filled
    assert all(t.maker_order_id == ids["other"] for t in trades)
    assert ex.size(me) == filled
    book = ex.engine.books[BTC]
    assert (ids["own"] in book.orders) == own_left
    assert (ids["other"] in book.orders) == (filled == 0)
    cancels = {e.order_id: e.reason for e in of(evs, OrderCanceled)}
    if not own_left:
        assert cancels[ids["own"]] == "stp"
    if cancel_reason:
        assert cancels[taker] == cancel_reason
        assert taker not in book.orders
    assert (book.orders[taker].remaining_lots if taker in book.orders else 0) == rests


def test_place_when_own_orders_on_both_sides_never_trades_with_itself(ex: Ex) -> None:
    me = ex.account()
    for stp in c.STP_MODES:
        ex.rest(me, SELL, 3, MARK + 10)
        evs = ex.place(me, BUY, 3, MARK + 10, stp=stp)
        assert of(evs, TradeExecuted) == []
        assert [e.reason for e in of(evs, OrderCanceled)] == {
            c.STP_CANCEL_TAKER: ["stp"], c.STP_CANCEL_MAKER: ["stp"], c.STP_CANCEL_BOTH: ["stp", "stp"]
        }[stp]
        ex.ok(c.CancelAllOrders(me))
    assert ex.size(me) == 0
    assert ex.engine.fees_collected_atoms == 0


# == cancel ==================================================================================


def test_cancel_when_order_open_removes_it_and_second_cancel_is_rejected(ex: Ex) -> None:
    a = ex.account()
    keep = ex.rest(a, BUY, 5, MARK - 10)
    gone = ex.rest(a, BUY, 7, MARK - 10)
    evs = ex.ok(c.CancelOrder(a, gone))
    (cancel,) = of(evs, OrderCanceled)
    assert (cancel.order_id, cancel.reason, cancel.canceled_lots, cancel.filled_lots) == (gone, "user", 7, 0)
    assert ex.depth() == ([(MARK - 10, 5)], [])
    assert ex.open_ids(a) == {keep}
    assert ex.engine.accounts[a].open_lots(BTC) == (5, 0)
    assert ex.engine.find_order(a, gone).status == "canceled"
    rej = ex.reject(c.CancelOrder(a, gone), Reject.ORDER_NOT_FOUND)
    assert rej.order_id == gone


def test_cancel_when_order_belongs_to_another_account_rejected(ex: Ex) -> None:
    a, b = ex.account(), ex.account()
    oid = ex.rest(a, BUY, 5, MARK - 10)
    ex.reject(c.CancelOrder(b, oid), Reject.ORDER_NOT_FOUND)
    assert oid in ex.engine.books[BTC].orders


def test_cancel_when_order_partially_filled_reports_filled_and_canceled(ex: Ex) -> None:
    a, b = ex.account(), ex.account()
    oid = ex.rest(a, BUY, 10, MARK)
    ex.place(b, SELL, 4, MARK)
    (cancel,) = of(ex.ok(c.CancelOrder(a, oid)), OrderCanceled)
    assert (cancel.canceled_lots, cancel.filled_lots) == (6, 4)
    assert ex.size(a) == 4


@pytest.mark.parametrize(
    ("symbol", "left"),
    [(None, set()), (BTC, {ETH}), (ETH, {BTC})],
    ids=["all_symbols", "btc_only", "eth_only"],
)
def test_cancel_all_when_symbol_given_cancels_only_that_symbol(ex: Ex, symbol: str | None, left: set[str]) -> None:
    a, other = ex.account(), ex.account()
    ex.rest(a, BUY, 5, MARK - 10)
    ex.rest(a, SELL, 5, MARK + 10)
    ex.rest(a, BUY, 5, 299_000, ETH)
    ex.rest(a, SELL, 5, 301_000, ETH)
    other_oid = ex.rest(other, BUY, 5, MARK - 20)
    evs = ex.ok(c.CancelAllOrders(a, symbol))
    cancels = of(evs, OrderCanceled)
    assert len(cancels) == (4 if symbol is None else 2)
    assert all(e.reason == "user" and e.account_id == a for e in cancels)
    assert {o.symbol for o in ex.engine.accounts[a].open_orders.values()} == left
    assert other_oid in ex.engine.books[BTC].orders


def test_cancel_all_when_symbol_unknown_rejected(ex: Ex) -> None:
    a = ex.account()
    ex.rest(a, BUY, 5, MARK - 10)
    ex.reject(c.CancelAllOrders(a, "DOGE-PERP"), Reject.INVALID_SYMBOL)


# == amend ===================================================================================


def _two_bids(ex: Ex) -> tuple[int, int, int, int]:
    """A then B bid 10 @ MARK-10 (A has priority); returns (a, b, oid_a, oid_b)."""
    a, b = ex.account(), ex.account()
    oa = ex.rest(a, BUY, 10, MARK - 10)
    ob = ex.rest(b, BUY, 10, MARK - 10)
    return a, b, oa, ob


@pytest.mark.parametrize(
    ("new_qty", "kept", "first_maker"),
    [(5, True, "a"), (1, True, "a"), (15, False, "b")],
    ids=["lower_keeps", "lower_to_one_keeps", "raise_loses"],
)
def test_amend_qty_when_lowered_keeps_priority_when_raised_loses_it(
    ex: Ex, new_qty: int, kept: bool, first_maker: str
) -> None:
    a, _b, oa, ob = _two_bids(ex)
    evs = ex.ok(c.AmendOrder(a, oa, qty_lots=new_qty))
    (amended,) = of(evs, OrderAmended)
    assert (amended.qty_lots, amended.remaining_lots, amended.priority_kept) == (new_qty, new_qty, kept)
    assert ex.level_ids(MARK - 10, True) == ([oa, ob] if kept else [ob, oa])
    assert ex.engine.accounts[a].open_lots(BTC) == (new_qty, 0)
    seller = ex.account()
    trades = of(ex.place(seller, SELL, 1, MARK - 10), TradeExecuted)
    assert [t.maker_order_id for t in trades] == [oa if first_maker == "a" else ob]


def test_amend_price_when_changed_loses_priority(ex: Ex) -> None:
    a, b = ex.account(), ex.account()
    oa = ex.rest(a, BUY, 10, MARK - 20)
    ob = ex.rest(b, BUY, 10, MARK - 10)
    (amended,) = of(ex.ok(c.AmendOrder(a, oa, price_ticks=MARK - 10)), OrderAmended)
    assert not amended.priority_kept
    assert ex.level_ids(MARK - 10, True) == [ob, oa]
    trades = of(ex.place(ex.account(), SELL, 1, MARK - 10), TradeExecuted)
    assert [t.maker_order_id for t in trades] == [ob]


def test_amend_price_and_lower_qty_when_both_change_loses_priority(ex: Ex) -> None:
    a, _b, oa, ob = _two_bids(ex)
    ex.ok(c.AmendOrder(a, oa, price_ticks=MARK - 20, qty_lots=5))
    ex.ok(c.AmendOrder(a, oa, price_ticks=MARK - 10))
    assert ex.level_ids(MARK - 10, True) == [ob, oa]


@pytest.mark.parametrize(
    ("new_price", "trades_expected", "rest_left"),
    [
        (MARK + 200, [(MARK, 5), (MARK + 100, 5)], 0),  # sweeps both, prints at makers' prices
        (MARK + 100, [(MARK, 5), (MARK + 100, 5)], 0),
        (MARK + 50, [(MARK, 5)], 5),  # rests the remainder at the new price
    ],
    ids=["through_both", "at_second", "partial_then_rest"],
)
def test_amend_price_when_crossing_matches_at_resting_prices_as_taker(
    ex: Ex, new_price: int, trades_expected: list[tuple[int, int]], rest_left: int
) -> None:
    a, seller = ex.account(), ex.account()
    s1 = ex.rest(seller, SELL, 5, MARK)
    s2 = ex.rest(seller, SELL, 5, MARK + 100)
    oa = ex.rest(a, BUY, 10, MARK - 1_000)
    wa, ws = ex.wallet(a), ex.wallet(seller)
    evs = ex.ok(c.AmendOrder(a, oa, price_ticks=new_price))
    trades = of(evs, TradeExecuted)
    assert [(t.price_ticks, t.qty_lots) for t in trades] == trades_expected
    assert all(t.taker_order_id == oa and t.maker_order_id in (s1, s2) for t in trades)
    notional = sum(p * q * K_BTC for p, q in trades_expected)
    # taker fee 500 ppm for the amended order, maker fee 200 ppm for the resting ones
    assert [t.taker_fee_atoms for t in trades] == [p * q * K_BTC * 500 // 1_000_000 for p, q in trades_expected]
    assert [t.maker_fee_atoms for t in trades] == [p * q * K_BTC * 200 // 1_000_000 for p, q in trades_expected]
    assert ex.wallet(a) == wa - notional * 500 // 1_000_000
    assert ex.wallet(seller) == ws - notional * 200 // 1_000_000
    assert ex.entry_value(a) == notional
    book = ex.engine.books[BTC]
    if rest_left:
        assert book.orders[oa].price_ticks == new_price
        assert book.orders[oa].remaining_lots == rest_left
        assert ex.depth()[0] == [(new_price, rest_left)]
    else:
        assert oa not in book.orders
        assert ex.engine.find_order(a, oa).status == "filled"


@pytest.mark.parametrize(("new_qty", "ok"), [(3, False), (4, False), (5, True)], ids=["below_filled", "equal_filled", "above_filled"])
def test_amend_qty_when_not_above_filled_rejected(ex: Ex, new_qty: int, ok: bool) -> None:
    a, b = ex.account(), ex.account()
    oa = ex.rest(a, BUY, 10, MARK)
    ex.place(b, SELL, 4, MARK)  # a filled 4 of 10
    cmd = c.AmendOrder(a, oa, qty_lots=new_qty)
    if not ok:
        ex.reject(cmd, Reject.INVALID_QUANTITY)
        return
    (amended,) = of(ex.ok(cmd), OrderAmended)
    assert (amended.qty_lots, amended.remaining_lots, amended.priority_kept) == (5, 1, True)


@pytest.mark.parametrize(
    ("amend", "reason"),
    [
        (dict(qty_lots=10), Reject.NOTHING_TO_AMEND),
        (dict(price_ticks=MARK - 10), Reject.NOTHING_TO_AMEND),
        (dict(), Reject.NOTHING_TO_AMEND),
        (dict(qty_lots=0), Reject.INVALID_QUANTITY),
        (dict(qty_lots=-5), Reject.INVALID_QUANTITY),
        (dict(price_ticks=0), Reject.INVALID_PRICE),
        (dict(price_ticks=-1), Reject.INVALID_PRICE),
        (dict(price_ticks=MARK + 100), Reject.WOULD_TAKE),  # post-only crossing the ask
    ],
    ids=["same_qty", "same_price", "nothing", "zero_qty", "negative_qty", "zero_price", "negative_price", "post_only_cross"],
)
def test_amend_when_invalid_rejected_and_nothing_changes(ex: Ex, amend: dict[str, int], reason: Reject) -> None:
    a, other = ex.account(), ex.account()
    ex.rest(other, SELL, 5, MARK + 100)
    oa = ex.rest(a, BUY, 10, MARK - 10, post_only=True)
    ex.reject(c.AmendOrder(a, oa, **amend), reason)


# == client_order_id =========================================================================


@pytest.mark.parametrize("original_state", ["open", "filled", "canceled"], ids=["open", "filled", "canceled"])
def test_place_when_client_order_id_reused_rejected_with_original_order_id(ex: Ex, original_state: str) -> None:
    a, b = ex.account(), ex.account()
    original = ex.rest(a, BUY, 5, MARK, client_order_id="my-1")
    if original_state == "filled":
        ex.place(b, SELL, 5, MARK)
    elif original_state == "canceled":
        ex.ok(c.CancelOrder(a, original))
    rej = ex.reject(c.PlaceOrder(a, BTC, SELL, 1, MARK + 500, client_order_id="my-1"), Reject.DUPLICATE_CLIENT_ORDER_ID)
    assert rej.order_id == original
    assert rej.client_order_id == "my-1"


def test_place_when_client_order_id_used_by_other_account_accepted(ex: Ex) -> None:
    a, b = ex.account(), ex.account()
    ex.rest(a, BUY, 5, MARK - 10, client_order_id="same")
    oid = ex.rest(b, BUY, 5, MARK - 10, client_order_id="same")
    assert ex.engine.accounts[b].client_order_ids == {"same": oid}


def test_place_when_client_order_id_of_rejected_order_reused_accepted(ex: Ex) -> None:
    a, b = ex.account(), ex.account()
    ex.rest(b, SELL, 5, MARK)
    ex.reject(c.PlaceOrder(a, BTC, BUY, 1, MARK, post_only=True, client_order_id="retry"), Reject.WOULD_TAKE)
    oid = ex.rest(a, BUY, 1, MARK - 1, post_only=True, client_order_id="retry")
    assert ex.engine.accounts[a].client_order_ids["retry"] == oid


@pytest.mark.parametrize("coid", ["", "x" * 65, "bad\nid"], ids=["empty", "too_long", "unprintable"])
def test_place_when_client_order_id_malformed_rejected(ex: Ex, coid: str) -> None:
    a = ex.account()
    ex.reject(c.PlaceOrder(a, BTC, BUY, 1, MARK - 10, client_order_id=coid), Reject.INVALID_CLIENT_ORDER_ID)


# == open-order limit ========================================================================


def test_place_when_open_order_limit_reached_rejected_until_one_closes() -> None:
    ex = Ex(max_open_orders=3)
    ex.mark(MARK)
    a, b = ex.account(), ex.account()
    oids = [ex.rest(a, BUY, 1, MARK - i - 1) for i in range(3)]
    ex.reject(c.PlaceOrder(a, BTC, BUY, 1, MARK - 10), Reject.TOO_MANY_OPEN_ORDERS)
    ex.reject(c.PlaceOrder(a, BTC, SELL, 1, MARK + 10), Reject.TOO_MANY_OPEN_ORDERS)
    ex.reject(c.PlaceOrder(a, ETH, BUY, 1, 1), Reject.NO_MARK_PRICE)  # mark is checked first
    # other accounts are not affected, and orders that cannot rest do not count
    ex.rest(b, SELL, 1, MARK + 20)
    evs = ex.place(a, BUY, 1, MARK + 20, time_in_force=c.IOC)
    assert len(of(evs, TradeExecuted)) == 1
    ex.ok(c.CancelOrder(a, oids[0]))
    ex.rest(a, BUY, 1, MARK - 10)
    assert len(ex.open_ids(a)) == 3


def test_place_when_filled_orders_free_their_slots_accepted() -> None:
    ex = Ex(max_open_orders=3)
    ex.mark(MARK)
    a, b = ex.account(), ex.account()
    for i in range(3):
        ex.rest(a, BUY, 1, MARK - i)
    ex.place(b, SELL, 3, MARK - 2)  # fills all three
    assert ex.open_ids(a) == set()
    for i in range(3):
        ex.rest(a, BUY, 1, MARK - i)


# == no mark price ===========================================================================


@pytest.mark.parametrize(
    "kw",
    [
        dict(price_ticks=MARK),
        dict(price_ticks=MARK, time_in_force=c.IOC),
        dict(price_ticks=MARK, time_in_force=c.FOK),
        dict(price_ticks=MARK, post_only=True),
        dict(order_type=c.MARKET),
    ],
    ids=["gtc", "ioc", "fok", "post_only", "market"],
)
def test_place_when_no_mark_price_rejected(kw: dict[str, Any]) -> None:
    ex = Ex()
    a = ex.account()
    ex.reject(c.PlaceOrder(a, BTC, BUY, 1, **kw), Reject.NO_MARK_PRICE)
    ex.mark(MARK, ETH)  # another symbol's mark does not help
    ex.reject(c.PlaceOrder(a, BTC, BUY, 1, **kw), Reject.NO_MARK_PRICE)
    ex.mark(MARK)
    assert ex.place(a, BUY, 1, kw.get("price_ticks"), **{k: v for k, v in kw.items() if k != "price_ticks"})


def test_place_when_initial_mark_configured_accepted_without_set_mark() -> None:
    inst = Instrument(BTC, tick_size_e8=10_000_000, lot_size_e8=100_000, initial_mark_ticks=MARK)
    ex = Ex(instruments={BTC: inst})
    a = ex.account()
    ex.rest(a, BUY, 1, MARK - 1)


# == trade price and fees ====================================================================


@pytest.mark.parametrize("through", [1, 500, 4_000], ids=["one_tick", "far", "very_far"])
@SIDES
def test_trade_when_taker_limit_through_book_prints_at_resting_price(ex: Ex, side: str, through: int) -> None:
    maker, taker = ex.account(), ex.account()
    maker_price = _away(_opp(side), 0)
    ex.rest(maker, _opp(side), 5, maker_price)
    evs = ex.place(taker, side, 5, _through(side, through))
    (trade,) = of(evs, TradeExecuted)
    assert (trade.price_ticks, trade.qty_lots, trade.taker_side) == (maker_price, 5, side)
    sign = 1 if side == BUY else -1
    assert ex.entry_value(taker) == sign * 5 * maker_price * K_BTC
    assert ex.entry_value(maker) == -sign * 5 * maker_price * K_BTC
    order = ex.engine.find_order(taker, accepted_id(evs))
    assert order.fills == [(trade.trade_id, maker_price, 5, trade.taker_fee_atoms, "taker")]


def test_trade_when_sweeping_levels_prints_each_at_its_level_in_priority(ex: Ex) -> None:
    m1, m2, m3, taker = ex.account(), ex.account(), ex.account(), ex.account()
    o2 = ex.rest(m2, SELL, 2, MARK + 10)
    o1 = ex.rest(m1, SELL, 2, MARK)
    o3 = ex.rest(m3, SELL, 2, MARK + 10)  # same level as o2, later
    trades = of(ex.place(taker, BUY, 5, MARK + 50), TradeExecuted)
    assert [(t.maker_order_id, t.price_ticks, t.qty_lots) for t in trades] == [
        (o1, MARK, 2), (o2, MARK + 10, 2), (o3, MARK + 10, 1)
    ]
    assert len({t.trade_id for t in trades}) == 3
    assert ex.depth() == ([], [(MARK + 10, 1)])


def test_fees_when_default_btc_fill_charge_maker_200_and_taker_500_ppm(ex: Ex) -> None:
    maker, taker = ex.account(), ex.account()
    w_m, w_t = ex.wallet(maker), ex.wallet(taker)
    ex.rest(maker, SELL, 7, 100_003)
    (trade,) = of(ex.place(taker, BUY, 7, 100_003), TradeExecuted)
    notional = 7 * 100_003 * K_BTC  # 70.0021 USD
    assert trade.maker_fee_atoms == notional * 200 // 1_000_000 == 1_400_042
    assert trade.taker_fee_atoms == notional * 500 // 1_000_000 == 3_500_105
    assert ex.wallet(maker) == w_m - trade.maker_fee_atoms
    assert ex.wallet(taker) == w_t - trade.taker_fee_atoms
    assert ex.engine.fees_collected_atoms == trade.maker_fee_atoms + trade.taker_fee_atoms


# tick 0.01 USD, lot 0.0001: one lot at one tick = 100 atoms, so fees have fractional atoms
FINE = "FINE-PERP"


@pytest.mark.parametrize(
    ("qty", "price", "maker_fee", "taker_fee"),
    [
        (1, 12_345, 247, 618),  # 1,234,500 atoms: 246.9 and 617.25
        (3, 7, 1, 2),  # 2,100 atoms: 0.42 and 1.05
        (1, 1, 1, 1),  # 100 atoms: 0.02 and 0.05
        (50, 10_000, 10_000, 25_000),  # exact: no rounding
    ],
    ids=["fractional", "tiny", "smallest", "exact"],
)
def test_fees_when_fractional_in_atoms_round_up_to_the_atom(qty: int, price: int, maker_fee: int, taker_fee: int) -> None:
    inst = Instrument(FINE, tick_size_e8=1_000_000, lot_size_e8=10_000)
    assert inst.atoms_per_lot_tick == 100
    ex = Ex(instruments={FINE: inst})
    ex.mark(price, FINE)
    maker, taker = ex.account(), ex.account()
    w_m, w_t = ex.wallet(maker), ex.wallet(taker)
    ex.rest(maker, BUY, qty, price, FINE)
    (trade,) = of(ex.place(taker, SELL, qty, price, FINE), TradeExecuted)
    notional = qty * price * 100
    assert maker_fee * 1_000_000 >= notional * 200 > (maker_fee - 1) * 1_000_000  # ceil
    assert taker_fee * 1_000_000 >= notional * 500 > (taker_fee - 1) * 1_000_000
    assert (trade.maker_fee_atoms, trade.taker_fee_atoms) == (maker_fee, taker_fee)
    assert ex.wallet(maker) == w_m - maker_fee
    assert ex.wallet(taker) == w_t - taker_fee
    assert ex.engine.fees_collected_atoms == maker_fee + taker_fee


# == every rejection: stable reason, matching code, nothing changes ===========================


def _populated(ex: Ex) -> dict[str, int]:
    """Two accounts with positions and resting orders on both symbols."""
    a, b = ex.account(), ex.account()
    ex.rest(a, SELL, 5, MARK)
    ex.place(b, BUY, 3, MARK)  # b long 3, a short 3, a's ask 2 left
    oid = ex.rest(b, BUY, 4, MARK - 100, client_order_id="b-1")
    ex.rest(a, SELL, 2, 300_500, ETH)
    poor = ex.account(1 * 10**8)  # 1 USD
    modest = ex.account(1_000 * 10**8)  # 1,000 USD
    modest_oid = ex.rest(modest, BUY, 10, MARK - 100)  # 0.01 BTC: IM 10 USD at 10x
    return {"a": a, "b": b, "oid": oid, "poor": poor, "modest": modest, "modest_oid": modest_oid}


REJECTIONS: list[tuple[str, Any, Reject]] = [
    ("unknown_account", lambda s: c.PlaceOrder(999, BTC, BUY, 1, MARK), Reject.ACCOUNT_NOT_FOUND),
    ("fund_account", lambda s: c.PlaceOrder(0, BTC, BUY, 1, MARK), Reject.ACCOUNT_NOT_FOUND),
    ("unknown_symbol", lambda s: c.PlaceOrder(s["a"], "DOGE-PERP", BUY, 1, MARK), Reject.INVALID_SYMBOL),
    ("bad_side", lambda s: c.PlaceOrder(s["a"], BTC, "long", 1, MARK), Reject.INVALID_SIDE),
    ("bad_type", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, MARK, order_type="stop"), Reject.INVALID_ORDER_TYPE),
    ("bad_tif", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, MARK, time_in_force="GTD"), Reject.INVALID_TIME_IN_FORCE),
    ("bad_stp", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, MARK, stp="allow"), Reject.INVALID_STP),
    ("zero_qty", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 0, MARK), Reject.INVALID_QUANTITY),
    ("negative_qty", lambda s: c.PlaceOrder(s["a"], BTC, BUY, -1, MARK), Reject.INVALID_QUANTITY),
    ("zero_price", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, 0), Reject.INVALID_PRICE),
    ("negative_price", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, -5), Reject.INVALID_PRICE),
    ("limit_without_price", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, None), Reject.PRICE_REQUIRED),
    ("market_with_price", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, MARK, order_type=c.MARKET), Reject.PRICE_NOT_ALLOWED),
    ("market_post_only", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, None, order_type=c.MARKET, post_only=True), Reject.POST_ONLY_NOT_ALLOWED),
    ("ioc_post_only", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, MARK - 50, time_in_force=c.IOC, post_only=True), Reject.POST_ONLY_NOT_ALLOWED),
    ("would_take", lambda s: c.PlaceOrder(s["b"], BTC, BUY, 1, MARK, post_only=True), Reject.WOULD_TAKE),
    ("duplicate_coid", lambda s: c.PlaceOrder(s["b"], BTC, BUY, 1, MARK - 200, client_order_id="b-1"), Reject.DUPLICATE_CLIENT_ORDER_ID),
    ("bad_coid", lambda s: c.PlaceOrder(s["b"], BTC, BUY, 1, MARK - 200, client_order_id=""), Reject.INVALID_CLIENT_ORDER_ID),
    ("reduce_same_side", lambda s: c.PlaceOrder(s["b"], BTC, BUY, 1, MARK - 200, reduce_only=True), Reject.NOTHING_TO_REDUCE),
    ("reduce_flat", lambda s: c.PlaceOrder(s["b"], ETH, SELL, 1, 300_000, reduce_only=True), Reject.NOTHING_TO_REDUCE),
    ("margin", lambda s: c.PlaceOrder(s["poor"], BTC, BUY, 100, MARK - 200), Reject.INSUFFICIENT_MARGIN),
    ("cancel_unknown", lambda s: c.CancelOrder(s["a"], 12_345), Reject.ORDER_NOT_FOUND),
    ("cancel_foreign", lambda s: c.CancelOrder(s["a"], s["oid"]), Reject.ORDER_NOT_FOUND),
    ("cancel_unknown_account", lambda s: c.CancelOrder(999, s["oid"]), Reject.ACCOUNT_NOT_FOUND),
    ("cancel_all_bad_symbol", lambda s: c.CancelAllOrders(s["a"], "X"), Reject.INVALID_SYMBOL),
    ("amend_unknown", lambda s: c.AmendOrder(s["b"], 12_345, qty_lots=1), Reject.ORDER_NOT_FOUND),
    ("amend_foreign", lambda s: c.AmendOrder(s["a"], s["oid"], qty_lots=1), Reject.ORDER_NOT_FOUND),
    ("amend_nothing", lambda s: c.AmendOrder(s["b"], s["oid"], qty_lots=4), Reject.NOTHING_TO_AMEND),
    # 2 BTC at 10,000 and 10x: IM 2,000 > 1,000 deposited
    ("amend_margin", lambda s: c.AmendOrder(s["modest"], s["modest_oid"], qty_lots=2_000), Reject.INSUFFICIENT_MARGIN),
    # SPEC §3 order size: 1,000 BTC = 1,000,000 lots at most; 50,000,000 USD at the mark at most
    ("too_many_lots", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1_000_001, MARK - 200), Reject.ORDER_TOO_LARGE),
    ("amend_too_many_lots", lambda s: c.AmendOrder(s["b"], s["oid"], qty_lots=1_000_001), Reject.ORDER_TOO_LARGE),
    # b is long 3 lots with a bid of 4: 1,000,000 more lots = 1,000.003 BTC x 10,000 > the last
    # tier's 10,000,000 USD notional
    ("past_last_tier", lambda s: c.PlaceOrder(s["b"], BTC, BUY, 1_000_000, MARK - 200), Reject.RISK_LIMIT_EXCEEDED),
    ("amend_past_last_tier", lambda s: c.AmendOrder(s["b"], s["oid"], qty_lots=1_000_000), Reject.RISK_LIMIT_EXCEEDED),
    # price band 5%: buys at most 10,500.0 (105,000 ticks), sells at least 9,500.0 (95,000 ticks)
    ("buy_above_band", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, 105_001), Reject.PRICE_OUT_OF_BAND),
    ("sell_below_band", lambda s: c.PlaceOrder(s["a"], BTC, SELL, 1, 94_999), Reject.PRICE_OUT_OF_BAND),
    ("ioc_buy_above_band", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, 105_001, time_in_force=c.IOC), Reject.PRICE_OUT_OF_BAND),
    ("amend_above_band", lambda s: c.AmendOrder(s["b"], s["oid"], price_ticks=105_001), Reject.PRICE_OUT_OF_BAND),
    # both out of band and short of margin: the band is checked first (SPEC §3)
    ("band_before_margin", lambda s: c.PlaceOrder(s["poor"], BTC, BUY, 100, 200_000), Reject.PRICE_OUT_OF_BAND),
    ("deposit_zero", lambda s: c.Deposit(s["a"], 0), Reject.INVALID_AMOUNT),
    ("deposit_unknown", lambda s: c.Deposit(999, 5), Reject.ACCOUNT_NOT_FOUND),
    ("withdraw_negative", lambda s: c.Withdraw(s["a"], -1), Reject.INVALID_AMOUNT),
    ("withdraw_too_much", lambda s: c.Withdraw(s["poor"], 10**8 + 1), Reject.INSUFFICIENT_BALANCE),
    ("top_up_zero", lambda s: c.TopUpInsuranceFund(0), Reject.INVALID_AMOUNT),
    ("mark_unknown_symbol", lambda s: c.SetMarkPrice("X", 5), Reject.INVALID_SYMBOL),
    ("mark_zero", lambda s: c.SetMarkPrice(BTC, 0), Reject.INVALID_PRICE),
    ("leverage_zero", lambda s: c.SetLeverage(s["a"], BTC, 0), Reject.INVALID_LEVERAGE),
    ("leverage_high", lambda s: c.SetLeverage(s["a"], BTC, 51), Reject.INVALID_LEVERAGE),
    ("adl_policy", lambda s: c.SetAdlPolicy(BTC, "random"), Reject.INVALID_ADL_POLICY),
]


@pytest.mark.parametrize(("make", "reason"), [(m, r) for _, m, r in REJECTIONS], ids=[i for i, _, _ in REJECTIONS])
def test_command_when_invalid_rejected_with_stable_reason_and_no_state_change(ex: Ex, make: Any, reason: Reject) -> None:
    s = _populated(ex)
    cmd = make(s)
    rej = ex.reject(cmd, reason)  # asserts name, code, and that nothing but seq changed
    is_order_cmd = isinstance(cmd, c.PlaceOrder | c.CancelOrder | c.CancelAllOrders | c.AmendOrder)
    expected_type = "order_rejected" if is_order_cmd else "command_rejected"
    assert expected_type == rej.TYPE
    assert rej.command == type(cmd).__name__


def test_reject_reasons_when_listed_are_upper_snake_and_uniquely_numbered() -> None:
    names = [r.name for r in Reject]
    assert len(set(int(r) for r in Reject)) == len(names)
    for r in Reject:
        assert r.name == r.name.upper() and " " not in r.name
        assert 1000 <= int(r) < 5000


# Engine values are integers (SPEC §1: no floats anywhere in the engine). A float or bool that
# slipped past the API edge must be refused, not turned into float fees and balances.
NON_INTEGERS: list[tuple[str, Any, Reject]] = [
    ("place_float_price", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, MARK - 0.5), Reject.INVALID_PRICE),
    ("place_whole_float_price", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, float(MARK - 1)), Reject.INVALID_PRICE),
    ("place_str_price", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1, "99999"), Reject.INVALID_PRICE),
    ("place_float_qty", lambda s: c.PlaceOrder(s["a"], BTC, BUY, 1.5, MARK - 1), Reject.INVALID_QUANTITY),
    ("place_bool_qty", lambda s: c.PlaceOrder(s["a"], BTC, BUY, True, MARK - 1), Reject.INVALID_QUANTITY),
    ("amend_float_price", lambda s: c.AmendOrder(s["b"], s["oid"], price_ticks=MARK - 100.5), Reject.INVALID_PRICE),
    ("amend_float_qty", lambda s: c.AmendOrder(s["b"], s["oid"], qty_lots=5.0), Reject.INVALID_QUANTITY),
    ("deposit_float", lambda s: c.Deposit(s["a"], 1.5), Reject.INVALID_AMOUNT),
    ("withdraw_float", lambda s: c.Withdraw(s["a"], 1.5), Reject.INVALID_AMOUNT),
    ("top_up_float", lambda s: c.TopUpInsuranceFund(1.5), Reject.INVALID_AMOUNT),
    ("mark_float", lambda s: c.SetMarkPrice(BTC, 100_000.5), Reject.INVALID_PRICE),
    ("leverage_float", lambda s: c.SetLeverage(s["a"], BTC, 2.5), Reject.INVALID_LEVERAGE),
]


@pytest.mark.parametrize(("make", "reason"), [(m, r) for _, m, r in NON_INTEGERS], ids=[i for i, _, _ in NON_INTEGERS])
def test_command_when_value_not_an_integer_rejected_and_nothing_changes(
    ex: Ex, make: Any, reason: Reject, request: pytest.FixtureRequest
) -> None:
    s = _populated(ex)
    if COMPILED:
        # compiled commands (native/) check their field types when built: such a command
        # cannot exist; a bool is stored as the int it subclasses (the API edge never sends one)
        if request.node.callspec.id == "place_bool_qty":
            pytest.skip("the compiled PlaceOrder stores qty True as 1")
        before = ex.engine.state_hash()
        with pytest.raises(TypeError):
            make(s)
        assert ex.engine.state_hash() == before
        return
    ex.reject(make(s), reason)


@pytest.mark.parametrize(("qty", "filled"), [(10, 10), (11, 0)], ids=["fills_all", "all_or_nothing"])
def test_place_market_when_fok_fills_entirely_inside_band_or_not_at_all(ex: Ex, qty: int, filled: int) -> None:
    seller = ex.account()
    buyer = ex.account()
    ex.rest(seller, SELL, 4, MARK + 10)
    ex.rest(seller, SELL, 6, MARK + 20)
    ex.rest(seller, SELL, 50, MARK + MARK // 10)  # beyond the 5% band
    evs = ex.place(buyer, BUY, qty, None, order_type=c.MARKET, time_in_force=c.FOK)
    assert sum(t.qty_lots for t in of(evs, TradeExecuted)) == filled
    assert ex.size(buyer) == filled
    if not filled:
        (cancel,) = of(evs, OrderCanceled)
        assert (cancel.reason, cancel.canceled_lots) == ("fok", qty)
