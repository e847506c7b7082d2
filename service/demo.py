"""A live demo market over the public API: `python -m service.demo [--crash 25%]`.

A market maker quotes five levels a side around a mark price that follows a seeded random
walk; five traders open positions at different leverage (three long, two short). With
`--crash P%` the maker thins its book to a few lots and the mark falls by P% in five steps:
the longs are liquidated into the thin book, the insurance fund pays what it can, and ADL
closes the rest against the shorts. Every liquidation line shows the book fill (how much the
fund sold into the book, at what average price against the bankruptcy price: a fill above
it is why the fund can gain on an account whose equity was negative), the ADL quantity,
the fund's change and the bad debt; every ADL line the rank, price, haircut and policy.

It uses only HTTP and WebSocket (api/client.py), so it is also an example client. Without
`--url` it starts its own service (`python -m service --host H --port P`; port 0 = any free
one) with a data dir in the system temp folder that is removed at exit (`--data-dir DIR`
keeps one, for `python -m service.tools dump DIR --events`). Bound to a loopback address its
admin token is `sandbox-admin-token` (as with docker compose), so the README's commands can
be pasted; on any other interface a random one. `EXCHANGE_ADMIN_TOKEN` or `--admin-token`
sets it. A port in use is one line on stderr naming a free one, exit status 1.

Stopping: `--seconds N` runs N / --tick ticks; `--seconds 0` (the sandbox, `make sandbox`)
runs until SIGINT (Ctrl-C) or SIGTERM. Either way it then prints a summary (liquidations,
ADL fills, the insurance fund's change, bad debt, the most deleveraged accounts, every
trader's position and `adl_quantile`), stops the service it started and exits 0. A second
Ctrl-C stops at once (exit status 130). The service runs in its own process group, so the
terminal's Ctrl-C reaches only the demo, which still needs the service for the summary.

`adl_quantile` (0..4, SPEC §6) is what other venues draw as the "ADL light": 4 = first in
line to be deleveraged when a liquidation needs it.

Reproducible runs: the same `--seed`, `--seconds`, `--tick` and `--crash` against a fresh
service give the same marks, orders, liquidations and ADL fills. Every tick makes one seeded
random-walk step (and at most one seeded trader order); the crash comes after a fixed number
of ticks (`min(seconds / 2, 10) / tick`, not after a wall-clock time) and starts from the
mark the walk reached then; a bounded run makes a fixed number of ticks. What still differs:
timestamps, the pace (a slow machine takes longer for the same ticks), how many WebSocket
notices arrived before the summary, and with `--seconds 0` everything after the moment you
stop it. Against `--url` a service that already has accounts and orders plays differently.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import math
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any, TextIO, TypeVar

import httpx

from api.client import ApiError, ExchangeClient

SYMBOL = "BTC-PERP"
TICK = Decimal("0.1")
LOT = Decimal("0.001")
SANDBOX_ADMIN_TOKEN = "sandbox-admin-token"  # the same default as docker-compose.yml
CRASH_AFTER_S = 10  # the crash comes after at most this many seconds' worth of ticks
EXIT_FORCED = 130  # a second Ctrl-C: stopped without a summary
_T = TypeVar("_T")


@dataclass
class Trader:
    name: str
    deposit: int
    leverage: int
    side: str  # buy = long, sell = short
    account_id: int = 0
    api_key: str = ""
    client: ExchangeClient | None = None


@dataclass
class Report:
    liquidations: list[dict[str, Any]] = field(default_factory=list)
    adl_fills: list[dict[str, Any]] = field(default_factory=list)
    ws_notices: dict[str, int] = field(default_factory=lambda: {"liquidations": 0, "adl": 0})
    fund_start: Decimal | None = None  # the insurance fund after the demo's own top-up
    failure: str | None = None  # why the run stopped early (the service stopped answering)
    summary: list[str] = field(default_factory=list)


TRADERS = (
    Trader("ann", 5_000, 5, "buy"),
    Trader("ben", 2_000, 20, "buy"),
    Trader("cat", 1_000, 50, "buy"),
    Trader("dan", 5_000, 10, "sell"),
    Trader("eve", 3_000, 25, "sell"),
)


def _tick(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value(rounding=ROUND_DOWN) * TICK


def _lots(qty: Decimal) -> Decimal:
    return max(LOT, (qty / LOT).to_integral_value(rounding=ROUND_DOWN) * LOT)


def _signed(amount: str | Decimal) -> str:
    """`+12.5`, `-3`, `0`: a change of money, its sign always shown."""
    value = Decimal(amount)
    return f"+{amount}" if value > 0 else str(amount)


def _name(names: dict[int, str], account_id: int) -> str:
    name = names.get(account_id)
    return f"{name} #{account_id}" if name else f"#{account_id}"


# -- what the demo prints (pure functions of the API's JSON, so tests can read them) -------


def book_fill_text(liq: dict[str, Any]) -> str:
    """The fund's book fill of one liquidation, against the bankruptcy price."""
    fill_qty = Decimal(liq["book_fill_qty"])
    avg = liq.get("book_fill_avg_price")
    if fill_qty == 0 or avg is None:
        return "no book fill"
    price, bankruptcy = Decimal(avg), Decimal(liq["bankruptcy_price"])
    long = Decimal(liq["qty"]) > 0  # the fund sells a long into the book, buys back a short
    verb = "sold" if long else "bought"
    if price == bankruptcy:
        return f"book fill {fill_qty} BTC @ {avg} (at the bankruptcy price)"
    gain = (price - bankruptcy) * fill_qty * (1 if long else -1)
    where = "above" if price > bankruptcy else "below"
    approx = gain.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    return (
        f"book fill {fill_qty} BTC @ {avg} ({verb} {abs(price - bankruptcy)} {where} the "
        f"bankruptcy price: about {_signed(approx)} to the fund)"
    )


