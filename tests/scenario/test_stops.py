"""Hand-computed stop and take-profit scenarios (SPEC §12, engine/stops.py).

Units in comments are USD and BTC. BTC-PERP: tick 0.1, lot 0.001, maker 200 ppm, taker
500 ppm, default leverage 10, market band 5%, price band 5%, MM 0.5% below 100k notional.
Every command is followed by check_invariants() (which ends with stops.check_invariants:
index and accounts agree, no stop left waiting that the prices already reach).
"""

from __future__ import annotations

import pickle
from typing import Any

from engine import commands as c
from engine import stops
from engine.engine import Engine
from engine.errors import Reject
from tests.scenario.harness import Sim, atoms

BTC = "BTC-PERP"


def _stop(sim: Sim, aid: int, kind: str, side: str, qty: str, trigger: str | int, price: str | int | None = None,
          **kw: Any) -> list[Any]:
    """Place a stop / take-profit order (must be accepted); returns its events."""
    return sim.ok(_stop_cmd(sim, aid, kind, side, qty, trigger, price, **kw))


def _stop_cmd(sim: Sim, aid: int, kind: str, side: str, qty: str, trigger: str | int, price: str | int | None = None,
              **kw: Any) -> c.PlaceOrder:
    return c.PlaceOrder(
        aid, BTC, side, sim.lots(BTC, qty), None if price is None else sim.ticks(BTC, price), kind,
        trigger_price_ticks=sim.ticks(BTC, trigger), **kw,
    )


def _oid(evs: list[Any]) -> int:
    (accepted,) = [e for e in evs if e.TYPE == "order_accepted"]
    return int(accepted.order_id)


def _mark(sim: Sim, price: str | int) -> list[Any]:
    """Move the mark; unlike Sim.mark, a stop refused at trigger (order_rejected) is allowed."""
    return sim.do(c.SetMarkPrice(BTC, sim.ticks(BTC, price)))


def _types(evs: list[Any]) -> list[str]:
    return [e.TYPE for e in evs]


def _rejected(sim: Sim, command: Any, reason: Reject) -> Any:
    """The command is refused with `reason` and changes nothing but the seq."""
    before = sim.engine.state_hash()
    (rej,) = sim.do(command)
    assert rej.reason == reason.name, rej
    sim.engine.seq -= 1  # the rejection consumed a seq; compare the rest of the state
    assert sim.engine.state_hash() == before
    sim.engine.seq += 1
    return rej


def _long_one_btc(sim: Sim, deposit: str | int = 10_000) -> tuple[int, int]:
    """Mark 10000; Bob (maker) rests 1 BTC @10000, Alice takes it: Alice long 1 @10000.

    Alice's taker fee 10000 x 0.0005 = 5 -> wallet deposit - 5; Bob's maker fee 10000 x
    0.0002 = 2. The last trade price is now 10000."""
    sim.mark(BTC, 10000)
    bob = sim.account(100_000)
    alice = sim.account(deposit)
    sim.limit(bob, BTC, "sell", "1", 10000)
    sim.limit(alice, BTC, "buy", "1", 10000, time_in_force=c.IOC)
    assert sim.size(alice, BTC) == 1000
    return alice, bob


# -- a stop closes a position ----------------------------------------------------------------


