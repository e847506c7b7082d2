"""The starting state: a population turned into engine state, through `Engine.apply` only.

Build, in four phases (every command must be accepted and none may liquidate anyone;
`BuildError` says which one was not):

1. the starting marks (`SetMarkPrice`, or `SetIndexPrice` for index-marked instruments), the
   market maker (account 1, a deep wallet), then every account of the population in its
   order (ids 2, 3, ...), each with a generous deposit and the highest leverage its tier
   allows (so the initial margin never binds below its drawn leverage);
2. every position traded against the market maker at its entry price: the maker rests the
   order, the account takes it (IOC). Positions are taken long and short alternately so the
   maker's inventory stays within one position of zero (the engine caps any position at the
   last maintenance tier) and ends flat when the population is balanced;
3. every wallet brought to the population's figure (`Withdraw` / `Deposit`): fees paid while
   trading and the build deposit disappear, equity at the starting marks is wallet + upnl;
4. the insurance fund's top-up and the maker's first quotes.

The market maker quotes a thin ladder (`BookSpec`): `levels` bids and asks, `step_ppm`
apart, `lots` each (a fraction `depth_ppm` of the open interest, at least one lot). Before
every step of a path (run.py) it cancels and requotes around the step's new price, so the
insurance fund's liquidation orders meet a book where the price went, not where it was.

The lab's instruments are the defaults with the order price band off (`price_band_ppm=0`):
only the builder and the market maker place orders here, at prices the lab chose; the band
guards against mistyped orders and has no part in liquidation or ADL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from engine import commands as c
from engine import events as ev
from engine.engine import Engine
from engine.instruments import Instrument, default_instruments
from engine.units import E8, PPM, div_ceil, div_floor, ppm_of_floor
from lab.population import Population

MAKER_NAME = "maker"


class BuildError(RuntimeError):
    """A command of the build was refused or liquidated someone: the population is not usable."""


@dataclass(frozen=True, slots=True)
class BookSpec:
    levels: int = 10
    step_ppm: int = 5_000  # 0.5% between levels
    depth_ppm: int = 500  # lots per level, as a fraction of the open interest (0.05%)


@dataclass(frozen=True, slots=True)
class FundSpec:
    """The insurance fund at the start: `atoms` plus `oi_ppm` of the open interest's notional."""

    atoms: int = 0
    oi_ppm: int = 0


@dataclass
class Scenario:
    """A built starting state and what the runs need to know about it."""

    engine: Engine
    population: Population
    ids: dict[str, int]  # account name -> engine account id
    names: dict[int, str]
    maker_id: int
    book: BookSpec
    book_lots: dict[str, int]  # lots per level, per symbol
    fund_atoms: int
    open_interest_atoms: int  # notional held long at the starting marks, all symbols


def lab_instruments(mark_source: str = c.MARK_FROM_ADMIN) -> dict[str, Instrument]:
    """The default instruments, price band off, marks from `mark_source` (admin | index)."""
    if mark_source not in c.MARK_SOURCES:
        raise ValueError(f"mark source is one of {c.MARK_SOURCES}")
    return {s: replace(i, price_band_ppm=0, mark_source=mark_source) for s, i in default_instruments().items()}


def mark_command(inst: Instrument, price_ticks: int, ts_ns: int) -> c.SetMarkPrice | c.SetIndexPrice:
    """The command that moves `inst`'s mark to `price_ticks` (an index update when the mark follows it)."""
    if inst.mark_source == c.MARK_FROM_INDEX:
        return c.SetIndexPrice(inst.symbol, price_ticks, ts_ns)
    return c.SetMarkPrice(inst.symbol, price_ticks, ts_ns)


