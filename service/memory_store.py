"""Events kept in process when Redis is not configured (no `EXCHANGE_REDIS_URL`).

`MemoryEventStore` stands in for `RedisPublisher` (service/publisher.py): it keeps the last
events in a ring (`memory_events_kept`), formatted on demand by `entries()` exactly as the
Redis streams would hold them (used by in-process tests).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from engine.events import PositionDeleveraged
from service.format import EventFormatter
from service.publisher import ADL_STREAM, EVENTS_STREAM, event_data_json


class MemoryEventStore:
    """Events kept in process (no Redis): the last `maxlen` engine events."""

    conflict: str | None = None  # never: nothing outside the process holds events
    last_error: str | None = None  # never: keeping an event cannot fail
    conflict_label = ""
    connected = True

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
            data = event_data_json(self.formatter.data(event))[0].decode()
            out.append((f"{event.seq}-0", {"type": event.TYPE, "data": data}))
        return out

    def backlog(self) -> int:
        return 0

    def held(self) -> int:
        return 0

    async def start(self) -> None:
        return None

    async def stop(self, timeout: float = 5.0) -> None:
        return None

    async def ping(self) -> bool:
        return True

    def stuck(self) -> str | None:
        return None  # nothing to wait for: events are kept as they are delivered
