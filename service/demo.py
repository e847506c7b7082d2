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

A market maker quotes five levels a side around the current mark (read from
`GET /v1/instruments` before every requote); while the mark moves more than 0.5% within ten
seconds it pulls back to three quotes of 0.05 BTC a side, as makers do in a crash, so a
liquidation meets a thin book and ADL closes what it does not take. Five traders open
positions at different leverage (three long, two short) and then trade a little. Liquidations and ADL fills arrive
on the WebSocket (`liquidations`, `adl`) and are printed as they come: every liquidation
line shows the book fill (how much the fund sold into the book, at what average price
against the bankruptcy price: a fill above it is why the fund can gain on an account whose
equity was negative), the ADL quantity, the fund's change and the bad debt; every ADL line
the rank, price, haircut and policy. Every two seconds a line shows the index, the mark,
the book and the fund, and a funding round seen since the last one (from the service's
`/metrics`: `exchange_funding_*`) gets a line of its own.

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
import collections
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
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO, TypeVar

import httpx

from api.client import ApiError, ExchangeClient

SYMBOL = "BTC-PERP"
TICK = Decimal("0.1")
LOT = Decimal("0.001")
SANDBOX_ADMIN_TOKEN = "sandbox-admin-token"  # the same default as docker-compose.yml
CRASH_AFTER_S = 10  # against --url: the admin crash comes after at most this many seconds' worth of ticks
EXIT_FORCED = 130  # a second Ctrl-C: stopped without a summary
START_MARK = Decimal(10_000)  # against --url, for a BTC-PERP without any mark yet
THIN_MOVE, THIN_WINDOW_S = Decimal("0.005"), 10  # the maker thins its book beyond this move
THIN_LEVELS, THIN_SIZE = 3, Decimal("0.05")
_T = TypeVar("_T")

FEEDS = Path(__file__).resolve().parents[1] / "feeds"
SANDBOX_CONFIG = FEEDS / "sandbox.toml"
CALM_FEED = FEEDS / "calm.csv"
FUNDING_INTERVAL_S = 60  # feeds/sandbox.toml's


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


@dataclass
class Trader:
    name: str
    deposit: int
    leverage: int
    side: str  # buy = long, sell = short
    account_id: int = 0
    api_key: str = ""
    client: ExchangeClient | None = None


@dataclass(frozen=True)
class FundingTotals:
    """The service's funding scheduler so far, per symbol (its /metrics `exchange_funding_*`)."""

    rounds: int = 0
    paid: Decimal = Decimal(0)  # by the payers
    received: Decimal = Decimal(0)  # by the receivers; the difference went to the insurance fund
    rate: Decimal | None = None  # the last round's rate, a fraction per interval

    def since(self, start: FundingTotals) -> FundingTotals:
        return FundingTotals(
            self.rounds - start.rounds, self.paid - start.paid, self.received - start.received, self.rate
        )


@dataclass
class Report:
    liquidations: list[dict[str, Any]] = field(default_factory=list)
    adl_fills: list[dict[str, Any]] = field(default_factory=list)
    ws_notices: dict[str, int] = field(default_factory=lambda: {"liquidations": 0, "adl": 0})
    fund_start: Decimal | None = None  # the insurance fund after the demo's own top-up
    funding: FundingTotals | None = None  # during the run (None: the service did not say)
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


