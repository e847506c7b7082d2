"""Shared helpers of the property tests: checked command application and SPEC-side recomputation.

What lives here:
- `EventLog`: applies commands to an `Engine`, asserts after each one that event `seq`s are
  gap-free and increasing over the whole run, and that `check_invariants()` holds;
- `public_fingerprint`: everything a rejection must leave unchanged (balances, positions,
  open orders, books, marks, policies, counters) — `seq` excluded, since a rejection
  consumes one;
- `spec_equity_atoms` / `spec_maintenance_atoms` / `spec_adl_order`: SPEC §2, §3 and §6
  recomputed from the public state with exact fractions and the SPEC's own decimal
  tick/lot sizes and tier table, independently of `engine/risk.py` and `engine/adl.py`;
- `scaled`: example counts, multiplied by `PROPERTY_SCALE` (default 1) for long local runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from engine import events as ev
from engine.engine import Engine
from engine.orders import TRIGGER_COMMAND

ATOMS_PER_USD = 10**8

# SPEC §2, as written there (USD per tick, base units per lot).
SPEC_TICK_LOT = {
    "BTC-PERP": (Fraction("0.1"), Fraction("0.001")),
    "ETH-PERP": (Fraction("0.01"), Fraction("0.01")),
}
# (notional up to, USD; maintenance rate; maintenance amount, USD). Beyond the table: last tier.
SPEC_TIERS = (
    (100_000, Fraction(5_000, 10**6), 0),
    (1_000_000, Fraction(10_000, 10**6), 500),
    (10_000_000, Fraction(25_000, 10**6), 15_500),
)


def scaled(n: int) -> int:
    """`n` examples, times the `PROPERTY_SCALE` environment variable (for long local runs)."""
    return max(1, int(n * float(os.environ.get("PROPERTY_SCALE", "1"))))


def usd_atoms(usd: int | str) -> int:
    return int(Fraction(str(usd)) * ATOMS_PER_USD)


# -- SPEC recomputation ------------------------------------------------------------------


def spec_notional_atoms(symbol: str, size_lots: int, mark_ticks: int) -> Fraction:
    """Signed notional `q * M` in atoms (exact)."""
    tick, lot = SPEC_TICK_LOT[symbol]
    return size_lots * lot * mark_ticks * tick * ATOMS_PER_USD


def spec_mm_atoms(symbol: str, size_lots: int, mark_ticks: int) -> Fraction:
    """`MM_p = |q| * M * rate(tier) - amount(tier)`, exact (the engine may round it up)."""
    n = abs(spec_notional_atoms(symbol, size_lots, mark_ticks))
    if n == 0:
        return Fraction(0)
    chosen = SPEC_TIERS[-1]
    for tier in SPEC_TIERS:
        if n <= tier[0] * ATOMS_PER_USD:
            chosen = tier
            break
    return n * chosen[1] - chosen[2] * ATOMS_PER_USD


def spec_equity_atoms(engine: Engine, account_id: int) -> Fraction:
    """Cross equity: `WB + sum(q * M - entry_value)` over the cross positions (SPEC §12:
    isolated positions have their own equity, `spec_isolated_equity_atoms`)."""
    acct = engine.accounts[account_id]
    eq = Fraction(acct.wallet_atoms)
    for sym, pos in acct.positions.items():
        if sym not in acct.isolated:
            eq += spec_notional_atoms(sym, pos.size_lots, engine.marks[sym]) - pos.entry_value_atoms
    return eq


def spec_maintenance_atoms(engine: Engine, account_id: int) -> Fraction:
    """Maintenance of the cross positions."""
    acct = engine.accounts[account_id]
    return sum(
        (
            spec_mm_atoms(sym, pos.size_lots, engine.marks[sym])
            for sym, pos in acct.positions.items()
            if sym not in acct.isolated
        ),
        Fraction(0),
    )


def spec_isolated_equity_atoms(engine: Engine, account_id: int, symbol: str) -> Fraction:
    """SPEC §12: an isolated position's equity, `margin + upnl`."""
    acct = engine.accounts[account_id]
    pos = acct.positions.get(symbol)
    upnl = spec_notional_atoms(symbol, pos.size_lots, engine.marks[symbol]) - pos.entry_value_atoms if pos else 0
    return Fraction(acct.isolated[symbol]) + upnl