def liquidation_line(liq: dict[str, Any], names: dict[int, str]) -> str:
    """One liquidation: who, what, at which prices, the book fill, ADL, fund and bad debt."""
    qty = Decimal(liq["qty"])
    return (
        f"  LIQUIDATED {_name(names, liq['account_id'])}: {'long' if qty > 0 else 'short'} "
        f"{abs(qty)} BTC at mark {liq['mark_price']}, equity before {liq['equity_before']}, "
        f"bankruptcy price {liq['bankruptcy_price']} | {book_fill_text(liq)}, ADL "
        f"{liq['adl_qty']} BTC | insurance fund {_signed(liq['insurance_fund_delta'])}, "
        f"bad debt {liq['bad_debt']}"
    )


def adl_line(fill: dict[str, Any], names: dict[int, str]) -> str:
    """One ADL fill: rank, policy, counterparty, quantity, price, haircut."""
    return (
        f"  ADL rank {fill['rank']} ({fill['policy']}): "
        f"{_name(names, fill['counterparty_account_id'])} ({fill['side']}) closes {fill['qty']} "
        f"BTC at {fill['price']} against {_name(names, fill['liquidated_account_id'])}, "
        f"haircut {fill['haircut']} (what it gave up against the mark), realized "
        f"{fill['realized_pnl']}, left {fill['position_after']} BTC"
    )