def test_stop_market_sell_when_mark_falls_to_trigger_closes_the_long() -> None:
    sim = Sim()
    alice, bob = _long_one_btc(sim)
    assert sim.wallet(alice) == atoms(9995)
    oid = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "1", 9500, reduce_only=True))
    order = sim.engine.find_order(alice, oid)
    assert order is not None and order.status == "untriggered"
    # untriggered: no margin reserved, not in the book nor the open quantities
    assert oid not in sim.engine.books[BTC].orders and sim.engine.accounts[alice].open_lots(BTC) == (0, 0)
    sim.limit(bob, BTC, "buy", "1", 9400)  # Bob's bid (it closes his 1 BTC short when hit)
    # Mark 9500.1: not yet (a stop sell fires at or below its trigger)
    assert _types(sim.mark(BTC, "9500.1")) == ["mark_price_changed"]
    # Mark 9500: fires. It enters as a market sell: IOC limited to ceil(9500 x 0.95) = 9025,
    # fills 1 BTC on Bob's 9400 bid.
    evs = sim.mark(BTC, 9500)
    assert _types(evs)[:4] == ["mark_price_changed", "order_triggered", "order_accepted", "trade"]
    trig = evs[1]
    assert (trig.order_id, trig.order_type, trig.trigger_price_ticks, trig.trigger_by, trig.reference_price_ticks) == (
        oid, c.STOP_MARKET, 95_000, "mark", 95_000
    )
    acc = evs[2]
    assert (acc.order_id, acc.order_type, acc.price_ticks, acc.qty_lots, acc.time_in_force, acc.reduce_only) == (
        oid, c.STOP_MARKET, None, 1000, c.IOC, True
    )
    (trade,) = sim.of_type(evs, "trade")
    assert (trade.taker_order_id, trade.price_ticks, trade.qty_lots) == (oid, 94_000, 1000)
    # Realized: 1 x (9400 - 10000) = -600; taker fee 9400 x 0.0005 = 4.7
    # wallet 9995 - 600 - 4.7 = 9390.3
    assert sim.size(alice, BTC) == 0
    assert sim.wallet(alice) == atoms("9390.3")
    assert trade.taker_fee_atoms == atoms("4.7")
    assert order.status == "filled" and sim.engine.accounts[alice].stop_orders == {}


def test_take_profit_limit_when_triggered_rests_as_a_limit_order_and_fills_as_maker() -> None:
    sim = Sim()
    alice, bob = _long_one_btc(sim)
    # take-profit sell: fires on a rise to 10500, then rests as a GTC limit sell @10600
    oid = _oid(_stop(sim, alice, c.TAKE_PROFIT_LIMIT, "sell", "1", 10500, 10600))
    assert _types(sim.mark(BTC, "10499.9")) == ["mark_price_changed"]
    evs = sim.mark(BTC, 10500)
    # Checks as a new order at mark 10500: band (a sell at least 10500 x 0.95 = 9975: 10600
    # is fine), margin (selling 1 against a long of 1 does not raise max(|q+B|, |q-S|) = 1,
    # and a sell above the mark has no open loss). Empty bids: it rests.
    assert _types(evs) == ["mark_price_changed", "order_triggered", "order_accepted"]
    order = sim.engine.accounts[alice].open_orders[oid]
    assert (order.status, order.order_type, order.price_ticks, order.remaining_lots) == ("new", c.TAKE_PROFIT_LIMIT,
                                                                                        106_000, 1000)
    assert sim.engine.books[BTC].best_ask() == 106_000
    # Bob buys 1 @10600: Alice is the maker. Realized 1 x 600 = 600, maker fee 10600 x 0.0002
    # = 2.12: wallet 9995 + 600 - 2.12 = 10592.88
    sim.limit(bob, BTC, "buy", "1", 10600)
    assert sim.size(alice, BTC) == 0 and sim.wallet(alice) == atoms("10592.88")
    assert order.status == "filled"


def test_stop_market_when_triggered_into_an_empty_book_is_canceled_with_zero_fills() -> None:
    sim = Sim()
    alice, _ = _long_one_btc(sim)
    oid = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "1", 9500))
    evs = sim.mark(BTC, 9000)
    assert _types(evs) == ["mark_price_changed", "order_triggered", "order_accepted", "order_canceled"]
    canceled = evs[-1]
    assert (canceled.order_id, canceled.canceled_lots, canceled.filled_lots, canceled.reason) == (oid, 1000, 0, "market")
    assert sim.engine.find_order(alice, oid).status == "canceled"  # type: ignore[union-attr]
    assert sim.size(alice, BTC) == 1000


# -- the order stops fire in ------------------------------------------------------------------


def test_two_stops_at_the_same_trigger_fire_in_order_id_order() -> None:
    sim = Sim()
    alice, bob = _long_one_btc(sim)
    carol = sim.account(10_000)
    # Carol is long 0.5 too (from Bob's ask @10000)
    sim.limit(bob, BTC, "sell", "0.5", 10000)
    sim.limit(carol, BTC, "buy", "0.5", 10000, time_in_force=c.IOC)
    first = _oid(_stop(sim, carol, c.STOP_MARKET, "sell", "0.5", 9500))
    second = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "0.5", 9500))
    assert first < second
    sim.limit(bob, BTC, "buy", "0.5", 9400)
    sim.limit(bob, BTC, "buy", "0.5", 9300)
    evs = sim.mark(BTC, 9500)
    assert [e.order_id for e in sim.of_type(evs, "order_triggered")] == [first, second]
    # the first to fire takes the better bid
    assert [(t.taker_order_id, t.price_ticks) for t in sim.of_type(evs, "trade")] == [(first, 94_000), (second, 93_000)]


