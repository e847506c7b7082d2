"""A live demo market over the public API: `python -m service.demo [--crash 25%]`.

Without `--url` it starts its own service (`python -m service --host H --port P`; port 0 =
any free one) on the sandbox's market: `EXCHANGE_CONFIG=feeds/sandbox.toml` (BTC-PERP and
ETH-PERP marked from their index, a funding round every 60 s) and a price feed,
`EXCHANGE_PRICE_FEED=feeds/calm.csv` (a gentle twenty-minute walk, looped), or with
`--crash 25%` `feeds/crash25.csv` (30 s calm, then a 25% fall over three minutes and a
partial recovery) and with `--crash 10%` `feeds/flash10.csv` (30 s calm, then a 10% flash
crash and back within seconds); `--speed X` plays the feed X times as fast
(`EXCHANGE_FEED_SPEED`). The demo never sets a price there: the feed moves the index, the
index moves the mark, and liquidations and ADL happen because the index moved.

A market maker and five traders trade BTC-PERP (service/demo_traders.py): the maker
quotes around the mark and thins its book while the mark moves fast, so a liquidation meets
a thin book and ADL closes what it does not take; the traders open positions at different
leverage (three long, two short, one of them in isolated margin), then trade a little, and
three of them protect their positions with a stop-loss or take-profit (a line says when one
fires). Liquidations and ADL fills arrive on the WebSocket (`liquidations`, `adl`) and are
printed as they come: every liquidation line shows the book fill (how much the fund sold
into the book, at what average price against the bankruptcy price: a fill above it is why
the fund can gain on an account whose equity was negative), the ADL quantity, the fund's
change and the bad debt; every ADL line the rank, price, haircut and policy. Every two
seconds a line shows the index, the mark, the book and the fund, and a funding round seen
since the last one (from the service's `/metrics`: `exchange_funding_*`) gets a line of its
own.

Against `--url` (a service it did not start) it cannot choose the price feed: it says so,
and the market moves only as that service's own feed (or its admin) moves it. If BTC-PERP
has no mark there it sets one by admin (10,000; refused on an index-marked symbol, then it
waits for that service's feed). `--crash P%` there moves the mark by admin instead, as the
first version of the demo did: ten seconds in the maker thins its book to a few small bids
and the mark falls P% in five steps (on an index-marked symbol the admin refuses, and the
demo says the crash is skipped).

It uses only HTTP and WebSocket (api/client.py), so it is also an example client. The
service it starts keeps its data dir in the system temp folder, removed at exit
(`--data-dir DIR` keeps one, for `python -m service.tools --config feeds/sandbox.toml dump
DIR --events`: the events are regenerated under the sandbox's rules). Bound to a
loopback address its admin token is `sandbox-admin-token` (as with docker compose), so the
README's commands can be pasted; on any other interface a random one.
`EXCHANGE_ADMIN_TOKEN` or `--admin-token` sets it. A port in use is one line on stderr naming
a free one, exit status 1.

Stopping: `--seconds N` runs N / --tick ticks (with `--crash`, at least until the feed's
crash has hit bottom: 210 s of feed time for 25%, 34 s for 10%, divided by `--speed`);
`--seconds 0` (the sandbox, `make sandbox`) runs until SIGINT (Ctrl-C) or SIGTERM. Either
way it then prints a summary (liquidations, ADL fills, the insurance fund's change, bad
debt, funding during the run, the most deleveraged accounts, every trader's position and
`adl_quantile`), stops the service it started and exits 0. A second Ctrl-C stops at once
(exit status 130). The service runs in its own process group, so the terminal's Ctrl-C
reaches only the demo, which still needs the service for the summary.

`adl_quantile` (0..4, SPEC §6) is what other venues draw as the "ADL light": 4 = first in
line to be deleveraged when a liquidation needs it.

Reproducible runs. Still the same for the same `--seed`, `--crash` and `--speed`: the
index path (the feed file's prices, in order, at the same feed offsets), the accounts, and
the demo's own seeded choices in order (which trader orders at each tick, on which side);
and which traders a crash liquidates (25% and 10% both liquidate ben at 20x and cat at 50x
and never ann at 5x, whose liquidation price is about 28% under her entry). No longer the
same: the feed runs on the service's clock and the demo on its own, so how many requotes
and trader orders fall between two index updates depends on timing, and with it the
opening fill prices, when the maker thins its book, the mark at which each liquidation
happens, how much of it the book takes and how much goes to ADL against whom, the haircuts
and the funding amounts. Any run's journal replays to the same events and state hash
(`python -m service.tools --config feeds/sandbox.toml verify DIR` on a kept data dir).
Against `--url` a service that already has accounts and orders plays differently.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO, TypeVar

import httpx

from api.client import ApiError, ExchangeClient
from service.demo_process import (
    CALM_FEED,
    FEEDS,
    FUNDING_INTERVAL_S,
    SANDBOX_ADMIN_TOKEN,
    SANDBOX_CONFIG,
    ServiceFailed,
    _free_port,
    _own_service,
    admin_token_for,
    bind_error,
    port_busy_message,
    sandbox_env,
)
from service.demo_report import (
    SYMBOL,
    FundingTotals,
    Report,
    adl_line,
    funding_round_line,
    funding_totals,
    liquidation_line,
    parse_metrics,
    summary_lines,
)
from service.demo_traders import Market, _tick

CRASH_AFTER_S = 10  # against --url: the admin crash comes after at most this many seconds' worth of ticks
EXIT_FORCED = 130  # a second Ctrl-C: stopped without a summary
_T = TypeVar("_T")


@dataclass(frozen=True)
class CrashFeed:
    """A shipped crash path, and what it does (feeds/make_feeds.py)."""

    path: Path
    story: str
    bottom_s: int  # feed time of its lowest price: a bounded run lasts at least until then


CRASH_FEEDS = {
    "25%": CrashFeed(
        FEEDS / "crash25.csv",
        "30 s calm, then a 25% fall over three minutes (bottom at 210 s) and a partial recovery",
        210,
    ),
    "10%": CrashFeed(
        FEEDS / "flash10.csv",
        "30 s calm, then a 10% flash crash over 4 s (bottom at 34 s) and back within 6 s",
        34,
    ),
}


# -- the run --------------------------------------------------------------------------------


class Demo(Market):
    """The market (service/demo_traders.py), run: its accounts, the liquidations and ADL
    fills the WebSocket pushes, a line on the index, mark, book and fund every eight ticks,
    and the summary."""

    def __init__(
        self, url: str, admin_token: str, seed: int, out: TextIO | None = None, own_feed: bool = False
    ) -> None:
        super().__init__(url, admin_token, seed, out, own_feed)
        self.url = url
        self.public = httpx.AsyncClient(base_url=url, timeout=10)  # /metrics (plain text)
        self.funding_start: FundingTotals | None = None
        self.funding_seen: FundingTotals | None = None
        self.names: dict[int, str] = {0: "insurance fund"}
        self.report = Report()
        self._adl_waiting: list[dict[str, Any]] = []  # ADL fills come before their liquidation

    async def setup(self, stop: asyncio.Event) -> None:
        await self.wait_for_mark(stop)
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
            if t.isolated:
                await t.client.set_margin_mode(SYMBOL, "isolated")
        self.say(
            "accounts: "
            + ", ".join(
                f"{t.name}=#{t.account_id} ({t.deposit} USD, {t.leverage}x {'long' if t.side == 'buy' else 'short'}"
                f"{', isolated' if t.isolated else ''})"
                for t in self.traders
            )
            + f", maker=#{self.maker.account_id}; insurance fund topped up with 200 USD"
        )
        self.funding_start = self.funding_seen = await self.funding_now()

    async def funding_now(self) -> FundingTotals | None:
        """The service's funding tally of BTC-PERP, and its index if /v1/instruments lacks it."""
        try:
            resp = await self.public.get("/metrics")
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        metrics = parse_metrics(resp.text)
        index = metrics.get("exchange_index_price", {}).get(SYMBOL)
        if index is not None and not self._index_shown:
            self.index = _tick(Decimal(repr(index)))
        return funding_totals(metrics, SYMBOL)
    async def show_book(self) -> None:
        book = await self.admin.orderbook(SYMBOL, depth=3)
        fund = await self.admin.insurance_fund()
        funding = await self.funding_now()
        bids = " ".join(f"{q}@{p}" for p, q in book["bids"])
        asks = " ".join(f"{q}@{p}" for p, q in book["asks"])
        index = f"index {self.index}  " if self.index is not None else ""
        self.say(f"{index}mark {self.mark}  bids [{bids}]  asks [{asks}]  fund {fund.get('balance')}")
        if funding is not None and self.funding_seen is not None and funding.rounds > self.funding_seen.rounds:
            self.say("  " + funding_round_line(SYMBOL, funding.since(self.funding_seen)))
        if funding is not None:
            self.funding_seen = funding
        await self.check_stops()

    def on_notice(self, msg: dict[str, Any]) -> None:
        """A `liquidations` or `adl` message: record and print it (a liquidation's ADL fills
        come before it; they are printed under it)."""
        channel, data = msg.get("channel"), msg.get("data") or {}
        if channel == "adl":
            self.report.adl_fills.append(data)
            self._adl_waiting.append(data)
        elif channel == "liquidations":
            self.report.liquidations.append(data)
            self.say(liquidation_line(data, self.names))
            mine = [f for f in self._adl_waiting if f.get("liquidated_account_id") == data.get("account_id")]
            self._adl_waiting = [f for f in self._adl_waiting if f not in mine]
            for fill in mine:
                self.say(adl_line(fill, self.names))

    async def play(self, seconds: float, crash: Decimal | None, tick_s: float, stop: asyncio.Event, min_s: float = 0.0) -> None:
        """Set up, then tick until the run's ticks are done or `stop` is set. A bounded run
        lasts at least `min_s` (the feed's crash); against --url, `crash` is the admin crash."""
        await self.setup(stop)
        for step in (self.quote, self.open_positions, self.show_book):
            if stop.is_set():
                return
            await step()
        ticks = math.ceil(max(seconds, min_s) / tick_s) if seconds > 0 else None
        crash_at = None
        if crash is not None and not self.own_feed:
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
                await self.admin_crash(crash)
                await self.show_book()
            deadline += tick_s  # pace: one tick per tick_s, never a burst to catch up
            delay = deadline - time.monotonic()
            if delay < 0:
                deadline, delay = time.monotonic(), 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def listen(self, stop: asyncio.Event, ready: asyncio.Event) -> None:
        """Print liquidations and ADL fills as the WebSocket pushes them."""
        try:
            async with self.admin.websocket() as ws:
                await ws.subscribe(["liquidations", "adl"])
                ready.set()
                while not stop.is_set():
                    try:
                        msg = await asyncio.wait_for(ws.recv(), 0.2)
                    except TimeoutError:
                        continue
                    if msg.get("channel") in self.report.ws_notices:
                        self.report.ws_notices[msg["channel"]] += 1
                        self.on_notice(msg)
        except Exception as exc:  # the demo goes on without the WebSocket
            self.say(f"(websocket listener stopped: {exc}; liquidations are no longer printed)")
        finally:
            ready.set()
            for fill in self._adl_waiting:  # never seen without its liquidation, but never lost
                self.say(adl_line(fill, self.names))
            self._adl_waiting = []

    async def summary(self) -> list[str]:
        """The summary lines, with what the service answers now (nothing, if it stopped)."""
        fund = await _answer(self.admin.insurance_fund())
        funding = await self.funding_now()
        if funding is not None and self.funding_start is not None:
            self.report.funding = funding.since(self.funding_start)
        accounts = [
            (t.name, await _answer(self.admin.admin_account(t.account_id)))
            for t in self.traders
            if t.account_id
        ]
        return summary_lines(self.report, self.names, fund, accounts, self.funding_interval_s)

    async def close(self) -> None:
        for t in (self.maker, *self.traders):
            if t.client is not None:
                await t.client.aclose()
        await self.admin.aclose()
        await self.public.aclose()


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
    own_feed: bool = False,
    min_s: float = 0.0,
) -> Report:
    """Play the market until done or `stop`; the report holds the summary lines (not printed).
    `own_feed`: the demo started the service on its feed (`crash` is then the feed's, already
    chosen, and `min_s` how long a bounded run must last to see it); else `crash` is the admin
    crash against --url."""
    stop = stop if stop is not None else asyncio.Event()
    demo = Demo(url, admin_token, seed, out, own_feed=own_feed)
    listening, subscribed = asyncio.Event(), asyncio.Event()
    listener = asyncio.create_task(demo.listen(listening, subscribed))
    try:
        try:
            with contextlib.suppress(TimeoutError):  # without it the market still plays
                await asyncio.wait_for(subscribed.wait(), 10)
            await demo.play(seconds, None if own_feed else crash, tick_s, stop, min_s)
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


