"""Shared helpers for the unit tests: an engine driver that checks invariants after every
command, a state snapshot for "a rejection changes nothing", and a seeded command generator.

Units (BTC-PERP defaults): price_ticks = USD * 10, qty_lots = BTC * 1000,
one lot at one tick = 10_000 atoms (1 atom = 1e-8 USD).
"""

from __future__ import annotations

import random
import re
from typing import Any

from engine import commands as c
from engine.engine import Engine
from engine.errors import Reject
from engine.events import REJECTION_TYPES, OrderAccepted, OrderCanceled, TradeExecuted

BTC = "BTC-PERP"
ETH = "ETH-PERP"
USD = 100_000_000  # atoms per USD
K_BTC = 10_000  # atoms per lot-tick, BTC-PERP
MARK = 100_000  # 10,000.0 USD in BTC ticks
BIG = 10_000_000 * USD  # a deposit that margin never notices

_UPPER_SNAKE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")


class Ex:
    """An engine plus helpers; every command is followed by `check_invariants()`."""

    def __init__(self, **engine_kwargs: Any) -> None:
        self.engine = Engine(**engine_kwargs)

    # -- applying commands -----------------------------------------------------------------
    def do(self, command: Any) -> list[Any]:
        """Apply, check invariants and gap-free seq, return the events."""
        seq0 = self.engine.seq
        evs = self.engine.apply(command)
        self.engine.check_invariants()
        assert [e.seq for e in evs] == list(range(seq0 + 1, seq0 + 1 + len(evs)))
        assert self.engine.seq == seq0 + len(evs)
        assert all(e.ts_ns == command.ts_ns for e in evs)
        return evs

    def ok(self, command: Any) -> list[Any]:
        evs = self.do(command)
        rejected = [e for e in evs if isinstance(e, REJECTION_TYPES)]
        assert not rejected, rejected
        return evs

    def reject(self, command: Any, reason: Reject) -> Any:
        """Apply a command that must be refused with `reason` and change nothing but seq."""
        eng = self.engine
        hash_before = eng.state_hash()
        snap_before = snapshot(eng)
        seq0 = eng.seq
        evs = self.do(command)
        assert len(evs) == 1, evs
        rej = evs[0]
        assert isinstance(rej, REJECTION_TYPES), rej
        assert rej.reason == reason.name, (rej.reason, reason.name, rej.message)
        assert rej.code == int(reason) == Reject[rej.reason]
        assert _UPPER_SNAKE.fullmatch(rej.reason)
        assert rej.message
        assert eng.seq == seq0 + 1
        eng.seq -= 1  # the hash covers seq; a rejection may only consume one
        try:
            assert eng.state_hash() == hash_before
        finally:
            eng.seq += 1
        assert snapshot(eng) == snap_before
        return rej

    # -- building state ----------------------------------------------------------------------
    def account(self, deposit_atoms: int = BIG) -> int:
        aid = self.ok(c.CreateAccount())[0].account_id
        if deposit_atoms:
            self.ok(c.Deposit(aid, deposit_atoms))
        return aid

    def mark(self, price_ticks: int = MARK, symbol: str = BTC) -> list[Any]:
        return self.ok(c.SetMarkPrice(symbol, price_ticks))

    def place(
        self, aid: int, side: str, qty_lots: int, price_ticks: int | None, symbol: str = BTC, **kw: Any
    ) -> list[Any]:
        if price_ticks is None:
            kw.setdefault("order_type", c.MARKET)
        return self.ok(c.PlaceOrder(aid, symbol, side, qty_lots, price_ticks, **kw))

    def rest(self, aid: int, side: str, qty_lots: int, price_ticks: int, symbol: str = BTC, **kw: Any) -> int:
        """Place a GTC limit that must rest untouched; return its order id."""
        evs = self.place(aid, side, qty_lots, price_ticks, symbol, **kw)
        assert not of(evs, TradeExecuted) and not of(evs, OrderCanceled), evs
        oid = accepted_id(evs)
        assert oid in self.engine.books[symbol].orders
        return oid

    # -- reading state -----------------------------------------------------------------------
    def depth(self, symbol: str = BTC) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return self.engine.books[symbol].depth(1_000)

    def level_ids(self, price_ticks: int, is_buy: bool, symbol: str = BTC) -> list[int]:
        book = self.engine.books[symbol]
        side = book.bids if is_buy else book.asks
        level = side.get(-price_ticks if is_buy else price_ticks)
        return list(level.orders) if level is not None else []

    def wallet(self, aid: int) -> int:
        return self.engine.accounts[aid].wallet_atoms

    def size(self, aid: int, symbol: str = BTC) -> int:
        return self.engine.accounts[aid].size(symbol)

    def entry_value(self, aid: int, symbol: str = BTC) -> int:
        pos = self.engine.accounts[aid].positions.get(symbol)
        return pos.entry_value_atoms if pos else 0

    def open_ids(self, aid: int) -> set[int]:
        return set(self.engine.accounts[aid].open_orders)


def of(evs: list[Any], cls: type) -> list[Any]:
    return [e for e in evs if isinstance(e, cls)]


def accepted_id(evs: list[Any]) -> int:
    acc = of(evs, OrderAccepted)
    assert len(acc) == 1, evs
    return int(acc[0].order_id)


def assert_no_self_trade(evs: list[Any]) -> None:
    for t in of(evs, TradeExecuted):
        assert t.taker_account_id != t.maker_account_id, t


