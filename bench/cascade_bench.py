"""Liquidation cascades at scale (issue "one engine at scale"): pro-rata and queue ADL.

    python -m bench.cascade_bench                       # this tree against git HEAD's engine
    python -m bench.cascade_bench --baseline REV        # against another commit's engine/
    python -m bench.cascade_bench --rows pr20k --runs 3 --no-baseline
    python -m bench.cascade_bench --profile q100k-10000 # cProfile of one cascade (this tree)
    python -m bench.cascade_bench --compiled --baseline 990c7d2^   # Python, compiled, the engine before

Scenario (one row = accounts, liquidated, ADL policy): `accounts / 2` long/short pairs in
BTC-PERP made by real crossing orders at the mark (10,000 ticks; random 1..20 lots; the book
is empty afterwards). `liquidated` of the longs are thin (deposit 11% of the notional), the
other longs hold 50..100% and the shorts 20..100%. One `SetMarkPrice` to -15% makes every
thin long bankrupt and nobody else; with an empty book each taken-over position goes whole
to ADL against the shorts (all profitable), under the row's policy. The one `apply` of that
command is timed (wall and process CPU), after a `gc.collect()` and a `gc.freeze()` of the
state (the service freezes what survives a full collection: service/runtime.py); the events must show `liquidated` liquidations,
ADL lots equal to what they handed over, and `check_invariants()` must pass.

Each implementation runs in a worker process of its own (the engine package first on its
`sys.path`): this tree, and the engine of `--baseline` (default HEAD) extracted with
`git archive`. A worker builds a row once, keeps it pickled, and unpickles a fresh copy per
run; runs alternate between the workers (A B A B ...). `--compiled` runs this tree twice, its
Python engine and its compiled one (`make compiled`). Medians are reported, and the ratio
baseline / this tree of the same run. A baseline run that takes longer than
`--baseline-cap` seconds is not repeated.
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.baseline import extract, short_rev, worker_env

REPO = Path(__file__).resolve().parent.parent
SYMBOL = "BTC-PERP"
MARK = 10_000
CRASH_TO = MARK * 85 // 100
SEED = 11

ROWS: dict[str, tuple[int, int, str]] = {
    "pr20k-200": (20_000, 200, "pro_rata"),
    "pr20k-1000": (20_000, 1_000, "pro_rata"),
    "pr20k-2000": (20_000, 2_000, "pro_rata"),
    "pr100k-200": (100_000, 200, "pro_rata"),
    "pr100k-1000": (100_000, 1_000, "pro_rata"),
    "q100k-1000": (100_000, 1_000, "queue"),
    "q100k-5000": (100_000, 5_000, "queue"),
    "q100k-10000": (100_000, 10_000, "queue"),
}
GOALS_S = {
    "pr20k-200": 0.5, "pr20k-1000": 0.5, "pr20k-2000": 0.5, "pr100k-200": 0.5, "pr100k-1000": 1.0,
    "q100k-10000": 1.0,
}
# what the issue measured for the engine before the work, on its day's machine: the goal as a
# speed-up is ISSUE_S / GOALS_S, which a baseline run on any machine can check
ISSUE_S = {
    "pr20k-200": 3.3, "pr20k-1000": 14.5, "pr20k-2000": 32.8, "pr100k-200": 25.6, "pr100k-1000": 187.0,
    "q100k-10000": 1.279,
}

# == the scenario (runs inside a worker, against whichever engine is on sys.path) ===========


def build(n_accounts: int, n_liquidated: int, policy: str, seed: int = SEED) -> Any:
    from engine import commands as c
    from engine import events as ev
    from engine.engine import Engine

    eng = Engine()
    apply = eng.apply

    def ok(cmd: Any) -> list[Any]:
        out = apply(cmd)
        for e in out:
            if isinstance(e, (*ev.REJECTION_TYPES, ev.AccountLiquidated)):
                raise RuntimeError(f"setup: {cmd} -> {e}")
        return out

    ok(c.SetMarkPrice(SYMBOL, MARK))
    ok(c.SetAdlPolicy(SYMBOL, policy))
    rng = random.Random(seed)
    pairs = n_accounts // 2
    thin = set(rng.sample(range(pairs), n_liquidated))
    k = eng.instruments[SYMBOL].atoms_per_lot_tick
    for i in range(pairs):
        lots = rng.randint(1, 20)
        n = lots * MARK * k
        long_dep = n * 11 // 100 if i in thin else n * rng.randint(50, 100) // 100
        short_dep = n * rng.randint(20, 100) // 100
        ids = []
        for dep in (long_dep, short_dep):
            (created,) = ok(c.CreateAccount())
            ok(c.Deposit(created.account_id, dep))
            ids.append(created.account_id)
        ok(c.PlaceOrder(ids[1], SYMBOL, "sell", lots, MARK))
        if not any(isinstance(e, ev.TradeExecuted) for e in ok(c.PlaceOrder(ids[0], SYMBOL, "buy", lots, MARK))):
            raise RuntimeError("pair did not trade")
    if len(eng.holders[SYMBOL]) != 2 * pairs or eng.books[SYMBOL].orders:
        raise AssertionError("setup: expected every account in a position and an empty book")
    # the setup's own re-indexing (every account opened since the last mark move is
    # re-indexed lazily at the next move) is not part of the crash: a move to the same mark
    ok(c.SetMarkPrice(SYMBOL, MARK))
    return eng


def crash(eng: Any, n_liquidated: int) -> dict[str, Any]:
    from engine import commands as c
    from engine import events as ev

    gc.collect()
    gc.freeze()  # as the service does (service/runtime.py): full collections skip the state
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        events = eng.apply(c.SetMarkPrice(SYMBOL, CRASH_TO))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        gc.unfreeze()
    liq = [e for e in events if isinstance(e, ev.AccountLiquidated)]
    adl = [e for e in events if isinstance(e, ev.PositionDeleveraged)]
    if len(liq) != n_liquidated or not adl:
        raise AssertionError(f"expected {n_liquidated} liquidations and ADL, got {len(liq)} / {len(adl)}")
    if sum(e.adl_lots for e in liq) != sum(e.qty_lots for e in adl):
        raise AssertionError("ADL lots do not add up")
    eng.check_invariants()
    import hashlib

    digest = hashlib.sha256(repr(events).encode()).hexdigest()[:16]
    return {"wall": wall, "cpu": cpu, "liq": len(liq), "adl": len(adl), "events": len(events),
            "digest": digest, "state": eng.state_hash()[:16]}


def worker() -> None:
    """Line protocol on stdin/stdout: {"build": row} | {"run": row} | {"quit": 1}."""
    built: dict[str, bytes] = {}
    for line in sys.stdin:
        msg = json.loads(line)
        if "quit" in msg:
            return
        row = msg.get("build") or msg["run"]
        n, liq, policy = ROWS[row]
        if "build" in msg:
            t0 = time.perf_counter()
            built[row] = pickle.dumps(build(n, liq, policy), protocol=pickle.HIGHEST_PROTOCOL)
            import native

            out: dict[str, Any] = {"built": time.perf_counter() - t0, "engine": native.active()}
        else:
            eng = pickle.loads(built[row])
            out = crash(eng, liq)
            del eng
        print(json.dumps(out), flush=True)


class Worker:
    def __init__(self, name: str, root: Path, **env: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from bench.cascade_bench import worker; worker()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=worker_env(root, **env), cwd=root,
        )

    def ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died")
        return dict(json.loads(line))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.ask_quit()

    def ask_quit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write('{"quit": 1}\n')
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def profile(row: str, top: int) -> None:
    import cProfile
    import pstats

    n, liq, policy = ROWS[row]
    eng = build(n, liq, policy)
    prof = cProfile.Profile()
    prof.enable()
    res = crash(eng, liq)
    prof.disable()
    print(res)
    stats = pstats.Stats(prof).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    from bench.engine_bench import header

    args_in = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.cascade_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--baseline", default="HEAD", help="git revision whose engine/ is the baseline")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--compiled", action="store_true",
                   help="also run this tree's compiled engine (make compiled), next to its Python engine")
    p.add_argument("--baseline-cap", type=float, default=20.0, help="seconds: a slower baseline run is not repeated")
    p.add_argument("--profile", choices=tuple(ROWS))
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(args_in)
    for line in header(args_in):
        print(line)
    if args.profile:
        profile(args.profile, args.top)
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if args.compiled:
        workers = [Worker("this tree, Python", REPO, EXCHANGE_ENGINE="python"),
                   Worker("this tree, compiled", REPO, EXCHANGE_ENGINE="compiled")]
    else:
        workers = [Worker("this tree", REPO)]
    ours = len(workers)
    tmp = tempfile.TemporaryDirectory(prefix="cascade-baseline-")
    if not args.no_baseline:
        # the worker protocol is this file's: the baseline runs the same scenario code
        root = extract(args.baseline, Path(tmp.name), ("engine", "bench"), worker="bench/cascade_bench.py")
        rev = short_rev(args.baseline)
        workers.append(Worker(f"baseline {rev}", root))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for row in rows:
            n, liq, policy = ROWS[row]
            print(f"\n{row}: {n:,} accounts, {liq:,} liquidated, policy {policy}", flush=True)
            for w in workers:
                b = w.ask({"build": row})
                print(f"  {w.name}: built in {b['built']:.1f} s ({b['engine']} engine)", flush=True)
            per: dict[str, list[dict[str, Any]]] = {w.name: [] for w in workers}
            for _ in range(args.runs):
                for w in workers:
                    done = per[w.name]
                    if done and w.name.startswith("baseline") and done[0]["wall"] > args.baseline_cap:
                        continue
                    r = w.ask({"run": row})
                    done.append(r)
                    print(f"  {w.name:>18}: {r['wall'] * 1000:9.1f} ms wall {r['cpu'] * 1000:9.1f} ms cpu  "
                          f"({r['liq']} liquidations, {r['adl']} adl, {r['events']} events, "
                          f"events {r['digest']}, state {r['state']})", flush=True)
            digests = {(r["digest"], r["state"]) for runs in per.values() for r in runs}
            if len(digests) != 1:
                raise AssertionError(f"{row}: implementations disagree on events or state: {digests}")
            results[row] = per
    finally:
        for w in workers:
            w.close()
        tmp.cleanup()
    print("\nmedian wall (cpu) seconds of the crash command; events and state hash identical across implementations")
    names = [w.name for w in workers]
    base = names[ours] if len(names) > ours else None
    ratios = [f"baseline / {nm.removeprefix('this tree, ') if ours > 1 else 'this tree'}" for nm in names[:ours]] if base else []
    head = "| row | accounts | liquidated | policy | " + " | ".join(names + ratios) + " | goal (s) | speed-up asked |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for row, per in results.items():
        n, liq, policy = ROWS[row]
        med = {k: (statistics.median(r["wall"] for r in v), statistics.median(r["cpu"] for r in v), len(v)) for k, v in per.items()}
        cells = [f"{w:.3f} ({c:.3f}){'' if k == 1 else f' x{k}'}" for w, c, k in (med[nm] for nm in names)]
        if base:
            cells += [f"{med[base][0] / med[nm][0]:.1f}x" for nm in names[:ours]]
        goal = GOALS_S.get(row)
        best = min(med[nm][0] for nm in names[:ours])
        cells.append("" if goal is None else f"< {goal}: {'met' if best < goal else 'NOT MET'}")
        cells.append("" if goal is None else f"{ISSUE_S[row] / goal:.1f}x")
        print(f"| {row} | {n:,} | {liq:,} | {policy} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