def test_stops_when_price_moves_through_several_triggers_fire_highest_first_on_a_fall_lowest_first_on_a_rise() -> None:
    sim = Sim()
    alice, _ = _long_one_btc(sim)
    low = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "0.1", 9500))  # lower id, lower trigger
    high = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "0.1", 9800))
    mid = _oid(_stop(sim, alice, c.TAKE_PROFIT_MARKET, "buy", "0.1", 9600))  # a take-profit buy also fires on a fall
    evs = sim.mark(BTC, 9400)
    assert [e.order_id for e in sim.of_type(evs, "order_triggered")] == [high, mid, low]
    # and on a rise: stop buys / take-profit sells, the lowest trigger first
    up_high = _oid(_stop(sim, alice, c.STOP_MARKET, "buy", "0.1", 10500))
    up_low = _oid(_stop(sim, alice, c.TAKE_PROFIT_MARKET, "sell", "0.1", 10000))
    evs = sim.mark(BTC, 10600)
    assert [e.order_id for e in sim.of_type(evs, "order_triggered")] == [up_low, up_high]


def test_last_price_stop_when_a_trade_prints_at_its_trigger_fires_in_the_same_command() -> None:
    sim = Sim()
    alice, bob = _long_one_btc(sim)  # last trade 10000
    carol = sim.account(10_000)
    oid = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "1", 9500, trigger_by=c.TRIGGER_BY_LAST))
    sim.limit(bob, BTC, "buy", "1.1", 9500)
    # The mark (10000) does not move; Carol sells 0.1 into Bob's bid: the trade at 9500 is the
    # new last price, which reaches Alice's stop. It sells 1 BTC at market: limit
    # ceil(10000 x 0.95) = 9500 (the band is around the mark), filled on the 1.0 left @9500.
    evs = sim.limit(carol, BTC, "sell", "0.1", 9500, time_in_force=c.IOC)
    trig = sim.of_type(evs, "order_triggered")[0]
    assert (trig.order_id, trig.trigger_by, trig.reference_price_ticks) == (oid, "last", 95_000)
    trades = sim.of_type(evs, "trade")
    assert [(t.taker_order_id, t.qty_lots, t.price_ticks) for t in trades][1:] == [(oid, 1000, 95_000)]
    # Realized 1 x (9500 - 10000) = -500, fee 9500 x 0.0005 = 4.75: 9995 - 504.75 = 9490.25
    assert sim.size(alice, BTC) == 0 and sim.wallet(alice) == atoms("9490.25")


def test_last_price_stop_when_no_trade_yet_waits_for_the_first_trade() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    alice = sim.account(10_000)
    # no trade yet: a stop sell by last at 10500 (above the mark) is accepted and waits
    oid = _oid(_stop(sim, alice, c.STOP_LIMIT, "sell", "0.1", 10500, 10000, trigger_by=c.TRIGGER_BY_LAST))
    assert sim.engine.accounts[alice].stop_orders.keys() == {oid}
    # by the mark the same trigger is already reached: refused
    _rejected(sim, _stop_cmd(sim, alice, c.STOP_LIMIT, "sell", "0.1", 10500, 10000), Reject.WOULD_TRIGGER_IMMEDIATELY)


def test_stop_when_mark_gaps_through_it_triggers_before_the_liquidation_check() -> None:
    sim = Sim()
    alice, bob = _long_one_btc(sim, deposit=1000)  # wallet 995, long 1 @10000
    # a stop-limit sell: triggered at 9100, sells at 9050 or better
    oid = _oid(_stop(sim, alice, c.STOP_LIMIT, "sell", "1", 9100, 9050))
    sim.limit(bob, BTC, "buy", "1", 9050)
    # Mark 9000: at the mark Alice's equity is 995 - 1000 = -5 < MM (45): liquidation
    # territory. Her stop fires first. Checked as a new limit sell at mark 9000: band (at
    # least 9000 x 0.95 = 8550), margin (it does not raise max(|q+B|, |q-S|) = 1, and a
    # sell above the mark has no open loss: passes although available is below 0). It sells
    # 1 @9050: realized -950, fee 9050 x 0.0005 = 4.525: wallet 995 - 954.525 = 40.475, flat.
    evs = sim.mark(BTC, 9000)
    assert sim.of_type(evs, "order_triggered")[0].order_id == oid
    assert not sim.of_type(evs, "liquidation")
    assert sim.size(alice, BTC) == 0 and sim.wallet(alice) == atoms("40.475")