def top_deleveraged(fills: list[dict[str, Any]], names: dict[int, str], n: int = 3) -> str:
    """The `n` counterparties that ADL closed the most of, with their fills and haircuts."""
    by_account: dict[int, tuple[Decimal, Decimal, int]] = {}
    for fill in fills:
        qty, haircut, count = by_account.get(fill["counterparty_account_id"], (Decimal(0), Decimal(0), 0))
        by_account[fill["counterparty_account_id"]] = (
            qty + Decimal(fill["qty"]),
            haircut + Decimal(fill["haircut"]),
            count + 1,
        )
    ranked = sorted(by_account.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
    if not ranked:
        return "none"
    return ", ".join(
        f"{_name(names, aid)} {qty} BTC in {count} fill{'s' if count > 1 else ''} (haircut {haircut})"
        for aid, (qty, haircut, count) in ranked
    )


def summary_lines(
    report: Report,
    names: dict[int, str],
    fund: dict[str, Any] | None,
    accounts: list[tuple[str, dict[str, Any] | None]],
) -> list[str]:
    """The summary printed at the end of a run; `fund` and `accounts` are what the service
    answered (None when it no longer did)."""
    liqs, fills = report.liquidations, report.adl_fills
    book_qty = sum((Decimal(x["book_fill_qty"]) for x in liqs), Decimal(0))
    adl_qty = sum((Decimal(x["adl_qty"]) for x in liqs), Decimal(0))
    bad_debt = sum((Decimal(x["bad_debt"]) for x in liqs), Decimal(0))
    fund_delta = sum((Decimal(x["insurance_fund_delta"]) for x in liqs), Decimal(0))
    lines = ["", "=== summary ==="]
    lines.append(
        f"liquidations: {len(liqs)} (book fills {book_qty} BTC, ADL {adl_qty} BTC); "
        f"ADL fills: {len(fills)}"
    )
    if fund is not None and report.fund_start is not None:
        now = Decimal(fund["balance"])
        lines.append(
            f"insurance fund: {report.fund_start} -> {fund['balance']} USD "
            f"({_signed(now - report.fund_start)}); bad debt {bad_debt} this run, "
            f"{fund.get('bad_debt', '?')} in total"
        )
    else:
        lines.append(
            f"insurance fund: {_signed(fund_delta)} USD from the liquidations; bad debt {bad_debt}"
        )
    lines.append(f"most deleveraged (ADL'd) accounts by qty: {top_deleveraged(fills, names)}")
    lines.append(
        f"seen on the WebSocket: {report.ws_notices['liquidations']} liquidation and "
        f"{report.ws_notices['adl']} ADL notices"
    )
    if accounts:
        lines.append('traders (ADL quantile 0..4 = the "ADL light": 4 = first in line for ADL):')
    for name, acct in accounts:
        if acct is None:
            lines.append(f"  {name:4} (the service did not answer)")
            continue
        pos = next((p for p in acct["positions"] if p["symbol"] == SYMBOL), None)
        held = f"{pos['size']} BTC, ADL quantile {pos['adl_quantile']}" if pos else "flat"
        lines.append(f"  {name:4} wallet {acct['wallet_balance']:>14} equity {acct['equity']:>14}  {held}")
    if report.failure:
        lines.append(f"stopped early: {report.failure}")
    return lines


# -- the service it starts -----------------------------------------------------------------


class ServiceFailed(Exception):
    """The service the demo started exited before it answered."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_token_for(host: str, given: str | None) -> str:
    """`given` (EXCHANGE_ADMIN_TOKEN / --admin-token), else the fixed sandbox token on a
    loopback address, else a random one (reachable from other machines)."""
    if given:
        return given
    return SANDBOX_ADMIN_TOKEN if is_loopback(host) else secrets.token_urlsafe(16)


def bind_error(host: str, port: int) -> OSError | None:
    """Why the service could not listen on host:port (None: it can), tried as uvicorn binds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return exc
    return None


def port_busy_message(host: str, port: int, error: OSError) -> str:
    """One line: what is wrong with host:port and the command that avoids it."""
    if error.errno != errno.EADDRINUSE:
        return f"error: cannot listen on {host}:{port}: {error.strerror or error}"
    free = next((p for p in range(port + 1, min(port + 100, 65536)) if bind_error(host, p) is None), None)
    other = str(free) if free is not None else "<another port>"
    fix = f"make sandbox PORT={other}" if "MAKELEVEL" in os.environ else f"python -m service.demo --port {other}"
    return f"error: port {port} on {host} is in use (another sandbox?); run {fix}"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _url_for(host: str, port: int) -> str:
    if host in ("0.0.0.0", "", "::"):  # every interface: this machine reaches it on loopback
        host = "127.0.0.1" if host != "::" else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _die_with_parent() -> None:  # in the child, before exec: SIGTERM when the demo dies (Linux)
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.asynccontextmanager
async def _own_service(
    host: str, port: int, token: str, data_dir: str, stop: asyncio.Event
) -> AsyncIterator[str]:
    """Run `python -m service` in a subprocess (own process group) for the demo's lifetime."""
    env = {**os.environ, "EXCHANGE_ADMIN_TOKEN": token, "EXCHANGE_DATA_DIR": data_dir}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", host, "--port", str(port)],
        env=env,
        process_group=0,  # the terminal's Ctrl-C goes to the demo only; it stops the service
        preexec_fn=_die_with_parent,
    )
    url = _url_for(host, port)
    try:
        async with ExchangeClient(url) as probe:
            deadline = time.monotonic() + 60
            while not stop.is_set():
                try:
                    await probe.healthz()
                    break
                except (httpx.HTTPError, ApiError):
                    if proc.poll() is not None:
                        raise ServiceFailed(
                            f"the service exited during start-up (status {proc.returncode}; its "
                            "messages are above)"
                        ) from None
                    if time.monotonic() > deadline:
                        raise ServiceFailed("the service did not answer within 60 s") from None
                    await asyncio.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the market -----------------------------------------------------------------------------


