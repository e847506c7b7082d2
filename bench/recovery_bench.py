"""Recovery of a long journal with no snapshot: commands/s and peak memory, this tree against
another commit's, measured in the same run.

    python -m bench.recovery_bench                    # 1,000,000 commands, against git HEAD
                                                      # (and the compiled engine when built)
    python -m bench.recovery_bench --commands 200000 --runs 1 --baseline REV

1. The journal (made once, kept in `--data-dir` for later runs with the same parameters):
   a fresh engine (`--accounts` funded accounts, 10M USD each, no open-order limit), then the W1 mix of
   `bench.workload` (60% passive limit orders, 25% cancels, 15% marketable) up to
   `--commands` commands, each applied and written as the service writes it: a
   `JournalWriter` record (seq before / after, encoded command) in segments of
   `--segment-mb` (the service's default is 64 MiB), fsync off.
2. Recovery: `service.storage.recovery.recover(dir, factory, repair=False)` in a fresh
   process per run, for this tree and for the baseline's `engine/` + `service/` (extracted
   with `git archive`), alternating (A B A B ...). Timed: the whole call. Memory: the
   process's peak resident set (VmHWM) and what is resident once it returns (VmRSS: mostly
   the engine itself); the difference is what recovery held beyond the engine, which is
   the journal when it is read whole and about one segment when it is streamed. Both
   implementations must reach the same seq and state hash.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.baseline import extract, run_worker, short_rev

REPO = Path(__file__).resolve().parent.parent
SYMBOL = "BTC-PERP"
ACCOUNTS = 1_000  # the order flow's accounts (the risk bench's W1 uses as many)


def factory() -> Any:
    from engine.engine import Engine

    return Engine(max_open_orders=10**9)


def make_journal(directory: Path, n_commands: int, segment_mb: int, accounts: int = ACCOUNTS) -> dict[str, Any]:
    from bench.workload import MID, W1_SPEC, make_workload
    from engine import commands as c
    from service.storage.codec import encode_command
    from service.storage.journal import JournalWriter

    directory.mkdir(parents=True, exist_ok=True)
    eng = factory()
    writer = JournalWriter(directory, eng.config_fingerprint(), fsync="off", segment_bytes=segment_mb << 20)
    cmds: list[Any] = [c.SetMarkPrice(SYMBOL, MID)]
    for i in range(accounts):
        cmds += [c.CreateAccount(), c.Deposit(i + 1, 10**15)]
    ops = make_workload(n_commands - len(cmds), W1_SPEC[1], W1_SPEC[2])
    base = 0  # engine order ids are handed out one per accepted order: the workload's ids
    for op in ops:
        aid = op.order_id % accounts + 1
        if op.kind == "limit":
            cmds.append(c.PlaceOrder(aid, SYMBOL, op.side, op.qty_lots, op.price_ticks))
        else:
            cmds.append(c.CancelOrder(aid, base + op.order_id))
    batch: list[tuple[int, int, int, bytes]] = []
    t0 = time.perf_counter()
    for ts, cmd in enumerate(cmds, 1):
        cmd = type(cmd)(**{**{f: getattr(cmd, f) for f in cmd.__dataclass_fields__}, "ts_ns": ts})
        before = eng.seq
        eng.apply(cmd)
        batch.append((before, eng.seq, ts, encode_command(cmd)))
        if len(batch) == 1000:
            writer.append_batch(batch)
            batch = []
    writer.append_batch(batch)
    writer.close()
    return {"commands": len(cmds), "seq": eng.seq, "state": eng.state_hash(), "made_in": time.perf_counter() - t0}


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def worker(directory: str, inline: bool = False) -> None:
    """Runs in a fresh process: one recovery, one JSON line. `inline`: the journal is read in
    this process even where recovery would read it ahead in a second one."""
    import gc

    from service.storage.recovery import recover

    gc.collect()
    before = _status("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    rec = recover(Path(directory), factory, repair=False, **recover_kw(recover, inline))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({
        "wall": wall, "cpu": cpu, "replayed": rec.replayed, "seq": rec.engine.seq,
        "state": rec.engine.state_hash(), "peak": _status("VmHWM"), "after": _status("VmRSS"), "before": before,
        "reader_peak": getattr(rec, "reader_peak_rss", 0),
    }), flush=True)


def recover_kw(recover: Any, inline: bool = False) -> dict[str, Any]:
    """As the service recovers (EXCHANGE_GC_FREEZE on by default), where the tree knows how."""
    import inspect

    params = inspect.signature(recover).parameters
    kw: dict[str, Any] = {"freeze_gc": True} if "freeze_gc" in params else {}
    if inline and "read_ahead" in params:
        kw["read_ahead"] = False
    return kw


def run_one(root: Path, directory: Path, build: str = "python", inline: bool = False) -> dict[str, Any]:
    code = f"from bench.recovery_bench import worker; worker({str(directory)!r}, {inline!r})"
    return run_worker(root, code, "recovery", EXCHANGE_ENGINE=build)


def main(argv: list[str] | None = None) -> int:
    from bench.engine_bench import header

    args_in = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.recovery_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--commands", type=int, default=1_000_000)
    p.add_argument("--segment-mb", type=int, default=64)
    p.add_argument("--accounts", type=int, default=ACCOUNTS)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--baseline", default="HEAD")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--inline", action="store_true", help="add the compiled engine reading the journal in process")
    p.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "recovery-bench"))
    args = p.parse_args(args_in)
    for line in header(args_in):
        print(line)
    directory = Path(args.data_dir) / f"journal-{args.commands}-{args.accounts}acc-{args.segment_mb}mb"
    meta_path = directory / "made.json"
    if not meta_path.exists():
        shutil.rmtree(directory, ignore_errors=True)
        print(f"making the journal of {args.commands:,} commands in {directory} ...", flush=True)
        meta = make_journal(directory, args.commands, args.segment_mb, args.accounts)
        meta_path.write_text(json.dumps(meta))
    meta = json.loads(meta_path.read_text())
    segs = sorted(directory.glob("journal-*.log"))
    size = sum(s.stat().st_size for s in segs)
    print(f"journal: {meta['commands']:,} commands, seq {meta['seq']:,}, {len(segs)} segments, "
          f"{size / 2**20:,.0f} MiB (largest {max(s.stat().st_size for s in segs) / 2**20:,.0f} MiB)")
    import native

    # (name, root, engine build, read in process even when recovery would read ahead)
    impls: list[tuple[str, Path, str, bool]] = [("this tree", REPO, "python", False)]
    if native.build_state() == "fresh":
        impls.append(("this tree, compiled", REPO, "compiled", False))
        if args.inline:
            impls.append(("compiled, no read-ahead", REPO, "compiled", True))
    else:
        print(f"(no compiled engine: {native.build_state()}; `make compiled` adds it to the table)")
    tmp = tempfile.TemporaryDirectory(prefix="recovery-baseline-")
    if not args.no_baseline:
        base_root = extract(args.baseline, Path(tmp.name), ("engine", "service", "bench"), worker="bench/recovery_bench.py")
        impls.append((f"baseline {short_rev(args.baseline)}", base_root, "python", False))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in impls}
    try:
        for rnd in range(args.runs):
            for name, root, build, inline in impls:
                r = run_one(root, directory, build, inline)
                if (r["seq"], r["state"]) != (meta["seq"], meta["state"]) or r["replayed"] != meta["commands"]:
                    raise AssertionError(f"{name}: recovered seq {r['seq']} / {r['replayed']} commands, not what was written")
                results[name].append(r)
                print(f"  round {rnd + 1}: {name:>18}: {r['wall']:6.2f} s wall {r['cpu']:6.2f} s cpu, "
                      f"{r['replayed'] / r['wall']:>9,.0f} commands/s, peak RSS {r['peak'] / 2**20:,.0f} MiB, "
                      f"after {r['after'] / 2**20:,.0f} MiB, reader {r['reader_peak'] / 2**20:,.0f} MiB", flush=True)
    finally:
        tmp.cleanup()
    print(f"\nrecovery of {meta['commands']:,} commands, no snapshot; medians of {args.runs}; same seq and state hash")
    print("| implementation | seconds (wall) | cpu | commands/s | peak RSS | RSS after | peak - after | reader process peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    med: dict[str, dict[str, float]] = {}
    for name, rs in results.items():
        m = {k: statistics.median(r.get(k, 0) for r in rs) for k in ("wall", "cpu", "peak", "after", "reader_peak")}
        med[name] = m
        print(f"| {name} | {m['wall']:.2f} | {m['cpu']:.2f} | {meta['commands'] / m['wall']:,.0f} | "
              f"{m['peak'] / 2**20:,.0f} MiB | {m['after'] / 2**20:,.0f} MiB | {(m['peak'] - m['after']) / 2**20:,.0f} MiB | "
              f"{_mib(m['reader_peak']) if m['reader_peak'] else '-'} |")
    base = next((name for name, *_ in impls if name.startswith("baseline")), None)
    if base is not None:
        for name, *_ in impls:
            if name != base:
                print(f"{name} vs {base}: {med[base]['wall'] / med[name]['wall']:.2f}x faster, "
                      f"peak RSS {med[name]['peak'] / med[base]['peak']:.2f}x")
    best = min(med, key=lambda name: med[name]["wall"])
    if meta["commands"] >= 1_000_000:  # the goal is for a 1M-command journal
        print(f"goal <= 10 s: {'MET' if med[best]['wall'] <= 10 else 'NOT MET'} ({best}: {med[best]['wall']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
