"""Memory per account, per resting order and per position in an ADL line: this tree against
another commit's engine, measured in the same run.

    python -m bench.memory_bench                       # against git HEAD
    python -m bench.memory_bench --accounts 20000 --orders 100000 --no-baseline

Each implementation runs in a fresh process (its `engine/` first on `sys.path`), with
`tracemalloc` counting the bytes Python allocated and still holds (`get_traced_memory`):

1. accounts: `--accounts` accounts created, funded and each given a BTC-PERP position by
   crossing orders at the mark (pairs of accounts, empty book afterwards, closed orders and
   fills histories as the engine keeps them): bytes per account.
2. resting orders: `--orders` passive limit orders spread over those accounts and 40 price
   levels on each side: bytes per order.
3. ADL lines: both sides' lines of BTC-PERP built (as a liquidation's ADL would, after a
   mark move): bytes per position.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

from bench.baseline import extract, run_worker, short_rev

REPO = Path(__file__).resolve().parent.parent
SYMBOL = "BTC-PERP"
MARK = 10_000


def measure(n_accounts: int, n_orders: int) -> dict[str, float]:
    from engine import commands as c
    from engine.engine import Engine

    tracemalloc.start()
    eng = Engine(max_open_orders=10**9)
    eng.apply(c.SetMarkPrice(SYMBOL, MARK))
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    ids = []
    for i in range(n_accounts // 2):
        pair = []
        for _ in range(2):
            (created,) = eng.apply(c.CreateAccount())
            eng.apply(c.Deposit(created.account_id, 10**13))
            pair.append(created.account_id)
        lots = 1 + i % 20
        eng.apply(c.PlaceOrder(pair[1], SYMBOL, "sell", lots, MARK))
        eng.apply(c.PlaceOrder(pair[0], SYMBOL, "buy", lots, MARK))
        ids += pair
    gc.collect()
    after_accounts = tracemalloc.get_traced_memory()[0]
    for i in range(n_orders):
        aid = ids[i % len(ids)]
        buy = i % 2 == 0
        price = MARK - 1 - i % 40 if buy else MARK + 1 + i % 40
        eng.apply(c.PlaceOrder(aid, SYMBOL, "buy" if buy else "sell", 1 + i % 5, price))
    gc.collect()
    after_orders = tracemalloc.get_traced_memory()[0]
    if len(eng.books[SYMBOL].orders) != n_orders:
        raise AssertionError("orders did not all rest")
    eng.apply(c.SetMarkPrice(SYMBOL, MARK + 1))  # the lines are built after a mark move
    for side in (1, -1):
        eng.adl_ranking(SYMBOL, side)
    gc.collect()
    after_lines = tracemalloc.get_traced_memory()[0]
    positions = len(eng.holders[SYMBOL])
    return {
        "per_account": (after_accounts - base) / n_accounts,
        "per_order": (after_orders - after_accounts) / n_orders,
        "per_line_position": (after_lines - after_orders) / positions,
    }


def worker(n_accounts: int, n_orders: int) -> None:
    print(json.dumps(measure(n_accounts, n_orders)), flush=True)


def run_one(root: Path, n_accounts: int, n_orders: int) -> dict[str, float]:
    return run_worker(root, f"from bench.memory_bench import worker; worker({n_accounts}, {n_orders})", "memory")


def main(argv: list[str] | None = None) -> int:
    from bench.engine_bench import header

    args_in = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.memory_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", type=int, default=20_000)
    p.add_argument("--orders", type=int, default=100_000)
    p.add_argument("--baseline", default="HEAD")
    p.add_argument("--no-baseline", action="store_true")
    args = p.parse_args(args_in)
    for line in header(args_in):
        print(line)
    impls: list[tuple[str, Path]] = [("this tree", REPO)]
    tmp = tempfile.TemporaryDirectory(prefix="memory-baseline-")
    if not args.no_baseline:
        root = extract(args.baseline, Path(tmp.name), ("engine", "bench"), worker="bench/memory_bench.py")
        impls.append((f"baseline {short_rev(args.baseline)}", root))
    res: dict[str, dict[str, Any]] = {}
    try:
        for name, root in impls:
            res[name] = run_one(root, args.accounts, args.orders)
            print(f"  {name}: {res[name]}", flush=True)
    finally:
        tmp.cleanup()
    print(f"\nbytes held (tracemalloc), {args.accounts:,} accounts with a position, {args.orders:,} resting orders")
    names = [n for n, _ in impls]
    print("| what | " + " | ".join(names) + (" | this tree / baseline |" if len(names) > 1 else ""))
    print("|---|" + "---:|" * (len(names) + (1 if len(names) > 1 else 0)))
    for key, label in (("per_account", "per account (funded, one position)"), ("per_order", "per resting order"),
                       ("per_line_position", "per position in the ADL lines")):
        cells = [f"{res[n][key]:,.0f} B" for n in names]
        ratio = f" {res[names[0]][key] / res[names[1]][key]:.2f}x |" if len(names) > 1 else ""
        print(f"| {label} | " + " | ".join(cells) + " |" + ratio)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