class Demo:
    def __init__(self, url: str, admin_token: str, seed: int, out: TextIO | None = None) -> None:
        self.url = url
        self.admin = ExchangeClient(url, admin_token=admin_token)
        self.rng = random.Random(seed)
        self.mark = Decimal(10_000)
        self.traders = [Trader(t.name, t.deposit, t.leverage, t.side) for t in TRADERS]
        self.maker: Trader = Trader("maker", 2_000_000, 10, "both")
        self.names: dict[int, str] = {0: "insurance fund"}
        self.report = Report()
        self.out = out

    def say(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    async def setup(self) -> None:
        await self.admin.set_mark_price(SYMBOL, self.mark)
        await self.admin.top_up_insurance_fund(200)
        self.report.fund_start = Decimal((await self.admin.insurance_fund())["balance"])
        for t in (self.maker, *self.traders):
            acct = await self.admin.create_account()
            t.account_id, t.api_key = acct.account_id, acct.api_key
            t.client = ExchangeClient(self.url, api_key=acct.api_key)
            self.names[acct.account_id] = t.name
            await self.admin.deposit(acct.account_id, t.deposit)
            if t.side != "both":
                await t.client.set_leverage(SYMBOL, t.leverage)
        self.say(
            "accounts: "
            + ", ".join(f"{t.name}=#{t.account_id} ({t.deposit} USD, {t.leverage}x {'long' if t.side == 'buy' else 'short'})" for t in self.traders)
            + f", maker=#{self.maker.account_id}; insurance fund topped up with 200 USD"
        )

    async def quote(self, levels: int = 5, size: Decimal = Decimal("0.4"), step: Decimal = Decimal("0.0005")) -> None:
        mm = self.maker.client
        assert mm is not None
        await mm.cancel_all(SYMBOL)
        for i in range(1, levels + 1):
            off = self.mark * step * i
            await mm.place_order(SYMBOL, "buy", size, price=_tick(self.mark - off), post_only=True)
            await mm.place_order(SYMBOL, "sell", size, price=_tick(self.mark + off) + TICK, post_only=True)

    async def walk(self) -> None:
        self.mark = _tick(self.mark * (1 + Decimal(self.rng.gauss(0, 0.0005)).quantize(Decimal("0.000001"))))
        res = await self.admin.set_mark_price(SYMBOL, self.mark)
        self._record(res)

    async def open_positions(self) -> None:
        """Each trader uses ~70% of its leverage with an IOC limit 0.3% through the mark.

        Not a market order: SPEC §3 values a market order's open loss at its 5% band limit,
        which a trader at 20x-50x cannot afford on top of 70% of its margin (a real venue asks
        the same of a market order); 0.3% covers the maker's five levels."""
        for t in self.traders:
            assert t.client is not None
            qty = _lots(Decimal(t.deposit * t.leverage) * Decimal("0.7") / self.mark)
            through = Decimal("1.003") if t.side == "buy" else Decimal("0.997")
            try:
                order = await t.client.place_order(
                    SYMBOL, t.side, qty, price=_tick(self.mark * through), time_in_force="IOC"
                )
                self.say(f"{t.name} {'buys' if t.side == 'buy' else 'sells'} {order['filled_qty']} BTC at {order['avg_price']}")
            except ApiError as err:
                self.say(f"{t.name}: {err.error} ({err.message})")
            await self.quote()

    async def tick(self) -> None:
        await self.walk()
        await self.quote()
        t = self.rng.choice(self.traders)
        assert t.client is not None
        if self.rng.random() < 0.3:
            with contextlib.suppress(ApiError):
                await t.client.place_order(SYMBOL, self.rng.choice(("buy", "sell")), "0.01")

    async def show_book(self) -> None:
        book = await self.admin.orderbook(SYMBOL, depth=3)
        fund = await self.admin.insurance_fund()
        bids = " ".join(f"{q}@{p}" for p, q in book["bids"])
        asks = " ".join(f"{q}@{p}" for p, q in book["asks"])
        self.say(f"mark {self.mark}  bids [{bids}]  asks [{asks}]  fund {fund.get('balance')}")

    async def crash(self, pct: Decimal, steps: int = 5) -> None:
        self.say(f"\n*** crash: the maker thins its book and the mark falls {pct}% in {steps} steps ***")
        mm = self.maker.client
        assert mm is not None
        await mm.cancel_all(SYMBOL)
        start = self.mark  # where the seeded walk got to after a fixed number of ticks
        low = start * (1 - pct / 100)
        # a thin book: a few small bids just under the first step of the fall
        first = start - (start - low) / steps
        for i in range(1, 4):
            await mm.place_order(SYMBOL, "buy", "0.05", price=_tick(first * (1 - Decimal("0.003") * i)))
        for s in range(1, steps + 1):
            self.mark = _tick(start - (start - low) * s / steps)
            res = await self.admin.set_mark_price(SYMBOL, self.mark)
            self.say(f"mark -> {self.mark}: {len(res['liquidations'])} liquidation(s), {len(res['adl_fills'])} ADL fill(s)")
            self._record(res)

    def _record(self, res: dict[str, Any]) -> None:
        for liq in res.get("liquidations", []):
            self.report.liquidations.append(liq)
            self.say(liquidation_line(liq, self.names))
        for fill in res.get("adl_fills", []):
            self.report.adl_fills.append(fill)
            self.say(adl_line(fill, self.names))

    async def play(self, seconds: float, crash: Decimal | None, tick_s: float, stop: asyncio.Event) -> None:
        """Set up, then tick until the run's ticks are done or `stop` is set."""
        for step in (self.setup, self.quote, self.open_positions, self.show_book):
            if stop.is_set():
                return
            await step()
        ticks = math.ceil(seconds / tick_s) if seconds > 0 else None
        crash_at = None
        if crash is not None:
            crash_at = max(1, math.ceil(min(seconds / 2 if seconds > 0 else CRASH_AFTER_S, CRASH_AFTER_S) / tick_s))
            if ticks is not None:
                ticks = max(ticks, crash_at)
        n = 0
        deadline = time.monotonic()
        while (ticks is None or n < ticks) and not stop.is_set():
            await self.tick()
            n += 1
            if n % 8 == 0:
                await self.show_book()
            if n == crash_at and crash is not None:
                await self.crash(crash)
                await self.show_book()
            deadline += tick_s  # pace: one tick per tick_s, never a burst to catch up
            delay = deadline - time.monotonic()
            if delay < 0:
                deadline, delay = time.monotonic(), 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def listen(self, stop: asyncio.Event) -> None:
        """Count public liquidation/ADL notices, proving the WebSocket side works."""
        try:
            async with self.admin.websocket() as ws:
                await ws.subscribe(["liquidations", "adl"])
                while not stop.is_set():
                    try:
                        msg = await asyncio.wait_for(ws.recv(), 0.2)
                    except TimeoutError:
                        continue
                    if msg.get("channel") in self.report.ws_notices:
                        self.report.ws_notices[msg["channel"]] += 1
        except Exception as exc:  # the demo goes on without the WebSocket
            self.say(f"(websocket listener stopped: {exc})")

    async def summary(self) -> list[str]:
        """The summary lines, with what the service answers now (nothing, if it stopped)."""
        fund = await _answer(self.admin.insurance_fund())
        accounts = [
            (t.name, await _answer(self.admin.admin_account(t.account_id)))
            for t in self.traders
            if t.account_id
        ]
        return summary_lines(self.report, self.names, fund, accounts)

    async def close(self) -> None:
        for t in (self.maker, *self.traders):
            if t.client is not None:
                await t.client.aclose()
        await self.admin.aclose()


async def _answer(call: Awaitable[_T]) -> _T | None:
    try:
        return await call
    except (httpx.HTTPError, ApiError):
        return None


async def run(
    url: str,
    admin_token: str,
    seconds: float,
    crash: Decimal | None,
    seed: int,
    tick_s: float,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
) -> Report:
    """Play the market until done or `stop`; the report holds the summary lines (not printed)."""
    stop = stop if stop is not None else asyncio.Event()
    demo = Demo(url, admin_token, seed, out)
    listening = asyncio.Event()
    listener = asyncio.create_task(demo.listen(listening))
    try:
        try:
            await demo.play(seconds, crash, tick_s, stop)
        except httpx.HTTPError as exc:
            demo.report.failure = f"the service at {url} stopped answering ({type(exc).__name__}: {exc})"
        except ApiError as exc:
            demo.report.failure = f"the service refused a demo request: {exc}"
        await asyncio.sleep(0.3)  # let the WebSocket notices arrive
        demo.report.summary = await demo.summary()
        return demo.report
    finally:
        listening.set()
        await listener
        await demo.close()


def _pct(text: str) -> Decimal:
    value = Decimal(text.rstrip("%"))
    if not 0 < value < 100:
        raise argparse.ArgumentTypeError("crash must be between 0% and 100%")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m service.demo",
        description=__doc__.splitlines()[0],
        epilog='The summary shows each trader\'s adl_quantile (0..4): the "ADL light" of other '
        "venues, 4 = first in line to be deleveraged. Ctrl-C (or SIGTERM) stops a run, prints "
        "the summary and exits 0; a second Ctrl-C stops at once.",
    )
    p.add_argument("--url", help="a running service (default: start one here)")
    p.add_argument(
        "--admin-token",
        default=os.environ.get("EXCHANGE_ADMIN_TOKEN"),
        help=f"its admin token (default: EXCHANGE_ADMIN_TOKEN; for the service it starts on a "
        f"loopback address {SANDBOX_ADMIN_TOKEN}, on another interface a random one)",
    )
    p.add_argument("--seconds", type=float, default=20, help="how long to run: SECONDS / TICK ticks (0 = until Ctrl-C)")
    p.add_argument("--crash", type=_pct, default=None, help="e.g. 25%%: crash the mark by that much")
    p.add_argument("--seed", type=int, default=7, help="seed of the market's random walk and orders: the same seed, --seconds, --tick and --crash play the same run (on a fresh service)")
    p.add_argument("--tick", type=float, default=0.25, help="seconds between mark moves")
    p.add_argument("--host", default="127.0.0.1", help="interface for the service it starts")
    p.add_argument("--port", type=int, default=0, help="port for the service it starts (default: any free one)")
    p.add_argument("--data-dir", default=None, help="data dir for the service it starts, kept (default: a temp dir, removed at exit)")
    return p


