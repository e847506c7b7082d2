"""The exchange's state, and the small primitives every stage uses to change it.

`ExchangeState` holds everything `Engine.apply` works on: accounts, books, marks, ADL
policies, counters, the insurance fund (account 0), bad debt, and the derived indexes
(holders per symbol, the liquidation index, ADL rankings). The stage modules (orders,
matching, liquidation, deleverage, admin) are functions over it; they change it only
through its fields and the primitives below (emit an event, cancel a resting order, close
an order into history, pay from the fund, ...), never through each other's private helpers.

Per-command scratch lives here too, so that stages can hand work to later ones: `out` (the
events of the command being applied), `ts` (its timestamp), `dirty` (accounts whose margin
changed: liquidation checks them), `moved` (symbols whose mark moved), `takeover` (the
position the insurance fund is closing right now, for risk.settle_fill).
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import Any

from engine import commands as c
from engine import events as ev
from engine.accounts import FILLS_KEPT, INSURANCE_FUND_ID, Account
from engine.adl import adl_quantile
from engine.adl_line import AdlRanking
from engine.book import Order, OrderBook
from engine.errors import Reject, Rejected
from engine.instruments import Instrument, default_instruments
from engine.liq_index import LiquidationIndex
from engine.pickling import restore, state_of
from engine.stops import StopBook

_tuple_new = tuple.__new__
FUNDING_KEPT = 100  # recent funding rounds per symbol, for GET /v1/funding/{symbol}


# What a snapshot holds (ExchangeState.__getstate__): every attribute __init__ sets, and the
# two matching-time ones (tests/unit/test_purity.py checks that the list is complete)
STATE_ATTRS = (
    "instruments", "symbols", "books", "marks", "adl_policy", "accounts", "holders", "max_open_orders",
    "closed_orders_kept", "fills_kept", "recent_trades", "seq", "next_account_id", "next_order_id",
    "next_trade_id", "fees_collected_atoms", "deposits_atoms", "withdrawals_atoms", "top_ups_atoms",
    "bad_debt_atoms", "liq_index", "index", "basis", "last_price", "premium_sum", "premium_samples",
    "funding_history", "stops", "rankings", "rank_touched", "out", "ts", "dirty", "moved", "index_stale",
    "takeover", "partial_order_id",
)


class ExchangeState:
    """All exchange state, and the primitives the stages share."""

    # (lots, bankruptcy value) of the position the insurance fund is closing right now, only
    # while its IOC order matches (risk.settle_fill).
    takeover: tuple[int, int] | None = None
    # the order id of the partial-liquidation order being matched right now (SPEC §12): its
    # fills are the engine's, not the trader's own (isolated.after_fill)
    partial_order_id: int | None = None

    def __init__(
        self,
        instruments: dict[str, Instrument] | None = None,
        max_open_orders: int = 200,
        closed_orders_kept: int = 10_000,
        recent_trades_kept: int = 1_000,
        fills_kept: int = FILLS_KEPT,
    ) -> None:
        self.instruments = instruments if instruments is not None else default_instruments()
        self.symbols = sorted(self.instruments)
        self.books = {s: OrderBook(s) for s in self.symbols}
        self.marks: dict[str, int] = {
            s: i.initial_mark_ticks for s, i in self.instruments.items() if i.initial_mark_ticks
        }
        self.adl_policy = {s: c.ADL_QUEUE for s in self.symbols}
        self.accounts: dict[int, Account] = {INSURANCE_FUND_ID: Account(INSURANCE_FUND_ID, "", fills_kept)}
        self.holders: dict[str, set[int]] = {s: set() for s in self.symbols}
        self.max_open_orders = max_open_orders
        self.closed_orders_kept = closed_orders_kept
        self.fills_kept = fills_kept
        self.recent_trades: dict[str, deque[ev.TradeExecuted]] = {
            s: deque(maxlen=recent_trades_kept) for s in self.symbols
        }
        self.seq = 0
        self.next_account_id = 1
        self.next_order_id = 1
        self.next_trade_id = 1
        self.fees_collected_atoms = 0
        self.deposits_atoms = 0
        self.withdrawals_atoms = 0
        self.top_ups_atoms = 0
        self.bad_debt_atoms = 0  # system deficit (§5 step 5): what the insurance fund could not pay
        self.liq_index = LiquidationIndex(self.symbols)
        # SPEC §12: index prices, the basis EMA (ticks), the last trade price, the premium
        # samples since the last funding round (exact sum and count) and recent funding rates
        self.index: dict[str, int] = {}
        self.basis: dict[str, int] = {}
        self.last_price: dict[str, int] = {}
        self.premium_sum: dict[str, Fraction] = {}
        self.premium_samples: dict[str, int] = {}
        self.funding_history: dict[str, deque[tuple[int, int]]] = {s: deque(maxlen=FUNDING_KEPT) for s in self.symbols}
        # SPEC §12: untriggered stop / take-profit orders, sorted by trigger (engine/stops.py)
        self.stops = StopBook(self.symbols)
        # derived caches (not part of the state hash)
        self.rankings: dict[tuple[str, int], AdlRanking] = {}
        self.rank_touched: set[int] = set()
        # per-command scratch
        self.out: list[Any] = []
        self.ts = 0
        self.dirty: set[int] = set()
        self.moved: list[str] = []
        self.index_stale: set[int] = set()

    # == pickling (snapshots) ===============================================================

    def __getstate__(self) -> dict[str, Any]:
        """The state without the ADL lines: derived, rebuilt on first use (smaller snapshots)."""
        state = state_of(self, STATE_ATTRS)
        state["rankings"] = {}
        state["rank_touched"] = set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore; ADL lines pickled by an older version (other key layout) are dropped; a
        state pickled before stop orders gets an empty stop book."""
        restore(self, state)
        if "stops" not in state:
            self.stops = StopBook(self.symbols)
        self.rankings = {}
        self.rank_touched = set()

    # == lookups that refuse the command ==================================================

    def account(self, account_id: int) -> Account:
        acct = self.accounts.get(account_id)
        if acct is None or account_id == INSURANCE_FUND_ID:
            raise Rejected(Reject.ACCOUNT_NOT_FOUND, f"account {account_id} does not exist")
        return acct

    def instrument(self, symbol: str) -> Instrument:
        inst = self.instruments.get(symbol)
        if inst is None:
            raise Rejected(Reject.INVALID_SYMBOL, f"unknown symbol {symbol!r}")
        return inst

    def mark(self, symbol: str) -> int:
        mark = self.marks.get(symbol)
        if mark is None:
            raise Rejected(Reject.NO_MARK_PRICE, f"no mark price for {symbol} yet")
        return mark

    # == primitives =========================================================================

    @property
    def insurance_fund(self) -> Account:
        """The insurance fund account (id 0)."""
        return self.accounts[INSURANCE_FUND_ID]

    def find_order(self, account_id: int, order_id: int) -> Order | None:
        """An open, untriggered (stop) or recently closed order of the account."""
        acct = self.accounts.get(account_id)
        if acct is None:
            return None
        return acct.open_orders.get(order_id) or acct.stop_orders.get(order_id) or acct.closed_orders.get(order_id)

    def emit(self, cls: Any, *fields: Any) -> Any:
        """Append the next event (seq + 1, this command's ts, then `fields`) and return it."""
        self.seq = seq = self.seq + 1
        event = _tuple_new(cls, (seq, self.ts, *fields))
        self.out.append(event)
        return event

    def move_mark(self, symbol: str, price_ticks: int) -> None:
        """Set the mark (`mark_price_changed`); liquidation checks whom it crossed after the command."""
        self.marks[symbol] = price_ticks
        self.moved.append(symbol)
        for side in (1, -1):
            line = self.rankings.get((symbol, side))
            if line is not None:
                line.stale = True
        self.emit(ev.MarkPriceChanged, symbol, price_ticks)

    def touch(self, account_id: int) -> None:
        """The account's margin or position changed: check it for liquidation, re-rank it."""
        self.dirty.add(account_id)
        self.rank_touched.add(account_id)

    def holders_update(self, acct: Account, symbol: str) -> None:
        """Keep `holders[symbol]` (who has a position there) in step with `acct`."""
        if acct.account_id == INSURANCE_FUND_ID:
            return
        if symbol in acct.positions:
            self.holders[symbol].add(acct.account_id)
        else:
            self.holders[symbol].discard(acct.account_id)

    def close_order(self, acct: Account, order: Order) -> None:
        """Move a finished order into the account's bounded history."""
        if acct.account_id == INSURANCE_FUND_ID:
            return
        acct.closed_orders[order.order_id] = order
        while len(acct.closed_orders) > self.closed_orders_kept:
            _, old = acct.closed_orders.popitem(last=False)
            if old.client_order_id is not None and acct.client_order_ids.get(old.client_order_id) == old.order_id:
                del acct.client_order_ids[old.client_order_id]

    def cancel_resting(self, order: Order, reason: str) -> None:
        """Take a resting order out of the book and cancel it (`order_canceled` with `reason`)."""
        acct = self.accounts[order.account_id]
        self.books[order.symbol].remove(order)
        del acct.open_orders[order.order_id]
        acct.track_open(order, -order.remaining_lots)
        self.cancel_remaining(order, acct, reason)

    def cancel_remaining(self, order: Order, acct: Account, reason: str) -> None:
        """Cancel what is left of an order that is not (or no longer) in the book."""
        canceled = order.remaining_lots
        order.remaining_lots = 0
        order.status = "canceled"
        self.close_order(acct, order)
        self.seq = seq = self.seq + 1  # self.emit, inline: a quarter of all commands cancel
        self.out.append(_tuple_new(ev.OrderCanceled, (
            seq, self.ts, order.account_id, order.order_id, order.client_order_id, order.symbol, order.side,
            order.price_ticks, canceled, order.filled_lots, reason,
        )))

    def emit_position(self, acct: Account, symbol: str, realized: int, reason: str) -> None:
        """A `position_changed` event with the account's position and wallet as they are now."""
        pos = acct.positions.get(symbol)
        self.emit(
            ev.PositionChanged,
            acct.account_id,
            symbol,
            pos.size_lots if pos else 0,
            pos.entry_value_atoms if pos else 0,
            realized,
            acct.wallet_atoms,
            reason,
        )

    def fund_pays(self, cost: int, reason: str, account_id: int, symbol: str | None) -> tuple[int, int]:
        """The insurance fund pays `cost` (or gains it when negative) as far as its balance
        goes; the rest is bad debt, a system deficit (§5 step 5). Returns (fund delta, bad debt)."""
        if cost == 0:
            return 0, 0
        fund = self.insurance_fund
        paid = min(cost, fund.wallet_atoms)
        fund.wallet_atoms -= paid
        bad_debt = cost - paid
        self.bad_debt_atoms += bad_debt
        if paid:
            self.emit(ev.InsuranceFundChanged, fund.wallet_atoms, -paid, reason, account_id, symbol)
        return -paid, bad_debt

    def reduce_capacity(self, account_id: int, symbol: str, is_buy: bool) -> int:
        """How many lots a reduce-only order on this side may still fill."""
        size = self.accounts[account_id].size(symbol)
        if (size < 0 and is_buy) or (size > 0 and not is_buy):
            return abs(size)
        return 0

    # == ADL line (a derived cache, refreshed lazily) =======================================

    def ranking(self, symbol: str, side: int) -> list[int]:
        """Account ids holding positions of sign `side` in `symbol`, first in the ADL line first."""
        return self.adl_ranking(symbol, side).ordered_ids()

    def adl_ranking(self, symbol: str, side: int) -> AdlRanking:
        """The ADL line of one side of `symbol`, refreshed for the accounts touched since."""
        if self.rank_touched:
            for each in self.rankings.values():
                each.pending |= self.rank_touched
            self.rank_touched.clear()
        r = self.rankings.get((symbol, side))
        if r is None:
            r = AdlRanking(symbol, side)
            r.pending = set(self.holders[symbol])
            self.rankings[(symbol, side)] = r
        r.refresh(self.accounts, self.instruments, self.marks)
        return r

    def adl_quantiles(self, symbol: str) -> dict[int, int]:
        """account_id -> adl_quantile (0..4) for every position in `symbol`."""
        out: dict[int, int] = {}
        for side in (1, -1):
            ids = self.ranking(symbol, side)
            for r, aid in enumerate(ids):
                out[aid] = adl_quantile(r, len(ids))
        return out
