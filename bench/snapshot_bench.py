"""Snapshot stall (issue 10, finding 5): what writing a snapshot of 20k accounts costs the
engine loop and the order latency, written on the loop (`inline`, the old behaviour) and by
a forked child (`fork`, the default), measured in the same run.

    python -m bench.snapshot_bench [--accounts 20000] [--orders-per-account 2]
        [--stall-runs 5] [--rounds 2] [--rate 1000] [--duration 12] [--every 3000]
        [--data-root DIR] [--skip-http]

1. State: an engine built offline through `Engine.apply` (the service's default config):
   `--accounts` accounts with 1,000,000 USD each, every one holding a BTC-PERP position
   (pairs of accounts traded at the mark) and `--orders-per-account` resting orders within
   300 USD of the mark; written as a snapshot into a data dir that every run copies.
2. On-loop stall, in this process: the data dir is recovered into a `DurableJournal` and
   `start_snapshot` is called from a uvloop event loop while a ticker task wakes every
   1 ms. Per mode (`--stall-runs` times, interleaved): the time the call took (`call`), the
   longest the ticker was kept from running, less its 1 ms period (`loop blocked`: includes
   the completion callback of a forked writer), and the time until the snapshot was durable.
   Also timed: `pickle.dumps` of the engine alone, the least a "copy on the loop, write in a
   thread" design would block for (service/storage/snapshotter.py says why not that).
3. Order latency over HTTP, the real service: per mode a fresh `python -m service` on a copy
   of the data dir (`EXCHANGE_SNAPSHOT_MODE`, a snapshot every `--every` journaled commands,
   or none), open-loop POST /v1/orders at `--rate` per second for `--duration` seconds from a
   separate client process (latency measured from each request's scheduled send time, so a
   stall counts for every request it delays). Snapshot windows come from the service's log
   (inline: the time on the loop; fork: fork to the child's exit). "during" = requests in
   flight while a snapshot was being written. Modes are interleaved over `--rounds` rounds;
   the table pools the rounds. Ratios are against `inline` of the same run.

The machine has 2 cores: the service, the load client and a snapshot child share them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import os
import pickle
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.http_bench import _Conn, _free_port, order_requests
from engine import commands as c
from engine.engine import Engine
from service.config import build_engine, load_engine_config
from service.keys import hash_key
from service.storage.durable import DurableJournal
from service.storage.snapshot import write_snapshot

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "bench-admin-token-0123456789"
MARK_TICKS = 500_000  # 50,000 USD at BTC-PERP's 0.1 tick (bench.http_bench.MARK)
MODES = ("inline", "fork")


def key_of(i: int) -> str:
    return f"bench-key-{i}"


# -- 1. the state --------------------------------------------------------------------------------


def build_state(accounts: int, orders_per_account: int, seed: int = 5) -> Engine:
    """Accounts with a position each and resting orders around the mark."""
    rng = random.Random(seed)
    engine = build_engine(load_engine_config(None))
    apply = engine.apply
    apply(c.SetMarkPrice("BTC-PERP", MARK_TICKS))
    for i in range(accounts):
        apply(c.CreateAccount(hash_key(key_of(i))))
        apply(c.Deposit(i + 1, 1_000_000 * 10**8))
    for aid in range(1, accounts, 2):  # pairs trade at the mark: a long and a short
        qty = rng.randint(1, 50)
        apply(c.PlaceOrder(aid, "BTC-PERP", "sell", qty, MARK_TICKS))
        apply(c.PlaceOrder(aid + 1, "BTC-PERP", "buy", qty, MARK_TICKS))
    for aid in range(1, accounts + 1):
        for k in range(orders_per_account):
            buy = (aid + k) % 2 == 0
            offset = rng.randint(10, 3_000)  # 1 to 300 USD away: resting
            price = MARK_TICKS - offset if buy else MARK_TICKS + offset
            apply(c.PlaceOrder(aid, "BTC-PERP", "buy" if buy else "sell", rng.randint(1, 20), price))
    engine.check_invariants()
    return engine


def prepare(directory: Path, accounts: int, orders_per_account: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    engine = build_state(accounts, orders_per_account)
    built = time.perf_counter() - t0
    path = write_snapshot(directory, engine)
    info = {
        "accounts": accounts,
        "positions": sum(1 for a in engine.accounts.values() if a.positions),
        "resting": sum(len(b.orders) for b in engine.books.values()),
        "seq": engine.seq,
        "snapshot_mb": path.stat().st_size / 1e6,
        "build_s": built,
    }
    return info


# -- 2. the on-loop stall, in process -----------------------------------------------------------


@dataclass
class Stall:
    call_s: list[float] = field(default_factory=list)
    blocked_s: list[float] = field(default_factory=list)
    durable_s: list[float] = field(default_factory=list)


async def _stall_once(journal: DurableJournal, engine: Engine, mode: str, out: Stall) -> None:
    journal.snapshot_mode = mode
    gaps: list[float] = []
    running = True

    async def ticker() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.1)
    t0 = time.perf_counter()
    journal.start_snapshot(engine, engine.seq)
    call = time.perf_counter() - t0
    while not journal.poll_snapshot():
        await asyncio.sleep(0.001)
    durable = time.perf_counter() - t0
    await asyncio.sleep(0.1)
    running = False
    await task
    out.call_s.append(call)
    out.blocked_s.append(max(0.0, max(gaps) - 0.001))
    out.durable_s.append(durable)


def stall_runs(prepared: Path, workdir: Path, runs: int) -> tuple[dict[str, Stall], dict[str, float]]:
    data = workdir / "stall"
    shutil.copytree(prepared, data)
    journal = DurableJournal(data, lambda: build_engine(load_engine_config(None)), fsync="off")
    engine = journal.recover().engine
    gc.collect()
    gc.freeze()  # as the service does (EXCHANGE_GC_FREEZE): no full collection mid-measurement
    parts: dict[str, float] = {}
    t0 = time.perf_counter()
    body = pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL)
    parts["pickle.dumps (copy on the loop)"] = time.perf_counter() - t0
    del body
    t0 = time.perf_counter()
    engine.state_hash()
    parts["state_hash()"] = time.perf_counter() - t0
    parts["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    results = {mode: Stall() for mode in MODES}
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        for i in range(runs):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                runner.run(_stall_once(journal, engine, mode, results[mode]))
    journal.close()
    shutil.rmtree(data)
    return results, parts


# -- 3. order latency over HTTP, the real service ------------------------------------------------


async def _timed_load(
    port: int, requests: list[bytes], conns: int, duration: float, rate: float
) -> list[tuple[float, float, int]]:
    """Open loop: (scheduled send time as wall clock, latency, status) per request."""
    loop = asyncio.get_running_loop()
    out: list[tuple[float, float, int]] = []
    wall0, perf0 = time.time(), time.perf_counter()
    start = time.perf_counter() + 0.2
    end = start + duration
    interval = conns / rate

    async def one(k: int) -> None:
        _, proto = await loop.create_connection(_Conn, "127.0.0.1", port)
        i, due = k, start + (k / conns) * interval
        while due < end:
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            t0, due = due, due + interval
            proto.waiter = loop.create_future()
            assert proto.transport is not None
            proto.transport.write(requests[i % len(requests)])
            i += conns
            status = await proto.waiter
            out.append((wall0 + (t0 - perf0), time.perf_counter() - t0, status))
        assert proto.transport is not None
        proto.transport.close()

    await asyncio.gather(*(one(k) for k in range(conns)))
    return out


def _client_main(port: int, requests: list[bytes], conns: int, duration: float, rate: float, q: Any) -> None:
    try:
        import uvloop

        q.put(uvloop.run(_timed_load(port, requests, conns, duration, rate)))
    except ImportError:
        q.put(asyncio.run(_timed_load(port, requests, conns, duration, rate)))


def run_client(port: int, requests: list[bytes], conns: int, duration: float, rate: float) -> list[Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_client_main, args=(port, requests, conns, duration, rate, q))
    proc.start()
    result: list[Any] = q.get(timeout=duration + 120)
    proc.join()
    return result


_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO service\.durability: snapshot \S+ at seq \d+: "
    r"written (?:on the engine loop in ([\d.]+)s|in the background in ([\d.]+)s; "
    r"the engine loop paused ([\d.]+) ms)"
)


@dataclass
class Window:
    start: float
    end: float
    blocked_s: float  # how long the engine loop was blocked by it


def snapshot_windows(log: str) -> list[Window]:
    out = []
    for line in log.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if m.group(2) is not None:  # inline: the loop wrote it, then logged
            seconds = float(m.group(2))
            out.append(Window(at - seconds, at, seconds))
        else:  # fork: logged when the child was reaped
            seconds = float(m.group(3))
            out.append(Window(at - seconds, at, float(m.group(4)) / 1e3))
    return out


@dataclass
class HttpRun:
    samples: list[tuple[float, float, int]]
    windows: list[Window]


def http_run(mode: str, prepared: Path, workdir: Path, args: argparse.Namespace, requests: list[bytes]) -> HttpRun:
    """One fresh service on a copy of the data dir; `mode` none | inline | fork."""
    data = workdir / f"data-{mode}"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(prepared, data)
    port = _free_port()
    env = {
        **os.environ,
        "EXCHANGE_ADMIN_TOKEN": ADMIN,
        "EXCHANGE_DATA_DIR": str(data),
        "EXCHANGE_LOG_LEVEL": "info",
        "EXCHANGE_SNAPSHOT_MODE": "inline" if mode == "none" else mode,
        "EXCHANGE_SNAPSHOT_EVERY": str(10**9 if mode == "none" else args.every),
        "EXCHANGE_RATE_LIMIT_PER_S": "1000000",
        "EXCHANGE_RATE_LIMIT_BURST": "1000000",
    }
    for name in ("EXCHANGE_REDIS_URL", "EXCHANGE_FSYNC", "EXCHANGE_CONFIG", "EXCHANGE_SNAPSHOT_INTERVAL_S"):
        env.pop(name, None)
    log_path = workdir / f"server-{mode}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )
    try:
        deadline = time.monotonic() + 180  # recovery loads the 20k-account snapshot
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"service exited: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("service did not become ready")
            time.sleep(0.1)
        run_client(port, requests, args.connections, 1.0, args.rate)  # warm-up, not counted
        samples = run_client(port, requests, args.connections, args.duration, args.rate)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    windows = snapshot_windows(log_path.read_text())
    shutil.rmtree(data, ignore_errors=True)
    return HttpRun(samples, windows)


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def _during(sample: tuple[float, float, int], windows: list[Window]) -> bool:
    sent, lat, _ = sample
    return any(sent <= w.end and sent + lat >= w.start for w in windows)


# -- report --------------------------------------------------------------------------------------


def _ratio(x: float, base: float) -> str:
    return f"{x / base:.3f}x" if base > 0 else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.snapshot_bench", description=__doc__.splitlines()[0])
    p.add_argument("--accounts", type=int, default=20_000)
    p.add_argument("--orders-per-account", type=int, default=2)
    p.add_argument("--stall-runs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rate", type=float, default=1000.0, help="orders per second offered (open loop)")
    p.add_argument("--duration", type=float, default=12.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--every", type=int, default=3000, help="EXCHANGE_SNAPSHOT_EVERY in the HTTP runs")
    p.add_argument("--load-accounts", type=int, default=64, help="accounts placing the load's orders")
    p.add_argument("--data-root", type=Path, default=None, help="a real disk (fsync on tmpfs is free)")
    p.add_argument("--skip-http", action="store_true")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="snapbench-", dir=args.data_root) as tmp:
        workdir = Path(tmp)
        prepared = workdir / "prepared"
        info = prepare(prepared, args.accounts, args.orders_per_account)
        gc.collect()
        print(
            f"state: {info['accounts']:,} accounts, {info['positions']:,} with a position, "
            f"{info['resting']:,} resting orders, seq {info['seq']:,}; snapshot "
            f"{info['snapshot_mb']:.1f} MB (built in {info['build_s']:.1f}s)",
            flush=True,
        )
        stalls, parts = stall_runs(prepared, workdir, args.stall_runs)
        print(f"\n## On-loop stall, in process ({args.stall_runs} runs per mode: median / worst; "
              f"process RSS {parts['rss_mb']:.0f} MB)\n")
        print("| mode | start_snapshot call | loop blocked (1 ms ticker) | until durable | "
              "blocked / inline (median) |")
        print("|---|---|---|---|---|")
        base = _pct(stalls["inline"].blocked_s, 0.5)
        for mode in MODES:
            s = stalls[mode]
            print(
                f"| {mode} | {_pct(s.call_s, 0.5) * 1e3:,.1f} / {max(s.call_s) * 1e3:,.1f} ms | "
                f"{_pct(s.blocked_s, 0.5) * 1e3:,.1f} / {max(s.blocked_s) * 1e3:,.1f} ms | "
                f"{_pct(s.durable_s, 0.5):.2f} / {max(s.durable_s):.2f} s | "
                f"{_ratio(_pct(s.blocked_s, 0.5), base)} |"
            )
        print()
        for name, seconds in parts.items():
            if name != "rss_mb":
                print(f"- {name}: {seconds * 1e3:,.0f} ms")
        if args.skip_http:
            return 0

        keys = [key_of(i) for i in range(min(args.load_accounts, args.accounts))]
        requests = order_requests(keys, 20_000)
        runs: dict[str, list[HttpRun]] = {m: [] for m in ("none", *MODES)}
        order = ["none", *MODES]
        for r in range(args.rounds):
            for mode in order[r % 3 :] + order[: r % 3]:
                print(f"round {r + 1}: {mode} ...", flush=True)
                runs[mode].append(http_run(mode, prepared, workdir, args, requests))
        print(
            f"\n## Order latency over HTTP: {args.rate:,.0f} orders/s offered for {args.duration:.0f} s "
            f"x {args.rounds} rounds, a snapshot every {args.every:,} commands\n"
        )
        print("| mode | snapshots | loop blocked per snapshot (max) | orders | p50 | p99 | worst | "
              "p99 during | worst during | p99 during / inline | worst during / inline | blocked / inline |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        rows = {}
        for mode in ("none", *MODES):
            samples = [s for run in runs[mode] for s in run.samples]
            lats = [s[1] for s in samples]
            during = [s[1] for run in runs[mode] for s in run.samples if _during(s, run.windows)]
            windows = [w for run in runs[mode] for w in run.windows]
            blocked = max((w.blocked_s for w in windows), default=0.0)
            rows[mode] = (samples, lats, during, windows, blocked)
        _, _, base_during, _, base_blocked = rows["inline"]
        for mode, (samples, lats, during, windows, blocked) in rows.items():
            ok = sum(1 for s in samples if s[2] == 200)
            print(
                f"| {mode} | {len(windows)} | {blocked * 1e3:,.1f} ms | {ok:,}/{len(samples):,} | "
                f"{_pct(lats, 0.5) * 1e3:.1f} ms | {_pct(lats, 0.99) * 1e3:.1f} ms | {max(lats) * 1e3:.1f} ms | "
                + (
                    f"{_pct(during, 0.99) * 1e3:.1f} ms | {max(during) * 1e3:.1f} ms | "
                    f"{_ratio(_pct(during, 0.99), _pct(base_during, 0.99))} | "
                    f"{_ratio(max(during), max(base_during))} | {_ratio(blocked, base_blocked)} |"
                    if during and base_during
                    else "- | - | - | - | - |"
                )
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