async def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():  # the second one: stop now, without a summary
            main_task.cancel()
            return
        stop.set()
        print("\nstopping (Ctrl-C again to quit at once) ...", file=sys.stderr, flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
        loop.add_signal_handler(sig, on_signal)

    if args.url:
        if not args.admin_token:
            parser.error("--admin-token (or EXCHANGE_ADMIN_TOKEN) is required with --url")
        report = await run(args.url, args.admin_token, args.seconds, args.crash, args.seed, args.tick, stop)
        print("\n".join(report.summary), flush=True)
        return 1 if report.failure else 0

    token = admin_token_for(args.host, args.admin_token)
    port = args.port or _free_port(args.host)
    error = bind_error(args.host, port)
    if error is not None:
        print(port_busy_message(args.host, port, error), file=sys.stderr)
        return 1
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="exchange-demo-")
    try:
        async with _own_service(args.host, port, token, data_dir, stop) as url:
            if stop.is_set():  # stopped while the service was starting: no market, no summary
                print("stopped before the market opened", flush=True)
                return 0
            print(f"service at {url} (admin token {token}); API docs at {url}/docs", flush=True)
            kept = "kept" if args.data_dir else "removed at exit; --data-dir DIR keeps one"
            print(
                f"data dir {data_dir} ({kept}; its events: python -m service.tools dump DIR --events)",
                flush=True,
            )
            if args.seconds <= 0:
                print("running until Ctrl-C, which prints a summary", flush=True)
            report = await run(url, token, args.seconds, args.crash, args.seed, args.tick, stop)
        # printed once the service is stopped, so its shutdown log does not follow the summary
        print("\n".join(report.summary), flush=True)
        return 1 if report.failure else 0
    except ServiceFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_main(args, parser))
    except (KeyboardInterrupt, asyncio.CancelledError):  # a second Ctrl-C, or one before start
        print("stopped without a summary", file=sys.stderr)
        return EXIT_FORCED


if __name__ == "__main__":
    raise SystemExit(main())