def test_stop_market_when_the_account_is_underwater_is_refused_for_its_open_loss() -> None:
    sim = Sim()
    alice, bob = _long_one_btc(sim, deposit=1000)  # wallet 995, long 1 @10000
    oid = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "1", 9100, reduce_only=True))
    sim.limit(bob, BTC, "buy", "1", 9050)
    # The same gap with a stop-market: SPEC §3 values a market sell at its band limit
    # ceil(9000 x 0.95) = 8550, an open loss of 1 x 450 = 450, so it needs available >= 0
    # after it: equity -5 - IM 900 = -905. Refused like a new market order would be, and
    # the liquidation check that follows takes the account.
    evs = _mark(sim, 9000)
    rej = sim.of_type(evs, "order_rejected")[0]
    assert (rej.order_id, rej.reason) == (oid, "INSUFFICIENT_MARGIN")
    assert rej.message == "order requires 450 USD of margin (initial margin 0 + open loss 450), available -905 USD"
    assert _types(evs).index("order_rejected") < _types(evs).index("liquidation")


# -- close_position and reduce-only ------------------------------------------------------------


def test_close_position_stop_when_triggered_closes_the_whole_position_as_it_is_then() -> None:
    sim = Sim()
    alice, bob = _long_one_btc(sim)
    evs = sim.ok(c.PlaceOrder(alice, BTC, c.SELL, 0, None, c.STOP_MARKET, trigger_price_ticks=95_000,
                              close_position=True))
    (acc,) = evs
    assert (acc.qty_lots, acc.reduce_only) == (0, True)  # close_position implies reduce-only
    # Alice buys 0.5 more from Bob: long 1.5 (taker fee 5000 x 0.0005 = 2.5)
    sim.limit(bob, BTC, "sell", "0.5", 10000)
    sim.limit(alice, BTC, "buy", "0.5", 10000, time_in_force=c.IOC)
    sim.limit(bob, BTC, "buy", "2", 9400)
    evs = sim.mark(BTC, 9500)
    # at trigger its qty is the whole long: 1.5 BTC, sold @9400 (of Bob's 2)
    (acc,) = sim.of_type(evs, "order_accepted")
    assert (acc.order_id, acc.qty_lots, acc.reduce_only) == (_oid(evs), 1500, True)
    (trade,) = sim.of_type(evs, "trade")
    assert trade.qty_lots == 1500 and sim.size(alice, BTC) == 0
    # Realized 1.5 x (9400 - 10000) = -900; fee 14100 x 0.0005 = 7.05
    # wallet 10000 - 5 - 2.5 - 900 - 7.05 = 9085.45
    assert sim.wallet(alice) == atoms("9085.45")


def test_reduce_only_stop_when_triggered_with_no_position_is_rejected_nothing_to_reduce() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    alice = sim.account(10_000)
    # accepted while flat: reduce-only capacity is checked at trigger, not at placement
    ro = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "1", 9500, reduce_only=True))
    # a take-profit buy fires on a fall too
    close = _oid(sim.ok(c.PlaceOrder(alice, BTC, c.BUY, 0, None, c.TAKE_PROFIT_MARKET,
                                     trigger_price_ticks=96_000, close_position=True)))
    evs = _mark(sim, 9500)
    # 9600 is reached first on the way down (highest trigger first), then 9500
    assert _types(evs) == ["mark_price_changed", "order_triggered", "order_rejected", "order_triggered",
                           "order_rejected"]
    rejections = sim.of_type(evs, "order_rejected")
    assert [(r.order_id, r.reason, r.command, r.account_id) for r in rejections] == [
        (close, "NOTHING_TO_REDUCE", "OrderTriggered", alice),
        (ro, "NOTHING_TO_REDUCE", "OrderTriggered", alice),
    ]
    for oid in (ro, close):
        order = sim.engine.find_order(alice, oid)
        assert order is not None and order.status == "rejected"
        assert oid in sim.engine.accounts[alice].closed_orders
    assert sim.engine.accounts[alice].stop_orders == {}


