"""A live demo market over the public API: `python -m service.demo [--crash 25%]`.

A market maker quotes five levels a side around a mark price that follows a seeded random
walk; five traders open positions at different leverage (three long, two short). With
`--crash P%` the maker thins its book to a few lots and the mark falls by P% in five steps:
the longs are liquidated into the thin book, the insurance fund pays what it can, and ADL
closes the rest against the shorts. The demo prints who was liquidated, what the fund
paid, and who was deleveraged at which price and rank.

It uses only HTTP and WebSocket (api/client.py), so it is also an example client. Without
`--url` it starts its own service (`python -m service`) on a free port and stops it at the end
(or keeps running with `--seconds 0`, the sandbox mode of `make sandbox`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from api.client import ApiError, ExchangeClient

SYMBOL = "BTC-PERP"
TICK = Decimal("0.1")
LOT = Decimal("0.001")


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _own_service(port: int, token: str, keep_data: str | None) -> AsyncIterator[str]:
    """Run `python -m service` in a subprocess for the demo's lifetime."""
    data_dir = keep_data or tempfile.mkdtemp(prefix="exchange-demo-")
    env = {**os.environ, "EXCHANGE_ADMIN_TOKEN": token, "EXCHANGE_DATA_DIR": data_dir}
    proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        async with ExchangeClient(url) as probe:
            for _ in range(200):
                try:
                    await probe.healthz()
                    break
                except Exception:
                    if proc.poll() is not None:
                        raise RuntimeError("the service exited during start-up") from None
                    await asyncio.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


class Demo:
    def __init__(self, url: str, admin_token: str, seed: int, out: Any = sys.stdout) -> None:
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
        print(text, file=self.out, flush=True)

    async def setup(self) -> None:
        await self.admin.set_mark_price(SYMBOL, self.mark)
        await self.admin.top_up_insurance_fund(200)
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
        start = self.mark
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
            self.say(
                f"  LIQUIDATED {self.names.get(liq['account_id'], liq['account_id'])}: {liq['qty']} BTC, "
                f"bankruptcy price {liq['bankruptcy_price']}, equity before {liq['equity_before']}, "
                f"insurance fund {'' if liq['insurance_fund_delta'].startswith('-') else '+'}{liq['insurance_fund_delta']}"
            )
        for fill in res.get("adl_fills", []):
            self.report.adl_fills.append(fill)
            self.say(
                f"  ADL rank {fill['rank']}: {self.names.get(fill['counterparty_account_id'], fill['counterparty_account_id'])} "
                f"({fill['side']}) closes {fill['qty']} BTC at {fill['price']} against "
                f"{self.names.get(fill['liquidated_account_id'])}, realized {fill['realized_pnl']}, left {fill['position_after']}"
            )

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

    async def summary(self) -> None:
        fund = await self.admin.insurance_fund()
        self.say("\n=== summary ===")
        self.say(f"liquidations: {len(self.report.liquidations)}, ADL fills: {len(self.report.adl_fills)}, insurance fund {fund.get('balance')} USD")
        self.say(f"seen on the WebSocket: {self.report.ws_notices['liquidations']} liquidation and {self.report.ws_notices['adl']} ADL notices")
        for t in self.traders:
            acct = await self.admin.admin_account(t.account_id)
            pos = next((p for p in acct["positions"] if p["symbol"] == SYMBOL), None)
            held = f"{pos['size']} BTC (ADL light {pos['adl_quantile']})" if pos else "flat"
            self.say(f"  {t.name:4} wallet {acct['wallet_balance']:>12} equity {acct['equity']:>12}  {held}")

    async def close(self) -> None:
        for t in (self.maker, *self.traders):
            if t.client is not None:
                await t.client.aclose()
        await self.admin.aclose()


async def run(url: str, admin_token: str, seconds: float, crash: Decimal | None, seed: int, tick_s: float) -> Report:
    demo = Demo(url, admin_token, seed)
    stop = asyncio.Event()
    listener = asyncio.create_task(demo.listen(stop))
    try:
        await demo.setup()
        await demo.quote()
        await demo.open_positions()
        await demo.show_book()
        started = time.monotonic()
        crashed = False
        n = 0
        while seconds <= 0 or time.monotonic() - started < seconds:
            await demo.tick()
            n += 1
            if n % 8 == 0:
                await demo.show_book()
            if crash is not None and not crashed and time.monotonic() - started >= min(seconds / 2 if seconds > 0 else 10, 10):
                await demo.crash(crash)
                crashed = True
                await demo.show_book()
            await asyncio.sleep(tick_s)
        if crash is not None and not crashed:
            await demo.crash(crash)
        await asyncio.sleep(0.3)  # let the WebSocket notices arrive
        await demo.summary()
        return demo.report
    finally:
        stop.set()
        await listener
        await demo.close()


def _pct(text: str) -> Decimal:
    value = Decimal(text.rstrip("%"))
    if not 0 < value < 100:
        raise argparse.ArgumentTypeError("crash must be between 0% and 100%")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.demo", description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running service (default: start one here)")
    p.add_argument("--admin-token", default=os.environ.get("EXCHANGE_ADMIN_TOKEN"), help="its admin token")
    p.add_argument("--seconds", type=float, default=20, help="how long to run (0 = until interrupted)")
    p.add_argument("--crash", type=_pct, default=None, help="e.g. 25%%: crash the mark by that much")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tick", type=float, default=0.25, help="seconds between mark moves")
    p.add_argument("--port", type=int, default=0, help="port for the service it starts (default: 8000 if free)")
    p.add_argument("--data-dir", default=None, help="data dir for the service it starts (default: a temp dir)")
    args = p.parse_args(argv)

    async def go() -> None:
        if args.url:
            if not args.admin_token:
                p.error("--admin-token (or EXCHANGE_ADMIN_TOKEN) is required with --url")
            await run(args.url, args.admin_token, args.seconds, args.crash, args.seed, args.tick)
            return
        token = args.admin_token or secrets.token_urlsafe(16)
        port = args.port or _free_port()
        async with _own_service(port, token, args.data_dir) as url:
            print(f"service at {url} (admin token {token}); API docs at {url}/docs", flush=True)
            await run(url, token, args.seconds, args.crash, args.seed, args.tick)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds asyncio.run, so the service it started is stopped too

    signal.signal(signal.SIGTERM, _terminate)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
