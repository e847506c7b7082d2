"""The service's own event history (`GET /v1/events`, SPEC §9): no Redis needed.

Every event the engine loop delivers (journaled and durable) is kept in a ring of the last
`kept` events. Events are numbered without gaps, so the ring is indexed by seq directly.
Older events are regenerated on demand from the journal (snapshot + replay, the same
`EventRegenerator` the Redis publisher uses to catch up), in a worker thread, one request at a
time, at most `regen_chunk` events per request: a request reads on from `next_from_seq`.
After a restart the ring is empty and everything comes from the journal. Events behind a
pruned journal (only a snapshot covers them) cannot be rebuilt: the answer starts at the
first one that can, and says where (`first_available_seq`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

from service.storage.regen import EventRegenerator


class EventHistory:
    """Recent events in memory, older ones regenerated from the journal."""

    def __init__(
        self,
        kept: int,
        regenerator: EventRegenerator | None,
        head_seq: Callable[[], int],
        regen_chunk: int = 20_000,
    ) -> None:
        self.ring: deque[Any] = deque(maxlen=kept)
        self.regenerator = regenerator
        self.head_seq = head_seq  # the last delivered seq (the engine may be ahead, unfsynced)
        self.regen_chunk = regen_chunk
        self._lock = asyncio.Lock()

    def enqueue(self, events: list[Any]) -> None:
        """A sink of the engine loop: keep the delivered batch (never blocks)."""
        self.ring.extend(events)

    def first_in_memory(self) -> int | None:
        return self.ring[0].seq if self.ring else None

    async def read(
        self, from_seq: int, limit: int, wanted: Callable[[Any], bool]
    ) -> tuple[list[Any], int | None, int]:
        """Up to `limit` wanted events with seq >= `from_seq`, oldest first.

        Returns (events, next_from_seq, first_available_seq): `next_from_seq` is where to read
        on (None when the history up to the last delivered event was searched);
        `first_available_seq` is `from_seq` unless older events could not be rebuilt.
        """
        head = self.head_seq()
        out: list[Any] = []
        first_available = from_seq
        seq = from_seq
        first_mem = self.first_in_memory()
        if seq <= head and (first_mem is None or seq < first_mem):
            upto = min(head, (first_mem - 1) if first_mem is not None else head, seq - 1 + self.regen_chunk)
            old, first_available = await self._regenerate(seq - 1, upto)
            out.extend(e for e in old if wanted(e))
            if len(out) >= limit:
                return out[:limit], out[limit].seq if len(out) > limit else out[limit - 1].seq + 1, first_available
            seq = upto + 1
            if first_mem is None or seq < first_mem:  # the chunk ended before memory: read on
                return out, (seq if seq <= head else None), first_available
        if first_mem is not None and seq <= head:
            for event in _from(self.ring, seq - first_mem, head):
                if wanted(event):
                    out.append(event)
                    if len(out) == limit:
                        nxt = event.seq + 1
                        return out, (nxt if nxt <= head else None), first_available
        return out, None, first_available

    async def _regenerate(self, after: int, upto: int) -> tuple[list[Any], int]:
        """Events (after, upto] from the journal, and the first seq it could rebuild."""
        if self.regenerator is None or upto <= after:
            return [], after + 1
        regen = self.regenerator
        async with self._lock:
            try:
                return await asyncio.to_thread(regen, after, upto), after + 1
            except LookupError:  # pruned behind a snapshot: go on from the oldest one above it
                resume = regen.resume_point(after)
                if resume is None or resume >= upto:
                    return [], upto + 1
                return await asyncio.to_thread(regen, resume, upto), resume + 1


def _from(ring: deque[Any], start: int, head: int) -> Iterable[Any]:
    """Ring events from index `start`, up to seq `head` (the ring may hold a batch being delivered)."""
    for event in islice(ring, max(start, 0), None):  # deque indexing is O(n): iterate instead
        if event.seq > head:
            return
        yield event