def test_reduce_only_stops_when_the_position_closes_are_canceled_plain_stops_stay() -> None:
    sim = Sim()
    alice, bob = _long_one_btc(sim)
    ro = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "1", 9500, reduce_only=True))
    close = _oid(sim.ok(c.PlaceOrder(alice, BTC, c.SELL, 0, None, c.TAKE_PROFIT_MARKET,
                                     trigger_price_ticks=110_000, close_position=True)))
    plain = _oid(_stop(sim, alice, c.STOP_LIMIT, "sell", "1", 9000, 8900))
    sim.limit(bob, BTC, "buy", "1", 10000)
    # Alice closes by hand: the fill takes her to 0, her reduce-only stops can reduce nothing
    evs = sim.limit(alice, BTC, "sell", "1", 10000, time_in_force=c.IOC)
    canceled = sim.of_type(evs, "order_canceled")
    assert [(e.order_id, e.reason) for e in canceled] == [(ro, "reduce_only"), (close, "reduce_only")]
    assert list(sim.engine.accounts[alice].stop_orders) == [plain]


# -- refusals at placement ---------------------------------------------------------------------


def test_stop_when_its_trigger_is_already_reached_is_refused_would_trigger_immediately() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    alice = sim.account(10_000)
    for kind, side, trigger in (
        (c.STOP_MARKET, "sell", 10000),  # a fall stop at the mark: reached (<=)
        (c.STOP_MARKET, "sell", "10000.1"),
        (c.TAKE_PROFIT_MARKET, "buy", 10000),
        (c.STOP_MARKET, "buy", "9999.9"),  # a rise stop below the mark
        (c.TAKE_PROFIT_MARKET, "sell", 10000),
    ):
        rej = _rejected(sim, _stop_cmd(sim, alice, kind, side, "0.1", trigger), Reject.WOULD_TRIGGER_IMMEDIATELY)
    assert rej.message == "the mark price 10000 is already at or above the trigger 10000"
    _stop(sim, alice, c.STOP_MARKET, "sell", "0.1", "9999.9")
    _stop(sim, alice, c.STOP_MARKET, "buy", "0.1", "10000.1")


def test_stop_fields_when_wrong_are_refused_with_their_own_codes() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    a = sim.account(10_000)
    cases = [
        (c.PlaceOrder(a, BTC, c.SELL, 100, None, c.STOP_MARKET), Reject.INVALID_TRIGGER_PRICE),
        (c.PlaceOrder(a, BTC, c.SELL, 100, None, c.STOP_MARKET, trigger_price_ticks=0), Reject.INVALID_TRIGGER_PRICE),
        (c.PlaceOrder(a, BTC, c.SELL, 100, None, c.STOP_MARKET, trigger_price_ticks=-5), Reject.INVALID_TRIGGER_PRICE),
        (c.PlaceOrder(a, BTC, c.SELL, 100, None, c.STOP_MARKET, trigger_price_ticks=90_000, trigger_by="index"),
         Reject.INVALID_TRIGGER_BY),
        (c.PlaceOrder(a, BTC, c.SELL, 100, 90_000, c.LIMIT, trigger_price_ticks=90_000), Reject.TRIGGER_NOT_ALLOWED),
        (c.PlaceOrder(a, BTC, c.SELL, 100, None, c.MARKET, close_position=True), Reject.TRIGGER_NOT_ALLOWED),
        (c.PlaceOrder(a, BTC, c.SELL, 100, None, c.MARKET, trigger_by=c.TRIGGER_BY_LAST), Reject.TRIGGER_NOT_ALLOWED),
        (c.PlaceOrder(a, BTC, c.SELL, 0, 90_000, c.STOP_LIMIT, trigger_price_ticks=90_000, close_position=True),
         Reject.TRIGGER_NOT_ALLOWED),
        (c.PlaceOrder(a, BTC, c.SELL, 100, None, c.STOP_MARKET, trigger_price_ticks=90_000, close_position=True),
         Reject.INVALID_QUANTITY),
        (c.PlaceOrder(a, BTC, c.SELL, 0, None, c.STOP_MARKET, trigger_price_ticks=90_000), Reject.INVALID_QUANTITY),
        (c.PlaceOrder(a, BTC, c.SELL, 100, None, c.STOP_LIMIT, trigger_price_ticks=90_000), Reject.PRICE_REQUIRED),
        (c.PlaceOrder(a, BTC, c.SELL, 100, 89_000, c.TAKE_PROFIT_MARKET, trigger_price_ticks=110_000),
         Reject.PRICE_NOT_ALLOWED),
        (c.PlaceOrder(a, BTC, c.SELL, 100, None, c.STOP_MARKET, post_only=True, trigger_price_ticks=90_000),
         Reject.POST_ONLY_NOT_ALLOWED),
        (c.PlaceOrder(a, BTC, c.SELL, 2_000_000, None, c.STOP_MARKET, trigger_price_ticks=90_000),
         Reject.ORDER_TOO_LARGE),
        (c.PlaceOrder(a, "DOGE-PERP", c.SELL, 100, None, c.STOP_MARKET, trigger_price_ticks=90_000),
         Reject.INVALID_SYMBOL),
        (c.PlaceOrder(a, "ETH-PERP", c.SELL, 100, None, c.STOP_MARKET, trigger_price_ticks=90_000),
         Reject.NO_MARK_PRICE),
    ]
    for cmd, reason in cases:
        _rejected(sim, cmd, reason)
    # a client order id is taken by a stop like by any order
    first = _oid(_stop(sim, a, c.STOP_MARKET, "sell", "0.1", 9000, client_order_id="sl-1"))
    rej = _rejected(sim, _stop_cmd(sim, a, c.STOP_MARKET, "sell", "0.1", 8000, client_order_id="sl-1"),
                    Reject.DUPLICATE_CLIENT_ORDER_ID)
    assert rej.order_id == first


