"""Order-book benchmark: our engine and our book core against the peer order books.

Run from the repository root, in the project venv::

    pip install -e '.[bench]'          # the peers (orderly-chaos builds from source with g++)
    python -m bench.engine_bench        # table: W1 / W2 ops/s and the ratios
    python -m bench.engine_bench --profile engine   # cProfile of one W1 run instead

What is timed (best of ``--runs``, default 3, ``time.perf_counter``; W1 and W2 are
generated, and every implementation is verified, before the first clock starts):

* ``engine``: the full path, ``Engine.apply(cmd)`` for every op. One BTC-PERP book, mark
  set to the workload's mid (10000 ticks), ``ACCOUNTS`` accounts with large deposits and a
  raised open-order limit. Each limit op is assigned to an account chosen (before timing)
  so that it never meets a maker of its own account: self-trade prevention never fires and
  the fills must equal :func:`bench.workload.replay_reference` exactly, which is checked by
  mapping the engine's order ids back to workload ids. Ops are converted to ``PlaceOrder``
  / ``CancelOrder`` commands before timing; the timed loop is ``apply(cmd)`` per op and
  includes everything the engine does per command (validation, pre-trade margin check,
  matching, settlement, fees, events, the liquidation check after fills).
* ``book core``: :class:`engine.book.OrderBook`, the data structure the engine matches on,
  driven by :class:`BookCore` below through the book methods the engine's matching calls
  (``OrderBook.best_maker`` / ``take`` / ``add`` / ``remove``), minus accounts, risk, fees
  and events. ``engine.book.Order`` objects are made in ``prepare`` (untimed), like the
  liquibook and pyorderbook adapters make their native orders.
* every peer of :mod:`bench.peers` that imports: its fills over the *whole* of W1 and W2
  must equal the reference (``verify_peer_full``), then its ``run()`` is timed.

Runs are interleaved: every implementation runs once per round (engine, core, peer 1, ...,
then again), ``--runs`` rounds, best of the rounds reported, so a slow patch on a shared
machine hits every implementation alike.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.peers import available_peers, verify
from bench.workload import W1_SPEC, W2_SPEC, Fill, Op, ReferenceBook, replay_reference, w1, w2
from engine import commands as c
from engine import events as ev
from engine.book import Order, OrderBook
from engine.engine import Engine

SYMBOL = "BTC-PERP"
MARK_TICKS = 10_000  # = bench.workload.MID: all ops are limit orders, the band never matters
ACCOUNTS = 16  # engine accounts the workload's orders are spread over
BIG_DEPOSIT_ATOMS = 10**15  # 10 M USD per account: margin never binds (still a small int)
OPEN_ORDER_LIMIT = 10**9  # W1 rests ~40k orders over 16 accounts: the default 200 would bind

REPO = Path(__file__).resolve().parent.parent


# == account assignment (no self-trades) ====================================================


def assign_accounts(ops: list[Op], n_accounts: int) -> dict[int, int]:
    """workload order id -> account index in ``range(n_accounts)``, round-robin by id, but
    never the account of a maker the order trades with (per the reference replay), so
    self-trade prevention can never fire."""
    ref = ReferenceBook()
    owner: dict[int, int] = {}
    for op in ops:
        if op.kind != "limit":
            ref.cancel(op.order_id)
            continue
        fills: list[Fill] = []
        ref.limit(op.order_id, op.side == "buy", op.price_ticks, op.qty_lots, fills)
        taken = {owner[maker] for _, maker, _, _ in fills}
        idx = op.order_id % n_accounts
        for k in range(n_accounts):
            cand = (idx + k) % n_accounts
            if cand not in taken:
                owner[op.order_id] = cand
                break
        else:
            raise RuntimeError(f"order {op.order_id} meets makers of all {n_accounts} accounts")
    return owner


# == (a) the full engine ======================================================================


class EngineRun:
    """A fresh engine with funded accounts and the workload as engine commands."""

    def __init__(
        self,
        ops: list[Op],
        n_accounts: int = ACCOUNTS,
        deposits: list[int] | None = None,
        max_open_orders: int = OPEN_ORDER_LIMIT,
        owner: dict[int, int] | None = None,
    ) -> None:
        eng = Engine(max_open_orders=max_open_orders)
        apply = eng.apply
        _ok(apply(c.SetMarkPrice(SYMBOL, MARK_TICKS)))
        self.account_ids: list[int] = []
        for i in range(n_accounts):
            (created,) = apply(c.CreateAccount())
            aid = created.account_id
            self.account_ids.append(aid)
            amount = BIG_DEPOSIT_ATOMS if deposits is None else deposits[i]
            _ok(apply(c.Deposit(aid, amount)))
        self.engine = eng
        self.owner = owner if owner is not None else assign_accounts(ops, n_accounts)
        # Engine order ids are handed out in sequence, one per accepted PlaceOrder.
        self.base_order_id = eng.next_order_id - 1
        base = self.base_order_id
        acc = self.account_ids
        owner_of = self.owner
        cmds: list[Any] = []
        for op in ops:
            aid = acc[owner_of[op.order_id]]
            if op.kind == "limit":
                cmds.append(c.PlaceOrder(aid, SYMBOL, op.side, op.qty_lots, op.price_ticks))
            else:
                cmds.append(c.CancelOrder(aid, base + op.order_id))
        self.cmds = cmds

    def run(self) -> None:
        """The timed loop."""
        apply = self.engine.apply
        for cmd in self.cmds:
            apply(cmd)

    def run_collect(self) -> list[Any]:
        """Untimed: apply every command and return all events."""
        out: list[Any] = []
        apply = self.engine.apply
        for cmd in self.cmds:
            out.extend(apply(cmd))
        return out

    def fills_from(self, events: list[Any]) -> list[Fill]:
        """Trades as workload fills ``(taker_id, maker_id, price, qty)``."""
        base = self.base_order_id
        return [
            (e.taker_order_id - base, e.maker_order_id - base, e.price_ticks, e.qty_lots)
            for e in events
            if isinstance(e, ev.TradeExecuted)
        ]


def _ok(events: list[Any]) -> list[Any]:
    for e in events:
        if isinstance(e, ev.REJECTION_TYPES):
            raise RuntimeError(f"setup command rejected: {e}")
    return events


def verify_engine(run: EngineRun, ops: list[Op], ref_fills: list[Fill]) -> str:
    """Run the commands once (untimed) and compare with the reference; raise on a mismatch."""
    events = run.run_collect()
    rejected = [e for e in events if isinstance(e, ev.REJECTION_TYPES)]
    if rejected:
        raise AssertionError(f"engine rejected {len(rejected)} commands, first: {rejected[0]}")
    accepted = [e.order_id - run.base_order_id for e in events if isinstance(e, ev.OrderAccepted)]
    want_ids = [op.order_id for op in ops if op.kind == "limit"]
    if accepted != want_ids:
        raise AssertionError("engine order ids do not map 1:1 onto workload ids")
    stp = [e for e in events if isinstance(e, ev.OrderCanceled) and e.reason == "stp"]
    if stp:
        raise AssertionError(f"self-trade prevention fired {len(stp)} times")
    got = run.fills_from(events)
    _compare_fills("engine", got, ref_fills)
    liq = [e for e in events if isinstance(e, ev.AccountLiquidated)]
    if liq:
        raise AssertionError("an account was liquidated during the workload")
    run.engine.check_invariants()
    return f"engine: OK, {len(got)} fills equal the reference, no rejections, no STP, invariants hold"


def _compare_fills(name: str, got: list[Fill], want: list[Fill]) -> None:
    if got == want:
        return
    i = next((k for k, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), min(len(got), len(want)))
    raise AssertionError(
        f"{name}: {len(got)} fills vs {len(want)} in the reference; first difference at #{i}: "
        f"{got[i:i + 2]} vs {want[i:i + 2]}"
    )


# == (b) the book core =======================================================================


class BookCore:
    """``engine.book.OrderBook`` driven by the engine's own matching primitives, minus risk/events.

    The engine's matching loop (``engine/matching.py``: ``_match`` / ``_fill``) asks the book
    for the next maker with ``OrderBook.best_maker`` and fills it with ``OrderBook.take``
    (remove when filled whole, reduce otherwise); a remainder rests with ``OrderBook.add``.
    This class calls exactly those shipped methods; what it leaves out is what the engine
    does around them (STP, reduce-only caps, accounts, fees, events).
    """

    name = "book core"

    def __init__(self) -> None:
        self.book = OrderBook(SYMBOL)
        self._prepared: list[tuple[bool, Order | int]] = []

    def prepare(self, ops: list[Op]) -> None:
        """Untimed: one ``engine.book.Order`` per limit op (orders are mutated: one run only)."""
        out: list[tuple[bool, Order | int]] = []
        for op in ops:
            if op.kind == "limit":
                out.append((True, Order(op.order_id, 1, SYMBOL, op.side, op.price_ticks, op.qty_lots)))
            else:
                out.append((False, op.order_id))
        self._prepared = out

    def run(self, fills: list[Fill] | None = None) -> None:
        """The timed loop (``fills`` is only passed when verifying)."""
        book = self.book
        best_maker, take, add, remove = book.best_maker, book.take, book.add, book.remove
        resting = book.orders
        for is_limit, item in self._prepared:
            if not is_limit:
                maker = resting.get(item)  # type: ignore[arg-type]
                if maker is not None:
                    remove(maker)
                continue
            taker: Order = item  # type: ignore[assignment]
            is_buy = taker.is_buy
            limit = taker.price_ticks
            left = taker.remaining_lots
            while left:
                maker = best_maker(is_buy, limit)  # type: ignore[arg-type]
                if maker is None:
                    break
                avail = maker.remaining_lots
                qty = left if left < avail else avail
                if fills is not None:
                    fills.append((taker.order_id, maker.order_id, maker.price_ticks, qty))  # type: ignore[arg-type]
                take(maker, qty)
                left -= qty
            if left:
                taker.remaining_lots = left
                add(taker)

    def resting_count(self) -> int:
        return len(self.book.orders)


def verify_book_core(ops: list[Op], ref_fills: list[Fill]) -> str:
    core = BookCore()
    core.prepare(ops)
    got: list[Fill] = []
    core.run(got)
    _compare_fills("book core", got, ref_fills)
    core.book.check_invariants()
    return f"book core: OK, {len(got)} fills equal the reference, book invariants hold"


def verify_peer_full(peer_cls: Any, name: str, ops: list[Op], ref_fills: list[Fill]) -> bool:
    """A peer's fills over the whole workload equal the reference, and its timed path ends with
    the reference's resting orders (``bench.peers.verify`` checks only the first 2,000 ops)."""
    try:
        got = peer_cls().fills(ops)
        _compare_fills(f"{peer_cls.name} {name}", got, ref_fills)
        timed = peer_cls()
        timed.prepare(ops)
        timed.run(ops)
        resting, _ = _resting_after(ops)
        if timed.resting_count() != resting:
            raise AssertionError(f"{timed.resting_count()} resting orders after run() vs {resting}")
    except AssertionError as exc:
        print(f"  peer {peer_cls.name} {peer_cls.version}: MISMATCH on the whole of {name}: {exc}; not timed")
        return False
    print(f"  peer {peer_cls.name} {peer_cls.version}: OK on the whole of {name}, {len(got)} fills equal the reference")
    return True


