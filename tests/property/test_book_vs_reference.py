"""The engine's matching against the naive reference book (tests/property/naive_book.py).

A Hypothesis state machine drives random place / cancel / cancel-all / amend / mark-move
sequences through the real `Engine` (via commands) and through `NaiveBook`, on one symbol
with a narrow ~20-tick price band around the mark so that orders cross often. Accounts have
huge deposits, so margin never binds and nobody is liquidated: the only thing that decides
an outcome is the book. After every step it compares:

- whether the command was rejected, and why;
- every fill (taker_order_id, maker_order_id, price_ticks, qty_lots), in order;
- every cancel (order_id, canceled_lots, reason);
- the full depth (`books[sym].depth(1000)`) and the queue of every level;

and calls `engine.check_invariants()` (through `EventLog`, which also checks that `seq`s are
gap-free). Order ids are the engine's: the reference is handed the id the engine assigned.
"""

from __future__ import annotations

from typing import Any

from exchange_harness import EventLog, cancels_of, fills_of, rejection_of, scaled, usd_atoms
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from naive_book import NaiveBook, RefResult

from engine import commands as c
from engine import events as ev
from engine.engine import Engine

SYM = "BTC-PERP"
MARK0 = 1_000  # ticks
PRICES = st.integers(MARK0 - 10, MARK0 + 10)
QTYS = st.integers(1, 10)
ORDER_TYPES = st.sampled_from([c.LIMIT, c.LIMIT, c.LIMIT, c.MARKET])
SIDES = st.sampled_from([c.BUY, c.SELL])
STPS = st.sampled_from(list(c.STP_MODES))
TIFS = st.sampled_from([c.GTC, c.GTC, c.GTC, c.IOC, c.FOK])
POST_ONLY = st.sampled_from([False, False, False, True])
# Marks that put an edge of the 5% market band inside the 20-tick book: a market buy's limit
# floor(M * 1.05) lands in 990..1010 for M in 943..962, a market sell's ceil(M * 0.95) for
# M in 1043..1063 (where M * 1.05 or M * 0.95 is off the grid, rounding decides a fill).
MARKS = st.one_of(st.integers(940, 965), st.integers(1040, 1065), st.integers(MARK0 - 60, MARK0 + 60))
N_ACCOUNTS = 3