def test_open_order_limit_when_stops_fill_it_refuses_both_stops_and_resting_orders() -> None:
    sim = Sim(max_open_orders=3)
    sim.mark(BTC, 10000)
    a = sim.account(10_000)
    _stop(sim, a, c.STOP_MARKET, "sell", "0.1", 9000)
    _stop(sim, a, c.TAKE_PROFIT_LIMIT, "sell", "0.1", 11000, 11000)
    sim.limit(a, BTC, "buy", "0.1", 9900)  # 2 stops + 1 resting = 3
    _rejected(sim, c.PlaceOrder(a, BTC, c.BUY, 100, 98_000), Reject.TOO_MANY_OPEN_ORDERS)
    _rejected(sim, _stop_cmd(sim, a, c.STOP_MARKET, "sell", "0.1", 8000), Reject.TOO_MANY_OPEN_ORDERS)
    # an IOC order does not rest: not limited
    sim.ok(c.PlaceOrder(a, BTC, c.BUY, 100, 98_000, time_in_force=c.IOC))


# -- refusals at trigger -----------------------------------------------------------------------


def test_triggered_order_when_margin_is_short_is_rejected_with_its_order_id() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    alice = sim.account(100)
    # a stop buy of 1 BTC: no margin is reserved at placement (100 USD would not cover it)
    oid = _oid(_stop(sim, alice, c.STOP_MARKET, "buy", "1", 10500, client_order_id="breakout"))
    evs = _mark(sim, 10500)
    assert _types(evs) == ["mark_price_changed", "order_triggered", "order_rejected"]
    rej = evs[-1]
    # At trigger, as a new market buy at mark 10500: IM = 1 x 10500 / 10 = 1050, valued at
    # its band limit floor(10500 x 1.05) = 11025: open loss 1 x 525 = 525. Available 100.
    assert (rej.order_id, rej.client_order_id, rej.reason) == (oid, "breakout", "INSUFFICIENT_MARGIN")
    assert rej.message == "order requires 1575 USD of margin (initial margin 1050 + open loss 525), available 100 USD"
    order = sim.engine.find_order(alice, oid)
    assert order is not None and order.status == "rejected" and order.filled_lots == 0
    assert sim.wallet(alice) == atoms(100)


def test_triggered_stop_limit_when_out_of_the_price_band_is_rejected() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    alice = sim.account(100_000)
    # a stop buy triggered at 10500 with a limit of 11100: the band at trigger (mark 10500)
    # allows a buy up to 10500 x 1.05 = 11025
    oid = _oid(_stop(sim, alice, c.STOP_LIMIT, "buy", "0.1", 10500, 11100))
    evs = _mark(sim, 10500)
    rej = sim.of_type(evs, "order_rejected")[0]
    assert (rej.order_id, rej.reason) == (oid, "PRICE_OUT_OF_BAND")


