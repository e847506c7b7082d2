"""The single writer: one asyncio task owns the `Engine`; nothing else changes its state.

Handlers `await engine_loop.submit(command, after)`. The task drains the queue in batches
(everything available, up to `max_batch`) and for each command:

1. stamps `ts_ns = time.time_ns()` (the engine never reads a clock), unless the submitter
   stamped it itself (`submit(command, stamp=False)`: the funding scheduler's rounds carry
   the round's time, service/scheduler.py),
2. `engine.apply(command)` -> events,
3. runs `after(engine, events)` right away, so a handler's answer (e.g. the order after
   matching) is a snapshot taken before any later command of the batch touches it.

Then, once per batch: `capture(events)` (when set) reads whatever derived state must
travel with the batch (the WebSocket hub's book snapshots and ADL quantiles, service/ws_fanout.py)
while the engine is exactly at the end of that batch (after a halt mid-batch: the state the
GET routes show, so the commands of that batch that were answered 200 reach the book too); `journal.append_batch(records)` writes
the batch's commands; the events go to `on_delivered(events, captured)` and to every sink
(Redis publisher or the in-process ring; neither ever awaits), and only then are the futures
resolved: no client hears of a command, and no event or state derived from it leaves the
process, before it is journaled. With EXCHANGE_FSYNC=batch the fsync is
pipelined: `journal.request_sync` has a helper process fsync what was written while this
task goes on with the next batches, and the batches it covers are delivered when it
returns (`_committed`; the answer is polled for between batches). Between batches, once
everything applied is journaled, a snapshot is started when one is due: by default a forked
child writes it while this task goes on (`journal.start_snapshot`, service/storage/
snapshotter.py), so the loop pauses only for the fork. Reads (GET
routes) look at engine state directly from their handler: `apply` is synchronous and the
event loop single-threaded, so a read always sees the state between two commands.

If `apply` raises (an `InvariantViolation` or any bug), the loop stops for good: pending and
later submissions fail with `EngineHalted` (HTTP 503 ENGINE_HALTED) and /readyz fails. State
is no longer trustworthy, so the service never limps on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from engine.commands import Command
from engine.engine import Engine
from engine.events import (
    REJECTION_TYPES,
    AccountLiquidated,
    PositionDeleveraged,
    TradeExecuted,
)
from service.metrics import Metrics
from service.storage.bus_ledger import BusLedger

log = logging.getLogger("service.engine_loop")

After = Callable[[Engine, list[Any]], Any]
Sink = Callable[[list[Any]], None]
Capture = Callable[[list[Any]], Any]  # called right after a batch is applied
Delivered = Callable[[list[Any], Any], None]  # (the batch's events, what capture returned)


class EngineHalted(Exception):
    """The engine loop has stopped (a broken invariant, a bug, or shutdown)."""

    def __init__(self, message: str = "the engine has halted") -> None:
        super().__init__(message)
        self.message = message


class Journal(Protocol):
    """What the engine loop needs from durability (service/storage/durable.py)."""

    def append_batch(self, records: Sequence[tuple[Any, ...]], sync: bool = True) -> int: ...

    @property
    def deferred_sync(self) -> bool: ...

    def request_sync(self, on_done: Callable[[Exception | None], None]) -> None: ...

    def poll_sync(self) -> None: ...

    def snapshot_due(self) -> bool: ...

    def start_snapshot(self, engine: Engine, published_seq: int | None = None) -> None: ...


_STOP = object()


@dataclasses.dataclass(frozen=True)
class Duplicate:
    """A bus command whose idempotency key the engine has applied before: not applied
    again; `seq_before`..`seq` is the range of the first one's events (service/bus.py)."""

    seq_before: int
    seq: int