# == timing ==================================================================================


#: gc.freeze() the heap built before the clock starts (workloads, prepared commands/orders),
#: so that the collector's full passes do not scan the harness's own data; what the timed
#: code allocates is still collected as usual. ``--no-freeze`` turns this off.
FREEZE = True


def timed(fn: Callable[[], Any]) -> float:
    """Wall time of ``fn()`` after a full collection (and a freeze, see ``FREEZE``)."""
    gc.collect()
    if FREEZE:
        gc.freeze()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        if FREEZE:
            gc.unfreeze()


def best_of(runs: int, make: Callable[[], Callable[[], Any]], after: Callable[[Any], None] | None = None) -> float:
    """Best wall time of ``runs`` runs; ``make()`` builds a fresh instance (untimed) and
    returns the callable to time; ``after`` checks each run's end state (untimed)."""
    best = float("inf")
    for _ in range(runs):
        fn = make()
        dt = timed(fn)
        if after is not None:
            after(fn)
        best = min(best, dt)
    return best


def _resting_after(ops: list[Op]) -> tuple[int, int]:
    """(resting orders, fills) of the reference after all ops."""
    ref = ReferenceBook()
    fills: list[Fill] = []
    for op in ops:
        if op.kind == "limit":
            ref.limit(op.order_id, op.side == "buy", op.price_ticks, op.qty_lots, fills)
        else:
            ref.cancel(op.order_id)
    return len(ref.orders), len(fills)