def _crash(text: str) -> str:
    """`25%` or `10%` (the shipped crash feeds); anything else: the choices, named."""
    try:
        value = Decimal(text.strip().removesuffix("%"))
    except InvalidOperation:
        value = Decimal(-1)
    key = f"{value.normalize():f}%" if value.is_finite() else ""
    if key not in CRASH_FEEDS:
        choices = "; ".join(f"{k} (feeds/{f.path.name}: {f.story})" for k, f in CRASH_FEEDS.items())
        raise argparse.ArgumentTypeError(f"{text!r} is not a shipped crash; choose {choices}")
    return key


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: the speed must be a number above 0")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m service.demo",
        description=__doc__.splitlines()[0],
        epilog='The summary shows each trader\'s adl_quantile (0..4): the "ADL light" of other '
        "venues, 4 = first in line to be deleveraged. Ctrl-C (or SIGTERM) stops a run, prints "
        "the summary and exits 0; a second Ctrl-C stops at once.",
    )
    p.add_argument("--url", help="a running service (default: start one here, on the sandbox's feed); the demo cannot choose its feed")
    p.add_argument(
        "--admin-token",
        default=os.environ.get("EXCHANGE_ADMIN_TOKEN"),
        help=f"its admin token (default: EXCHANGE_ADMIN_TOKEN; for the service it starts on a "
        f"loopback address {SANDBOX_ADMIN_TOKEN}, on another interface a random one)",
    )
    p.add_argument("--seconds", type=float, default=20, help="how long to run: SECONDS / TICK ticks, with --crash at least until the crash's bottom (0 = until Ctrl-C)")
    p.add_argument(
        "--crash",
        type=_crash,
        default=None,
        help="25%% (feeds/crash25.csv: a 25%% fall over three minutes, 30 s in) or 10%% "
        "(feeds/flash10.csv: a 10%% flash crash, 30 s in); default: feeds/calm.csv. Against "
        "--url: the mark falls that much by admin, ten seconds in, on an admin-marked symbol",
    )
    p.add_argument("--speed", type=_speed, default=1.0, help="how fast the service it starts plays the feed (EXCHANGE_FEED_SPEED): 10 = ten times as fast")
    p.add_argument("--seed", type=int, default=7, help="seed of the traders' orders: the same seed, --seconds, --tick and --crash make the same choices (see the module docstring for what timing still changes)")
    p.add_argument("--tick", type=float, default=0.25, help="seconds between the maker's requotes (and maybe a trader order)")
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

    crash_pct = Decimal(args.crash.rstrip("%")) if args.crash else None
    if args.url:
        if not args.admin_token:
            parser.error("--admin-token (or EXCHANGE_ADMIN_TOKEN) is required with --url")
        print(
            f"--url: the demo cannot choose the price feed of a service it did not start; its "
            f"index and mark move only as that service's own feed (EXCHANGE_PRICE_FEED) or its "
            f"admin move them{'' if args.speed == 1.0 else ' (--speed ignored)'}",
            flush=True,
        )
        if crash_pct is not None:
            print(f"--crash {args.crash}: the mark falls {args.crash} by admin instead, if that service lets an admin set it", flush=True)
        report = await run(args.url, args.admin_token, args.seconds, crash_pct, args.seed, args.tick, stop)
        print("\n".join(report.summary), flush=True)
        return 1 if report.failure else 0

    token = admin_token_for(args.host, args.admin_token)
    port = args.port or _free_port(args.host)
    error = bind_error(args.host, port)
    if error is not None:
        print(port_busy_message(args.host, port, error), file=sys.stderr)
        return 1
    crash = CRASH_FEEDS[args.crash] if args.crash else None
    feed = crash.path if crash else CALM_FEED
    min_s = crash.bottom_s / args.speed + 2 if crash and args.seconds > 0 else 0.0
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="exchange-demo-")
    try:
        market = sandbox_env(feed, args.speed)
        async with _own_service(args.host, port, token, data_dir, stop, market) as url:
            if stop.is_set():  # stopped while the service was starting: no market, no summary
                print("stopped before the market opened", flush=True)
                return 0
            print(f"service at {url} (admin token {token}); API docs at {url}/docs", flush=True)
            kept = "kept" if args.data_dir else "removed at exit; --data-dir DIR keeps one"
            print(
                f"data dir {data_dir} ({kept}; its events: python -m service.tools --config "
                f"feeds/{SANDBOX_CONFIG.name} dump DIR --events)",
                flush=True,
            )
            speed = "" if args.speed == 1.0 else f", {args.speed:g}x as fast"
            story = crash.story if crash else "a gentle walk of twenty minutes, looped"
            print(
                f"market: the index of BTC-PERP and ETH-PERP comes from feeds/{feed.name} ({story}"
                f"{speed}); the marks follow the index; funding every {FUNDING_INTERVAL_S} s "
                f"(feeds/{SANDBOX_CONFIG.name})",
                flush=True,
            )
            if args.seconds <= 0:
                print("running until Ctrl-C, which prints a summary", flush=True)
            report = await run(url, token, args.seconds, crash_pct, args.seed, args.tick, stop, own_feed=True, min_s=min_s)
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
