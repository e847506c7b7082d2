"""The funding scheduler (service/scheduler.py): round times, the catch-up rule, and rounds
stamped with their round time (not with when they ran), against a real engine on a fake
clock."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from engine import commands as c
from engine.engine import Engine
from engine.events import FundingPaid, FundingRateChanged
from engine.instruments import default_instruments
from service.scheduler import FundingScheduler, catch_up_rounds, next_round

S = 1_000_000_000  # ns per second
BTC, ETH = "BTC-PERP", "ETH-PERP"
T0 = 1_700_000_040 * S  # a whole minute of the epoch (1,700,000,040 = 28,333,334 x 60)


@pytest.mark.parametrize(
    ("now_ns", "expected"),
    [
        (T0 - 1, (T0, [BTC, ETH])),  # both due at a whole minute that is also a whole 30 s
        (T0, (T0 + 30 * S, [ETH])),  # strictly after now
        (T0 + 29 * S, (T0 + 30 * S, [ETH])),
        (T0 + 31 * S, (T0 + 60 * S, [BTC, ETH])),
    ],
    ids=["both-due", "exactly-at-a-round", "eth-first", "both-again"],
)
def test_next_round_when_intervals_differ_gives_the_first_time_and_every_symbol_due_then(
    now_ns: int, expected: tuple[int, list[str]]
) -> None:
    assert next_round(now_ns, {BTC: 60, ETH: 30}) == expected


@pytest.mark.parametrize(
    ("last", "now_ns", "expected"),
    [
        (None, T0 + 600 * S, []),  # never had a round: waits for the next round time
        (T0, T0 + 59 * S, []),  # the latest round time at or before now is the last round
        (T0, T0 + 60 * S, [(BTC, T0 + 60 * S)]),
        (T0, T0 + 3_601 * S, [(BTC, T0 + 3_600 * S)]),  # 60 rounds missed: one, at the latest
        (T0 + 17 * S, T0 + 61 * S, [(BTC, T0 + 60 * S)]),  # an admin round in between
        (T0 + 120 * S, T0 + 61 * S, []),  # the wall clock went back: nothing to catch up
    ],
    ids=["no-history", "up-to-date", "one-missed", "many-missed-one-round", "admin-round", "clock-back"],
)
def test_catch_up_rounds_when_the_service_starts_applies_one_round_at_the_latest_time(
    last: int | None, now_ns: int, expected: list[tuple[str, int]]
) -> None:
    assert catch_up_rounds(now_ns, {BTC: 60}, {BTC: last}) == expected


class FakeTime:
    """A wall clock that moves only when the scheduler sleeps; stops it after `until_ns`."""

    def __init__(self, now_ns: int, until_ns: int) -> None:
        self.now_ns = now_ns
        self.until_ns = until_ns
        self.sleeps: list[float] = []

    def clock(self) -> int:
        return self.now_ns

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_ns += round(seconds * S)
        if self.now_ns > self.until_ns:
            raise asyncio.CancelledError
        await asyncio.sleep(0)


def _engine(interval_s: int = 60) -> Engine:
    """BTC-PERP and ETH-PERP funded every `interval_s`; BTC-PERP with a mark and a long and a
    short of 1 BTC each, ETH-PERP without a mark."""
    instruments = {
        s: dataclasses.replace(i, funding_interval_s=interval_s) for s, i in default_instruments().items()
    }
    engine = Engine(instruments)
    engine.apply(c.SetMarkPrice(BTC, 100_000))
    ids = []
    for _ in range(2):
        (created,) = engine.apply(c.CreateAccount())
        engine.apply(c.Deposit(created.account_id, 10**13))
        ids.append(created.account_id)
    engine.apply(c.PlaceOrder(ids[1], BTC, "sell", 1_000, 100_000))
    engine.apply(c.PlaceOrder(ids[0], BTC, "buy", 1_000, 100_000))
    return engine


async def _run(engine: Engine, fake: FakeTime) -> list[tuple[c.ApplyFunding, list[Any]]]:
    """Run the scheduler until the fake clock passes its end; what it submitted, applied."""
    applied = []

    async def submit(command: c.ApplyFunding) -> list[Any]:
        events = engine.apply(command)
        engine.check_invariants()
        applied.append((command, events))
        return events

    scheduler = FundingScheduler(engine, submit, clock_ns=fake.clock, sleep=fake.sleep)
    with pytest.raises(asyncio.CancelledError):
        await scheduler.run()
    return applied


async def test_scheduler_when_rounds_come_stamps_each_with_its_round_time_and_skips_symbols_without_a_mark() -> None:
    engine = _engine()
    fake = FakeTime(T0 + 12 * S + 345, until_ns=T0 + 200 * S)
    applied = await _run(engine, fake)
    assert [(cmd.symbol, cmd.rate_e8, cmd.ts_ns) for cmd, _ in applied] == [
        (BTC, None, T0 + 60 * S),
        (BTC, None, T0 + 120 * S),
        (BTC, None, T0 + 180 * S),
    ]  # ETH-PERP has no mark: no round
    for cmd, events in applied:
        assert all(e.ts_ns == cmd.ts_ns for e in events)  # the events carry the round's time too
        (rate,) = [e for e in events if type(e) is FundingRateChanged]
        assert rate.rate_e8 == 10_000  # no premium samples: the interest, 100 ppm
        paid = sorted(e.amount_atoms for e in events if type(e) is FundingPaid)
        assert paid[0] < 0 < paid[1]  # longs pay shorts
    assert [ts for ts, _ in engine.funding_history[BTC]] == [T0 + 60 * S, T0 + 120 * S, T0 + 180 * S]
    assert fake.sleeps[0] == pytest.approx(60 - 12 - 345e-9)


async def test_scheduler_when_it_had_rounds_before_a_gap_applies_one_catch_up_round_then_goes_on() -> None:
    engine = _engine()
    engine.apply(c.ApplyFunding(BTC, None, ts_ns=T0))  # the last round before the service stopped
    fake = FakeTime(T0 + 10 * 60 * S + 5 * S, until_ns=T0 + 11 * 60 * S + 1)  # back 10 minutes later
    applied = await _run(engine, fake)
    assert [(cmd.symbol, cmd.ts_ns) for cmd, _ in applied] == [
        (BTC, T0 + 10 * 60 * S),  # one catch-up round, at the latest round time, not nine
        (BTC, T0 + 11 * 60 * S),  # then the next round on schedule
    ]
    assert fake.sleeps[0] == pytest.approx(55)  # the catch-up did not wait


async def test_scheduler_when_its_rounds_apply_keeps_a_tally_of_rounds_paid_and_received() -> None:
    engine = _engine()
    fake = FakeTime(T0 - S, until_ns=T0 + 60 * S)
    tally: Any = None

    async def submit(command: c.ApplyFunding) -> list[Any]:
        return engine.apply(command)

    scheduler = FundingScheduler(engine, submit, clock_ns=fake.clock, sleep=fake.sleep)
    with pytest.raises(asyncio.CancelledError):
        await scheduler.run()
    tally = scheduler.tally[BTC]
    # 1 BTC at 10,000 USD, 0.01%: the long pays 1 USD, the short receives 1 USD
    assert (tally.rounds, tally.paid_atoms, tally.received_atoms, tally.last_rate_e8) == (2, 2 * 10**8, 2 * 10**8, 10_000)
    assert scheduler.tally[ETH].rounds == 0
