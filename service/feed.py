"""The price feed (SPEC §12): index prices for the engine, from a CSV path or a seeded walk.

`EXCHANGE_PRICE_FEED` chooses the source:

- `synthetic:<seed>`: per symbol, a seeded random walk with occasional jumps, one price per
  symbol per second of feed time, starting (at feed time 0) from the symbol's index, else
  its mark, else its `initial_mark` (a symbol with none of them is not driven; logged). A
  step moves the price by a Gaussian `SIGMA_PPM` of itself; with probability
  `JUMP_PROBABILITY` a step also jumps `JUMP_MIN_PPM`..`JUMP_MAX_PPM` up or down. Integer
  arithmetic on ticks (half-even to the tick, never below one tick) and one
  `random.Random(f"{seed}:{symbol}")` per symbol: the same seed and starting price give the
  same path on every machine.
- a CSV file of rows `offset_s,symbol,price` (an optional header line with exactly those
  names; blank lines are ignored): seconds after the feed starts (a non-negative decimal, never
  going back), a symbol of the exchange, a price on that symbol's tick grid. The file is
  checked completely before the service starts (`load_feed`: the first problem, with its
  line number, is one line on stderr, exit status 2; service/__main__.py).

`EXCHANGE_FEED_SPEED` divides feed time (2.0 = twice as fast). A CSV feed stops after its
last row (one log line; the index stays at the last price) unless `EXCHANGE_FEED_LOOP` is
on: then it starts over one second (of feed time) after its last row, offsets shifted by
`last offset + 1 s` per pass.

Each price becomes a `SetIndexPrice` command submitted to the engine loop like any other
command: stamped with the service clock when applied, journaled, replayed identically.
The feed never holds up order entry and never queues without bound: at most one of its
commands waits in the engine queue at a time; prices that come due meanwhile are coalesced,
the latest per symbol kept and sent next (`PriceFeed.coalesced` counts the ones dropped).
A feed that falls behind its schedule (a busy event loop) does not burst to catch up: due
prices coalesce the same way. Known limit: the schedule runs on the monotonic clock of this
process, so which orders land between two index updates depends on timing, not on the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from engine.commands import SetIndexPrice
from engine.engine import Engine
from engine.events import CommandRejected
from engine.instruments import Instrument
from engine.units import PPM, decimal_str_to_e8, div_half_even
from service.engine_loop import EngineHalted

log = logging.getLogger("service.feed")

SYNTHETIC = "synthetic:"
CSV_HEADER = ("offset_s", "symbol", "price")
SIGMA_PPM = 300  # 0.03% per step (one second of feed time): about 1.8% per hour
JUMP_PROBABILITY = 1 / 600  # about one jump per symbol per ten minutes of feed time
JUMP_MIN_PPM, JUMP_MAX_PPM = 10_000, 40_000  # 1% to 4%, either way
LOOP_GAP_S = Decimal(1)  # a looped CSV starts over this long after its last row

Update = tuple[float, str, int]  # (seconds after the feed's start, at speed; symbol; ticks)
Submit = Callable[[SetIndexPrice], Awaitable[Any]]


class FeedError(ValueError):
    """A feed that cannot be used: a bad spec, an unreadable file or a bad row."""


# == sources ================================================================================


@dataclass(frozen=True, slots=True)
class CsvFeed:
    """A checked CSV path: rows of (offset in seconds of feed time, symbol, price in ticks)."""

    path: Path
    rows: tuple[tuple[Decimal, str, int], ...]

    @property
    def symbols(self) -> list[str]:
        return sorted({symbol for _, symbol, _ in self.rows})

    def describe(self) -> str:
        last = self.rows[-1][0]
        return f"{self.path} ({len(self.rows)} prices of {', '.join(self.symbols)} over {last} s)"


@dataclass(frozen=True, slots=True)
class SyntheticFeed:
    """A seeded walk per symbol (`synthetic_prices`)."""

    seed: int

    def describe(self) -> str:
        return f"synthetic walk, seed {self.seed}"


Feed = CsvFeed | SyntheticFeed


def check_feed_spec(spec: str) -> None:
    """Refuse a spec that is neither `synthetic:<integer seed>` nor an existing file."""
    if spec.startswith(SYNTHETIC):
        _seed(spec)
    elif not Path(spec).is_file():
        raise ValueError(f"{spec!r} is neither synthetic:<seed> nor an existing file")


def _seed(spec: str) -> int:
    text = spec[len(SYNTHETIC) :]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{spec!r}: the seed after synthetic: must be an integer") from None


def load_feed(spec: str, instruments: Mapping[str, Instrument]) -> Feed:
    """The feed `spec` names, checked against `instruments`; FeedError says what is wrong."""
    try:
        check_feed_spec(spec)
        if spec.startswith(SYNTHETIC):
            return SyntheticFeed(_seed(spec))
    except ValueError as exc:
        raise FeedError(str(exc)) from None
    return read_csv(Path(spec), instruments)


def read_csv(path: Path, instruments: Mapping[str, Instrument]) -> CsvFeed:
    """Read and check a CSV path; FeedError names the first bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FeedError(f"{path}: cannot read it ({exc})") from None
    return CsvFeed(path, tuple(parse_csv(text, instruments, str(path))))


