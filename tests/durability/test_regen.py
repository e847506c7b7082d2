"""The publisher's incremental event regenerator (service/storage/regen.py; audit R10).

The reference is always the events the live engine produced while the journal was written.
Work is asserted by counting (replay bases loaded, journal reads, records applied), never
by the clock: catching up chunk by chunk applies every record once, where a stateless
replay applied the records from its base again for every chunk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine
from service.storage.durable import DurableJournal
from service.storage.journal import read_journal
from service.storage.regen import EventRegenerator
from service.storage.snapshot import write_snapshot
from tests.durability.test_storage import random_commands


def journaled(
    directory: Path, n: int, snapshot_at: tuple[int, ...] = (), segment_bytes: int = 1 << 20
) -> tuple[DurableJournal, Engine, list[Any]]:
    """A data dir of `n` seeded commands (snapshots after the given command indexes, nothing
    pruned), its live engine and every event."""
    dj = DurableJournal(
        directory, Engine, fsync="off", snapshot_every=10**9, segment_bytes=segment_bytes
    )
    live = dj.recover().engine
    events: list[Any] = []
    for i, cmd in enumerate(random_commands(11, n)):
        out = live.apply(cmd)
        events.extend(out)
        dj.append_batch([(cmd, out)])
        if i in snapshot_at:
            write_snapshot(directory, live)  # kept: no pruning
    return dj, live, events


def in_chunks(regen: EventRegenerator, after: int, upto: int, chunk: int) -> list[Any]:
    out: list[Any] = []
    while after < upto:
        nxt = min(upto, after + chunk)
        got = regen(after, nxt)
        assert [e.seq for e in got] == list(range(after + 1, nxt + 1))
        out.extend(got)
        after = nxt
    return out


@pytest.mark.parametrize("chunk", [1, 7, 250, 100_000], ids=["chunk1", "chunk7", "chunk250", "one-chunk"])
def test_regenerator_when_called_in_consecutive_chunks_equals_live_events_and_applies_each_record_once(
    tmp_path: Path, chunk: int
) -> None:
    dj, live, events = journaled(tmp_path, 600, segment_bytes=4096)  # many segments
    dj.close()
    regen = EventRegenerator(tmp_path, Engine)
    assert in_chunks(regen, 0, live.seq, chunk) == events
    # chunk boundaries inside a multi-event record are served from what was carried over
    assert (regen.bases, regen.journal_reads) == (1, 1)
    assert regen.applied == dj.records


def test_regenerator_when_started_mid_journal_replays_from_the_newest_snapshot_below(
    tmp_path: Path,
) -> None:
    dj, live, events = journaled(tmp_path, 500, snapshot_at=(100, 300))
    dj.close()
    snaps = sorted(int(p.stem.split("-")[1]) for p in tmp_path.glob("snapshot-*.snap"))
    assert len(snaps) == 2
    after = snaps[1] + 5
    regen = EventRegenerator(tmp_path, Engine)
    assert in_chunks(regen, after, live.seq, 40) == [e for e in events if e.seq > after]
    # from the snapshot at snaps[1], not from seq 0 or the older snapshot
    after_base = [r for r in read_journal(tmp_path)[0] if r.seq_before >= snaps[1]]
    assert regen.bases == 1 and regen.applied == len(after_base)


def test_regenerator_when_asked_behind_its_position_starts_again_from_a_snapshot(
    tmp_path: Path,
) -> None:
    dj, live, events = journaled(tmp_path, 300, snapshot_at=(50,))
    dj.close()
    regen = EventRegenerator(tmp_path, Engine)
    mid = events[len(events) // 2].seq
    assert regen(mid, live.seq) == [e for e in events if e.seq > mid]
    # Redis lost events: the publisher asks again from further back
    assert regen(3, 40) == [e for e in events if 3 < e.seq <= 40]
    assert regen.bases == 2
    assert regen(40, live.seq) == [e for e in events if e.seq > 40]
    assert regen.bases == 2  # and goes on from there


def test_regenerator_when_journal_grew_since_its_last_read_reads_it_again(tmp_path: Path) -> None:
    dj = DurableJournal(tmp_path, Engine, fsync="off", snapshot_every=10**9, segment_bytes=4096)
    live = dj.recover().engine
    cmds = random_commands(12, 400)
    events: list[Any] = []

    def run(part: list[Any]) -> None:
        for cmd in part:
            out = live.apply(cmd)
            events.extend(out)
            dj.append_batch([(cmd, out)])

    run(cmds[:200])
    regen = EventRegenerator(tmp_path, Engine)
    first = live.seq
    assert in_chunks(regen, 0, first, 33) == events
    run(cmds[200:])  # the live service goes on writing
    assert in_chunks(regen, first, live.seq, 33) == [e for e in events if e.seq > first]
    assert (regen.bases, regen.journal_reads) == (1, 2)
    assert regen.applied == dj.records
    dj.close()


def test_regenerator_when_release_called_drops_its_engine_and_starts_again(tmp_path: Path) -> None:
    dj, live, events = journaled(tmp_path, 200)
    dj.close()
    regen = EventRegenerator(tmp_path, Engine)
    assert regen(0, 50) == events[:50]
    assert regen.seq is not None and regen.seq >= 50
    regen.release()
    assert regen.seq is None
    assert regen(50, live.seq) == events[50:]
    assert regen.bases == 2


def test_regenerator_when_range_was_pruned_raises_lookup_error(tmp_path: Path) -> None:
    dj = DurableJournal(tmp_path, Engine, fsync="off", segment_bytes=2048)
    live = dj.recover().engine
    for i, cmd in enumerate(random_commands(10, 300)):
        dj.append_batch([(cmd, live.apply(cmd))])
        if i == 200:
            dj.snapshot(live, published_seq=live.seq)  # published: segments behind it go
    dj.close()
    for snap in tmp_path.glob("snapshot-*.snap"):
        snap.unlink()  # and the base snapshot is lost
    with pytest.raises(LookupError):
        EventRegenerator(tmp_path, Engine)(5, 50)


def test_regenerator_when_asked_far_past_its_position_loads_the_newer_snapshot(
    tmp_path: Path,
) -> None:
    dj, live, events = journaled(tmp_path, 400, snapshot_at=(300,))
    dj.close()
    (snap,) = (int(p.stem.split("-")[1]) for p in tmp_path.glob("snapshot-*.snap"))
    regen = EventRegenerator(tmp_path, Engine, jump_events=50)
    assert regen(0, 10) == events[:10]  # no snapshot at or below 0: a fresh engine
    applied = regen.applied
    assert regen(snap + 5, live.seq) == [e for e in events if e.seq > snap + 5]
    after_base = [r for r in read_journal(tmp_path)[0] if r.seq_before >= snap]
    assert regen.bases == 2 and regen.applied - applied == len(after_base)


def _pruned_behind_a_snapshot(directory: Path) -> tuple[Engine, list[Any], int]:
    """A data dir whose journal begins only at a snapshot (segments behind it pruned)."""
    dj = DurableJournal(directory, Engine, fsync="off", segment_bytes=2048)
    live = dj.recover().engine
    events: list[Any] = []
    for i, cmd in enumerate(random_commands(10, 300)):
        out = live.apply(cmd)
        events.extend(out)
        dj.append_batch([(cmd, out)])
        if i == 200:
            dj.snapshot(live, published_seq=live.seq)  # published: segments behind it go
            snap = live.seq
    dj.close()
    assert read_journal(directory)[0][0].seq_before > 5  # the start is gone
    return live, events, snap


def test_regenerator_when_the_start_was_pruned_resumes_at_the_oldest_snapshot_above(
    tmp_path: Path,
) -> None:
    live, events, snap = _pruned_behind_a_snapshot(tmp_path)
    regen = EventRegenerator(tmp_path, Engine)
    with pytest.raises(LookupError):
        regen(5, live.seq)
    assert regen.resume_point(5) == snap
    assert regen.resume_point(snap) is None
    assert regen(snap, live.seq) == [e for e in events if e.seq > snap]