def time_engine(ops: list[Op], runs: int, owner: dict[int, int]) -> float:
    resting, n_fills = _resting_after(ops)
    holder: dict[str, EngineRun] = {}

    def make() -> Callable[[], None]:
        r = EngineRun(ops, owner=owner)
        holder["run"] = r
        return r.run

    def after(_fn: Any) -> None:
        r = holder["run"]
        eng = r.engine
        got_resting = len(eng.books[SYMBOL].orders)
        got_fills = eng.next_trade_id - 1
        if (got_resting, got_fills) != (resting, n_fills):
            raise AssertionError(f"engine timed run ended with {got_resting} resting / {got_fills} fills")

    return best_of(runs, make, after)


def time_book_core(ops: list[Op], runs: int) -> float:
    resting, _ = _resting_after(ops)
    holder: dict[str, BookCore] = {}

    def make() -> Callable[[], None]:
        core = BookCore()
        core.prepare(ops)
        holder["core"] = core
        return core.run

    def after(_fn: Any) -> None:
        if holder["core"].resting_count() != resting:
            raise AssertionError("book core timed run ended with the wrong resting count")

    return best_of(runs, make, after)


def time_peer(peer_cls: Any, ops: list[Op], runs: int) -> float:
    resting, _ = _resting_after(ops)
    holder: dict[str, Any] = {}

    def make() -> Callable[[], None]:
        peer = peer_cls()
        peer.prepare(ops)
        holder["peer"] = peer
        return lambda: peer.run(ops)

    def after(_fn: Any) -> None:
        if holder["peer"].resting_count() != resting:
            raise AssertionError(f"{peer_cls.name}: timed run ended with the wrong resting count")

    return best_of(runs, make, after)


