"""What a what-if costs (`POST /v1/admin/what-if`, api/routes/whatif.py) at 10k accounts.

    python -m bench.whatif_bench [--accounts 10000] [--runs 5]

The route forks one child per policy (a copy-on-write image of the engine; the engine loop
pays only for the fork) and each child applies the move on its copy; without fork it pickles
the engine once (holding the loop) and unpickles one copy per policy in a worker thread. This
times both in process on the snapshot bench's population (each account a BTC-PERP position and
two resting orders), against applying the move to an engine directly (what a real mark move
costs), measured in the same run. Best of `--runs`.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import time

from bench.snapshot_bench import build_state
from engine import commands as c
from engine.engine import Engine
from service.storage.snapshotter import fork_child

BTC = "BTC-PERP"


def _best(fn: object, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    engine: Engine = build_state(args.accounts, 2)
    gc.collect()
    mark = engine.marks[BTC]
    blob = pickle.dumps(engine, pickle.HIGHEST_PROTOCOL)
    dump_s = _best(lambda: pickle.dumps(engine, pickle.HIGHEST_PROTOCOL), args.runs)
    load_s = _best(lambda: pickle.loads(blob), args.runs)
    rows = []
    for label, price in (("small move (nobody liquidated)", mark - mark // 200), ("crash (-15%)", mark - mark * 15 // 100)):
        def on_copy(price: int = price) -> None:
            pickle.loads(blob).apply(c.SetMarkPrice(BTC, price, ts_ns=1))

        def on_live_copy(price: int = price) -> int:  # the move itself, without the copy
            eng = pickle.loads(blob)
            t0 = time.perf_counter()
            evs = eng.apply(c.SetMarkPrice(BTC, price, ts_ns=1))
            on_live_copy.elapsed = time.perf_counter() - t0  # type: ignore[attr-defined]
            return sum(1 for e in evs if e.TYPE == "liquidation")

        liquidated = on_live_copy()
        move_s = min(_once(on_live_copy) for _ in range(args.runs))
        per_policy = _best(on_copy, args.runs)
        rows.append((label, liquidated, move_s, per_policy))
    print(f"what-if cost, {args.accounts:,} accounts (each a position and 2 orders), snapshot {len(blob) / 1e6:.1f} MB, best of {args.runs}")
    print(f"| step | ms |\n|---|---:|\n| pickle the live engine (holds the engine loop) | {dump_s * 1e3:.1f} |")
    print(f"| unpickle one copy (worker thread) | {load_s * 1e3:.1f} |")
    print("\n| move | liquidated | the move alone, ms | one policy on a copy (unpickle + move), ms | copy / move |")
    print("|---|---:|---:|---:|---:|")
    for label, liquidated, move_s, per_policy in rows:
        print(f"| {label} | {liquidated} | {move_s * 1e3:.1f} | {per_policy * 1e3:.1f} | {per_policy / move_s:.1f}x |")
    total = dump_s + 3 * rows[-1][3]
    print(f"\npickle path, the crash under 3 policies: about {total * 1e3:.0f} ms, of which {dump_s * 1e3:.0f} ms hold the engine loop")
    # the fork path: what the loop pays (3 forks) and when the last child is done
    crash = c.SetMarkPrice(BTC, mark - mark * 15 // 100, ts_ns=1)
    pauses, totals = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        children = [fork_child(lambda: str(len(engine.apply(crash)))) for _ in range(3)]
        pause = time.perf_counter() - t0
        for child in children:
            assert child.wait(120) and child.result is not None, child.error
        pauses.append(pause)
        totals.append(time.perf_counter() - t0)
    print("\n| fork path (the route's), 3 policies | ms |\n|---|---:|")
    print(f"| the engine loop held for the 3 forks | {min(pauses) * 1e3:.1f} |")
    print(f"| until the last child answered | {min(totals) * 1e3:.1f} |")
    print(f"fork / pickle, time the engine loop is held: {min(pauses) / dump_s:.3f}x")
    return 0


def _once(fn: object) -> float:
    fn()  # type: ignore[operator]
    return fn.elapsed  # type: ignore[attr-defined]


if __name__ == "__main__":
    raise SystemExit(main())
