"""ADL lab benchmark: one lab run at 10,000 accounts, about 1,000 of them liquidated.

Run from the repository root, in the project venv::

    python -m bench.lab_bench                         # 10,000 accounts, crash 10%, every policy
    python -m bench.lab_bench --accounts 20000 --crash 12% --policies queue,pro_rata

What is timed is what `python -m lab` does, through the lab's own modules (no plots, no
files): the synthetic population (seed 1, the lab's defaults: Pareto notionals, median
leverage 5), the starting state built through `Engine.apply` (every account trades its
position against the market maker, who then quotes a thin book), its snapshot (pickle),
then per policy: a fresh copy (unpickle) and the path (one `SetMarkPrice` to -10%, with
the market maker's requote before it), which liquidates about 1,000 accounts and
deleverages what the book does not take. Every run ends with `check_invariants()`. The
metrics are computed too (they are part of the lab's cost). Wall times, one run each; the
number of liquidations, ADL fills and counterparties say how much work each policy did.
"""

from __future__ import annotations

import argparse
import time

from engine import commands as c
from lab import metrics
from lab.paths import crash, parse_move_ppm
from lab.population import synthetic
from lab.run import run_policy, snapshot
from lab.scenario import BookSpec, FundSpec, build, lab_instruments

SYMBOL = "BTC-PERP"
START_TICKS = 100_000  # 10,000 USD


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--crash", default="10%")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--policies", default=",".join(c.ADL_POLICIES))
    args = ap.parse_args()
    policies = [p for p in args.policies.split(",") if p]
    t_all = time.perf_counter()
    instruments = lab_instruments()
    t0 = time.perf_counter()
    pop = synthetic(args.seed, args.accounts, SYMBOL, START_TICKS, instruments[SYMBOL])
    t_pop = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc = build(pop, instruments, FundSpec(oi_ppm=10_000), BookSpec())
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = snapshot(sc)
    t_snap = time.perf_counter() - t0
    path = crash(pop.marks, parse_move_ppm(args.crash))
    winners = metrics.find_winners(sc.engine, path.stress_marks(pop.marks), sc.names)
    print(f"ADL lab bench: {len(pop.accounts):,} accounts, {path.description}, seed {args.seed}")
    print(f"population {t_pop:.2f} s, build {t_build:.2f} s, snapshot {t_snap:.2f} s ({len(state) / 1e6:.1f} MB)")
    print()
    header = f"| {'policy':<16} | {'liquidated':>10} | {'to ADL':>6} | {'ADL fills':>9} | {'touched':>7} | {'copy s':>6} | {'path s':>6} | {'metrics s':>9} | {'run s':>6} |"
    print(header)
    print("|" + "|".join("-" * (len(col)) for col in header.split("|")[1:-1]) + "|")
    for policy in policies:
        result = run_policy(sc, state, path, policy)
        t0 = time.perf_counter()
        m = metrics.compute(result, winners, sc.names)
        t_metrics = time.perf_counter() - t0
        path_s = result.seconds - result.copy_seconds
        print(f"| {policy:<16} | {m.liquidations:>10,} | {m.adl_liquidations:>6,} | {m.adl_fills:>9,} | {m.touched:>7,} "
              f"| {result.copy_seconds:>6.2f} | {path_s:>6.2f} | {t_metrics:>9.3f} | {result.seconds + t_metrics:>6.2f} |")
    print()
    print(f"total {time.perf_counter() - t_all:.2f} s")


if __name__ == "__main__":
    main()
