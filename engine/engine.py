"""The engine: one entry point, `Engine.apply(command) -> list[Event]`.

Pipeline per command (exchange-core style), one module per stage:

1. dispatch by command type: orders.py (place / amend / cancel: validate → pre-trade
   risk → matching.py: match → settle) or admin.py (accounts, money, marks, leverage,
   ADL policy);
2. if there are stop / take-profit orders (SPEC §12): those the prices now reach fire, one
   at a time, and enter like new orders (stops.py, orders.enter_triggered), before the
   liquidation check of the same command (a trader's stop is their own protection and gets
   its chance first); the two alternate until neither has work;
3. if the command moved a mark or changed balances: liquidation.py (who is below
   maintenance, the takeover, the insurance fund's order), which hands what the book did
   not take to deleverage.py (ADL at the bankruptcy price, the bad-debt guard).

The state and the primitives the stages share are in state.py; this module owns the order
of the stages, the §7 invariants and the state hash.

Pure and deterministic: no I/O, no clock, no randomness. The same commands (with their
`ts_ns`) give the same events and the same `state_hash()`. A rejection is returned as an
`OrderRejected` / `CommandRejected` event (it consumes a `seq`, so the event log is a full
audit of what the engine saw) and changes nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from engine import admin, funding, isolated, liquidation, orders, pricing, stops
from engine import commands as c
from engine import events as ev
from engine.book import Order
from engine.errors import InvariantViolation, Rejected
from engine.risk import equity_atoms, isolated_equity_atoms, liquidation_price_frac
from engine.state import ExchangeState

_HANDLERS: dict[type, Callable[[Any, Any], None]] = {
    c.CreateAccount: admin.create_account,
    c.Deposit: admin.deposit,
    c.Withdraw: admin.withdraw,
    c.TopUpInsuranceFund: admin.top_up,
    c.SetMarkPrice: admin.set_mark,
    c.SetLeverage: admin.set_leverage,
    c.SetAdlPolicy: admin.set_adl_policy,
    c.SetIndexPrice: pricing.set_index,
    c.ApplyFunding: funding.apply_funding,
    c.PlaceOrder: orders.place,
    c.CancelOrder: orders.cancel,
    c.CancelAllOrders: orders.cancel_all,
    c.AmendOrder: orders.amend,
    c.SetMarginMode: isolated.set_margin_mode,
    c.AdjustPositionMargin: isolated.adjust_margin,
}


class Engine(ExchangeState):
    """All exchange state (ExchangeState) and the order of the stages that change it."""

    # == entry point ========================================================================

    def apply(self, command: c.Command) -> list[Any]:
        """Apply one command; return the events it caused (a rejection is one event)."""
        self.out = []
        self.ts = command.ts_ns
        handler = _HANDLERS.get(type(command))
        if handler is None:
            raise TypeError(f"not a command: {command!r}")
        try:
            handler(self, command)
        except Rejected as r:
            self._emit_rejection(command, r)
            return self.out
        if self.stops.count:
            self._triggers_and_liquidations()
        elif self.dirty or self.moved:
            liquidation.run_liquidations(self)
        return self.out

    def _triggers_and_liquidations(self) -> None:
        """SPEC §12 stops, then §5 liquidations, alternately until neither has work: a
        triggered order's fills, or a liquidation's, can move the last price and reach more
        triggers. Triggers run before the liquidation check of the same command: a trader's
        stop is their own protection and gets its chance first."""
        while True:
            fired = False
            while self.stops.count:
                order = stops.fire_next(self)
                if order is None:
                    break
                orders.enter_triggered(self, order)
                fired = True
            if self.dirty or self.moved:
                trades = self.next_trade_id
                liquidation.run_liquidations(self)
                if self.next_trade_id == trades:  # no fill: no price a stop watches moved
                    return
            elif not fired:
                return

    def _emit_rejection(self, command: Any, r: Rejected) -> None:
        is_order = isinstance(command, c.PlaceOrder | c.CancelOrder | c.CancelAllOrders | c.AmendOrder)
        cls = ev.OrderRejected if is_order else ev.CommandRejected
        self.emit(
            cls,
            getattr(command, "account_id", None),
            type(command).__name__,
            int(r.reason),
            r.reason.name,
            r.message,
            r.order_id if r.order_id is not None else getattr(command, "order_id", None),
            getattr(command, "client_order_id", None),
        )

    # == invariants and hashing ===========================================================

    def check_invariants(self) -> None:
        """Raise InvariantViolation if any §7 invariant is broken."""
        for book in self.books.values():
            book.check_invariants()
        total = self.fees_collected_atoms
        sizes = dict.fromkeys(self.symbols, 0)
        for acct in self.accounts.values():
            total += acct.wallet_atoms + sum(acct.isolated.values())
            for sym, margin in acct.isolated.items():
                if sym not in acct.positions and margin != 0:
                    raise InvariantViolation(f"account {acct.account_id}: flat isolated {sym} keeps margin {margin}")
            for sym, pos in acct.positions.items():
                if pos.size_lots == 0:
                    raise InvariantViolation(f"account {acct.account_id}: zero position kept")
                total -= pos.entry_value_atoms
                sizes[sym] += pos.size_lots
            for oid, order in acct.open_orders.items():
                if self.books[order.symbol].orders.get(oid) is not order:
                    raise InvariantViolation(f"order {oid} open but not in the book")
            for sym in self.symbols:
                b = sum(o.remaining_lots for o in acct.open_orders.values() if o.symbol == sym and o.is_buy)
                s = sum(o.remaining_lots for o in acct.open_orders.values() if o.symbol == sym and not o.is_buy)
                if acct.open_lots(sym) != (b, s):
                    raise InvariantViolation(f"account {acct.account_id}: open lots out of sync in {sym}")
            for o in acct.open_orders.values():
                price = o.price_ticks or 0
                bad = (
                    acct.buy_price_max.get(o.symbol, 0) < price
                    if o.is_buy
                    else acct.sell_price_min.get(o.symbol, price + 1) > price
                )
                if bad:
                    raise InvariantViolation(f"account {acct.account_id}: order {o.order_id} beyond its price bound")
            if set(acct.buy_price_max) != set(acct.open_buy_lots) or set(acct.sell_price_min) != set(acct.open_sell_lots):
                raise InvariantViolation(f"account {acct.account_id}: price bounds out of sync")
        expected = self.deposits_atoms + self.top_ups_atoms - self.withdrawals_atoms + self.bad_debt_atoms
        if total != expected:
            raise InvariantViolation(f"conservation broken: {total} != {expected}")
        for acct in self.accounts.values():
            if equity_atoms(acct, self.instruments, self.marks) < 0:
                raise InvariantViolation(f"account {acct.account_id} ends the command with negative equity")
            for sym in acct.isolated:
                if isolated_equity_atoms(acct, sym, self.instruments[sym], self.marks.get(sym, 0)) < 0:
                    raise InvariantViolation(f"account {acct.account_id}: isolated {sym} ends the command with negative equity")
        for sym, total_size in sizes.items():
            if total_size != 0:
                raise InvariantViolation(f"{sym}: positions sum to {total_size}")
        fund = self.insurance_fund
        if fund.positions or fund.wallet_atoms < 0:
            raise InvariantViolation("insurance fund holds a position or a negative balance")
        in_books = sum(len(b.orders) for b in self.books.values())
        if in_books != sum(len(a.open_orders) for a in self.accounts.values()):
            raise InvariantViolation("book orders and account open orders disagree")
        for sym, ids in self.holders.items():
            actual = {a.account_id for a in self.accounts.values() if sym in a.positions and a.account_id}
            if ids != actual:
                raise InvariantViolation(f"{sym}: holders index out of sync")
        stops.check_invariants(self)

    def config_fingerprint(self) -> str:
        """SHA-256 of the rules: instruments (fees, tiers, bands, ADL defaults) and limits.

        Not part of the state hash: it does not change with commands. The journal records it,
        so a data dir is never replayed under other rules than it was written with.
        """
        rules = (
            sorted(self.instruments.items()),
            self.max_open_orders,
            self.closed_orders_kept,
            self.fills_kept,
            [self.recent_trades[s].maxlen for s in self.symbols],
        )
        return hashlib.sha256(repr(rules).encode()).hexdigest()

    def state_hash(self) -> str:
        """SHA-256 of a canonical rendering of the whole state (stable across processes)."""
        h = hashlib.sha256()
        put = h.update
        put(repr((self.seq, self.next_account_id, self.next_order_id, self.next_trade_id)).encode())
        put(repr((self.fees_collected_atoms, self.deposits_atoms, self.withdrawals_atoms, self.top_ups_atoms,
                  self.bad_debt_atoms)).encode())
        put(repr(sorted(self.marks.items())).encode())
        put(repr(sorted(self.adl_policy.items())).encode())
        for aid in sorted(self.accounts):
            a = self.accounts[aid]
            put(repr((aid, a.api_key_hash, a.wallet_atoms, sorted(a.leverage.items()))).encode())
            if a.isolated:  # SPEC §12 isolated margin, hashed only where used (old hashes stay)
                put(repr(("isolated", sorted(a.isolated.items()))).encode())
            put(repr(sorted(
                (s, p.size_lots, p.entry_value_atoms, *((p.funding_atoms,) if p.funding_atoms else ()))
                for s, p in a.positions.items()
            )).encode())
            put(repr(sorted(a.client_order_ids.items())).encode())
            put(repr([_order_state(o) for o in a.closed_orders.values()]).encode())
            put(repr(list(a.fills)).encode())
        if self.index or self.premium_samples or any(self.funding_history.values()):  # SPEC §12 in use
            put(repr((
                sorted(self.index.items()), sorted(self.basis.items()), sorted(self.last_price.items()),
                # hex: the exact sum's denominator grows past the 4,300 digits repr() may print
                sorted((s, hex(f.numerator), hex(f.denominator)) for s, f in self.premium_sum.items()),
                sorted(self.premium_samples.items()), [(s, list(self.funding_history[s])) for s in self.symbols],
            )).encode())
        for sym in self.symbols:
            book = self.books[sym]
            for side in (book.bids, book.asks):
                for level in side.values():
                    put(repr([_order_state(o) for o in level.orders.values()]).encode())
        if self.stops.count:  # SPEC §12 untriggered stops, hashed only where used (old hashes stay)
            put(repr(("stops", [_order_state(o) for _, o in sorted(self.stops.orders.items())])).encode())
        return h.hexdigest()


def _order_state(o: Order) -> tuple[Any, ...]:
    state = (
        o.order_id, o.account_id, o.symbol, o.side, o.price_ticks, o.qty_lots, o.remaining_lots,
        o.filled_lots, o.filled_value_ticks, o.order_type, o.time_in_force, o.post_only,
        o.reduce_only, o.stp, o.client_order_id, o.status, o.ts_ns, tuple(o.fills),
    )
    if o.trigger_price_ticks is None:  # a plain order: as before stops existed (old hashes stay)
        return state
    return (*state, o.trigger_price_ticks, o.trigger_by, o.close_position)


__all__ = ["Engine", "Rejected", "liquidation_price_frac"]
