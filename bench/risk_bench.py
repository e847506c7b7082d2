"""Risk-engine benchmark (issue 3): mark updates at scale, a liquidation crash, W1 with margin.

Run from the repository root, in the project venv::

    python -m bench.risk_bench                    # everything, about 2-3 minutes
    python -m bench.risk_bench --only index       # parts 1, 1c and 1d: marks, index ticks, funding
    python -m bench.risk_bench --profile crash    # cProfile of one part instead (marks | crash | w1)

Everything goes through ``Engine.apply``; positions are made by real crossing orders.

1. Mark-update cost with no liquidation at 1k, 10k and 100k open positions in BTC-PERP.
   Positions come in pairs: a long account buys ``q`` lots from a short account (random
   ``q``, deposits between 15% and 100% of the notional, so liquidation prices are spread
   from ~15% to ~100% away from the mark). One engine grows 1k -> 10k -> 100k. At each size
   ``--marks`` ``SetMarkPrice`` commands random-walk the mark within +-1% of 10000 ticks
   (nobody is liquidated: checked); best of ``--rounds`` rounds, microseconds per update.
   Goal (issue 3): cost(100k) / cost(1k) <= 2.
   1b. The same updates at 10k positions when 0 / 100 / 1,000 of those accounts also hold an
   ETH-PERP position: the liquidation index re-checks every multi-symbol account on every
   mark move of one of its symbols, so this shows what that costs.
   1c. Index ticks (SPEC §12) on an index-marked BTC-PERP, built the same way in a second
   engine: ``SetIndexPrice`` with the same random walk. The book is empty (the pairs cross
   completely), so the basis stays 0 and the mark, median(index, index, last trade = 10000),
   moves exactly like the admin marks of part 1: the difference is the index bookkeeping.
   Goal: cost(100k) / cost(1k) <= 2, as for marks.
   1d. A funding round (``ApplyFunding``, the computed rate: the interest, no premium
   samples) over every open position of that engine at each size: one ``funding_paid``
   event and one wallet change per position; best of ``--rounds``, microseconds per position.
   1e. Index ticks with a two-sided book (one bid, one ask, no positions): each tick also
   moves the basis and adds a premium sample to the exact sum (a ``Fraction``) kept until
   the next funding round. That sum's denominator grows toward the least common multiple of
   every index price seen, so the cost per tick depends on how many distinct prices a round
   sees: a random walk of 1-3 ticks within +-5% of 10000 ticks (up to 1,001 prices), timed
   per chunk up to 30,000 samples (an 8-hour round at one index price a second holds 28,800).
   (Known engine limit this shows: past ~4,300 digits, reached after about 1,800 distinct
   index prices in one round, ``Engine.state_hash()`` fails on ``repr`` of that integer.)
2. Crash: 10,000 accounts with a position each: 1,000 thin-margined longs (deposit = 11% of
   notional, 10x leverage), 4,000 well-collateralised longs and 5,000 shorts (the long/short
   pairs are made by crossing orders; the book is empty afterwards). One ``SetMarkPrice``
   to -15% makes every thin long bankrupt and nobody else; the empty book means every
   taken-over position goes to ADL against the shorts. The whole ``apply`` is timed (best
   of ``--crash-runs`` fresh builds); the events must show 1,000 ``liquidation`` events and
   some ``adl`` events, and ``check_invariants()`` must pass. Goal: < 1 s.
3. W1 (from ``bench.engine_bench``) through ``Engine.apply`` with margin checks on: 1,000
   accounts, the default limit of 200 open orders, and deposits sized by an untimed dry run
   to 1.5x what each account's initial margin ever needed (so the checks really run and
   could bind, but nothing is rejected: checked, and the fills must equal the reference),
   against the book core alone.
4. Stop orders (SPEC §12, bench/stops_bench.py): a mark tick with 100,000 untriggered stops
   of which none trigger against the same engine without them (goal: <= 1.5x), and one move
   that triggers 1,000 of them (time per triggered stop).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import random
import statistics
import sys
import time
from typing import Any

from bench import engine_bench
from bench.engine_bench import (
    SYMBOL,
    EngineRun,
    assign_accounts,
    fmt_rate,
    header,
    time_book_core,
    time_engine,
    timed,
    verify_book_core,
    verify_engine,
)
from bench.workload import Op, replay_reference, w1
from engine import commands as c
from engine import events as ev
from engine.engine import Engine
from engine.instruments import default_instruments
from engine.risk import available_atoms

MARK = 10_000
SEED = 7


# == helpers ================================================================================


def _apply_ok(eng: Engine, cmd: Any) -> list[Any]:
    events = eng.apply(cmd)
    for e in events:
        if isinstance(e, ev.REJECTION_TYPES):
            raise RuntimeError(f"setup command {cmd} rejected: {e}")
        if isinstance(e, ev.AccountLiquidated):
            raise RuntimeError(f"unexpected liquidation during setup: {e}")
    return events


def _new_account(eng: Engine, deposit: int) -> int:
    (created,) = eng.apply(c.CreateAccount())
    _apply_ok(eng, c.Deposit(created.account_id, deposit))
    return created.account_id


def _open_pair(eng: Engine, long_id: int, short_id: int, lots: int, price: int = MARK) -> None:
    """The short rests a sell, the long takes it completely: one position each, empty book."""
    _apply_ok(eng, c.PlaceOrder(short_id, SYMBOL, "sell", lots, price))
    events = _apply_ok(eng, c.PlaceOrder(long_id, SYMBOL, "buy", lots, price))
    if not any(isinstance(e, ev.TradeExecuted) for e in events):
        raise RuntimeError("pair did not trade")


def _notional(eng: Engine, lots: int, price: int = MARK) -> int:
    return eng.instruments[SYMBOL].notional_atoms(lots, price)


def new_engine() -> Engine:
    eng = Engine()
    _apply_ok(eng, c.SetMarkPrice(SYMBOL, MARK))
    return eng


# == 1. mark updates at scale ===============================================================


def grow_positions(eng: Engine, target: int, rng: random.Random) -> None:
    """Add long/short pairs until ``target`` accounts hold a BTC-PERP position."""
    while len(eng.holders[SYMBOL]) < target:
        lots = rng.randint(1, 200)
        n = _notional(eng, lots)
        long_id = _new_account(eng, n * rng.randint(15, 100) // 100)
        short_id = _new_account(eng, n * rng.randint(15, 100) // 100)
        _open_pair(eng, long_id, short_id, lots)


def mark_walk(n: int, rng: random.Random) -> list[c.SetMarkPrice]:
    """``n`` small mark moves, a random walk kept within +-1% of MARK, never repeating a price."""
    out, m = [], MARK
    for _ in range(n):
        step = rng.choice((-3, -2, -1, 1, 2, 3))
        m = m + step if abs(m + step - MARK) <= MARK // 100 else m - step
        out.append(c.SetMarkPrice(SYMBOL, m))
    return out


def time_marks(eng: Engine, cmds: list[Any], rounds: int) -> tuple[float, float]:
    """(best, median) microseconds per mark (or index) update over ``rounds`` rounds of ``cmds``."""
    apply = eng.apply
    per: list[float] = []
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        for cmd in cmds:
            apply(cmd)
        per.append((time.perf_counter() - t0) / len(cmds) * 1e6)
        # nobody may have been liquidated: every position is still there
        if any(isinstance(e, ev.AccountLiquidated) for e in apply(cmds[0])):
            raise AssertionError("a mark update liquidated someone")
    return min(per), statistics.median(per)


def bench_marks(sizes: list[int], n_marks: int, rounds: int) -> list[tuple[int, float, float, float]]:
    rng = random.Random(SEED)
    eng = new_engine()
    cmds = mark_walk(n_marks, random.Random(SEED + 1))
    rows = []
    for size in sizes:
        t0 = time.perf_counter()
        _apply_ok(eng, c.SetMarkPrice(SYMBOL, MARK))
        grow_positions(eng, size, rng)
        build = time.perf_counter() - t0
        before = {aid: eng.accounts[aid].positions[SYMBOL].size_lots for aid in eng.holders[SYMBOL]}
        best, med = time_marks(eng, cmds, rounds)
        after = {aid: eng.accounts[aid].positions[SYMBOL].size_lots for aid in eng.holders[SYMBOL]}
        if before != after or len(before) != size:
            raise AssertionError("positions changed during mark updates")
        rows.append((size, best, med, build))
        print(f"  {size:>7,} positions (built in {build:5.1f} s): {best:6.2f} us/update best, {med:6.2f} median", flush=True)
    eng.check_invariants()
    return rows


def bench_multi(size: int, multi_counts: list[int], n_marks: int, rounds: int) -> list[tuple[int, float]]:
    """Part 1b: the same mark updates when some of ``size`` BTC-PERP holders also hold an
    ETH-PERP position (1 lot, made by crossing orders between two such holders)."""
    rng = random.Random(SEED)
    eng = new_engine()
    grow_positions(eng, size, rng)
    _apply_ok(eng, c.SetMarkPrice("ETH-PERP", 100_000))
    cmds = mark_walk(n_marks, random.Random(SEED + 1))
    ids = sorted(eng.holders[SYMBOL])
    rows = []
    for n_multi in multi_counts:
        for i in range(len(eng.holders["ETH-PERP"]), n_multi, 2):
            long_id, short_id = ids[i], ids[i + 1]
            for aid in (long_id, short_id):
                _apply_ok(eng, c.Deposit(aid, 10**12))
            _apply_ok(eng, c.PlaceOrder(short_id, "ETH-PERP", "sell", 1, 100_000))
            _apply_ok(eng, c.PlaceOrder(long_id, "ETH-PERP", "buy", 1, 100_000))
        best, _ = time_marks(eng, cmds, rounds)
        rows.append((n_multi, best))
        print(f"  {size:,} BTC-PERP positions, {n_multi:>5,} of those accounts also in ETH-PERP: {best:8.2f} us/update", flush=True)
    return rows


# == 1c, 1d. index ticks and funding rounds =================================================


def new_index_engine() -> Engine:
    """BTC-PERP marked from its index (SPEC §12); the first index price sets the mark."""
    instruments = default_instruments()
    instruments[SYMBOL] = dataclasses.replace(instruments[SYMBOL], mark_source=c.MARK_FROM_INDEX)
    eng = Engine(instruments)
    _apply_ok(eng, c.SetIndexPrice(SYMBOL, MARK))
    return eng


def time_funding(eng: Engine, rounds: int) -> tuple[float, float]:
    """(best, median) microseconds per position of one funding round, over ``rounds`` rounds."""
    n = len(eng.holders[SYMBOL])
    per: list[float] = []
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        events = eng.apply(c.ApplyFunding(SYMBOL))
        per.append((time.perf_counter() - t0) / n * 1e6)
        paid = sum(1 for e in events if type(e) is ev.FundingPaid)
        if paid != n or any(isinstance(e, ev.AccountLiquidated | ev.CommandRejected) for e in events):
            raise AssertionError(f"funding round: {paid} payments for {n} positions, or a liquidation")
    return min(per), statistics.median(per)


def bench_index(sizes: list[int], n_ticks: int, rounds: int) -> list[tuple[int, float, float, float, float]]:
    """Per size: (positions, index tick best, median, funding us/position best, median)."""
    rng = random.Random(SEED)
    eng = new_index_engine()
    walk = mark_walk(n_ticks, random.Random(SEED + 1))
    cmds = [c.SetIndexPrice(SYMBOL, m.price_ticks) for m in walk]
    rows = []
    for size in sizes:
        _apply_ok(eng, c.SetIndexPrice(SYMBOL, MARK))
        grow_positions(eng, size, rng)
        if eng.books[SYMBOL].orders or eng.marks[SYMBOL] != MARK:
            raise AssertionError("index bench: expected an empty book and the mark at the index")
        best, med = time_marks(eng, cmds, rounds)
        if eng.marks[SYMBOL] != cmds[0].price_ticks or eng.basis.get(SYMBOL, 0) != 0:
            raise AssertionError("index bench: the mark did not follow the index")
        f_best, f_med = time_funding(eng, rounds)
        rows.append((size, best, med, f_best, f_med))
        print(
            f"  {size:>7,} positions: index tick {best:6.2f} us best, {med:6.2f} median; funding round "
            f"{f_best * size / 1000:8.1f} ms = {f_best:5.2f} us/position best, {f_med:5.2f} median",
            flush=True,
        )
    eng.check_invariants()
    return rows


def bench_premium(checkpoints: list[int]) -> list[tuple[int, float, int]]:
    """Part 1e: (samples so far, us per index tick over the last chunk, denominator digits)."""
    eng = new_index_engine()
    bid, ask = _new_account(eng, 10**14), _new_account(eng, 10**14)
    _apply_ok(eng, c.PlaceOrder(bid, SYMBOL, "buy", 10, MARK * 99 // 100))
    _apply_ok(eng, c.PlaceOrder(ask, SYMBOL, "sell", 10, MARK * 101 // 100))
    rng = random.Random(SEED + 2)
    price, done, rows = MARK, 0, []
    apply = eng.apply
    for upto in checkpoints:
        cmds = []
        for _ in range(upto - done):
            step = rng.choice((-3, -2, -1, 1, 2, 3))
            price = price + step if abs(price + step - MARK) <= MARK // 20 else price - step
            cmds.append(c.SetIndexPrice(SYMBOL, price))
        gc.collect()
        t0 = time.perf_counter()
        for cmd in cmds:
            apply(cmd)
        us = (time.perf_counter() - t0) / len(cmds) * 1e6
        done = upto
        digits = math.ceil(eng.premium_sum[SYMBOL].denominator.bit_length() * math.log10(2))
        if eng.premium_samples[SYMBOL] != done:
            raise AssertionError("premium bench: every tick should have recorded a sample")
        rows.append((done, us, digits))
        print(f"  {done:>7,} samples: {us:7.2f} us per index tick over the last {len(cmds):,} (~{digits:,}-digit denominator)", flush=True)
    t0 = time.perf_counter()
    apply(c.ApplyFunding(SYMBOL))
    print(f"  the funding round that consumes them: {(time.perf_counter() - t0) * 1e3:.2f} ms", flush=True)
    return rows


# == 2. the crash ===========================================================================

N_THIN, N_WELL_LONG = 1_000, 4_000
CRASH_TO = MARK * 85 // 100  # -15%


def build_crash(seed: int = SEED) -> Engine:
    rng = random.Random(seed)
    eng = new_engine()
    pairs: list[tuple[int, int, int]] = []  # (long deposit, short deposit, lots)
    for i in range(N_THIN + N_WELL_LONG):
        lots = rng.randint(1, 20)
        n = _notional(eng, lots)
        thin = i % 5 == 0  # interleave the thin longs with the others
        long_dep = n * 11 // 100 if thin else n * rng.randint(50, 100) // 100
        short_dep = n * rng.randint(20, 100) // 100
        pairs.append((long_dep, short_dep, lots))
    for long_dep, short_dep, lots in pairs:
        long_id = _new_account(eng, long_dep)
        short_id = _new_account(eng, short_dep)
        _open_pair(eng, long_id, short_id, lots)
    if len(eng.holders[SYMBOL]) != 10_000 or eng.books[SYMBOL].orders:
        raise AssertionError("crash setup: expected 10,000 positions and an empty book")
    # the setup's own lazy re-indexing (every account opened since the last mark move) is not
    # part of the crash: flush it with a move to the same mark before the clock starts
    _apply_ok(eng, c.SetMarkPrice(SYMBOL, MARK))
    return eng


def run_crash(eng: Engine) -> tuple[float, list[Any]]:
    gc.collect()
    t0 = time.perf_counter()
    events = eng.apply(c.SetMarkPrice(SYMBOL, CRASH_TO))
    return time.perf_counter() - t0, events


def check_crash(eng: Engine, events: list[Any]) -> tuple[int, int, int]:
    liq = [e for e in events if isinstance(e, ev.AccountLiquidated)]
    adl = [e for e in events if isinstance(e, ev.PositionDeleveraged)]
    if len(liq) != N_THIN or len({e.account_id for e in liq}) != N_THIN:
        raise AssertionError(f"expected {N_THIN} liquidation events, got {len(liq)}")
    if not adl:
        raise AssertionError("expected ADL events")
    if sum(e.adl_lots for e in liq) != sum(e.qty_lots for e in adl):
        raise AssertionError("ADL lots do not add up to what the liquidations handed to ADL")
    eng.check_invariants()
    return len(liq), len(adl), len(events)


def bench_crash(runs: int) -> tuple[float, list[float], tuple[int, int, int], float]:
    times = []
    counts = (0, 0, 0)
    build_s = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        eng = build_crash()
        build_s = time.perf_counter() - t0
        dt, events = run_crash(eng)
        counts = check_crash(eng, events)
        times.append(dt)
        print(
            f"  crash run: {dt * 1000:7.1f} ms  ({counts[0]} liquidations, {counts[1]} adl events, "
            f"{counts[2]} events; setup {build_s:.1f} s; invariants OK)",
            flush=True,
        )
        del eng, events
    return min(times), times, counts, build_s


# == 3. W1 with margin checks ===============================================================

W1_ACCOUNTS = 1_000
HEADROOM_NUM, HEADROOM_DEN = 3, 2  # deposits = 1.5x the peak margin use in the dry run


def size_deposits(ops: list[Op], owner: dict[int, int]) -> list[int]:
    """Untimed dry run with huge deposits: per account, the most it ever had committed
    (``deposit - min(available)``) after any command that touched it; return 1.5x that,
    rounded up to whole USD (at least 1 USD)."""
    run = EngineRun(ops, n_accounts=W1_ACCOUNTS, max_open_orders=200, owner=owner)
    eng = run.engine
    big = eng.accounts[run.account_ids[0]].wallet_atoms
    index_of = {aid: i for i, aid in enumerate(run.account_ids)}
    min_avail = [big] * W1_ACCOUNTS
    insts, marks = eng.instruments, eng.marks
    for cmd in run.cmds:
        touched = {cmd.account_id}
        for e in eng.apply(cmd):
            if isinstance(e, ev.TradeExecuted):
                touched.add(e.maker_account_id)
            elif isinstance(e, ev.REJECTION_TYPES):
                raise AssertionError(f"dry run rejected {cmd}: {e}")
        for aid in touched:
            a = available_atoms(eng.accounts[aid], insts, marks)
            i = index_of[aid]
            if a < min_avail[i]:
                min_avail[i] = a
    usd = 100_000_000
    out = []
    for m in min_avail:
        need = (big - m) * HEADROOM_NUM // HEADROOM_DEN
        out.append(max(usd, -(-need // usd) * usd))
    return out


def bench_w1_margin(runs: int) -> dict[str, Any]:
    ops = w1()
    ref = replay_reference(ops)
    owner = assign_accounts(ops, W1_ACCOUNTS)
    t0 = time.perf_counter()
    deposits = size_deposits(ops, owner)
    print(
        f"  deposits sized by a dry run in {time.perf_counter() - t0:.1f} s: median "
        f"{statistics.median(deposits) / 1e8:,.0f} USD, max {max(deposits) / 1e8:,.0f} USD "
        f"(positions up to ~1 BTC at 1,000 USD/BTC, 10x leverage)",
        flush=True,
    )
    print("  " + verify_engine(EngineRun(ops, W1_ACCOUNTS, deposits, 200, owner), ops, ref))
    print("  " + verify_book_core(ops, ref))
    out: dict[str, Any] = {"deposits_median": statistics.median(deposits)}

    def engine_timer() -> float:
        best = float("inf")
        for _ in range(runs):
            r = EngineRun(ops, W1_ACCOUNTS, deposits, 200, owner)
            best = min(best, timed(r.run))
            if r.engine.next_trade_id - 1 != len(ref):
                raise AssertionError("timed run: wrong number of trades")
        return best

    out["engine"] = len(ops) / engine_timer()
    print(f"  engine, {W1_ACCOUNTS} accounts, sized deposits, 200-order limit: {fmt_rate(out['engine'])} ops/s", flush=True)
    out["engine16"] = len(ops) / time_engine(ops, runs, assign_accounts(ops, 16))
    print(f"  engine, 16 accounts, 10M USD each (engine_bench setup):      {fmt_rate(out['engine16'])} ops/s", flush=True)
    out["core"] = len(ops) / time_book_core(ops, runs)
    print(f"  book core alone:                                             {fmt_rate(out['core'])} ops/s", flush=True)
    return out


# == profiling ==============================================================================


def profile(target: str, top: int) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    if target == "marks":
        eng = new_engine()
        grow_positions(eng, 100_000, random.Random(SEED))
        cmds = mark_walk(20_000, random.Random(SEED + 1))
        gc.collect()
        prof.enable()
        for cmd in cmds:
            eng.apply(cmd)
        prof.disable()
    elif target == "crash":
        eng = build_crash()
        gc.collect()
        prof.enable()
        _, events = run_crash(eng)
        prof.disable()
        check_crash(eng, events)
    elif target == "w1":
        ops = w1()
        owner = assign_accounts(ops, W1_ACCOUNTS)
        r = EngineRun(ops, W1_ACCOUNTS, size_deposits(ops, owner), 200, owner)
        gc.collect()
        prof.enable()
        r.run()
        prof.disable()
    else:
        raise SystemExit(f"unknown target {target!r}")
    path = f"/tmp/risk_bench_{target}.pstats"
    prof.dump_stats(path)
    print(f"profile written to {path}")
    stats = pstats.Stats(prof).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


# == main ===================================================================================


def _print_marks_and_index(
    rows: list[tuple[int, float, float, float]],
    index_rows: list[tuple[int, float, float, float, float]],
    premium: list[tuple[int, float, int]],
) -> None:
    """Parts 1, 1c, 1d and 1e, ratios against the smallest size of this run."""
    print("| open positions | us per mark update (best) | median | vs 1k | us per index tick (best) | median | vs 1k | index / mark |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    base, index_base = rows[0][1], index_rows[0][1]
    for (size, best, med, _), (_, i_best, i_med, _, _) in zip(rows, index_rows, strict=True):
        print(
            f"| {size:,} | {best:.2f} | {med:.2f} | {best / base:.2f}x | {i_best:.2f} | {i_med:.2f} | "
            f"{i_best / index_base:.2f}x | {i_best / best:.2f}x |"
        )
    print("| open positions | funding round, ms (best) | us per position (best) | median | vs 1k |")
    print("|---:|---:|---:|---:|---:|")
    f_base = index_rows[0][3]
    for size, _, _, f_best, f_med in index_rows:
        print(f"| {size:,} | {f_best * size / 1000:.1f} | {f_best:.2f} | {f_med:.2f} | {f_best / f_base:.2f}x |")
    for what, table in (("mark update", [r[1] for r in rows]), ("index tick", [r[1] for r in index_rows])):
        ratio = table[-1] / table[0]
        print(f"{what} cost {rows[-1][0]:,} / {rows[0][0]:,} positions: {ratio:.2f}x  (goal <= 2: {'MET' if ratio <= 2 else 'NOT MET'})")
    ratio = index_rows[-1][3] / index_rows[0][3]
    print(f"funding round cost per position {rows[-1][0]:,} / {rows[0][0]:,} positions: {ratio:.2f}x (1x: a round linear in positions)")
    print(
        "index tick with premium samples: "
        + ", ".join(f"{us:.1f} us at {n:,} samples (~{d:,} digits)" for n, us, d in premium)
        + f"; {premium[-1][1] / index_rows[0][1]:.1f}x the index tick without a book at {rows[0][0]:,} positions"
    )


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.risk_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--marks", type=int, default=1000, help="mark updates per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds of mark updates per size (best is reported)")
    p.add_argument("--crash-runs", type=int, default=3, help="fresh crash builds (best is reported)")
    p.add_argument("--runs", type=int, default=3, help="timed W1 runs per implementation")
    p.add_argument("--sizes", default="1000,10000,100000", help="open-position counts for part 1")
    p.add_argument("--only", choices=("index",), help="run only parts 1 and 1c-1d (marks, index ticks, funding)")
    p.add_argument("--no-stops", action="store_true", help="skip part 4 (stop orders: python -m bench.stops_bench)")
    p.add_argument("--profile", choices=("marks", "crash", "w1"), help="cProfile one part instead")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--no-freeze", action="store_true", help="part 3: do not gc.freeze() the prepared heap")
    args = p.parse_args(args_in)
    engine_bench.FREEZE = not args.no_freeze
    for line in header(args_in):
        print(line)
    if args.profile:
        profile(args.profile, args.top)
        return 0
    t_all = time.perf_counter()

    print(f"\n1. mark updates, no liquidation ({args.marks} SetMarkPrice within +-1% of {MARK} ticks, best of {args.rounds}):")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = bench_marks(sizes, args.marks, args.rounds)

    print(f"\n1c/1d. index ticks on an index-marked BTC-PERP ({args.marks} SetIndexPrice, the same walk) and a funding round (best of {args.rounds}):")
    index_rows = bench_index(sizes, args.marks, args.rounds)

    print("\n1e. index ticks with a two-sided book: premium samples accumulate until the next funding round:")
    premium = bench_premium([1_000, 10_000, 30_000])
    if args.only == "index":
        _print_marks_and_index(rows, index_rows, premium)
        return 0

    print("\n1b. the same with accounts holding two symbols (BTC-PERP mark updates, nobody liquidated):")
    multi = bench_multi(10_000, [0, 100, 1000], args.marks, 3)

    print(f"\n2. crash: {N_THIN:,} of 10,000 accounts liquidated into an empty book (mark {MARK} -> {CRASH_TO}):")
    crash_best, crash_all, counts, _ = bench_crash(args.crash_runs)

    print(f"\n3. W1 through Engine.apply with margin checks (best of {args.runs}):")
    wm = bench_w1_margin(args.runs)

    print("\nsummary")
    _print_marks_and_index(rows, index_rows, premium)
    print(
        "two-symbol accounts at 10,000 positions: "
        + ", ".join(f"{n:,} -> {us:.1f} us" for n, us in multi)
        + f"  (+{(multi[-1][1] - multi[0][1]) / max(1, multi[-1][0]):.3f} us per two-symbol account)"
    )
    print(
        f"crash, {counts[0]:,} liquidations + {counts[1]:,} adl events ({counts[2]:,} events) in one SetMarkPrice: "
        f"{crash_best * 1000:.0f} ms best of {len(crash_all)} "
        f"({', '.join(f'{t * 1000:.0f}' for t in crash_all)} ms)  (goal < 1 s: {'MET' if crash_best < 1 else 'NOT MET'})"
    )
    print(
        f"W1 with margin checks: {fmt_rate(wm['engine'])} ops/s vs book core {fmt_rate(wm['core'])} ops/s "
        f"= {wm['engine'] / wm['core']:.3f}x of the book alone ({wm['core'] / wm['engine']:.1f}x slower); "
        f"16-account setup {fmt_rate(wm['engine16'])} ops/s"
    )
    if not args.no_stops:
        from bench import stops_bench  # imports this module: loaded only when it runs

        stops_bench.run(100_000, args.marks, 1_000, args.rounds)
    print(f"total bench time {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