def parse_csv(
    text: str, instruments: Mapping[str, Instrument], name: str = "<feed>"
) -> list[tuple[Decimal, str, int]]:
    """Rows of `offset_s,symbol,price`, strictly checked (see the module docstring)."""
    rows: list[tuple[Decimal, str, int]] = []
    previous = Decimal(0)
    first = True
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if first and tuple(fields) == CSV_HEADER:
            first = False
            continue
        first = False

        def bad(problem: str, lineno: int = lineno) -> FeedError:
            return FeedError(f"{name} line {lineno}: {problem}")

        if len(fields) != 3:
            raise bad(f"expected offset_s,symbol,price, got {len(fields)} field(s): {line.strip()!r}")
        offset_text, symbol, price_text = fields
        try:
            offset = Decimal(offset_text)
        except InvalidOperation:
            offset = Decimal("NaN")
        if not offset.is_finite() or offset < 0 or not offset_text[:1].isdigit():
            raise bad(f"offset_s {offset_text!r} is not a number of seconds >= 0")
        if offset < previous:
            raise bad(f"offset_s {offset_text} goes back (the previous row is at {previous})")
        inst = instruments.get(symbol)
        if inst is None:
            raise bad(f"unknown symbol {symbol!r} (the exchange has {', '.join(sorted(instruments))})")
        e8 = decimal_str_to_e8(price_text) if price_text[:1].isdigit() else None
        ticks = inst.ticks_from_e8(e8) if e8 is not None else None
        if ticks is None or ticks <= 0:
            tick = Decimal(inst.tick_size_e8) / 10**8
            raise bad(f"price {price_text!r} is not a positive price on {symbol}'s tick grid ({tick.normalize()})")
        rows.append((offset, symbol, ticks))
        previous = offset
    if not rows:
        raise FeedError(f"{name}: no prices in it")
    return rows


# == schedules (pure) =======================================================================


def csv_schedule(
    rows: Iterable[tuple[Decimal, str, int]], speed: float, loop: bool = False
) -> Iterator[Update]:
    """(offset / speed, symbol, ticks) per row; with `loop`, pass k adds k * (last + 1 s)."""
    rows = list(rows)
    period = rows[-1][0] + LOOP_GAP_S
    shift = Decimal(0)
    while True:
        for offset, symbol, ticks in rows:
            yield float(offset + shift) / speed, symbol, ticks
        if not loop:
            return
        shift += period