# -- cancel and amend ---------------------------------------------------------------------------


def test_cancel_cancel_all_and_amend_when_aimed_at_stops_work_like_on_open_orders() -> None:
    sim = Sim()
    sim.mark(BTC, 10000)
    a = sim.account(10_000)
    s1 = _oid(_stop(sim, a, c.STOP_MARKET, "sell", "0.1", 9000))
    s2 = _oid(_stop(sim, a, c.STOP_LIMIT, "sell", "0.2", 9500, 9400, client_order_id="sl"))
    s3 = _oid(_stop(sim, a, c.TAKE_PROFIT_MARKET, "sell", "0.3", 11000))
    s4 = _oid(_stop(sim, a, c.STOP_MARKET, "buy", "0.4", 10500))
    # cancel by id: order_canceled with what was left (all of it) and reason user
    (e,) = sim.ok(c.CancelOrder(a, s1))
    assert (e.TYPE, e.order_id, e.canceled_lots, e.reason) == ("order_canceled", s1, 100, "user")
    assert sim.engine.find_order(a, s1).status == "canceled"  # type: ignore[union-attr]
    # amend by client order id: trigger 9500 -> 9600, price 9400 -> 9300, qty 0.2 -> 0.25
    (e,) = sim.ok(c.AmendOrder(a, 0, price_ticks=93_000, qty_lots=250, client_order_id="sl",
                               trigger_price_ticks=96_000))
    assert (e.TYPE, e.order_id, e.price_ticks, e.qty_lots, e.remaining_lots) == ("order_amended", s2, 93_000, 250, 250)
    order = sim.engine.accounts[a].stop_orders[s2]
    assert (order.trigger_price_ticks, order.status) == (96_000, "untriggered")
    # refusals: a trigger already reached, a price on a market type, nothing changed
    _rejected(sim, c.AmendOrder(a, s2, trigger_price_ticks=100_000), Reject.WOULD_TRIGGER_IMMEDIATELY)
    _rejected(sim, c.AmendOrder(a, s3, price_ticks=110_000), Reject.PRICE_NOT_ALLOWED)
    _rejected(sim, c.AmendOrder(a, s2, trigger_price_ticks=96_000), Reject.NOTHING_TO_AMEND)
    _rejected(sim, c.AmendOrder(a, s2, trigger_price_ticks=0), Reject.INVALID_TRIGGER_PRICE)
    # the amended trigger is the one that counts: 9600 fires, 9500 would not have been reached
    evs = sim.mark(BTC, 9600)
    assert [e.order_id for e in sim.of_type(evs, "order_triggered")] == [s2]
    # it rested as a limit sell @9300 (band: at least 9600 x 0.95 = 9120); a trigger price on
    # it now (or on any plain order) is refused
    assert sim.engine.accounts[a].open_orders[s2].price_ticks == 93_000
    _rejected(sim, c.AmendOrder(a, s2, trigger_price_ticks=90_000), Reject.TRIGGER_NOT_ALLOWED)
    # cancel-all by symbol takes the resting order and both stops left
    evs = sim.ok(c.CancelAllOrders(a, BTC))
    assert [(e.order_id, e.reason) for e in evs] == [(s2, "user"), (s3, "user"), (s4, "user")]
    assert not sim.engine.accounts[a].stop_orders and sim.engine.stops.count == 0


# -- liquidation and ADL ------------------------------------------------------------------------


def test_liquidation_when_it_takes_an_account_cancels_its_stops() -> None:
    sim = Sim()
    alice, _ = _long_one_btc(sim, deposit=1000)  # wallet 995, long 1 @10000
    tp = _oid(_stop(sim, alice, c.TAKE_PROFIT_LIMIT, "sell", "1", 12000, 12000))
    sl = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "1", 8000))
    # Mark 9040: equity 995 - 960 = 35 < MM 9040 x 0.005 = 45.2; the stop at 8000 is not
    # reached, so liquidation comes first and cancels both stops (reason liquidation)
    evs = sim.mark(BTC, 9040)
    canceled = sim.of_type(evs, "order_canceled")
    assert [(e.order_id, e.reason) for e in canceled[:2]] == [(tp, "liquidation"), (sl, "liquidation")]
    assert sim.of_type(evs, "liquidation") and not sim.of_type(evs, "order_triggered")
    assert sim.engine.accounts[alice].stop_orders == {} and sim.engine.stops.count == 0


