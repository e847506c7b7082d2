"""Abuse bench (SPEC §10a): order-entry latency of honest clients while a hostile one floods.

    python -m bench.abuse_bench [--duration 5] [--rate 1000] [--readers 16] [--idle-ws 1000]
                                [--nofile 1024] [--modes unprotected,defaults]

For each mode a FRESH service (`python -m service`, no Redis, open-files limit `--nofile`,
1024 like the finding's `ulimit -n`) gets a book 1,000 levels deep on each side, then four
phases of `--duration` seconds each. In every phase honest clients (a separate process,
8 keys over 16 keep-alive connections) send orders open loop at `--rate` per second,
latency measured from each order's scheduled send time (no coordinated omission); the
orders are IOC bids below the book, so each one runs the whole order path and rests nothing.

1. baseline: the orders alone;
2. read flood: + `--readers` connections reading `GET /v1/orderbook/BTC-PERP?depth=1000` in a
   closed loop (another process, the same address);
3. idle-WS flood: + `--idle-ws` WebSocket connections that complete the handshake and then
   say nothing, reopened as soon as the server closes one (another process);
4. key flood: + one more key sending orders closed loop over 32 connections.

During each phase a probe opens a NEW connection every 100 ms and asks `/healthz` (2 s
timeout): `probe fail` counts those that got no answer (a process out of file descriptors
accepts nothing new).

Modes: `unprotected` = EXCHANGE_RATE_LIMITS=off and the WebSocket caps and deadline lifted
(what the service did before the limits); `defaults` = the service's default limits. The
table shows p50/p99 per phase and their ratio to the same mode's baseline, measured in the
same run. All clients share 127.0.0.1, so the per-address limits apply to the flooders and
honest clients alike; order entry is limited per key, not per address.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.http_bench import _Conn, _free_port, _raw

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "abuse-bench-admin-token-0123"
MARK = 50_000
LEVELS = 1_000  # per side
PHASES = ("baseline", "read flood", "idle-WS flood", "key flood")
UNPROTECTED = {
    "EXCHANGE_RATE_LIMITS": "off",
    "EXCHANGE_WS_MAX_CONNECTIONS": "1000000",  # capped at half the open-files limit anyway
    "EXCHANGE_WS_MAX_PER_IP": "1000000",
    "EXCHANGE_WS_AUTH_DEADLINE_S": "1000000",
}


# -- the service --------------------------------------------------------------------------------


def start_service(port: int, workdir: Path, nofile: int, env_extra: dict[str, str]) -> Any:
    config = workdir / "abuse.toml"
    config.write_text("max_open_orders = 1000000\n")
    env = {
        **os.environ,
        "EXCHANGE_ADMIN_TOKEN": ADMIN,
        "EXCHANGE_CONFIG": str(config),
        "EXCHANGE_DATA_DIR": str(workdir / "data"),
        "EXCHANGE_LOG_LEVEL": "warning",
        **env_extra,
    }
    env.pop("EXCHANGE_REDIS_URL", None)

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "server.log", "wb"),  # noqa: SIM115
        preexec_fn=limit_files,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"service did not become ready: {(workdir / 'server.log').read_text()}")


def _post(c: httpx.Client, path: str, headers: dict[str, str], body: Any) -> httpx.Response:
    """POST, waiting out 429s (the set-up may meet the default limits too)."""
    while True:
        r = c.post(path, headers=headers, json=body)
        if r.status_code != 429:
            r.raise_for_status()
            return r
        time.sleep(float(r.headers.get("Retry-After", "1")))


def setup(port: int, order_keys: int) -> tuple[list[str], str]:
    """Honest keys, the flooding key, and a book LEVELS deep each side (from 4 book keys)."""
    admin = {"X-Admin-Token": ADMIN}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        keys = []
        for _ in range(order_keys + 5):
            acct = _post(c, "/v1/admin/accounts", admin, None).json()
            _post(
                c,
                "/v1/admin/deposit",
                admin,
                {"account_id": acct["account_id"], "amount": "1000000000"},
            )
            keys.append(acct["api_key"])
        _post(c, "/v1/admin/mark-price", admin, {"symbol": "BTC-PERP", "price": str(MARK)})
        book_keys = keys[order_keys + 1 :]
        for i in range(LEVELS):
            for side, ticks in (("buy", MARK * 10 - 50 - i), ("sell", MARK * 10 + 50 + i)):
                key = book_keys[i % len(book_keys)]
                body = {
                    "symbol": "BTC-PERP",
                    "side": side,
                    "type": "limit",
                    "qty": "0.001",
                    "price": f"{ticks // 10}.{ticks % 10}",
                }
                _post(c, "/v1/orders", {"X-API-Key": key}, body)
    return keys[:order_keys], keys[order_keys]


def honest_orders(keys: list[str], count: int) -> list[bytes]:
    """IOC bids inside the bids, far from the asks: the whole order path, no fill, nothing rests."""
    price = str(MARK - 20)
    out = []
    for i in range(count):
        body = {
            "symbol": "BTC-PERP",
            "side": "buy",
            "type": "limit",
            "qty": "0.001",
            "price": price,
            "time_in_force": "IOC",
        }
        out.append(
            _raw("POST", "/v1/orders", orjson.dumps(body), {"X-API-Key": keys[i % len(keys)]})
        )
    return out


# -- the honest clients (their own process) -----------------------------------------------------

TIMEOUT_S = 5.0  # an order unanswered this long counts as failed (and as infinitely slow)


@dataclass
class Orders:
    """Latencies of the answered orders (seconds), statuses, and orders that failed."""

    lat: list[float]
    statuses: dict[int, int]
    failed: int

    def pct(self, q: float) -> float:
        """The q-quantile in ms, failed orders counted as infinitely slow."""
        n = len(self.lat) + self.failed
        if not n:
            return 0.0
        i = min(n - 1, int(n * q))
        return self.lat[i] * 1e3 if i < len(self.lat) else float("inf")


async def _orders(
    port: int,
    requests: list[bytes],
    conns: int,
    rate: float,
    duration: float,
    connected: Any,
    go: Any,
) -> Orders:
    loop = asyncio.get_running_loop()
    protos: list[_Conn | None] = []
    for _ in range(conns):
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(_Conn, "127.0.0.1", port), TIMEOUT_S
            )
            protos.append(proto)
        except (OSError, TimeoutError):
            protos.append(None)
    connected.set()
    while not go.is_set():
        await asyncio.sleep(0.01)
    lat: list[float] = []
    statuses: dict[int, int] = {}
    failed = 0
    start = time.perf_counter() + 0.05
    end = start + duration
    interval = conns / rate

    async def one(k: int) -> None:
        nonlocal failed
        proto = protos[k]
        due = start + (k / conns) * interval
        i = k
        while due < end:
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            t0, due = due, due + interval
            if proto is None:
                failed += 1
                continue
            proto.waiter = loop.create_future()
            assert proto.transport is not None
            proto.transport.write(requests[i % len(requests)])
            i += conns
            try:
                status = await asyncio.wait_for(proto.waiter, TIMEOUT_S)
            except (TimeoutError, ConnectionError):
                failed += 1
                proto.transport.close()
                proto = None
                continue
            lat.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
        if proto is not None and proto.transport is not None:
            proto.transport.close()

    await asyncio.gather(*(one(k) for k in range(conns)))
    lat.sort()
    return Orders(lat, statuses, failed)


def _orders_main(
    port: int,
    requests: list[bytes],
    conns: int,
    rate: float,
    duration: float,
    connected: Any,
    go: Any,
    out: Any,
) -> None:
    try:
        import uvloop

        out.put(uvloop.run(_orders(port, requests, conns, rate, duration, connected, go)))
    except ImportError:
        out.put(asyncio.run(_orders(port, requests, conns, rate, duration, connected, go)))


# -- the hostile process ------------------------------------------------------------------------


@dataclass
class FloodStats:
    reads: dict[int, int] = field(default_factory=dict)
    ws_handshakes: int = 0
    ws_closed_by_server: int = 0
    ws_open: int = 0  # open right now
    ws_open_at_end: int = 0  # open when the phase ended
    ws_denied: int = 0  # handshakes answered HTTP 429
    ws_failed: int = 0  # no connection or no answer
    probes: int = 0
    probe_failures: int = 0
    key_orders: dict[int, int] = field(default_factory=dict)


async def _reader(port: int, request: bytes, counts: dict[int, int], stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while not stop.is_set():
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            i = head.lower().find(b"content-length:")
            j = head.find(b"\r\n", i)
            await reader.readexactly(int(head[i + 15 : j]))
            counts[status] = counts.get(status, 0) + 1
    except (OSError, asyncio.IncompleteReadError):
        counts[-1] = counts.get(-1, 0) + 1
    finally:
        writer.close()


async def _idle_ws(
    port: int, stats: FloodStats, stop: asyncio.Event, gate: asyncio.Semaphore
) -> None:
    """Hold one idle WebSocket connection open; reopen it whenever the server closes it."""
    while not stop.is_set():
        try:
            async with gate:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 5
                )
                key = base64.b64encode(os.urandom(16)).decode()
                writer.write(
                    (
                        f"GET /v1/ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        f"Sec-WebSocket-Version: 13\r\n\r\n"
                    ).encode()
                )
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            stats.ws_failed += 1
            await asyncio.sleep(0.1)
            continue
        if not head.startswith(b"HTTP/1.1 101"):
            if head.startswith(b"HTTP/1.1 429"):
                stats.ws_denied += 1
            else:
                stats.ws_failed += 1
            writer.close()
            await asyncio.sleep(0.1)
            continue
        stats.ws_handshakes += 1
        stats.ws_open += 1
        try:
            while not stop.is_set():  # read (and drop) whatever comes until the server closes
                reading = asyncio.ensure_future(reader.read(65536))
                waiting = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait(
                    {reading, waiting}, return_when=asyncio.FIRST_COMPLETED
                )
                waiting.cancel()
                if reading not in done:
                    reading.cancel()
                    break
                if not reading.result():
                    stats.ws_closed_by_server += 1
                    break
        except OSError:
            stats.ws_closed_by_server += 1
        finally:
            stats.ws_open -= 1
            writer.close()
        await asyncio.sleep(0.05)  # then try again, as a hostile client would


async def _probe(port: int, stats: FloodStats, stop: asyncio.Event) -> None:
    while not stop.is_set():
        stats.probes += 1
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            writer.write(_raw("GET", "/healthz"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            writer.close()
            if not head.startswith(b"HTTP/1.1 200"):
                stats.probe_failures += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            stats.probe_failures += 1
        await asyncio.sleep(0.1)


async def _flood(
    port: int, phase: str, args: Any, flood_key: str, ready: Any, stop_evt: Any
) -> FloodStats:
    stats = FloodStats()
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(_probe(port, stats, stop))]
    if phase == "read flood":
        request = _raw("GET", f"/v1/orderbook/BTC-PERP?depth={LEVELS}")
        tasks += [
            asyncio.ensure_future(_reader(port, request, stats.reads, stop))
            for _ in range(args.readers)
        ]
    elif phase == "idle-WS flood":
        gate = asyncio.Semaphore(100)  # handshakes in flight at once
        tasks += [
            asyncio.ensure_future(_idle_ws(port, stats, stop, gate)) for _ in range(args.idle_ws)
        ]
        for _ in range(100):  # let the flood build up before the orders start
            await asyncio.sleep(0.1)
            if stats.ws_handshakes + stats.ws_denied + stats.ws_failed >= args.idle_ws:
                break
    elif phase == "key flood":
        body = {
            "symbol": "BTC-PERP",
            "side": "buy",
            "type": "limit",
            "qty": "0.001",
            "price": str(MARK - 20),
            "time_in_force": "IOC",
        }
        request = _raw("POST", "/v1/orders", orjson.dumps(body), {"X-API-Key": flood_key})
        tasks += [
            asyncio.ensure_future(_reader(port, request, stats.key_orders, stop)) for _ in range(32)
        ]
    ready.set()
    while not stop_evt.is_set():
        await asyncio.sleep(0.05)
    stats.ws_open_at_end = stats.ws_open
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    return stats


def _flood_main(
    port: int, phase: str, args: Any, flood_key: str, ready: Any, stop: Any, out: Any
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        stats = uvloop.run(_flood(port, phase, args, flood_key, ready, stop))
    except ImportError:
        stats = asyncio.run(_flood(port, phase, args, flood_key, ready, stop))
    out.put(stats)


# -- the run ------------------------------------------------------------------------------------


@dataclass
class PhaseRun:
    phase: str
    orders: Orders
    flood: FloodStats
    seconds: float


def run_mode(mode: str, args: argparse.Namespace) -> list[PhaseRun]:
    env = UNPROTECTED if mode == "unprotected" else {}
    port = _free_port()
    runs = []
    with tempfile.TemporaryDirectory(prefix=f"abuse-{mode}-") as tmp:
        proc = start_service(port, Path(tmp), args.nofile, env)
        try:
            keys, flood_key = setup(port, 8)
            orders = honest_orders(keys, 20_000)
            ctx = mp.get_context("spawn")
            for phase in ("warm-up", *PHASES):
                connected, go, ready, stop = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
                got, out = ctx.Queue(), ctx.Queue()
                duration = 1.0 if phase == "warm-up" else args.duration
                honest = ctx.Process(
                    target=_orders_main,
                    args=(port, orders, 16, args.rate, duration, connected, go, got),
                )
                honest.start()  # its connections are open before the flood starts
                connected.wait(60)
                flooder = ctx.Process(
                    target=_flood_main, args=(port, phase, args, flood_key, ready, stop, out)
                )
                flooder.start()
                ready.wait(60)
                t0 = time.perf_counter()
                go.set()
                result = got.get(timeout=duration + 4 * TIMEOUT_S + 60)
                seconds = time.perf_counter() - t0
                stop.set()
                stats = out.get(timeout=60)
                honest.join(30)
                flooder.join(30)
                if phase == "warm-up":
                    continue
                runs.append(PhaseRun(phase, result, stats, seconds))
                print(
                    f"  {mode:<11} {phase:<13} p50 {result.pct(0.5):7.2f}  "
                    f"p90 {result.pct(0.9):7.2f}  p99 {result.pct(0.99):8.2f}  "
                    f"p99.9 {result.pct(0.999):8.2f} ms  {result.statuses} failed {result.failed}",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(30)
    return runs


def table(mode: str, runs: list[PhaseRun], args: argparse.Namespace) -> None:
    base = runs[0].orders
    b50, b99 = base.pct(0.5), base.pct(0.99)
    print(f"\n{mode}: honest orders at {args.rate:.0f}/s offered, {args.duration:.0f} s per phase")
    print(
        f"| {'phase':<13} | {'p50 ms':>7} | {'p99 ms':>8} | {'p50 x':>6} | {'p99 x':>6} | "
        f"{'orders (failed)':<22} | {'probe fail':>10} | hostile client"
    )
    print(
        f"|{'-' * 15}|{'-' * 9}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 20}|{'-' * 12}|---------------"
    )
    for run in runs:
        r, f = run.orders, run.flood
        if run.phase == "read flood":
            served = f.reads.get(200, 0) / run.seconds
            hostile = f"depth={LEVELS} reads: {served:.0f}/s served, statuses {f.reads}"
        elif run.phase == "idle-WS flood":
            hostile = (
                f"{f.ws_handshakes} handshakes, {f.ws_closed_by_server} closed by the server, "
                f"{f.ws_open_at_end} open at the end, {f.ws_denied} answered 429, "
                f"{f.ws_failed} failed to open"
            )
        elif run.phase == "key flood":
            served = f.key_orders.get(200, 0) / run.seconds
            hostile = f"one key: {served:.0f} orders/s accepted, statuses {f.key_orders}"
        else:
            hostile = ""
        p50, p99 = r.pct(0.5), r.pct(0.99)
        p50x = p50 / b50 if b50 else 0.0
        p99x = p99 / b99 if b99 else 0.0
        fails = f"{f.probe_failures}/{f.probes}"
        answered = f"{r.statuses} ({r.failed})"
        print(
            f"| {run.phase:<13} | {p50:>7.2f} | {p99:>8.2f} | {p50x:>5.1f}x | {p99x:>5.1f}x | "
            f"{answered:<22} | {fails:>10} | {hostile}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    ap.add_argument(
        "--rate", type=float, default=1000.0, help="honest orders/s offered (open loop)"
    )
    ap.add_argument("--readers", type=int, default=16, help="connections reading the deep book")
    ap.add_argument("--idle-ws", type=int, default=1000, help="idle WebSocket connections held")
    ap.add_argument("--nofile", type=int, default=1024, help="the service's open-files limit")
    ap.add_argument("--modes", default="unprotected,defaults")
    args = ap.parse_args(argv)
    results = {}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        results[mode] = run_mode(mode, args)
    print(
        f"\n{os.cpu_count()} cores; the service's open-files limit {args.nofile}; "
        f"clients in separate processes on the same machine"
    )
    for mode, runs in results.items():
        table(mode, runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
