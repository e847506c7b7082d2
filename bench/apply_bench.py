"""`Engine.apply` throughput: the Python engine, the compiled engine (native/) and a baseline
revision's engine, on the engine bench's W1 and W2, measured in the same run.

    python -m bench.apply_bench                       # baseline: the tree before issue 12's work
    python -m bench.apply_bench --runs 5 --baseline REV

Each run is a fresh process (one process holds one engine build) that builds the engine and
the commands of `bench.engine_bench.EngineRun` untimed, collects and freezes the heap, then
times `apply` over every command (process CPU time), W1 then W2, and checks the number of
resting orders and trades against the workload's reference replay. Implementations are
interleaved (A B C A B C ...), best of `--runs` per implementation and workload. The
baseline's `engine/` is extracted with `git archive` and driven by this tree's bench code.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.baseline import extract, run_worker, short_rev

REPO = Path(__file__).resolve().parent.parent
# the last commit before issue 12's work on the engine (990c7d2 started it): "today" in its table
BASELINE = "990c7d2^"


def worker(service_gc: bool = False) -> None:
    """In a fresh process: W1 and W2 once each, one JSON line. `service_gc`: the collector
    as the service runs it (EXCHANGE_GC_FREEZE, the default: what survives a full collection
    is frozen, service/runtime.py), else CPython's defaults."""
    import gc
    import time

    import native
    from bench.engine_bench import SYMBOL, EngineRun, _resting_after
    from bench.workload import w1, w2

    out: dict[str, Any] = {"build": native.active()}
    if service_gc:
        gc.callbacks.append(lambda phase, info: gc.freeze() if phase == "stop" and info["generation"] == 2 else None)
    for name, ops in (("W1", w1()), ("W2", w2())):
        run = EngineRun(ops)
        gc.collect()
        gc.freeze()
        t0 = time.process_time()
        run.run()
        out[name] = time.process_time() - t0
        gc.unfreeze()
        eng = run.engine
        if (len(eng.books[SYMBOL].orders), eng.next_trade_id - 1) != _resting_after(ops):
            raise AssertionError(f"{name}: the engine did not end where the reference replay does")
        out[f"{name}_ops"] = len(ops)
    print(json.dumps(out), flush=True)


def run_one(root: Path, build: str, service_gc: bool = False) -> dict[str, Any]:
    code = f"from bench.apply_bench import worker; worker({service_gc})"
    return run_worker(root, code, f"apply ({build})", EXCHANGE_ENGINE=build)


def main(argv: list[str] | None = None) -> int:
    import native
    from bench.engine_bench import header

    args_in = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.apply_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--baseline", default=BASELINE)
    p.add_argument("--service-gc", action="store_true",
                   help="every engine with the service's collector policy (freeze after each full collection)")
    args = p.parse_args(args_in)
    for line in header(args_in):
        print(line)
    tmp = tempfile.TemporaryDirectory(prefix="apply-baseline-")
    base_root = extract(args.baseline, Path(tmp.name), ("engine",))  # this tree's bench drives it
    impls = [(f"baseline {short_rev(args.baseline)}", base_root, "python"), ("this tree", REPO, "python")]
    if native.build_state() == "fresh":
        impls.append(("this tree, compiled", REPO, "compiled"))
    else:
        print(f"(no compiled engine: {native.build_state()}; `make compiled` adds it to the table)")
    best: dict[str, dict[str, float]] = {name: {} for name, _, _ in impls}
    ops: dict[str, int] = {}
    try:
        for rnd in range(args.runs):
            for name, root, build in impls:
                r = run_one(root, build, args.service_gc)
                if r["build"] != build:
                    raise AssertionError(f"{name}: ran the {r['build']} engine, not the {build} one")
                for w in ("W1", "W2"):
                    best[name][w] = min(best[name].get(w, float("inf")), r[w])
                    ops[w] = r[f"{w}_ops"]
                print(f"  round {rnd + 1}: {name:<22} W1 {ops['W1'] / r['W1']:>9,.0f}  W2 {ops['W2'] / r['W2']:>9,.0f} ops/s",
                      flush=True)
    finally:
        tmp.cleanup()
    base = impls[0][0]
    gc_note = "the service's collector policy" if args.service_gc else "CPython's default collector"
    print(f"\n`Engine.apply`, ops/s (process CPU, best of {args.runs} interleaved runs, {gc_note})")
    print(f"| engine | W1 | W2 | W1 vs {base} | W2 vs {base} |")
    print("|---|---:|---:|---:|---:|")
    for name, _, _ in impls:
        b = best[name]
        print(f"| {name} | {ops['W1'] / b['W1']:,.0f} | {ops['W2'] / b['W2']:,.0f} | "
              f"{best[base]['W1'] / b['W1']:.2f}x | {best[base]['W2'] / b['W2']:.2f}x |")
    fastest = min(best, key=lambda name: best[name]["W1"] + best[name]["W2"])
    met = all(best[base][w] / best[fastest][w] >= 2 for w in ("W1", "W2"))
    print(f"goal >= 2x the baseline on W1 and W2: {'MET' if met else 'NOT MET'} ({fastest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