def build(
    pop: Population,
    instruments: dict[str, Instrument],
    fund: FundSpec,
    book: BookSpec,
    progress: Callable[[int], None] | None = None,
) -> Scenario:
    """The starting state of `pop` (module docstring); `progress(n)` after every n accounts."""
    eng = Engine(instruments=instruments)
    tick = progress or (lambda n: None)
    for sym, mark in sorted(pop.marks.items()):
        _ok(eng, mark_command(instruments[sym], mark, 0), f"starting mark of {sym}")
    open_interest = sum(instruments[s].notional_atoms(pop.open_interest_lots(s), m) for s, m in pop.marks.items())
    maker = _create(eng, max(10**6 * E8, 2 * open_interest), "the market maker")
    ids: dict[str, int] = {}
    for a in pop.accounts:  # phase 1: accounts, in the population's order
        deposit = a.wallet_atoms + E8
        for p in a.positions:
            inst = instruments[p.symbol]
            deposit += 2 * max(abs(inst.notional_atoms(p.size_lots, p.entry_ticks)), abs(inst.notional_atoms(p.size_lots, pop.marks[p.symbol])))
        aid = _create(eng, deposit, f"account {a.name!r}")
        ids[a.name] = aid
        for p in a.positions:
            inst = instruments[p.symbol]
            lev = inst.max_leverage_for(inst.notional_atoms(p.size_lots, pop.marks[p.symbol]))
            _ok(eng, c.SetLeverage(aid, p.symbol, lev), f"leverage of {a.name!r}")
    for sym in sorted(pop.marks):  # phase 2: positions, long and short alternately
        longs = [(a.name, p) for a in pop.accounts for p in a.positions if p.symbol == sym and p.size_lots > 0]
        shorts = [(a.name, p) for a in pop.accounts for p in a.positions if p.symbol == sym and p.size_lots < 0]
        net = li = si = 0
        done = 0
        while li < len(longs) or si < len(shorts):
            take_long = si >= len(shorts) or (li < len(longs) and net <= 0)
            name, p = longs[li] if take_long else shorts[si]
            li, si = (li + 1, si) if take_long else (li, si + 1)
            _trade(eng, maker, ids[name], name, p.symbol, p.size_lots, p.entry_ticks)
            net += p.size_lots
            done += 1
            if done % 256 == 0:
                tick(256)
        tick(done % 256)
    for a in pop.accounts:  # phase 3: wallets as the population says
        acct = eng.accounts[ids[a.name]]
        gap = acct.wallet_atoms - a.wallet_atoms
        if gap > 0:
            _ok(eng, c.Withdraw(ids[a.name], gap), f"wallet of {a.name!r}")
        elif gap < 0:
            _ok(eng, c.Deposit(ids[a.name], -gap), f"wallet of {a.name!r}")
    fund_atoms = fund.atoms + ppm_of_floor(open_interest, fund.oi_ppm)
    if fund_atoms > 0:
        _ok(eng, c.TopUpInsuranceFund(fund_atoms), "insurance fund top-up")
    book_lots = {sym: max(1, ppm_of_floor(pop.open_interest_lots(sym), book.depth_ppm)) for sym in pop.marks}
    sc = Scenario(eng, pop, ids, {v: k for k, v in ids.items()} | {maker: MAKER_NAME}, maker, book, book_lots,
                  fund_atoms, open_interest)
    for sym in sorted(pop.marks):
        for e in quote(sc, sym, pop.marks[sym], 0):
            if isinstance(e, ev.REJECTION_TYPES):
                raise BuildError(f"the market maker's first quotes in {sym} were refused: {e.message}")
    eng.check_invariants()
    return sc


def quote(sc: Scenario, symbol: str, price_ticks: int, ts_ns: int) -> list[Any]:
    """The maker cancels its orders in `symbol` and quotes the ladder around `price_ticks`;
    returns the events (a refused quote is a rejection event, not an error)."""
    eng, maker, spec = sc.engine, sc.maker_id, sc.book
    out: list[Any] = []
    if spec.levels <= 0:
        return out
    if any(o.symbol == symbol for o in eng.accounts[maker].open_orders.values()):
        out += eng.apply(c.CancelAllOrders(maker, symbol, ts_ns))
    lots = sc.book_lots[symbol]
    for i in range(1, spec.levels + 1):
        bid = div_floor(price_ticks * (PPM - i * spec.step_ppm), PPM)
        ask = div_ceil(price_ticks * (PPM + i * spec.step_ppm), PPM)
        if bid > 0:
            out += eng.apply(c.PlaceOrder(maker, symbol, c.BUY, lots, bid, ts_ns=ts_ns))
        out += eng.apply(c.PlaceOrder(maker, symbol, c.SELL, lots, ask, ts_ns=ts_ns))
    return out


def _create(eng: Engine, deposit: int, what: str) -> int:
    (created,) = _ok(eng, c.CreateAccount(), what)
    aid: int = created.account_id
    _ok(eng, c.Deposit(aid, deposit), what)
    return aid


def _trade(eng: Engine, maker: int, aid: int, name: str, symbol: str, size: int, price: int) -> None:
    inst = eng.instruments[symbol]
    chunk = min(inst.max_order_lots, inst.max_order_notional_atoms // (max(price, eng.marks[symbol]) * inst.atoms_per_lot_tick))
    side, other = (c.BUY, c.SELL) if size > 0 else (c.SELL, c.BUY)
    left = abs(size)
    while left:
        q = min(chunk, left)
        _ok(eng, c.PlaceOrder(maker, symbol, other, q, price), f"the maker's order for {name!r}")
        out = _ok(eng, c.PlaceOrder(aid, symbol, side, q, price, time_in_force=c.IOC), f"position of {name!r}")
        if sum(e.qty_lots for e in out if isinstance(e, ev.TradeExecuted)) != q:
            raise BuildError(f"position of {name!r} in {symbol} did not fill")
        left -= q


def _ok(eng: Engine, cmd: Any, what: str) -> list[Any]:
    out = eng.apply(cmd)
    for e in out:
        if isinstance(e, ev.REJECTION_TYPES):
            raise BuildError(f"{what}: {type(cmd).__name__} refused ({e.reason}: {e.message})")
        if isinstance(e, ev.AccountLiquidated):
            name = "an account"
            raise BuildError(f"{what}: {name} (id {e.account_id}) is below maintenance at the starting marks")
    return out