# == reporting ===============================================================================


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "engine"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in engine/' if dirty else ''}"


def header(argv: list[str]) -> list[str]:
    cmd = "python -m bench." + Path(sys.argv[0]).stem + (" " + shlex.join(argv) if argv else "")
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return [
        f"command: {cmd}   (cwd {os.getcwd()}, interpreter {sys.executable})",
        f"python {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}, "
        f"{os.cpu_count()} cpus, load average {' '.join(f'{x:.2f}' for x in load)}",
        f"perp-exchange {_version('perp-exchange')} (git {git_state()}), "
        f"sortedcontainers {_version('sortedcontainers')}",
    ]


def fmt_rate(ops_per_s: float) -> str:
    return f"{ops_per_s / 1000:,.0f}k"


def table(rows: list[tuple[str, float, float]], eng: tuple[float, float], core: tuple[float, float]) -> list[str]:
    head = (
        f"| {'implementation':<24} | {'W1 ops/s':>9} | {'W2 ops/s':>9} | {'W1 / engine':>11} | "
        f"{'W2 / engine':>11} | {'W1 / core':>9} | {'W2 / core':>9} |"
    )
    out = [head, "|" + "|".join("-" * (len(part)) for part in head.split("|")[1:-1]) + "|"]
    for name, r1, r2 in rows:
        out.append(
            f"| {name:<24} | {fmt_rate(r1):>9} | {fmt_rate(r2):>9} | {r1 / eng[0]:>10.2f}x | "
            f"{r2 / eng[1]:>10.2f}x | {r1 / core[0]:>8.2f}x | {r2 / core[1]:>8.2f}x |"
        )
    return out


# == profiling ==============================================================================


def profile(target: str, workload: str, top: int) -> None:
    import cProfile
    import pstats

    ops = w1() if workload == "W1" else w2()
    if target == "engine":
        r = EngineRun(ops)
        fn: Callable[[], None] = r.run
    elif target == "core":
        core = BookCore()
        core.prepare(ops)
        fn = core.run
    else:
        raise SystemExit(f"unknown profile target {target!r} (engine | core)")
    prof = cProfile.Profile()
    gc.collect()
    prof.enable()
    fn()
    prof.disable()
    out = Path(f"/tmp/engine_bench_{target}_{workload}.pstats")
    prof.dump_stats(out)
    print(f"profile written to {out}")
    stats = pstats.Stats(prof).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