class EngineLoop:
    """Owns the engine; applies submitted commands one at a time in arrival order."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        journal: Journal,
        sinks: Sequence[Sink] = (),
        max_batch: int = 512,
        capture: Capture | None = None,
        on_delivered: Delivered | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.journal = journal
        self.published_seq: Callable[[], int] = lambda: 0  # set by the runtime (snapshot pruning)
        self.bus: BusLedger | None = None  # the command bus's ledger (engine role, service/bus.py)
        self.sinks = list(sinks)
        self.capture = capture
        self.on_delivered = on_delivered
        self.max_batch = max_batch
        self.halted = False
        self.halt_reason: str | None = None
        self._stopping = False
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        # (events, answers, commands, captured) of batches written but not yet delivered
        self._to_commit: list[tuple[list[Any], list[Any], int, Any]] = []
        # the last seq handed to the sinks: everything up to it is journaled (and durable)
        self.delivered_seq = engine.seq
        self._committing: list[tuple[list[Any], list[Any], int, Any]] | None = None  # fsync in flight
        self._commit_t0 = 0.0
        self._hold_commit = False  # a batch is about to be written: let it join the next fsync
        self._drained: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine task (call from inside the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="engine-loop")

    @property
    def alive(self) -> bool:
        """Whether the engine task is running and accepting commands."""
        return (
            self._task is not None
            and not self._task.done()
            and not self.halted
            and not self._stopping
        )

    def queue_depth(self) -> int:
        """Commands waiting for the engine task."""
        return self._queue.qsize()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking commands, apply everything already queued, then end the task."""
        if self._task is None:
            return
        self._stopping = True
        self._queue.put_nowait(_STOP)
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
            if self._committing is not None or self._to_commit:
                self._drained = asyncio.get_running_loop().create_future()
                await asyncio.wait_for(self._drained, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            log.error("engine loop did not drain within %.1fs; cancelling", timeout)
            self._task.cancel()
            # not known to be durable: fail them (and halt, so no snapshot claims them)
            undelivered = (self._committing or []) + self._to_commit
            self._committing, self._to_commit = None, []
            self._fail_answers(TimeoutError("journal commit did not finish"), undelivered, None)
        self._fail_pending(EngineHalted("the service is shutting down"))

    # -- submission ----------------------------------------------------------------------

    async def submit(self, command: Command, after: After | None = None, *, stamp: bool = True) -> Any:
        """Queue `command`; return `after(engine, events)` (or the events) once it was applied.
        `stamp=False` keeps the command's own `ts_ns` instead of the clock's."""
        return await self.enqueue(command, after, stamp=stamp)

    def enqueue(
        self, command: Command, after: After | None = None, *, stamp: bool = True,
        origin: tuple[str, str] | None = None,
    ) -> asyncio.Future[Any]:
        """Queue `command` now (in call order) and return the future of its answer. `origin` =
        (bus entry id, idempotency key) of a command from the command bus: journaled with it,
        and a key already applied is answered `Duplicate` instead (`self.bus`)."""
        if self.halted or self._stopping:
            raise EngineHalted(self.halt_reason or "the service is shutting down")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((command, fut, after, time.perf_counter(), stamp, origin))
        return fut

    # -- the engine task -----------------------------------------------------------------

    async def _run(self) -> None:
        queue = self._queue
        while True:
            item = await queue.get()
            batch = []
            stop = item is _STOP
            if not stop:
                batch.append(item)
                while len(batch) < self.max_batch and not queue.empty():
                    item = queue.get_nowait()
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)
            if self._committing is not None:
                # Deliver what became durable before applying the next batch; the next fsync
                # then starts after that batch is written, so it covers that batch too.
                self._hold_commit = bool(batch)
                self.journal.poll_sync()
                self._hold_commit = False
                if self.halted:  # that fsync failed: this batch must not be applied
                    self._fail_submissions(batch)
                    return
            if batch:
                self._process(batch)
            if stop or self.halted:
                return

    def _process(self, batch: list[Any]) -> None:
        engine = self.engine
        metrics = self.metrics
        records: list[tuple[Any, ...]] = []
        answers: list[tuple[asyncio.Future[Any], Any, bool, float]] = []
        all_events: list[Any] = []
        replace = dataclasses.replace
        time_ns = time.time_ns
        bus = self.bus
        for i, (command, fut, after, t0, stamp, origin) in enumerate(batch):
            if origin is not None and bus is not None:
                done = bus.seen(origin[1])
                if done is not None:  # applied before: once only
                    bus.applied(origin[0], origin[1], *done)
                    answers.append((fut, Duplicate(*done), True, t0))
                    continue
            if stamp:
                command = replace(command, ts_ns=time_ns())
            try:
                events = engine.apply(command)
            except Exception as exc:  # broken invariant or bug: stop, never limp on
                self._halt(exc, command)
                self._fail_submissions(batch[i:])
                break
            if origin is None:
                records.append((command, events))
            else:
                records.append((command, events, origin))
                if bus is not None and events:  # journaled: the ledger says so (bus_ledger.py)
                    bus.applied(origin[0], origin[1], events[0].seq - 1, events[-1].seq)
            all_events.extend(events)
            rejected = bool(events) and isinstance(events[0], REJECTION_TYPES)
            metrics.command(type(command).__name__, events[0].reason if rejected else "ok")
            if after is None:
                answers.append((fut, events, True, t0))
            else:
                try:
                    answers.append((fut, after(engine, events), True, t0))
                except Exception as exc:  # a bug in the service's snapshot code, not in the engine
                    log.exception("answer for %r failed", command)
                    answers.append((fut, exc, False, t0))
        captured = None
        if all_events and self.capture is not None:  # also after a halt: what GET shows
            try:
                captured = self.capture(all_events)
            except Exception:  # a bug in the hub must never stop the engine
                log.exception("capture %r failed", self.capture)
        deferred = self.journal.deferred_sync
        written = 0
        if records:
            try:
                written = self.journal.append_batch(records, sync=not deferred)
            except Exception as exc:  # not durable: nobody may hear of these commands
                pending, self._to_commit = self._to_commit, []
                self._fail_answers(
                    exc, [*pending, (all_events, answers, len(batch), captured)], records[0][0]
                )
                return
        # (a batch that wrote nothing, e.g. cancel-alls with nothing open, needs no fsync,
        # but waits its turn behind batches that do)
        if deferred and (written or self._to_commit or self._committing is not None):
            # Pipelined group commit: the fsync runs in a helper process while this task goes on
            # applying the next batches; events and answers go out only once it has returned,
            # in batch order. Batches written while an fsync is in flight share the next one.
            self._to_commit.append((all_events, answers, len(batch), captured))
            if self._committing is None:
                self._start_commit()
            return
        self._deliver(all_events, answers, len(batch), captured)
        self._maybe_snapshot()

    def _start_commit(self) -> None:
        self._committing, self._to_commit = self._to_commit, []
        self._commit_t0 = time.perf_counter()
        self.journal.request_sync(self._committed)

    def _committed(self, exc: Exception | None) -> None:
        """The fsync returned: deliver the batches it covers, in order; start the next one."""
        covered, self._committing = self._committing or [], None
        if exc is not None:  # not durable: nobody may hear of these commands
            self._fail_answers(exc, covered + self._to_commit, None)
            self._to_commit = []
        else:
            self.metrics.journal_commit.observe(time.perf_counter() - self._commit_t0)
            self.metrics.journal_commit_batches.observe(len(covered))
            for events, answers, n, captured in covered:
                self._deliver(events, answers, n, captured)
            if self._to_commit and not self._hold_commit:
                self._start_commit()  # even when halted: these were applied before the fault
                return
            self._maybe_snapshot()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _deliver(
        self, all_events: list[Any], answers: list[Any], batch_len: int, captured: Any
    ) -> None:
        """Hand a journaled batch's events to the sinks, then answer its clients."""
        metrics = self.metrics
        if all_events:
            self.delivered_seq = all_events[-1].seq
            self._count(all_events)
            if self.on_delivered is not None:
                try:
                    self.on_delivered(all_events, captured)
                except Exception:  # a sink must never stop the engine
                    log.exception("delivery to %r failed", self.on_delivered)
            for sink in self.sinks:
                try:
                    sink(all_events)
                except Exception:  # a sink must never stop the engine
                    log.exception("event sink %r failed", sink)
        now = time.perf_counter()
        observe = metrics.command_latency.observe
        for fut, result, ok, t0 in answers:
            observe(now - t0)
            if fut.done():  # the client went away (request cancelled)
                continue
            if ok:
                fut.set_result(result)
            else:
                fut.set_exception(result)
        metrics.batch_size.observe(batch_len)

    def _fail_answers(self, exc: BaseException, pending: list[Any], command: Command | None) -> None:
        self._halt(exc, command)
        for _, answers, _, _ in pending:
            for fut, _, _, _ in answers:
                if not fut.done():
                    fut.set_exception(EngineHalted(self.halt_reason or "journal failed"))

    def _maybe_snapshot(self) -> None:
        if (
            self.halted
            or self._stopping  # the clean stop writes the final one (service/runtime.py)
            or self._to_commit
            or self._committing
            or not self.journal.snapshot_due()
        ):
            return
        try:
            self.journal.start_snapshot(self.engine, self.published_seq())
        except Exception:  # the journal still holds everything; retried later
            log.exception("snapshot failed")

    def _count(self, events: list[Any]) -> None:
        metrics = self.metrics
        for event in events:
            cls = type(event)
            if cls is TradeExecuted:
                metrics.per_symbol(metrics.trades, event.symbol)
            elif cls is AccountLiquidated:
                metrics.per_symbol(metrics.liquidations, event.symbol)
            elif cls is PositionDeleveraged:
                metrics.per_symbol(metrics.adl_fills, event.symbol)

    def _halt(self, exc: BaseException, command: Command | None) -> None:
        self.halted = True
        self.halt_reason = f"engine halted: {type(exc).__name__}: {exc}"
        self.metrics.engine_halted.set(1)
        log.critical(
            "ENGINE HALTED while applying %r; refusing all further commands", command, exc_info=exc
        )
        self._fail_pending(EngineHalted(self.halt_reason))

    def _fail_submissions(self, items: list[Any]) -> None:
        """Fail (command, future, after, t0, stamp) submissions that will never be applied."""
        for _, fut, *_ in items:
            if not fut.done():
                fut.set_exception(EngineHalted(self.halt_reason or "engine halted"))

    def _fail_pending(self, exc: EngineHalted) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not _STOP and not item[1].done():
                item[1].set_exception(exc)