def test_adl_when_it_closes_a_counterparty_cancels_its_stops_in_that_symbol() -> None:
    sim = Sim()
    _, bob = _long_one_btc(sim, deposit=1000)  # Bob is short 1 @10000
    bob_stop = _oid(_stop(sim, bob, c.STOP_MARKET, "buy", "1", 11000))
    # Mark 9000: Alice (equity 995 - 1000 = -5) is liquidated; the fund's IOC finds no bids,
    # ADL closes Bob's short: his stop in BTC-PERP is canceled with reason adl
    evs = sim.mark(BTC, 9000)
    assert sim.of_type(evs, "adl")
    assert [(e.order_id, e.reason) for e in sim.of_type(evs, "order_canceled") if e.account_id == bob] == [
        (bob_stop, "adl")
    ]
    assert sim.engine.accounts[bob].stop_orders == {}


def test_last_price_stop_when_a_liquidation_fill_reaches_it_fires_after_the_liquidation() -> None:
    sim = Sim()
    alice, bob = _long_one_btc(sim, deposit=1000)  # wallet 995, long 1 @10000
    dave = sim.account(10_000)
    sim.limit(bob, BTC, "sell", "0.1", 10000)
    sim.limit(dave, BTC, "buy", "0.1", 10000, time_in_force=c.IOC)  # Dave long 0.1, last 10000
    dave_stop = _oid(_stop(sim, dave, c.STOP_MARKET, "sell", "0.1", 9500, trigger_by=c.TRIGGER_BY_LAST))
    sim.limit(bob, BTC, "buy", "1", 9010)
    sim.limit(bob, BTC, "buy", "0.1", 9000)
    # Mark 9000: the last price is still 10000, no stop fires. Alice: equity 995 - 1000 = -5
    # < MM 45: liquidated, BV = 9000 - (-5) = 9005; the empty fund sells at no less than
    # 9005 and fills 1 @9010 on Bob's bid. The last price is now 9010 <= 9500: Dave's stop
    # fires in the same command, after the liquidation, and sells 0.1 @9000 (limit
    # ceil(9000 x 0.95) = 8550).
    evs = sim.mark(BTC, 9000)
    types = _types(evs)
    assert types.index("liquidation") < types.index("order_triggered")
    trig = sim.of_type(evs, "order_triggered")[0]
    assert (trig.order_id, trig.reference_price_ticks) == (dave_stop, 90_100)
    assert sim.of_type(evs, "trade")[-1].price_ticks == 90_000
    assert sim.size(alice, BTC) == 0 and sim.size(dave, BTC) == 0


# -- snapshots ----------------------------------------------------------------------------------


def test_pickled_state_when_restored_keeps_stops_and_they_still_fire() -> None:
    sim = Sim()
    alice, _ = _long_one_btc(sim)
    oid = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "1", 9500, trigger_by=c.TRIGGER_BY_MARK))
    restored: Engine = pickle.loads(pickle.dumps(sim.engine))
    assert restored.state_hash() == sim.engine.state_hash()
    restored.check_invariants()
    evs = restored.apply(c.SetMarkPrice(BTC, 95_000))
    restored.check_invariants()
    assert [e.order_id for e in evs if e.TYPE == "order_triggered"] == [oid]


def test_state_pickled_before_stops_existed_when_restored_gets_an_empty_stop_book() -> None:
    sim = Sim()
    _long_one_btc(sim)
    state = sim.engine.__getstate__()
    del state["stops"]  # as an older version wrote it
    old = Engine.__new__(Engine)
    old.__setstate__(state)
    assert isinstance(old.stops, stops.StopBook) and old.stops.count == 0
    old.check_invariants()
    assert old.state_hash() == sim.engine.state_hash()


def test_state_hash_when_a_stop_is_placed_changes_and_without_stops_is_as_before() -> None:
    sim = Sim()
    alice, _ = _long_one_btc(sim)
    before = sim.engine.state_hash()
    oid = _oid(_stop(sim, alice, c.STOP_MARKET, "sell", "1", 9500))
    with_stop = sim.engine.state_hash()
    assert with_stop != before
    sim.ok(c.AmendOrder(alice, oid, trigger_price_ticks=94_000))
    assert sim.engine.state_hash() != with_stop  # the trigger price is hashed