def spec_parts_below(engine: Engine, account_id: int) -> list[tuple[Fraction, Fraction, str]]:
    """(equity, maintenance rounded up to the atom, part) of every part of the account below
    maintenance: its cross part ("") and each isolated position (by symbol)."""
    acct = engine.accounts[account_id]
    out = []
    if any(s not in acct.isolated for s in acct.positions):
        eq, mm = spec_equity_atoms(engine, account_id), spec_maintenance_atoms(engine, account_id)
        mm_up = Fraction(-((-mm.numerator) // mm.denominator))
        if eq < mm_up:
            out.append((eq, mm_up, ""))
    for sym in sorted(acct.isolated):
        pos = acct.positions.get(sym)
        if pos is None:
            continue
        eq, mm = spec_isolated_equity_atoms(engine, account_id, sym), spec_mm_atoms(sym, pos.size_lots, engine.marks[sym])
        mm_up = Fraction(-((-mm.numerator) // mm.denominator))
        if eq < mm_up:
            out.append((eq, mm_up, sym))
    return out


def spec_adl_order(engine: Engine, symbol: str, side: int) -> list[int] | None:
    """SPEC §6 ranking of the positions of sign `side` in `symbol`, first in line first.

    None when a position has a zero entry value (its PnL% is undefined; the SPEC is silent).
    """
    mark = engine.marks.get(symbol)
    if mark is None:
        return []
    ranked: list[tuple[tuple[Any, ...], int]] = []
    for aid, acct in engine.accounts.items():
        if aid == 0:
            continue
        pos = acct.positions.get(symbol)
        if pos is None or (pos.size_lots > 0) != (side > 0):
            continue
        # SPEC §12: an isolated position is ranked by its own equity
        equity = spec_isolated_equity_atoms(engine, aid, symbol) if symbol in acct.isolated else spec_equity_atoms(engine, aid)
        if equity <= 0:
            ranked.append(((1, aid), aid))
            continue
        if pos.entry_value_atoms == 0:
            return None
        notional = spec_notional_atoms(symbol, pos.size_lots, mark)
        upnl = notional - pos.entry_value_atoms
        pnl_pct = upnl / abs(pos.entry_value_atoms)
        eff_lev = abs(notional) / equity
        score = pnl_pct * eff_lev if upnl > 0 else pnl_pct / eff_lev
        ranked.append(((0, -score, -abs(pos.size_lots), aid), aid))
    ranked.sort()
    return [aid for _, aid in ranked]


# -- state fingerprint -------------------------------------------------------------------


def public_fingerprint(engine: Engine) -> tuple[Any, ...]:
    """Everything a rejected command must leave as it was (`seq` aside)."""
    accounts = []
    for aid in sorted(engine.accounts):
        a = engine.accounts[aid]
        accounts.append(
            (
                aid,
                a.wallet_atoms,
                sorted((s, p.size_lots, p.entry_value_atoms) for s, p in a.positions.items()),
                sorted(a.leverage.items()),
                sorted(a.isolated.items()),
                sorted(
                    (oid, o.symbol, o.side, o.price_ticks, o.qty_lots, o.remaining_lots, o.filled_lots, o.status)
                    for oid, o in a.open_orders.items()
                ),
                sorted(a.client_order_ids.items()),
                list(a.closed_orders),
                sorted(  # SPEC §12 untriggered stops
                    (oid, o.trigger_price_ticks, o.trigger_by, o.price_ticks, o.qty_lots, o.status)
                    for oid, o in a.stop_orders.items()
                ),
            )
        )
    books = {s: b.depth(10**9) for s, b in sorted(engine.books.items())}
    queues = {
        s: [list(lv.orders) for side in (b.bids, b.asks) for lv in side.values()]
        for s, b in sorted(engine.books.items())
    }
    counters = (
        engine.next_account_id,
        engine.next_order_id,
        engine.next_trade_id,
        engine.fees_collected_atoms,
        engine.deposits_atoms,
        engine.withdrawals_atoms,
        engine.top_ups_atoms,
    )
    return (accounts, books, queues, sorted(engine.marks.items()), sorted(engine.adl_policy.items()), counters)


# -- checked application -----------------------------------------------------------------


@dataclass
class EventLog:
    """Applies commands, checking seq continuity and the engine's invariants after each one."""

    engine: Engine
    last_seq: int = 0
    ts_ns: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def apply(self, command: Any) -> list[Any]:
        events = self.engine.apply(command)  # may be empty: a cancel-all with nothing open
        for e in events:
            assert e.seq == self.last_seq + 1, f"seq gap: {self.last_seq} -> {e.seq} in {command!r}"
            self.last_seq = e.seq
            self.counts[e.TYPE] = self.counts.get(e.TYPE, 0) + 1
        assert self.engine.seq == self.last_seq
        self.engine.check_invariants()
        return events

    def next_ts(self) -> int:
        self.ts_ns += 1_000
        return self.ts_ns


def rejection_of(events: list[Any]) -> str | None:
    """The rejection reason name if the command was rejected (then it is the only event).
    A stop refused when it fires (`order_rejected` with command `OrderTriggered`) is an
    outcome of the command that moved the price, not its rejection."""
    rejected = [e for e in events if isinstance(e, ev.REJECTION_TYPES) and e.command != TRIGGER_COMMAND]
    if not rejected:
        return None
    assert len(events) == 1, f"a rejection came with other events: {events}"
    return str(rejected[0].reason)


def fills_of(events: list[Any]) -> list[tuple[int, int, int, int]]:
    return [
        (e.taker_order_id, e.maker_order_id, e.price_ticks, e.qty_lots)
        for e in events
        if isinstance(e, ev.TradeExecuted)
    ]


def cancels_of(events: list[Any]) -> list[tuple[int, int, str]]:
    return [(e.order_id, e.canceled_lots, e.reason) for e in events if isinstance(e, ev.OrderCanceled)]


# -- seeded command sequences ------------------------------------------------------------


def seeded_commands(seed: int, n: int) -> list[Any]:
    """A reproducible mixed command sequence: `random.Random(seed)`, `n` commands after setup.

    Pure function of (seed, n), independent of any engine state: order ids for cancels and
    amends are guessed, so some refer to filled or unknown orders (rejections are part of the
    replay too). Small accounts at high leverage and occasional 5-30% mark jumps make
    liquidations and ADL part of most sequences.
    """
    import random

    from engine import commands as c

    rnd = random.Random(seed)
    symbols = ["BTC-PERP", "ETH-PERP"]
    marks = {"BTC-PERP": 300_000, "ETH-PERP": 200_000}
    ts = 0

    def stamp() -> int:
        nonlocal ts
        ts += rnd.randint(1, 5_000)
        return ts

    out: list[Any] = []
    n_accounts = 5
    out += [c.CreateAccount(api_key_hash=f"key{i}", ts_ns=stamp()) for i in range(n_accounts)]
    out.append(c.Deposit(1, usd_atoms(5_000_000), ts_ns=stamp()))
    for aid in range(2, n_accounts + 1):
        out.append(c.Deposit(aid, usd_atoms(rnd.choice([50, 300, 2_000, 20_000])), ts_ns=stamp()))
    for sym in symbols:
        out.append(c.SetMarkPrice(sym, marks[sym], ts_ns=stamp()))
        for bp in (2, 10, 50, 200):  # the market maker's opening ladder
            qty = rnd.choice([50, 300, 2_000])
            out.append(c.PlaceOrder(1, sym, c.BUY, qty, marks[sym] * (10_000 - bp) // 10_000, ts_ns=stamp()))
            out.append(c.PlaceOrder(1, sym, c.SELL, qty, marks[sym] * (10_000 + bp) // 10_000, ts_ns=stamp()))
    placed = 2 * 4 * len(symbols)
    kinds = ["place"] * 8 + ["levered"] * 2 + ["mark"] * 3 + ["cancel", "cancel_all", "amend"] * 2 + [
        "deposit", "withdraw", "top_up", "leverage", "policy",
    ]
    for _ in range(n):
        kind = rnd.choice(kinds)
        sym = rnd.choice(symbols)
        aid = rnd.randint(1, n_accounts)
        mark = marks[sym]
        if kind in ("place", "levered"):
            side = rnd.choice([c.BUY, c.SELL])
            if kind == "levered":
                out.append(c.SetLeverage(aid, sym, 50, ts_ns=stamp()))
                qty = rnd.choice([20, 100, 500, 2_000])
                price = mark * (10_000 + (20 if side == c.BUY else -20)) // 10_000
                out.append(c.PlaceOrder(aid, sym, side, qty, price, c.LIMIT, c.IOC, ts_ns=stamp()))
            else:
                order_type = rnd.choice([c.LIMIT, c.LIMIT, c.LIMIT, c.MARKET])
                tif = rnd.choice([c.GTC, c.GTC, c.IOC, c.FOK])
                price = None if order_type == c.MARKET else max(1, mark * (10_000 + rnd.randint(-300, 300)) // 10_000)
                out.append(
                    c.PlaceOrder(
                        aid, sym, side, rnd.randint(1, 400), price, order_type,
                        tif if order_type == c.LIMIT else c.GTC,
                        post_only=order_type == c.LIMIT and tif == c.GTC and rnd.random() < 0.2,
                        reduce_only=rnd.random() < 0.15,
                        stp=rnd.choice(c.STP_MODES),
                        client_order_id=rnd.choice([None, None, None, f"c{rnd.randint(0, 99)}"]),
                        ts_ns=stamp(),
                    )
                )
            placed += 1
        elif kind == "mark":
            move = rnd.choice([rnd.randint(-100, 100), rnd.randint(-100, 100), rnd.choice([-3_000, -1_000, -500, 500, 1_000, 3_000])])
            marks[sym] = max(mark // 10, mark * (10_000 + move) // 10_000)
            out.append(c.SetMarkPrice(sym, marks[sym], ts_ns=stamp()))
        elif kind == "cancel":
            out.append(c.CancelOrder(aid, rnd.randint(max(1, placed - 15), placed + 2), ts_ns=stamp()))
        elif kind == "cancel_all":
            out.append(c.CancelAllOrders(aid, rnd.choice([None, sym]), ts_ns=stamp()))
        elif kind == "amend":
            price = rnd.choice([None, max(1, mark * (10_000 + rnd.randint(-300, 300)) // 10_000)])
            qty = rnd.choice([None, rnd.randint(1, 500)])
            out.append(c.AmendOrder(aid, rnd.randint(max(1, placed - 15), placed + 2), price, qty, ts_ns=stamp()))
        elif kind == "deposit":
            out.append(c.Deposit(aid, usd_atoms(rnd.choice([10, 100, 1_000])), ts_ns=stamp()))
        elif kind == "withdraw":
            out.append(c.Withdraw(aid, usd_atoms(rnd.choice([1, 10, 100, 1_000, 10_000])), ts_ns=stamp()))
        elif kind == "top_up":
            out.append(c.TopUpInsuranceFund(usd_atoms(rnd.choice([10, 1_000, 50_000])), ts_ns=stamp()))
        elif kind == "leverage":
            out.append(c.SetLeverage(aid, sym, rnd.choice([1, 5, 10, 25, 50, 51]), ts_ns=stamp()))
        else:
            out.append(c.SetAdlPolicy(sym, rnd.choice(list(c.ADL_POLICIES)), ts_ns=stamp()))
    return out


# -- SPEC §3 pre-trade check and §5 liquidation order --------------------------------------

SPEC_DEFAULT_LEVERAGE = 10
SPEC_FEE_PPM = {"maker": 200, "taker": 500}


def spec_initial_margin_atoms(engine: Engine, account_id: int, extra: dict[str, tuple[int, int]] | None = None) -> int:
    """Sum over symbols of `ceil(max(|q + B|, |q - S|) * M / leverage)` (margin is owed: rounds up).

    `extra` = {symbol: (more buy lots, more sell lots)} for a what-if.
    """
    acct = engine.accounts[account_id]
    total = 0
    for sym in SPEC_TICK_LOT:
        q = acct.positions[sym].size_lots if sym in acct.positions else 0
        b = sum(o.remaining_lots for o in acct.open_orders.values() if o.symbol == sym and o.side == "buy")
        s = sum(o.remaining_lots for o in acct.open_orders.values() if o.symbol == sym and o.side == "sell")
        add_b, add_s = (extra or {}).get(sym, (0, 0))
        worst = max(abs(q + b + add_b), abs(q - s - add_s))
        if worst:
            lev = acct.leverage.get(sym, SPEC_DEFAULT_LEVERAGE)
            im = spec_notional_atoms(sym, worst, engine.marks[sym]) / lev
            total += -((-im.numerator) // im.denominator)
            if sym in acct.isolated:  # SPEC §12: the position's own margin is set aside already
                held = spec_notional_atoms(sym, abs(q), engine.marks[sym]) / lev
                total -= -((-held.numerator) // held.denominator)
    return total


SPEC_PRICE_BAND = Fraction(5, 100)  # §3: limit buys at most M * 1.05, sells at least M * 0.95
SPEC_MARKET_BAND = Fraction(5, 100)  # §4


def spec_order_open_loss_atoms(symbol: str, side: str, price_ticks: int, qty_lots: int, mark_ticks: int) -> int:
    """§3: buys qty * max(0, price - M), sells qty * max(0, M - price), rounded up to the atom."""
    gap = price_ticks - mark_ticks if side == "buy" else mark_ticks - price_ticks
    loss = spec_notional_atoms(symbol, qty_lots, max(0, gap))
    return -((-loss.numerator) // loss.denominator)


def spec_market_limit_ticks(side: str, mark_ticks: int) -> int:
    """§3: a market order is valued at its band limit: floor(M * 1.05) / ceil(M * 0.95)."""
    if side == "buy":
        x = mark_ticks * (1 + SPEC_MARKET_BAND)
        return x.numerator // x.denominator
    x = mark_ticks * (1 - SPEC_MARKET_BAND)
    return -((-x.numerator) // x.denominator)


def spec_open_loss_atoms(engine: Engine, account_id: int) -> int:
    """Sum of the open loss of the account's resting orders at today's marks."""
    return sum(
        spec_order_open_loss_atoms(o.symbol, o.side, o.price_ticks, o.remaining_lots, engine.marks[o.symbol])
        for o in engine.accounts[account_id].open_orders.values()
    )


def spec_in_price_band(side: str, price_ticks: int, mark_ticks: int) -> bool:
    """§3 price band on the aggressive side (exact comparison)."""
    if side == "buy":
        return price_ticks <= mark_ticks * (1 + SPEC_PRICE_BAND)
    return price_ticks >= mark_ticks * (1 - SPEC_PRICE_BAND)


def spec_order_passes_margin(
    engine: Engine, account_id: int, symbol: str, add_buy: int, add_sell: int, add_loss: int = 0
) -> bool:
    """SPEC §3: accepted if it does not raise max(|q + B|, |q - S|) and adds no open loss, or if
    available = equity - IM - open loss >= 0 after it (`add_loss`: the open loss it adds)."""
    acct = engine.accounts[account_id]
    q = acct.positions[symbol].size_lots if symbol in acct.positions else 0
    b = sum(o.remaining_lots for o in acct.open_orders.values() if o.symbol == symbol and o.side == "buy")
    s = sum(o.remaining_lots for o in acct.open_orders.values() if o.symbol == symbol and o.side == "sell")
    before = max(abs(q + b), abs(q - s))
    after = max(abs(q + b + add_buy), abs(q - s - add_sell))
    if after <= before and add_loss <= 0:
        return True
    available = (
        spec_equity_atoms(engine, account_id)
        - spec_initial_margin_atoms(engine, account_id, {symbol: (add_buy, add_sell)})
        - spec_open_loss_atoms(engine, account_id)
        - add_loss
    )
    return available >= 0


def spec_liquidation_order(engine: Engine) -> list[tuple[int, str]]:
    """Parts below maintenance now, lowest equity / maintenance first, ties by account id, then
    the cross part ("") before the isolated positions by symbol (SPEC §5, §12)."""
    below = []
    for aid, acct in engine.accounts.items():
        if aid == 0 or not acct.positions:
            continue
        for eq, mm, part in spec_parts_below(engine, aid):
            below.append((eq / mm, aid, part))
    return [(aid, part) for _, aid, part in sorted(below)]