def snapshot(eng: Engine) -> Any:
    """Everything a rejection must leave alone, in plain comparable values."""
    accounts = {}
    for aid, a in eng.accounts.items():
        accounts[aid] = (
            a.wallet_atoms,
            sorted((s, p.size_lots, p.entry_value_atoms) for s, p in a.positions.items()),
            sorted(a.leverage.items()),
            sorted((oid, o.price_ticks, o.qty_lots, o.remaining_lots, o.filled_lots, o.status)
                   for oid, o in a.open_orders.items()),
            sorted(a.open_buy_lots.items()),
            sorted(a.open_sell_lots.items()),
            sorted(a.client_order_ids.items()),
            list(a.closed_orders),
        )
    books = {}
    for sym, book in eng.books.items():
        books[sym] = (
            book.depth(10_000),
            [list(lv.orders) for lv in book.bids.values()],
            [list(lv.orders) for lv in book.asks.values()],
        )
    return (
        accounts,
        books,
        sorted(eng.marks.items()),
        sorted(eng.adl_policy.items()),
        (eng.next_account_id, eng.next_order_id, eng.next_trade_id),
        (eng.fees_collected_atoms, eng.deposits_atoms, eng.withdrawals_atoms, eng.top_ups_atoms),
        {s: len(t) for s, t in eng.recent_trades.items()},
    )


# -- seeded command stream (determinism tests; also imported by a subprocess) ---------------

def random_commands(seed: int = 7, n: int = 2_000) -> list[Any]:
    """A reproducible mix of every command kind, built from `random.Random(seed)`.

    To make cancels and amends hit real orders, generation consults a scratch engine that the
    commands are applied to as they are made; the returned list is then fixed input for any
    number of fresh engines (a nondeterministic engine would also make this list differ).
    """
    rng = random.Random(seed)
    scratch = Engine()
    cmds: list[Any] = []

    def emit(cmd: Any) -> None:
        cmds.append(cmd)
        scratch.apply(cmd)

    n_accounts = 8
    for i in range(n_accounts):
        emit(c.CreateAccount(api_key_hash=f"k{i}", ts_ns=i))
    marks = {BTC: 100_000, ETH: 300_000}
    for i, aid in enumerate(range(1, n_accounts + 1)):
        emit(c.Deposit(aid, rng.choice([300, 1_000, 5_000, 50_000, 1_000_000]) * USD, ts_ns=100 + i))
    emit(c.SetMarkPrice(BTC, marks[BTC], ts_ns=200))
    emit(c.SetMarkPrice(ETH, marks[ETH], ts_ns=201))
    emit(c.TopUpInsuranceFund(2_000 * USD, ts_ns=202))
    ts = 1_000
    while len(cmds) < n:
        ts += rng.randint(1, 1_000)
        aid = rng.randint(1, n_accounts) if rng.random() > 0.02 else 99  # 99 does not exist
        sym = rng.choice((BTC, ETH))
        mine = sorted(scratch.accounts[aid].open_orders) if aid in scratch.accounts else []
        roll = rng.random()
        if roll < 0.50:
            side = rng.choice((c.BUY, c.SELL))
            qty = rng.randint(1, 1_500)
            price = max(1, marks[sym] + rng.randint(-300, 300))
            if rng.random() < 0.12:
                emit(c.PlaceOrder(aid, sym, side, qty, None, order_type=c.MARKET, ts_ns=ts))
            else:
                tif = rng.choice((c.GTC, c.GTC, c.GTC, c.IOC, c.FOK))
                emit(
                    c.PlaceOrder(
                        aid, sym, side, qty, price,
                        time_in_force=tif,
                        post_only=tif == c.GTC and rng.random() < 0.15,
                        reduce_only=rng.random() < 0.1,
                        stp=rng.choice(c.STP_MODES),
                        client_order_id=f"c{rng.randint(0, 300)}" if rng.random() < 0.2 else None,
                        ts_ns=ts,
                    )
                )
        elif roll < 0.60:
            oid = rng.choice(mine) if mine and rng.random() < 0.9 else rng.randint(1, scratch.next_order_id)
            emit(c.CancelOrder(aid, oid, ts_ns=ts))
        elif roll < 0.62:
            emit(c.CancelAllOrders(aid, rng.choice((None, BTC, ETH)), ts_ns=ts))
        elif roll < 0.74:
            oid = rng.choice(mine) if mine and rng.random() < 0.9 else rng.randint(1, scratch.next_order_id)
            order = scratch.accounts[aid].open_orders.get(oid) if aid in scratch.accounts else None
            base = marks[order.symbol] if order is not None else marks[sym]
            price = max(1, base + rng.randint(-300, 300)) if rng.random() < 0.6 else None
            qty = rng.randint(1, 1_500) if price is None or rng.random() < 0.5 else None
            emit(c.AmendOrder(aid, oid, price, qty, ts_ns=ts))
        elif roll < 0.86:
            step = marks[sym] // 100
            marks[sym] = max(1_000, marks[sym] + rng.randint(-4, 4) * step)
            emit(c.SetMarkPrice(sym, marks[sym], ts_ns=ts))
        elif roll < 0.91:
            emit(c.Deposit(aid, rng.randint(1, 3_000) * USD, ts_ns=ts))
        elif roll < 0.94:
            emit(c.Withdraw(aid, rng.randint(1, 2_000) * USD, ts_ns=ts))
        elif roll < 0.97:
            emit(c.SetLeverage(aid, sym, rng.randint(0, 55), ts_ns=ts))
        elif roll < 0.98:
            emit(c.TopUpInsuranceFund(rng.randint(1, 500) * USD, ts_ns=ts))
        else:
            emit(c.SetAdlPolicy(sym, rng.choice(c.ADL_POLICIES), ts_ns=ts))
    return cmds
