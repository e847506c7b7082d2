"""Where the engine stands in the command bus (service/bus.py), kept with its state.

A command that arrives over the bus carries the id of its stream entry and an idempotency
key chosen by whoever sent it (a gateway). The engine records both with the command in its
journal (service/storage/codec.py, `origin`) and in every snapshot (its meta), so after a
restart it knows, exactly as of the state it recovered:

- `cursor`: the last journaled bus entry. Consumption resumes after it, so no command is
  skipped, and none that reached the journal is applied again. An entry applied but not
  journaled when the process died was answered to nobody (answers wait for the journal),
  so applying it again after the restart is its first known application.
- `keys`: the idempotency keys of the last `window` journaled bus commands, each with the
  seq range of its events. A command whose key is among them is not applied again; its
  sender hears "duplicate" with the original seq range (a gateway that retries).

Only commands that made events are journaled, so only they enter the ledger. A bus command
that changed nothing (e.g. cancel-all with nothing open) leaves no trace: the consumer
removes its entry from the stream before answering (service/bus.py), so it is never read
again; sent again with the same key, it is applied again, which can only be its first
effect.

The window is a count of commands, not a time: 100,000 keys by default
(EXCHANGE_BUS_DEDUPE_WINDOW), about 10 MB held and written with each snapshot.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

START = "0-0"  # before the first entry of any stream


def entry_order(entry_id: str) -> tuple[int, int]:
    """A Redis stream entry id `ms-n` as a comparable pair."""
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


class BusLedger:
    """The bus cursor and the recent idempotency keys (key -> (seq_before, seq))."""

    def __init__(self, window: int = 100_000) -> None:
        if window < 1:
            raise ValueError("the dedupe window holds at least one key")
        self.window = window
        self.cursor = START
        self.keys: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def seen(self, key: str) -> tuple[int, int] | None:
        """The seq range a command with this key produced, if it is in the window."""
        return self.keys.get(key)

    def applied(self, entry_id: str, key: str, seq_before: int, seq: int) -> None:
        """A bus command was applied (or found a duplicate: then only the cursor moves)."""
        if entry_order(entry_id) > entry_order(self.cursor):
            self.cursor = entry_id
        if key in self.keys:
            return
        self.keys[key] = (seq_before, seq)
        if len(self.keys) > self.window:
            self.keys.popitem(last=False)

    def used(self) -> bool:
        """Whether any bus command reached the journal (else snapshots need no meta)."""
        return bool(self.keys) or self.cursor != START

    def to_meta(self) -> dict[str, Any]:
        """What a snapshot keeps (JSON-able)."""
        return {"bus_cursor": self.cursor, "bus_keys": [[k, a, b] for k, (a, b) in self.keys.items()]}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], window: int = 100_000) -> BusLedger:
        ledger = cls(window)
        cursor = meta.get("bus_cursor")
        if isinstance(cursor, str):
            entry_order(cursor)  # a malformed cursor fails here, at the start, not later
            ledger.cursor = cursor
        for key, seq_before, seq in meta.get("bus_keys", ()):
            ledger.keys[key] = (seq_before, seq)
        while len(ledger.keys) > window:
            ledger.keys.popitem(last=False)
        return ledger
