"""The demo market's participants (service/demo.py runs them): a market maker and five
traders on BTC-PERP, driving the exchange through the public API (api/client.py).

A market maker quotes five levels a side around the current mark (read from
`GET /v1/instruments` before every requote); while the mark moves more than 0.5% within ten
seconds it pulls back to three quotes of 0.05 BTC a side, as makers do in a crash, so a
liquidation meets a thin book and ADL closes what it does not take. Five traders open
positions at different leverage (three long, two short) and then trade a little; cat trades
isolated (her liquidation takes only her position's margin), ann protects her long with a
take-profit 4% up, dan and eve their shorts with stop-losses 5% and 2.5% up (SPEC §12 orders
that close the whole position when the mark reaches them; a line says when one fires).
Against `--url` on an admin-marked symbol, `--crash P%` is `Market.admin_crash`: the maker
thins its book to a few small bids and an admin moves the mark down P% in five steps.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import random
import sys
import time
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import TextIO

from api.client import ApiError, ExchangeClient
from service.demo_process import FUNDING_INTERVAL_S
from service.demo_report import SYMBOL

TICK = Decimal("0.1")
LOT = Decimal("0.001")
START_MARK = Decimal(10_000)  # against --url, for a BTC-PERP without any mark yet
THIN_MOVE, THIN_WINDOW_S = Decimal("0.005"), 10  # the maker thins its book beyond this move
THIN_LEVELS, THIN_SIZE = 3, Decimal("0.05")


@dataclass
class Trader:
    name: str
    deposit: int
    leverage: int
    side: str  # buy = long, sell = short
    # a protective order placed once the position is open (SPEC §12): (type, trigger as a
    # multiple of the entry price), closing the whole position when the mark reaches it
    protect: tuple[str, Decimal] | None = None
    isolated: bool = False  # trades in isolated margin: a liquidation takes only the position's margin
    account_id: int = 0
    api_key: str = ""
    client: ExchangeClient | None = None
    stop_order_id: int | None = None  # its protective order while it waits


TRADERS = (
    Trader("ann", 5_000, 5, "buy", protect=("take_profit_market", Decimal("1.04"))),
    Trader("ben", 2_000, 20, "buy"),
    Trader("cat", 1_000, 50, "buy", isolated=True),
    Trader("dan", 5_000, 10, "sell", protect=("stop_market", Decimal("1.05"))),
    Trader("eve", 3_000, 25, "sell", protect=("stop_market", Decimal("1.025"))),
)


def _tick(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value(rounding=ROUND_DOWN) * TICK


def _lots(qty: Decimal) -> Decimal:
    return max(LOT, (qty / LOT).to_integral_value(rounding=ROUND_DOWN) * LOT)


# -- the maker and the traders --------------------------------------------------------------


class Market:
    """The maker and the traders, and the mark they trade around; `Demo` (service/demo.py)
    adds the run: their accounts, the WebSocket, the printed lines and the summary."""

    def __init__(
        self, url: str, admin_token: str, seed: int, out: TextIO | None = None, own_feed: bool = False
    ) -> None:
        self.admin = ExchangeClient(url, admin_token=admin_token)
        self.rng = random.Random(seed)
        self.own_feed = own_feed  # the demo started the service, on its feed
        self.mark = START_MARK
        self.index: Decimal | None = None
        self.funding_interval_s: int | None = FUNDING_INTERVAL_S if own_feed else None
        self.traders = [dataclasses.replace(t) for t in TRADERS]  # fresh ones: they hold state
        self.maker: Trader = Trader("maker", 2_000_000, 10, "both")
        self.out = out
        self._marks: collections.deque[tuple[float, Decimal]] = collections.deque()  # (monotonic, mark)
        self.thin = False  # the maker quotes a thin book while the market moves fast
        self._index_shown = False  # /v1/instruments shows the index (else /metrics)

    def say(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

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
                if t.protect is not None and order["avg_price"] is not None:
                    await self.protect(t, Decimal(order["avg_price"]))
            except ApiError as err:
                self.say(f"{t.name}: {err.error} ({err.message})")
            await self.read_mark()
            await self.quote()

    async def protect(self, t: Trader, entry: Decimal) -> None:
        """The trader's protective order (SPEC §12): a stop-loss or take-profit that closes
        the whole position when the mark reaches `entry` x its multiple; it rests outside the
        book and reserves no margin until then."""
        assert t.client is not None and t.protect is not None
        kind, multiple = t.protect
        trigger = _tick(entry * multiple)
        side = "sell" if t.side == "buy" else "buy"
        order = await t.client.place_order(
            SYMBOL, side, None, type=kind, trigger_price=trigger, trigger_by="mark", close_position=True
        )
        t.stop_order_id = order["order_id"]
        what = "stop-loss" if kind == "stop_market" else "take-profit"
        self.say(f"  {t.name} places a {what} ({kind}, close position) triggered by the mark at {trigger}")

    async def check_stops(self) -> None:
        """Print a protective order once it has fired (its status is no longer `untriggered`)."""
        for t in self.traders:
            if t.stop_order_id is None or t.client is None:
                continue
            order = await t.client.order(t.stop_order_id)
            if order["status"] == "untriggered":
                continue
            t.stop_order_id = None
            self.say(
                f"  {t.name}'s {order['type']} triggered: {order['status']}, {order['filled_qty']} BTC"
                f"{' at ' + str(order['avg_price']) if order['avg_price'] is not None else ''}"
            )

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
