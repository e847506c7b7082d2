"""Regenerate old events for the Redis publisher by replaying snapshot + journal, incrementally.

The publisher asks for consecutive chunks `(after, upto]` while it catches up after a restart
or a long Redis outage. Replaying each chunk from scratch (newest snapshot at or below
`after`, the whole journal read again, replay up to `upto`) costs time proportional to the
chunk's distance from that snapshot, so a catch-up of N events costs O(N^2 / chunk).
`EventRegenerator` keeps its private engine, the journal records it has read and its position
in them between calls: consecutive chunks replay every record once, and the journal is read
again only when a chunk ends beyond the records already read (the journal grew meanwhile).

Invariants and limits:
- Its engine is private (pure CPU and file reads): safe in a worker thread while the live
  engine goes on. One call at a time (the publisher awaits each); not thread-safe otherwise.
- A request behind its position (Redis lost events), or one that a newer snapshot serves
  much sooner (`jump_events`), starts again from the newest valid snapshot at or below
  `after` (a fresh engine when there is none).
- Raises LookupError when the journal no longer covers the range (pruned behind the replay
  base); a file pruned under it mid-call is retried once
  from a fresh base.
- While it catches up it holds a second engine and the journal records in memory;
  `release()` drops them (the publisher calls it once nothing is left to regenerate).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.engine import Engine
from service.storage.codec import decode_command
from service.storage.journal import Record, read_journal
from service.storage.snapshot import load_newest, snapshot_seq, snapshots

log = logging.getLogger("service.regen")


class EventRegenerator:
    """`regen(after_seq, upto_seq)` -> the events with after_seq < seq <= upto_seq, in order."""

    def __init__(
        self, data_dir: Path, new_engine: Callable[[], Engine], jump_events: int = 50_000
    ) -> None:
        self.data_dir = data_dir
        self.new_engine = new_engine
        self.jump_events = jump_events
        self._engine: Engine | None = None
        self._carry: list[Any] = []  # events of the last record applied that lie past its `upto`
        self._records: list[Record] = []
        self._next = 0  # index in _records of the next record to apply
        # work done, for tests and logs (never wall-clock): engines built, journal reads, records applied
        self.bases = 0
        self.journal_reads = 0
        self.applied = 0

    def __call__(self, after_seq: int, upto_seq: int) -> list[Any]:
        if upto_seq <= after_seq:
            return []
        try:
            try:
                return self._regenerate(after_seq, upto_seq)
            except FileNotFoundError:  # a segment or snapshot was pruned between listing and reading
                self.release()
                return self._regenerate(after_seq, upto_seq)
        except LookupError:  # its engine cannot go on from there: start afresh next time
            self.release()
            raise

    def resume_point(self, after: int) -> int | None:
        """When the journal no longer covers `after`: the oldest snapshot above it, from which
        regeneration can go on (what lies between is lost), or None."""
        for path in snapshots(self.data_dir):
            if snapshot_seq(path) > after:
                return snapshot_seq(path)
        return None

    def release(self) -> None:
        """Drop the replay engine and the records read (the next call starts from a snapshot)."""
        self._engine = None
        self._carry = []
        self._records = []
        self._next = 0

    @property
    def seq(self) -> int | None:
        """The replay engine's seq (None when released)."""
        return self._engine.seq if self._engine is not None else None

    def _regenerate(self, after: int, upto: int) -> list[Any]:
        engine = self._position(after)
        out = [e for e in self._carry if after < e.seq <= upto]
        self._carry = [e for e in self._carry if e.seq > upto]
        while engine.seq < upto:
            rec = self._next_record(engine.seq, upto)
            events = engine.apply(decode_command(rec.payload))
            self.applied += 1
            if engine.seq != rec.seq:
                self.release()  # the private engine is no longer the journal's state
                raise RuntimeError(
                    f"replay diverged at {rec.path} offset {rec.offset}: recorded seq {rec.seq}, "
                    f"engine reached {engine.seq}"
                )
            for event in events:
                if event.seq > upto:
                    self._carry.append(event)
                elif event.seq > after:
                    out.append(event)
        return out

    def _position(self, after: int) -> Engine:
        """The replay engine, able to produce every event after `after` from here on."""
        engine = self._engine
        if engine is not None:
            if engine.seq > after:  # behind us: only the carried events can serve it
                if self._carry and self._carry[0].seq <= after + 1:
                    return engine
            elif not self._newer_base(engine.seq, after):
                return engine
        return self._rebase(after)

    def _newer_base(self, seq: int, after: int) -> bool:
        """Whether a snapshot at or below `after` is far enough ahead of `seq` to load instead."""
        for path in reversed(snapshots(self.data_dir)):
            at = snapshot_seq(path)
            if at <= after:
                return at - seq >= self.jump_events
        return False

    def _rebase(self, after: int) -> Engine:
        self.release()
        engine = load_newest(self.data_dir, max_seq=after) or self.new_engine()
        self.bases += 1
        self._engine = engine
        self._read_journal(engine.seq)
        return engine

    def _read_journal(self, seq: int) -> None:
        """(Re)read the journal; position at the first record after `seq`."""
        records, _ = read_journal(self.data_dir)  # a torn (still being written) tail is ignored
        self.journal_reads += 1
        self._records = records
        self._next = bisect.bisect_right(records, seq, key=lambda r: r.seq)

    def _next_record(self, seq: int, upto: int) -> Record:
        """The record starting at `seq` (reading the journal again if it grew)."""
        if self._next >= len(self._records):
            self._read_journal(seq)
            if self._next >= len(self._records):
                raise LookupError(
                    f"the journal ends at seq {self._records[-1].seq if self._records else 0}, "
                    f"before seq {upto}"
                )
        rec = self._records[self._next]
        if rec.seq_before != seq:
            raise LookupError(f"journal continues at seq {rec.seq_before}, replay base is seq {seq}")
        self._next += 1
        if self._next >= 4096 and self._next * 2 >= len(self._records):  # free what was applied
            del self._records[: self._next]
            self._next = 0
        return rec
