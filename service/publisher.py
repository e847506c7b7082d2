"""Event publication: Redis Streams (SPEC §8), or an in-process ring when Redis is not configured.

Redis: `RedisPublisher.enqueue(events)` is called by the engine task and only appends to a
bounded in-memory backlog (it never awaits). A separate task drains the backlog in batches
through one pipeline (`transaction=False`): every event is `XADD exchange:events` and ADL
events are also `XADD exchange:adl`, with entry id `<seq>-0`, fields `type` and `data`
(orjson), and `MAXLEN ~ stream_maxlen`.

Guarantees and known limits:
- A Redis that is down or slow never blocks trading: the engine only touches the deque.
- The backlog is bounded (`publish_backlog`). On overflow the *oldest* events are dropped
  and counted (`dropped`, metric `exchange_publish_dropped_events`): the streams then have a
  gap. Re-deriving the missing range from the journal is the durability issue's job (5).
- Errors are retried with exponential backoff (0.05 s doubling to 5 s). On every (re)connect
  the publisher reads the last id of each stream (`XREVRANGE + - COUNT 1`) and skips events
  whose seq is <= it, so a retry or a restart never duplicates an entry; Redis itself also
  refuses ids <= the stream's top, and such refusals are treated as "already there".
- Without a journal (issue 5) a restarted service starts again at seq 1; if the streams
  already hold higher ids, the new events are skipped as duplicates. The publisher logs an
  error when it sees that.

Without `EXCHANGE_REDIS_URL`, `MemoryEventStore` keeps the last events in a ring
(`memory_events_kept`), formatted on demand by `entries()` (used by in-process tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from engine.events import PositionDeleveraged
from service.format import EventFormatter
from service.metrics import Metrics

log = logging.getLogger("service.publisher")

EVENTS_STREAM = "exchange:events"
ADL_STREAM = "exchange:adl"


def _seq_of(entry_id: Any) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.split("-", 1)[0])


class MemoryEventStore:
    """Events kept in process (no Redis): the last `maxlen` engine events."""

    def __init__(self, formatter: EventFormatter, maxlen: int) -> None:
        self.formatter = formatter
        self.ring: deque[Any] = deque(maxlen=maxlen)
        self.last_published_seq = 0

    def enqueue(self, events: list[Any]) -> None:
        """Keep the batch (engine task; never blocks)."""
        if events:
            self.ring.extend(events)
            self.last_published_seq = events[-1].seq

    def entries(self, stream: str = EVENTS_STREAM) -> list[tuple[str, dict[str, str]]]:
        """What the Redis stream would hold: [(f"{seq}-0", {"type": ..., "data": json})]."""
        out = []
        for event in self.ring:
            if stream == ADL_STREAM and type(event) is not PositionDeleveraged:
                continue
            data = orjson.dumps(self.formatter.data(event)).decode()
            out.append((f"{event.seq}-0", {"type": event.TYPE, "data": data}))
        return out

    def backlog(self) -> int:
        return 0

    async def start(self) -> None:
        return None

    async def stop(self, timeout: float = 5.0) -> None:
        return None

    async def ping(self) -> bool:
        return True


class RedisPublisher:
    """Drains engine events to Redis Streams from its own task."""

    def __init__(
        self,
        url: str,
        formatter: EventFormatter,
        metrics: Metrics,
        maxlen: int = 100_000,
        backlog_max: int = 1_000_000,
        batch: int = 1_000,
    ) -> None:
        self.url = url
        self.formatter = formatter
        self.metrics = metrics
        self.maxlen = maxlen
        self.backlog_max = backlog_max
        self.batch = batch
        self.redis = aioredis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=1.0, health_check_interval=0
        )
        self._backlog: deque[Any] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0
        self.last_published_seq = 0  # highest seq known to be in exchange:events
        self._last_adl_seq = 0
        self._synced = False  # last ids read since the last (re)connect
        self.connected = False

    # -- engine side ---------------------------------------------------------------------

    def enqueue(self, events: list[Any]) -> None:
        """Append a batch to the backlog (engine task; never blocks, never awaits)."""
        if not events:
            return
        backlog = self._backlog
        backlog.extend(events)
        over = len(backlog) - self.backlog_max
        if over > 0:
            for _ in range(over):
                backlog.popleft()
            self.dropped += over
            self.metrics.publish_dropped.inc(over)
        self._wake.set()

    def backlog(self) -> int:
        """Events waiting to be written."""
        return len(self._backlog)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-publisher")

    async def stop(self, timeout: float = 5.0) -> None:
        """Flush what can be flushed within `timeout`, then stop and close the client."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.warning(
                    "publisher: %d events not flushed to Redis at shutdown", len(self._backlog)
                )
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self.redis.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers within half a second."""
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 0.5))
        except Exception:
            return False

    # -- the publisher task --------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.05
        while True:
            if not self._backlog:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if not self._synced:
                    await self._sync_last_ids()
                await self._publish_some()
                delay = 0.05
                if not self.connected:
                    log.info("publisher: connected to Redis, backlog %d", len(self._backlog))
                self.connected = True
            except Exception as exc:  # Redis down, slow, or refusing: keep trading, retry later
                self.metrics.publish_errors.inc()
                if self.connected or delay == 0.05:
                    log.warning(
                        "publisher: Redis error (%s); backlog %d, retrying", exc, len(self._backlog)
                    )
                self.connected = False
                self._synced = False
                await asyncio.sleep(delay)  # also while stopping: stop()'s timeout bounds it
                delay = min(delay * 2, 5.0)

    async def _sync_last_ids(self) -> None:
        """Read each stream's last id, so nothing at or below it is sent again."""
        last_events = await self.redis.xrevrange(EVENTS_STREAM, "+", "-", count=1)
        last_adl = await self.redis.xrevrange(ADL_STREAM, "+", "-", count=1)
        ev_seq = _seq_of(last_events[0][0]) if last_events else 0
        adl_seq = _seq_of(last_adl[0][0]) if last_adl else 0
        head = self._backlog[0].seq if self._backlog else 0
        if (
            ev_seq > self.last_published_seq
            and head
            and ev_seq >= head
            and self.last_published_seq == 0
        ):
            log.error(
                "publisher: %s already holds ids up to %d but this engine is at seq %d; "
                "events up to %d will be skipped as duplicates (a restart without a journal, issue 5)",
                EVENTS_STREAM,
                ev_seq,
                head,
                ev_seq,
            )
        self.last_published_seq = max(self.last_published_seq, ev_seq)
        self._last_adl_seq = max(self._last_adl_seq, adl_seq)
        self._synced = True

    async def _publish_some(self) -> None:
        backlog = self._backlog
        chunk = list(itertools.islice(backlog, 0, self.batch))
        pipe = self.redis.pipeline(transaction=False)
        data = self.formatter.data
        sent: list[int] = []
        for event in chunk:
            seq = event.seq
            is_adl = type(event) is PositionDeleveraged
            if seq <= self.last_published_seq and not (is_adl and seq > self._last_adl_seq):
                continue
            fields: dict[Any, Any] = {"type": event.TYPE, "data": orjson.dumps(data(event))}
            entry_id = f"{seq}-0"
            if seq > self.last_published_seq:
                pipe.xadd(EVENTS_STREAM, fields, id=entry_id, maxlen=self.maxlen, approximate=True)
                sent.append(seq)
            if is_adl and seq > self._last_adl_seq:
                pipe.xadd(ADL_STREAM, fields, id=entry_id, maxlen=self.maxlen, approximate=True)
                sent.append(-seq)
        if sent:
            results = await pipe.execute(raise_on_error=False)
            for result in results:
                if isinstance(result, Exception):
                    if isinstance(result, ResponseError) and "equal or smaller" in str(result):
                        continue  # already in the stream: an earlier attempt got through
                    raise result
            for seq in sent:
                if seq > 0:
                    self.last_published_seq = max(self.last_published_seq, seq)
                else:
                    self._last_adl_seq = max(self._last_adl_seq, -seq)
            self.metrics.published.inc(sum(1 for s in sent if s > 0))
        # Drop what is now known to be in Redis. Overflow may have popped from the left in the
        # meantime, so compare seqs rather than counting.
        last = chunk[-1].seq if chunk else 0
        while backlog and backlog[0].seq <= last:
            backlog.popleft()
        if not sent:
            await asyncio.sleep(0)  # a chunk of skipped duplicates made no I/O: let others run
