"""The funding scheduler (SPEC §12): a funding round per symbol at every funding time.

Round times are aligned to the Unix epoch (service/funding_times.py): every
`funding_interval_s` of each instrument (28,800 s: 00:00, 08:00, 16:00 UTC). At each round
time `T` the scheduler submits `ApplyFunding(symbol, None, ts_ns=T)` for every symbol that
has a mark then: the rate computed from the premium samples since the last round. The
command is stamped with `T`, not with the moment it ran (`EngineLoop.submit(stamp=False)`),
so the journal holds the round's time and a replay pays exactly the same; its events carry
`T` too, which may be a few milliseconds before the command applied just before it.

Catch-up at start: a symbol that has had a round before (its `funding_history` is not
empty) and whose last round is older than the latest round time at or before now (the
service was stopped, or `EXCHANGE_FUNDING` was off, across one or more round times) gets
one round at once, stamped with that latest round time: one round, not one per missed
interval, at the mark of now, with the premium samples gathered since its last round.
A symbol that never had a round waits for its next round time.

One command per symbol per round: the scheduler never holds up order entry. It keeps, per
symbol, what its own rounds did (`tally`: rounds, paid, received; exported as metrics by
service/runtime.py) and logs one line per round. Rounds applied by an admin are not in the
tally. `EXCHANGE_FUNDING=off` turns the scheduler off (rounds only by admin).

Known limit: the wait for a round time runs on the event loop's monotonic clock and is
checked against the wall clock (`time_ns`) on waking; a wall clock stepped backwards delays
the round until the wall clock reaches it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.commands import ApplyFunding
from engine.engine import Engine
from engine.events import CommandRejected, FundingPaid, FundingRateChanged
from service.engine_loop import EngineHalted
from service.funding_times import NS, last_funding_time_ns, next_funding_time_ns

log = logging.getLogger("service.scheduler")

Submit = Callable[[ApplyFunding], Awaitable[Any]]
Sleep = Callable[[float], Awaitable[Any]]


def next_round(now_ns: int, intervals_s: Mapping[str, int]) -> tuple[int, list[str]]:
    """The next round time strictly after `now_ns` over all symbols, and the symbols due then."""
    due = {symbol: next_funding_time_ns(now_ns, s) for symbol, s in intervals_s.items()}
    first = min(due.values())
    return first, sorted(symbol for symbol, t in due.items() if t == first)


def catch_up_rounds(
    now_ns: int, intervals_s: Mapping[str, int], last_round_ns: Mapping[str, int | None]
) -> list[tuple[str, int]]:
    """(symbol, round time) for every symbol whose last round is older than its latest round
    time at or before `now_ns`; symbols without a round so far are left out."""
    out = []
    for symbol in sorted(intervals_s):
        last = last_round_ns.get(symbol)
        latest = last_funding_time_ns(now_ns, intervals_s[symbol])
        if last is not None and last < latest:
            out.append((symbol, latest))
    return out


@dataclass
class Tally:
    """What the scheduler's rounds of one symbol did since the service started."""

    rounds: int = 0
    paid_atoms: int = 0  # by the payers, positive
    received_atoms: int = 0  # by the receivers; paid - received went to the insurance fund
    last_rate_e8: int | None = None


class FundingScheduler:
    """Submits a funding round per symbol at each round time (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        submit: Submit,
        clock_ns: Callable[[], int] = time.time_ns,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self.submit = submit
        self.clock_ns = clock_ns
        self.sleep = sleep
        self.intervals_s = {s: engine.instruments[s].funding_interval_s for s in engine.symbols}
        self.tally = {s: Tally() for s in engine.symbols}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the scheduler (call from inside the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name="funding-scheduler")

    async def stop(self) -> None:
        """Stop; a round already queued is still applied by the engine loop."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def run(self) -> None:
        """The catch-up rounds, then every round as its time comes, until cancelled or halted."""
        try:
            history = self.engine.funding_history
            last = {s: (history[s][-1][0] if history[s] else None) for s in self.engine.symbols}
            for symbol, ts_ns in catch_up_rounds(self.clock_ns(), self.intervals_s, last):
                await self._apply(symbol, ts_ns, catch_up=True)
            while True:
                ts_ns, symbols = next_round(self.clock_ns(), self.intervals_s)
                while (wait_ns := ts_ns - self.clock_ns()) > 0:  # woken early: wait the rest
                    await self.sleep(wait_ns / NS)
                for symbol in symbols:
                    if symbol in self.engine.marks:  # no mark yet: nothing to pay at
                        await self._apply(symbol, ts_ns)
        except EngineHalted as exc:
            log.warning("funding scheduler stopped: %s", exc.message)

    async def _apply(self, symbol: str, ts_ns: int, catch_up: bool = False) -> None:
        events = await self.submit(ApplyFunding(symbol, None, ts_ns=ts_ns))
        when = datetime.fromtimestamp(ts_ns / NS, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if events and isinstance(events[0], CommandRejected):
            log.warning("funding %s at %s refused: %s", symbol, when, events[0].message)
            return
        tally = self.tally[symbol]
        tally.rounds += 1
        paid = received = positions = 0
        rate = None
        for e in events:
            if type(e) is FundingRateChanged and e.symbol == symbol:
                rate = e
            elif type(e) is FundingPaid:
                positions += 1
                if e.amount_atoms < 0:
                    paid -= e.amount_atoms
                else:
                    received += e.amount_atoms
        tally.paid_atoms += paid
        tally.received_atoms += received
        if rate is not None:
            tally.last_rate_e8 = rate.rate_e8
            premium = "given" if rate.premium_e8 is None else f"premium {_pct(rate.premium_e8)}"
            log.info(
                "funding %s%s at %s: rate %s (%s, %d samples), %d positions: paid %s USD, received %s USD",
                symbol,
                " (catch-up round)" if catch_up else "",
                when,
                _pct(rate.rate_e8),
                premium,
                rate.samples,
                positions,
                _usd(paid),
                _usd(received),
            )


def _pct(value_e8: int) -> str:
    """A rate in parts per 1e8 as a signed percentage, e.g. `+0.0100%`."""
    return f"{value_e8 / 1e6:+.4f}%"


def _usd(atoms: int) -> str:
    return f"{atoms / 1e8:,.2f}"