def _usd(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def _rate(rate: Decimal) -> str:
    """A funding rate (a fraction per interval) as a signed percentage: `+0.0100%`."""
    return f"{rate * 100:+.4f}%"


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """`name{symbol="X"} value` lines of a Prometheus exposition -> {name: {symbol: value}}."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("#") or '{symbol="' not in line:
            continue
        name, _, rest = line.partition('{symbol="')
        symbol, _, value = rest.partition('"} ')
        try:
            out.setdefault(name, {})[symbol] = float(value)
        except ValueError:
            continue
    return out


def funding_totals(metrics: dict[str, dict[str, float]], symbol: str) -> FundingTotals | None:
    """What the scheduler's funding rounds of `symbol` did so far (None: not reported)."""
    rounds = metrics.get("exchange_funding_rounds", {}).get(symbol)
    if rounds is None:
        return None
    rate = metrics.get("exchange_funding_rate", {}).get(symbol)

    def usd(name: str) -> Decimal:
        return Decimal(repr(metrics.get(name, {}).get(symbol, 0.0)))

    return FundingTotals(
        int(rounds),
        usd("exchange_funding_paid_usd"),
        usd("exchange_funding_received_usd"),
        None if rate is None else Decimal(repr(rate)),
    )


def funding_round_line(symbol: str, new: FundingTotals) -> str:
    """Funding rounds seen since the last look (`new` = the difference)."""
    rounds = "a funding round" if new.rounds == 1 else f"{new.rounds} funding rounds"
    who = ""
    if new.rate is not None and new.rate != 0:
        who = " (longs pay shorts)" if new.rate > 0 else " (shorts pay longs)"
    rate = f"rate {_rate(new.rate)}{who}: " if new.rate is not None else ""
    return f"{rounds} of {symbol}, {rate}paid {_usd(new.paid)} USD, received {_usd(new.received)} USD"


def funding_summary(funding: FundingTotals | None, interval_s: int | None) -> str:
    """The summary's funding line: the scheduler's rounds of BTC-PERP during the run."""
    if funding is None:
        return "funding: not reported by this service (no exchange_funding_* in its /metrics)"
    every = f"every {interval_s} s" if interval_s else ""
    if funding.rounds == 0:
        return f"funding: no round of {SYMBOL} during this run" + (f" (rounds {every})" if every else "")
    details = "; ".join(x for x in (every, f"last rate {_rate(funding.rate)}" if funding.rate is not None else "") if x)
    return (
        f"funding: {funding.rounds} round{'s' if funding.rounds > 1 else ''} of {SYMBOL}"
        f"{f' ({details})' if details else ''}: payers paid {_usd(funding.paid)} USD, receivers got "
        f"{_usd(funding.received)} USD ({_usd(funding.paid - funding.received)} USD of rounding to "
        f"the insurance fund)"
    )


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
    funding_interval_s: int | None = None,
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
    if report.funding is not None or funding_interval_s is not None:
        lines.append(funding_summary(report.funding, funding_interval_s))
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
        if pos and "funding" in pos:  # funding of the open position, when the service shows it
            held += f", funding {pos['funding']}"
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


def sandbox_env(feed: Path, speed: float) -> dict[str, str]:
    """The sandbox's market for the service the demo starts: config, feed, speed (calm: looped)."""
    return {
        "EXCHANGE_CONFIG": str(SANDBOX_CONFIG),
        "EXCHANGE_PRICE_FEED": str(feed),
        "EXCHANGE_FEED_SPEED": repr(speed),
        "EXCHANGE_FEED_LOOP": "1" if feed == CALM_FEED else "0",
    }


@contextlib.asynccontextmanager
async def _own_service(
    host: str, port: int, token: str, data_dir: str, stop: asyncio.Event, market: dict[str, str]
) -> AsyncIterator[str]:
    """Run `python -m service` in a subprocess (own process group) for the demo's lifetime."""
    env = {**os.environ, **market, "EXCHANGE_ADMIN_TOKEN": token, "EXCHANGE_DATA_DIR": data_dir}
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
    def __init__(
        self, url: str, admin_token: str, seed: int, out: TextIO | None = None, own_feed: bool = False
    ) -> None:
        self.url = url
        self.admin = ExchangeClient(url, admin_token=admin_token)
        self.public = httpx.AsyncClient(base_url=url, timeout=10)  # /metrics (plain text)
        self.rng = random.Random(seed)
        self.own_feed = own_feed  # the demo started the service, on its feed
        self.mark = START_MARK
        self.index: Decimal | None = None
        self.funding_interval_s: int | None = FUNDING_INTERVAL_S if own_feed else None
        self.funding_start: FundingTotals | None = None
        self.funding_seen: FundingTotals | None = None
        self.traders = [Trader(t.name, t.deposit, t.leverage, t.side) for t in TRADERS]
        self.maker: Trader = Trader("maker", 2_000_000, 10, "both")
        self.names: dict[int, str] = {0: "insurance fund"}
        self.report = Report()
        self.out = out
        self._adl_waiting: list[dict[str, Any]] = []  # ADL fills come before their liquidation
        self._marks: collections.deque[tuple[float, Decimal]] = collections.deque()  # (monotonic, mark)
        self.thin = False  # the maker quotes a thin book while the market moves fast
        self._index_shown = False  # /v1/instruments shows the index (else /metrics)

    def say(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

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
        self.say(
            "accounts: "
            + ", ".join(f"{t.name}=#{t.account_id} ({t.deposit} USD, {t.leverage}x {'long' if t.side == 'buy' else 'short'})" for t in self.traders)
            + f", maker=#{self.maker.account_id}; insurance fund topped up with 200 USD"
        )
        self.funding_start = self.funding_seen = await self.funding_now()

    async def read_mark(self) -> Decimal | None:
        """BTC-PERP's mark (and index, when shown) from GET /v1/instruments."""
        inst = next(i for i in await self.admin.instruments() if i["symbol"] == SYMBOL)
        if inst.get("index_price") is not None:
            self.index = Decimal(inst["index_price"])
            self._index_shown = True
        if inst.get("funding_interval_s"):
            self.funding_interval_s = int(inst["funding_interval_s"])
        mark = inst.get("mark_price")
        if mark is not None:
            self.mark = Decimal(mark)
            return self.mark
        return None

    async def wait_for_mark(self, stop: asyncio.Event, timeout_s: float = 60) -> None:
        """Trading needs a mark: the feed's (or `initial_mark`); against --url without one, set
        one by admin, or wait for that service's feed when its mark follows the index."""
        if await self.read_mark() is not None:
            return
        if not self.own_feed:
            try:
                await self.admin.set_mark_price(SYMBOL, START_MARK)
                self.say(f"{SYMBOL} had no mark: set to {START_MARK} by admin")
                return
            except ApiError as err:
                if err.error != "MARK_SOURCE_IS_INDEX":
                    raise
        self.say(f"waiting for the first index price of {SYMBOL} ...")
        deadline = time.monotonic() + timeout_s
        while await self.read_mark() is None:
            if stop.is_set():
                return
            if time.monotonic() > deadline:
                raise ApiError(503, {"error": "NO_MARK_PRICE", "message": f"{SYMBOL} has no mark after {timeout_s:.0f} s"})
            await asyncio.sleep(0.2)

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

    def watch_volatility(self) -> None:
        """The maker thins its book while the mark moves more than `THIN_MOVE` within
        `THIN_WINDOW_S` (as market makers pull back in a crash), and quotes in full again once
        it no longer does; says so when it switches."""
        now = time.monotonic()
        marks = self._marks
        marks.append((now, self.mark))
        while marks[0][0] < now - THIN_WINDOW_S:
            marks.popleft()
        low, high = min(m for _, m in marks), max(m for _, m in marks)
        thin = (high - low) / low > THIN_MOVE
        if thin != self.thin:
            self.thin = thin
            if thin:
                self.say(
                    f"*** the mark moved {(high - low) / low:.1%} within {THIN_WINDOW_S} s: the maker "
                    f"thins its book to {THIN_LEVELS} bids and asks of {THIN_SIZE} BTC ***"
                )
            else:
                self.say("*** the market calmed down: the maker quotes its full book again ***")

    async def quote(self, levels: int = 5, size: Decimal = Decimal("0.4"), step: Decimal = Decimal("0.0005")) -> None:
        """Five post-only levels a side around the mark (a thin book while the market moves
        fast); a quote the market has just crossed (the mark moved meanwhile) is refused and
        left out."""
        mm = self.maker.client
        assert mm is not None
        if self.thin:
            levels, size = THIN_LEVELS, THIN_SIZE
        await mm.cancel_all(SYMBOL)
        for i in range(1, levels + 1):
            off = self.mark * step * i
            for side, price in (("buy", _tick(self.mark - off)), ("sell", _tick(self.mark + off) + TICK)):
                with contextlib.suppress(ApiError):
                    await mm.place_order(SYMBOL, side, size, price=price, post_only=True)

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
            await self.read_mark()
            await self.quote()

    async def tick(self) -> None:
        """Requote around the mark of now; maybe one seeded trader order."""
        await self.read_mark()
        self.watch_volatility()
        await self.quote()
        t = self.rng.choice(self.traders)
        assert t.client is not None
        if self.rng.random() < 0.3:
            with contextlib.suppress(ApiError):
                await t.client.place_order(SYMBOL, self.rng.choice(("buy", "sell")), "0.01")

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

    async def admin_crash(self, pct: Decimal, steps: int = 5) -> None:
        """Against --url on an admin-marked symbol: thin the book, move the mark down P% by admin."""
        mm = self.maker.client
        assert mm is not None
        start = self.mark
        low = start * (1 - pct / 100)
        first = start - (start - low) / steps
        try:
            await self.admin.set_mark_price(SYMBOL, start)  # refused at once if the index sets it
        except ApiError as err:
            if err.error != "MARK_SOURCE_IS_INDEX":
                raise
            self.say(f"\n*** crash skipped: {SYMBOL}'s mark follows that service's index feed ({err.message}) ***")
            return
        self.say(f"\n*** crash: the maker thins its book and the mark falls {pct}% in {steps} steps (by admin) ***")
        await mm.cancel_all(SYMBOL)
        # a thin book: a few small bids just under the first step of the fall
        for i in range(1, 4):
            await mm.place_order(SYMBOL, "buy", "0.05", price=_tick(first * (1 - Decimal("0.003") * i)))
        for s in range(1, steps + 1):
            self.mark = _tick(start - (start - low) * s / steps)
            res = await self.admin.set_mark_price(SYMBOL, self.mark)
            self.say(f"mark -> {self.mark}: {len(res['liquidations'])} liquidation(s), {len(res['adl_fills'])} ADL fill(s)")
            await asyncio.sleep(0.3)  # their lines come over the WebSocket

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