def synthetic_prices(seed: int, symbol: str, start_ticks: int) -> Iterator[int]:
    """The walk of `symbol`: `start_ticks`, then one step per second of feed time, forever."""
    rng = random.Random(f"{seed}:{symbol}")
    price = start_ticks
    while True:
        yield price
        move_ppm = round(rng.gauss(0.0, SIGMA_PPM))
        if rng.random() < JUMP_PROBABILITY:
            move_ppm += rng.choice((-1, 1)) * rng.randint(JUMP_MIN_PPM, JUMP_MAX_PPM)
        price = max(1, price + div_half_even(price * move_ppm, PPM))


def synthetic_schedule(seed: int, starts: Mapping[str, int], speed: float) -> Iterator[Update]:
    """Every driven symbol's walk, in symbol order, one price each per second of feed time."""
    walks = {symbol: synthetic_prices(seed, symbol, starts[symbol]) for symbol in sorted(starts)}
    n = 0
    while True:
        for symbol, walk in walks.items():
            yield n / speed, symbol, next(walk)
        n += 1


def start_prices(engine: Engine) -> dict[str, int]:
    """Where a synthetic walk starts: the index, else the mark, else `initial_mark`."""
    out = {}
    for symbol in engine.symbols:
        price = (
            engine.index.get(symbol)
            or engine.marks.get(symbol)
            or engine.instruments[symbol].initial_mark_ticks
        )
        if price:
            out[symbol] = price
    return out


def schedule(feed: Feed, engine: Engine, speed: float, loop: bool) -> Iterator[Update]:
    """The updates `feed` makes, from the engine's state now."""
    if isinstance(feed, CsvFeed):
        return csv_schedule(feed.rows, speed, loop)
    starts = start_prices(engine)
    for symbol in engine.symbols:
        if symbol not in starts:
            log.warning("synthetic feed: %s has no index, mark or initial_mark: not driven", symbol)
    return synthetic_schedule(feed.seed, starts, speed)


# == the running feed =======================================================================


class PriceFeed:
    """Plays a schedule of index prices into the engine loop: one command in flight at most."""

    def __init__(
        self,
        updates: Iterator[Update],
        submit: Submit,
        label: str = "feed",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.updates = updates
        self.submit = submit
        self.label = label
        self.clock = clock
        self.sent: Counter[str] = Counter()  # SetIndexPrice commands applied, per symbol
        self.coalesced: Counter[str] = Counter()  # prices replaced by a newer one before sending
        self.finished = False
        self._pending: dict[str, int] = {}  # the latest unsent price per symbol
        self._sender: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._halted = False

    def start(self) -> None:
        """Start playing (call from inside the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="price-feed")

    async def stop(self) -> None:
        """Stop playing; a command already queued is still applied by the engine loop."""
        for task in (self._task, self._sender):
            if task is not None and not task.done():
                task.cancel()
        for task in (self._task, self._sender):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._sender = None

    def offer(self, symbol: str, price_ticks: int) -> None:
        """A price came due: send it now, or keep it as the latest while one is in flight."""
        if self._halted:
            return
        if symbol in self._pending:
            self.coalesced[symbol] += 1
        self._pending[symbol] = price_ticks
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send(), name="price-feed-send")

    @property
    def in_flight(self) -> bool:
        return self._sender is not None and not self._sender.done()

    async def _run(self) -> None:
        start = self.clock()
        n = 0
        for due_s, symbol, price in self.updates:
            delay = start + due_s - self.clock()
            await asyncio.sleep(max(0.0, delay))  # 0: behind schedule, still yield to others
            if self._halted:
                return
            self.offer(symbol, price)
            n += 1
        self.finished = True
        log.info("price feed %s finished after %d prices; index prices stay where they are", self.label, n)

    async def _send(self) -> None:
        while self._pending:
            symbol = next(iter(self._pending))
            price = self._pending.pop(symbol)
            try:
                events = await self.submit(SetIndexPrice(symbol, price))
            except EngineHalted as exc:
                self._halted = True
                self._pending.clear()
                log.warning("price feed %s stopped: %s", self.label, exc.message)
                return
            self.sent[symbol] += 1
            if events and isinstance(events[0], CommandRejected):
                log.warning("price feed %s: %s %d refused: %s", self.label, symbol, price, events[0].message)