BOOK_SETTINGS = settings(
    max_examples=scaled(600),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class BookVsReference(RuleBasedStateMachine):
    """Engine book vs NaiveBook, step by step."""

    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine()
        self.log = EventLog(self.engine)
        self.ref = NaiveBook(market_band_ppm=50_000)  # SPEC §4 default band
        self.account_ids: list[int] = []
        for _ in range(N_ACCOUNTS):
            (created,) = self.log.apply(c.CreateAccount(ts_ns=self.log.next_ts()))
            self.account_ids.append(created.account_id)
            self.log.apply(c.Deposit(created.account_id, usd_atoms(10_000_000), ts_ns=self.log.next_ts()))
        self.mark = MARK0
        self.log.apply(c.SetMarkPrice(SYM, MARK0, ts_ns=self.log.next_ts()))
        self.ever_placed: list[int] = []

    # -- helpers -------------------------------------------------------------------------

    def _compare(self, events: list[Any], ref: RefResult, sort_cancels: bool = False) -> None:
        assert rejection_of(events) == ref.rejected, (events, ref)
        assert fills_of(events) == ref.fills, (fills_of(events), ref.fills)
        got, want = cancels_of(events), ref.canceled
        if sort_cancels:
            got, want = sorted(got), sorted(want)
        assert got == want, (got, want)
        book = self.engine.books[SYM]
        bids, asks = book.depth(1000)
        ref_bids, ref_asks = self.ref.depth()
        assert bids == ref_bids, (bids, ref_bids)
        assert asks == ref_asks, (asks, ref_asks)
        queues = tuple(
            [(lv.price_ticks, [(o.order_id, o.remaining_lots) for o in lv.orders.values()]) for lv in side.values()]
            for side in (book.bids, book.asks)
        )
        assert queues == self.ref.queues()

    def _pick_order(self, data: st.DataObject) -> int:
        live = self.ref.open_ids()
        # Mostly a live order; sometimes one that was filled, canceled or never existed.
        if live and data.draw(st.integers(0, 4), label="live?") < 4:
            return data.draw(st.sampled_from(live), label="order_id")
        return data.draw(st.integers(1, self.engine.next_order_id + 1), label="order_id")

    def _pick_actor(self, data: st.DataObject, order_id: int) -> int:
        order = self.ref.find(order_id)
        if order is not None and data.draw(st.integers(0, 5), label="owner?") < 5:
            return order.account_id
        return data.draw(st.sampled_from(self.account_ids), label="account")

    # -- rules ---------------------------------------------------------------------------

    @initialize(seed_orders=st.lists(st.tuples(st.integers(0, N_ACCOUNTS - 1), SIDES, PRICES, QTYS), max_size=10))
    def seed_book(self, seed_orders: list[tuple[int, str, int, int]]) -> None:
        """Start from a populated book (plain GTC limits; they may cross and trade)."""
        for who, side, price, qty in seed_orders:
            self._place_limit(self.account_ids[who], side, price, qty, c.GTC, False, c.STP_CANCEL_TAKER)

    @rule(who=st.integers(0, N_ACCOUNTS - 1), side=SIDES, order_type=ORDER_TYPES, price=PRICES, qty=QTYS,
          tif=TIFS, post_only=POST_ONLY, stp=STPS)
    def place(self, who: int, side: str, order_type: str, price: int, qty: int, tif: str, post_only: bool,
              stp: str) -> None:
        if order_type == c.MARKET:
            self._place_market(self.account_ids[who], side, qty, tif, stp)
        else:
            self._place_limit(self.account_ids[who], side, price, qty, tif, post_only, stp)

    @precondition(lambda self: bool(self.ref.resting))
    @rule(who=st.integers(0, N_ACCOUNTS - 1), side=SIDES, through=st.integers(0, 4), qty=st.integers(1, 20),
          tif=TIFS, stp=STPS)
    def place_crossing_limit(self, who: int, side: str, through: int, qty: int, tif: str, stp: str) -> None:
        """A limit priced `through` ticks beyond the opposite best (or at the own best if none)."""
        bids, asks = self.ref.depth()
        opposite = asks if side == c.BUY else bids
        own = bids if side == c.BUY else asks
        base = (opposite or own)[0][0]
        price = base + through if side == c.BUY else base - through
        self._place_limit(self.account_ids[who], side, price, qty, tif, False, stp)

    def _place_limit(self, aid: int, side: str, price: int, qty: int, tif: str, post_only: bool, stp: str) -> None:
        cmd = c.PlaceOrder(aid, SYM, side, qty, price, c.LIMIT, tif, post_only=post_only, stp=stp,
                           ts_ns=self.log.next_ts())
        events = self.log.apply(cmd)
        oid = self._accepted_id(events)
        ref = self.ref.place(oid, aid, side, qty, price, c.LIMIT, tif, post_only, stp, self.mark)
        self._compare(events, ref)

    def _place_market(self, aid: int, side: str, qty: int, tif: str, stp: str) -> None:
        cmd = c.PlaceOrder(aid, SYM, side, qty, None, c.MARKET, tif, stp=stp, ts_ns=self.log.next_ts())
        events = self.log.apply(cmd)
        oid = self._accepted_id(events)
        ref = self.ref.place(oid, aid, side, qty, None, c.MARKET, tif, False, stp, self.mark)
        self._compare(events, ref)

    @precondition(lambda self: bool(self.ever_placed))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        oid = self._pick_order(data)
        aid = self._pick_actor(data, oid)
        events = self.log.apply(c.CancelOrder(aid, oid, ts_ns=self.log.next_ts()))
        self._compare(events, self.ref.cancel(aid, oid))

    @precondition(lambda self: bool(self.ref.resting))
    @rule(who=st.integers(0, N_ACCOUNTS - 1))
    def cancel_all(self, who: int) -> None:
        aid = self.account_ids[who]
        events = self.log.apply(c.CancelAllOrders(aid, SYM, ts_ns=self.log.next_ts()))
        self._compare(events, self.ref.cancel_all(aid), sort_cancels=True)

    @precondition(lambda self: bool(self.ever_placed))
    @rule(data=st.data(), price=st.none() | PRICES, qty=st.none() | st.integers(1, 12))
    def amend(self, data: st.DataObject, price: int | None, qty: int | None) -> None:
        oid = self._pick_order(data)
        aid = self._pick_actor(data, oid)
        events = self.log.apply(c.AmendOrder(aid, oid, price, qty, ts_ns=self.log.next_ts()))
        self._compare(events, self.ref.amend(aid, oid, price, qty, self.mark))

    @rule(mark=MARKS)
    def move_mark(self, mark: int) -> None:
        events = self.log.apply(c.SetMarkPrice(SYM, mark, ts_ns=self.log.next_ts()))
        self.mark = mark
        assert [type(e) for e in events] == [ev.MarkPriceChanged], events
        self._compare(events, RefResult())

    @precondition(lambda self: bool(self.ref.resting))
    @rule(data=st.data(), who=st.integers(0, N_ACCOUNTS - 1), qty=st.integers(1, 20), nudge=st.integers(-2, 2),
          tif=st.sampled_from([c.GTC, c.FOK]), stp=STPS)
    def market_at_band_edge(self, data: st.DataObject, who: int, qty: int, nudge: int, tif: str, stp: str) -> None:
        """Set the mark so that the 5% band ends within a tick of a resting order, then hit it at market."""
        resting = sorted(self.ref.resting, key=lambda o: o.order_id)
        maker = resting[data.draw(st.integers(0, len(resting) - 1), label="maker index")]
        if maker.side == c.SELL:  # a market buy reaches floor(M * 1.05)
            side, mark = c.BUY, maker.price_ticks * 100 // 105 + nudge
        else:  # a market sell reaches ceil(M * 0.95)
            side, mark = c.SELL, maker.price_ticks * 100 // 95 + nudge
        self.move_mark(mark)
        self._place_market(self.account_ids[who], side, qty, tif, stp)

    @invariant()
    def open_orders_match(self) -> None:
        engine_ids = sorted(self.engine.books[SYM].orders)
        assert engine_ids == self.ref.open_ids()
        for aid in self.account_ids:
            assert sorted(self.engine.accounts[aid].open_orders) == self.ref.open_ids(aid)

    def _accepted_id(self, events: list[Any]) -> int:
        accepted = [e for e in events if isinstance(e, ev.OrderAccepted)]
        if accepted:
            self.ever_placed.append(accepted[0].order_id)
            return int(accepted[0].order_id)
        return -1  # rejected: the reference must reject too, so the id is never used


BookVsReference.TestCase.settings = BOOK_SETTINGS
test_book_when_driven_by_random_commands_matches_naive_reference = BookVsReference.TestCase


def test_book_machine_when_derandomized_matches_naive_reference() -> None:
    """A fixed-seed run of the machine (catches a broken reference as well as a broken engine)."""
    run_state_machine_as_test(
        BookVsReference,
        settings=settings(BOOK_SETTINGS, max_examples=20, derandomize=True, database=None),
    )