# == main ===================================================================================


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.engine_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="timed runs per implementation (best is reported)")
    p.add_argument("--no-peers", action="store_true", help="time only our engine and book core")
    p.add_argument("--no-freeze", action="store_true", help="do not gc.freeze() the prepared heap before timing")
    p.add_argument("--profile", choices=("engine", "core"), help="cProfile one run instead of the table")
    p.add_argument("--workload", choices=("W1", "W2"), default="W1", help="workload for --profile")
    p.add_argument("--top", type=int, default=30, help="rows of the profile to print")
    args = p.parse_args(args_in)

    global FREEZE
    FREEZE = not args.no_freeze
    for line in header(args_in):
        print(line)
    print(f"gc: {'collect + freeze of the prepared heap before each timed run' if FREEZE else 'collect before each timed run (no freeze)'}; thresholds {gc.get_threshold()}")
    if args.profile:
        profile(args.profile, args.workload, args.top)
        return 0

    # 1. generate the workloads and everything derived from them, before any clock starts
    t0 = time.perf_counter()
    workloads = {"W1": w1(), "W2": w2()}
    refs = {name: replay_reference(ops) for name, ops in workloads.items()}
    owners = {name: assign_accounts(ops, ACCOUNTS) for name, ops in workloads.items()}
    print(
        f"workloads: W1 {W1_SPEC} and W2 {W2_SPEC} (n_ops, passive%, cancel%), seed 20240601, "
        f"mid 10000 ticks; generated and replayed on the reference in {time.perf_counter() - t0:.1f} s"
    )
    for name, ops in workloads.items():
        n_limit = sum(op.kind == "limit" for op in ops)
        print(f"  {name}: {len(ops)} ops = {n_limit} limit + {len(ops) - n_limit} cancel; {len(refs[name])} fills")

    # 2. verify every implementation before timing any of them
    print("verification (untimed):")
    for name, ops in workloads.items():
        print(f"  {name} {verify_engine(EngineRun(ops, owner=owners[name]), ops, refs[name])}")
        print(f"  {name} {verify_book_core(ops, refs[name])}")
    peers = [] if args.no_peers else available_peers(report=lambda s: print("  " + s))
    peers = [pc for pc in peers if verify(pc, report=lambda s: print("  " + s))]
    peers = [pc for pc in peers if all(verify_peer_full(pc, name, workloads[name], refs[name]) for name in workloads)]

    # 3. time: interleaved rounds (every implementation once per round, W1 then W2), a fresh
    # instance per run, ops prepared before the clock starts; best of the rounds
    print(f"timing: {args.runs} interleaved rounds, best of each ...", flush=True)
    impls: list[tuple[str, str, Callable[[list[Op]], float]]] = [
        ("engine", "engine (Engine.apply)", lambda ops: time_engine(ops, 1, owners[_name(workloads, ops)])),
        ("core", "book core (OrderBook)", lambda ops: time_book_core(ops, 1)),
    ]
    for pc in peers:
        impls.append((pc.name, f"{pc.name} {pc.version}", lambda ops, pc=pc: time_peer(pc, ops, 1)))
    best: dict[tuple[str, str], float] = {}
    for rnd in range(args.runs):
        for key, label, timer in impls:
            for name in ("W1", "W2"):
                ops = workloads[name]
                dt = timer(ops)
                best[(key, name)] = min(best.get((key, name), float("inf")), dt)
                print(f"  round {rnd + 1}: {label:<26} {name}: {dt * 1000:8.1f} ms  {fmt_rate(len(ops) / dt):>7} ops/s", flush=True)
    results: dict[str, tuple[float, float]] = {
        key: (len(workloads["W1"]) / best[(key, "W1")], len(workloads["W2"]) / best[(key, "W2")]) for key, _, _ in impls
    }
    labels = {key: label for key, label, _ in impls}

    print()
    print(f"ops/s, best of {args.runs}; ratio > 1 means faster than our engine / our book core")
    rows = [(labels[k], r1, r2) for k, (r1, r2) in results.items()]
    for line in table(rows, results["engine"], results["core"]):
        print(line)
    slowest_peer = [k for k in results if k not in ("engine", "core")]
    for k in ("core", "engine"):
        beaten = [p for p in slowest_peer if results[k][0] > results[p][0] and results[k][1] > results[p][1]]
        print(f"{labels[k]} beats {len(beaten)} of {len(slowest_peer)} peers on both workloads: {', '.join(beaten) or '-'}")
    return 0


def _name(workloads: dict[str, list[Op]], ops: list[Op]) -> str:
    return next(k for k, v in workloads.items() if v is ops)


if __name__ == "__main__":
    raise SystemExit(main())
