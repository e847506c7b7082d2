"""The price feed (service/feed.py): strict CSV reading, the seeded synthetic walk, the
schedule at a speed, and coalescing while a submission is in flight; the shipped paths
(feeds/) are what feeds/make_feeds.py writes, and on their symbols' tick grids."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import itertools
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine import commands as c
from engine.engine import Engine
from engine.instruments import default_instruments
from service.config import load_engine_config
from service.engine_loop import EngineHalted
from service.feed import (
    JUMP_MIN_PPM,
    CsvFeed,
    FeedError,
    PriceFeed,
    SyntheticFeed,
    check_feed_spec,
    csv_schedule,
    load_feed,
    parse_csv,
    read_csv,
    start_prices,
    synthetic_prices,
    synthetic_schedule,
)

ROOT = Path(__file__).resolve().parents[2]
FEEDS = ROOT / "feeds"
INSTRUMENTS = default_instruments()  # BTC-PERP tick 0.1, ETH-PERP tick 0.01


# -- CSV: what is read, what is refused --------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "offset_s,symbol,price\n0,BTC-PERP,10000\n1.5,ETH-PERP,2000.01\n1.5,BTC-PERP,10000.1\n",
        "0,BTC-PERP,10000\n1.5,ETH-PERP,2000.01\n\n1.5,BTC-PERP,10000.1",
        " offset_s , symbol , price \n0, BTC-PERP ,10000.0\n1.50,ETH-PERP,2000.010\n1.5,BTC-PERP,1.00001e4\n",
    ],
    ids=["with-header", "no-header-blank-line-no-final-newline", "spaces-trailing-zeros-exponent"],
)
def test_parse_csv_when_rows_are_good_gives_offsets_symbols_and_ticks(text: str) -> None:
    assert parse_csv(text, INSTRUMENTS) == [
        (Decimal(0), "BTC-PERP", 100_000),
        (Decimal("1.5"), "ETH-PERP", 200_001),
        (Decimal("1.5"), "BTC-PERP", 100_001),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "<feed>: no prices in it"),
        ("offset_s,symbol,price\n", "<feed>: no prices in it"),
        ("0,BTC-PERP\n", "line 1: expected offset_s,symbol,price, got 2 field(s)"),
        ("0,BTC-PERP,10000,1\n", "line 1: expected offset_s,symbol,price, got 4 field(s)"),
        ("0,BTC-PERP,10000\nsoon,BTC-PERP,10000\n", "line 2: offset_s 'soon' is not a number of seconds >= 0"),
        ("-1,BTC-PERP,10000\n", "line 1: offset_s '-1' is not a number of seconds >= 0"),
        ("inf,BTC-PERP,10000\n", "line 1: offset_s 'inf' is not a number of seconds >= 0"),
        ("5,BTC-PERP,10000\n4.9,BTC-PERP,10000\n", "line 2: offset_s 4.9 goes back (the previous row is at 5)"),
        ("0,SOL-PERP,100\n", "line 1: unknown symbol 'SOL-PERP' (the exchange has BTC-PERP, ETH-PERP)"),
        ("0,BTC-PERP,10000.05\n", "line 1: price '10000.05' is not a positive price on BTC-PERP's tick grid (0.1)"),
        ("0,ETH-PERP,2000.001\n", "line 1: price '2000.001' is not a positive price on ETH-PERP's tick grid (0.01)"),
        ("0,BTC-PERP,0\n", "line 1: price '0' is not a positive price"),
        ("0,BTC-PERP,-10000\n", "line 1: price '-10000' is not a positive price"),
        ("0,BTC-PERP,lots\n", "line 1: price 'lots' is not a positive price"),
        ("0,BTC-PERP,10000\noffset_s,symbol,price\n", "line 2: offset_s 'offset_s' is not a number"),
    ],
    ids=[
        "empty", "header-only", "two-fields", "four-fields", "offset-word", "offset-negative",
        "offset-inf", "offset-goes-back", "unknown-symbol", "btc-off-grid", "eth-off-grid",
        "price-zero", "price-negative", "price-word", "header-not-first",
    ],
)
def test_parse_csv_when_a_row_is_bad_refuses_the_file_naming_the_line(text: str, problem: str) -> None:
    with pytest.raises(FeedError) as err:
        parse_csv(text, INSTRUMENTS)
    assert problem in str(err.value)
    assert "\n" not in str(err.value)  # one line on stderr


def test_load_feed_when_spec_is_bad_names_the_problem(tmp_path: Path) -> None:
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe0,BTC-PERP,1\n")
    cases = {
        "synthetic:seven": "the seed after synthetic: must be an integer",
        str(tmp_path / "missing.csv"): "is neither synthetic:<seed> nor an existing file",
        str(tmp_path): "is neither synthetic:<seed> nor an existing file",
        str(binary): "cannot read it",
    }
    for spec, problem in cases.items():
        with pytest.raises(FeedError, match=problem):
            load_feed(spec, INSTRUMENTS)
    with pytest.raises(ValueError, match="must be an integer"):
        check_feed_spec("synthetic:")


def test_load_feed_when_spec_is_good_gives_the_source(tmp_path: Path) -> None:
    path = tmp_path / "two.csv"
    path.write_text("0,BTC-PERP,10000\n2,BTC-PERP,10001\n")
    assert load_feed("synthetic:-3", INSTRUMENTS) == SyntheticFeed(-3)
    feed = load_feed(str(path), INSTRUMENTS)
    assert feed == CsvFeed(path, ((Decimal(0), "BTC-PERP", 100_000), (Decimal(2), "BTC-PERP", 100_010)))
    assert feed.describe() == f"{path} (2 prices of BTC-PERP over 2 s)"


# -- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("speed", "times"),
    [(1.0, [0.0, 1.5, 1.5, 3.0]), (2.0, [0.0, 0.75, 0.75, 1.5]), (0.5, [0.0, 3.0, 3.0, 6.0])],
    ids=["speed-1", "twice-as-fast", "half-speed"],
)
def test_csv_schedule_when_played_at_a_speed_divides_every_offset_by_it(speed: float, times: list[float]) -> None:
    rows = parse_csv("0,BTC-PERP,1\n1.5,BTC-PERP,2\n1.5,ETH-PERP,3\n3,BTC-PERP,4\n", INSTRUMENTS)
    assert list(csv_schedule(rows, speed)) == [
        (t, s, p) for t, (_, s, p) in zip(times, rows, strict=True)
    ]


def test_csv_schedule_when_looped_starts_over_one_second_after_the_last_row() -> None:
    rows = parse_csv("0,BTC-PERP,1\n2,BTC-PERP,2\n", INSTRUMENTS)  # 10 and 20 ticks
    got = list(itertools.islice(csv_schedule(rows, 2.0, loop=True), 6))
    # period = last offset + 1 s = 3 s of feed time = 1.5 s at speed 2
    assert got == [
        (0.0, "BTC-PERP", 10), (1.0, "BTC-PERP", 20),
        (1.5, "BTC-PERP", 10), (2.5, "BTC-PERP", 20),
        (3.0, "BTC-PERP", 10), (4.0, "BTC-PERP", 20),
    ]


def test_synthetic_prices_when_seeded_repeat_exactly_and_differ_by_seed_and_symbol() -> None:
    first = list(itertools.islice(synthetic_prices(7, "BTC-PERP", 100_000), 5_000))
    assert first == list(itertools.islice(synthetic_prices(7, "BTC-PERP", 100_000), 5_000))
    assert first[0] == 100_000
    assert first != list(itertools.islice(synthetic_prices(8, "BTC-PERP", 100_000), 5_000))
    assert first != list(itertools.islice(synthetic_prices(7, "ETH-PERP", 100_000), 5_000))
    # whole ticks, never below one tick; small steps with occasional jumps of 1% or more
    assert all(type(p) is int and p >= 1 for p in first)
    moves = [abs(b - a) / a for a, b in itertools.pairwise(first)]
    jumps = [m for m in moves if m >= JUMP_MIN_PPM / 1e6 * 0.9]
    assert 1 <= len(jumps) <= 40, len(jumps)
    assert sorted(moves)[len(moves) // 2] < 0.0005  # the median step is a few basis points


def test_synthetic_prices_when_start_is_one_tick_never_go_below_it() -> None:
    assert min(itertools.islice(synthetic_prices(1, "BTC-PERP", 1), 2_000)) >= 1


def test_synthetic_schedule_when_played_gives_one_price_per_symbol_per_second_of_feed_time() -> None:
    got = list(itertools.islice(synthetic_schedule(3, {"ETH-PERP": 200_000, "BTC-PERP": 100_000}, 4.0), 6))
    assert [(t, s) for t, s, _ in got] == [
        (0.0, "BTC-PERP"), (0.0, "ETH-PERP"), (0.25, "BTC-PERP"), (0.25, "ETH-PERP"), (0.5, "BTC-PERP"), (0.5, "ETH-PERP"),
    ]
    assert got[0][2] == 100_000 and got[1][2] == 200_000  # each walk starts where it was


def test_start_prices_when_read_prefer_index_then_mark_then_initial_mark() -> None:
    instruments = default_instruments()
    instruments["ETH-PERP"] = dataclasses.replace(instruments["ETH-PERP"], initial_mark_ticks=150_000)
    engine = Engine(instruments)
    assert start_prices(engine) == {"ETH-PERP": 150_000}  # BTC-PERP: nothing to start from
    engine.apply(c.SetMarkPrice("BTC-PERP", 100_000))
    engine.apply(c.SetMarkPrice("ETH-PERP", 160_000))
    assert start_prices(engine) == {"BTC-PERP": 100_000, "ETH-PERP": 160_000}
    engine.apply(c.SetIndexPrice("BTC-PERP", 99_000))
    assert start_prices(engine) == {"BTC-PERP": 99_000, "ETH-PERP": 160_000}


# -- the running feed: one submission in flight, the rest coalesced ----------------------------


class GatedSubmit:
    """A fake engine loop: every submission waits until the test opens the gate."""

    def __init__(self) -> None:
        self.commands: list[c.SetIndexPrice] = []
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, command: c.SetIndexPrice) -> list[Any]:
        self.commands.append(command)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        return []


async def test_feed_when_a_submission_is_pending_keeps_only_the_latest_price_per_symbol() -> None:
    submit = GatedSubmit()
    feed = PriceFeed(iter(()), submit)
    feed.offer("BTC-PERP", 1)
    await asyncio.sleep(0)  # the first goes out at once
    for price in (2, 3, 4):
        feed.offer("BTC-PERP", price)
    feed.offer("ETH-PERP", 10)
    await asyncio.sleep(0)
    assert [(x.symbol, x.price_ticks) for x in submit.commands] == [("BTC-PERP", 1)]
    assert feed.in_flight and feed.coalesced == {"BTC-PERP": 2}
    submit.gate.set()
    while feed.in_flight:
        await asyncio.sleep(0)
    assert [(x.symbol, x.price_ticks) for x in submit.commands] == [("BTC-PERP", 1), ("BTC-PERP", 4), ("ETH-PERP", 10)]
    assert submit.most_in_flight == 1
    assert feed.sent == {"BTC-PERP": 2, "ETH-PERP": 1}
    await feed.stop()


async def test_feed_when_its_schedule_is_all_due_at_once_never_has_two_commands_in_flight() -> None:
    submit = GatedSubmit()
    updates = ((0.0, "BTC-PERP", p) for p in range(1, 1_001))
    feed = PriceFeed(updates, submit)
    feed.start()
    while not feed.finished:
        await asyncio.sleep(0)
    assert len(submit.commands) == 1 and submit.most_in_flight == 1
    assert sum(feed.coalesced.values()) == 998  # 1 sent, 1,000 (the last) waiting, the rest dropped
    submit.gate.set()
    while feed.in_flight:
        await asyncio.sleep(0)
    assert [x.price_ticks for x in submit.commands] == [1, 1_000]
    await feed.stop()


async def test_feed_when_stopped_mid_submission_cancels_quietly(caplog: pytest.LogCaptureFixture) -> None:
    submit = GatedSubmit()
    feed = PriceFeed(synthetic_schedule(1, {"BTC-PERP": 100_000}, 1_000.0), submit)
    feed.start()
    while not submit.commands:
        await asyncio.sleep(0.001)
    with caplog.at_level(logging.WARNING):
        await feed.stop()
    assert not feed.in_flight and caplog.records == []
    await feed.stop()  # twice: nothing left to stop


async def test_feed_when_the_engine_halts_stops_offering(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    async def halted(command: c.SetIndexPrice) -> list[Any]:
        calls.append(command)
        raise EngineHalted("engine halted: boom")

    feed = PriceFeed(((0.0, "BTC-PERP", p) for p in itertools.count(1)), halted, label="test")
    with caplog.at_level(logging.WARNING, logger="service.feed"):
        feed.start()
        for _ in range(50):
            await asyncio.sleep(0)
    assert len(calls) == 1
    assert [r.getMessage() for r in caplog.records] == ["price feed test stopped: engine halted: boom"]
    await feed.stop()


# -- the shipped paths -------------------------------------------------------------------------


def _make_feeds() -> Any:
    spec = importlib.util.spec_from_file_location("make_feeds", FEEDS / "make_feeds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_feeds_when_regenerated_are_byte_for_byte_what_is_committed(tmp_path: Path) -> None:
    _make_feeds().main(tmp_path)
    for name in ("calm.csv", "crash25.csv", "flash10.csv"):
        assert (tmp_path / name).read_bytes() == (FEEDS / name).read_bytes(), name


@pytest.mark.parametrize(
    ("name", "drop", "bottom_s", "last_s"),
    [("calm", 0.01, None, 1_200), ("crash25", 0.25, 210, 600), ("flash10", 0.10, 34, 300)],
    ids=["calm", "crash25", "flash10"],
)
def test_shipped_feed_when_read_under_the_sandbox_rules_has_the_shape_it_promises(
    name: str, drop: float, bottom_s: int | None, last_s: int
) -> None:
    instruments = load_engine_config(FEEDS / "sandbox.toml").instruments
    feed = read_csv(FEEDS / f"{name}.csv", instruments)  # on each symbol's tick grid, or refused
    assert feed.symbols == ["BTC-PERP", "ETH-PERP"] and feed.rows[-1][0] == last_s
    for symbol, start in (("BTC-PERP", 100_000), ("ETH-PERP", 200_000)):
        prices = [(int(t), p) for t, s, p in feed.rows if s == symbol]
        assert [t for t, _ in prices] == list(range(last_s + 1))  # one price a second
        assert prices[0][1] == start == instruments[symbol].initial_mark_ticks
        low = min(p for _, p in prices)
        if bottom_s is None:  # calm: within 1%, and back where it started (loops without a jump)
            assert low > start * (1 - drop) and prices[-1][1] == start
            continue
        top = prices[30][1]  # the fall starts at 30 s
        assert low == pytest.approx(top * (1 - drop), abs=1) and prices[bottom_s][1] == low
        assert prices[-1][1] > low * 1.05  # a (partial) recovery
    assert (FEEDS / f"{name}.csv").stat().st_size < 64_000
