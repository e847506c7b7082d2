"""A full disk (issue 10, finding 3): what a failed write leaves behind is cut, without needing
the space that ran out, so no command answered 503 can come back at the next start.

The journal writer on a fault-injected disk (tests/durability/faults.py: part of the record
that no longer fits is written, then ENOSPC, then every write fails), and in child processes
with a real RLIMIT_FSIZE (a write past the limit fails with EFBIG, after a short write up to
it): the cut itself, rolls, snapshots, and the data dir's LOCK and ID files. The engine loop
on top of it: tests/durability/test_syncer.py; the real service: tests/integration/
test_durability.py (section 8).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine import commands as c
from engine.engine import Engine
from service.storage import snapshot as snapshot_module
from service.storage.codec import encode_command
from service.storage.durable import DurableJournal
from service.storage.journal import (
    HEADER,
    SEGMENT_HEADER,
    JournalBroken,
    JournalWriter,
    read_journal,
    segments,
)
from service.storage.recovery import recover
from service.storage.snapshot import snapshots
from tests.durability.faults import FullDisk

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Engine().config_fingerprint()

Rec = tuple[int, int, int, bytes]


def deposits(first_seq: int, n: int) -> list[Rec]:
    """`n` journal records with consecutive seqs from `first_seq` (one event each)."""
    return [
        (seq - 1, seq, 1_000 + seq, encode_command(c.Deposit(1, 100 + seq)))
        for seq in range(first_seq, first_seq + n)
    ]


def size_of(records: list[Rec]) -> int:
    return sum(HEADER.size + len(r[3]) for r in records)


def journal_seqs(directory: Path) -> list[int]:
    records, torn = read_journal(directory)
    assert torn is None, torn  # the cut left no partial record behind either
    return [r.seq for r in records]


def run_child(script: str, timeout: float = 60) -> dict[str, object]:
    """Run `script` in a fresh interpreter at the repository root; its last stdout line is JSON."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# -- the cut --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fsync", ["batch", "always", "off"])
def test_cut_when_the_disk_fills_mid_batch_leaves_exactly_the_acknowledged_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: str
) -> None:
    writer = JournalWriter(tmp_path, CONFIG, fsync=fsync)
    acked = deposits(1, 3)
    writer.append_batch(acked)
    end_of_acked = writer.acked_offset
    failing = deposits(4, 3)
    # the first record of the failing batch fits (in `always` it is even fsynced), the second
    # only in part: the batch is answered 503 as a whole, so none of it may stay
    disk = FullDisk.install(monkeypatch, room=size_of(failing[:1]) + 10)
    with pytest.raises(OSError) as err:
        writer.append_batch(failing)
    assert err.value.errno == errno.ENOSPC
    assert writer.path is not None and writer.path.stat().st_size > end_of_acked
    writes = disk.writes
    assert writer.discard_unacked() == size_of(failing[:1]) + 10
    writer.close()
    assert disk.writes == writes  # neither the cut nor the close wrote anything
    assert writer.path.stat().st_size == end_of_acked
    assert journal_seqs(tmp_path) == [1, 2, 3]


def test_cut_when_batches_await_their_fsync_keeps_what_the_fsync_in_flight_covers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine loop's pipelined group commit: A is acknowledged, B's fsync is in flight,
    C waits for the next one when the disk fills on D. B may still be answered; C and D not."""
    writer = JournalWriter(tmp_path, CONFIG, fsync="batch")
    path = tmp_path / "journal-00000000000000000001.log"
    writer.append_batch(deposits(1, 2), sync=False)  # A
    writer.sync_requested(path, writer.tell())
    writer.synced(path, writer.tell())
    writer.append_batch(deposits(3, 2), sync=False)  # B
    writer.sync_requested(path, writer.tell())
    writer.append_batch(deposits(5, 2), sync=False)  # C
    FullDisk.install(monkeypatch, room=7)
    with pytest.raises(OSError, match="No space left"):
        writer.append_batch(deposits(7, 2))  # D
    writer.discard_unacked(keep_in_flight=True)
    assert journal_seqs(tmp_path) == [1, 2, 3, 4]
    with pytest.raises(JournalBroken):  # nothing more goes after a failed write
        writer.append_batch(deposits(5, 1))
    writer.discard_unacked()  # ... and then B's fsync fails too
    writer.close()
    assert journal_seqs(tmp_path) == [1, 2]


def test_append_when_it_returns_has_handed_every_byte_to_the_os(tmp_path: Path) -> None:
    """No user-space buffer: nothing unwritten is left that a cut would have to flush first,
    or that a close could write after the cut."""
    writer = JournalWriter(tmp_path, CONFIG, fsync="batch")
    for first in range(1, 200, 3):
        writer.append_batch(deposits(first, 3), sync=False)
        assert writer.path is not None and writer.path.stat().st_size == writer.tell()
    writer.close()


def test_roll_when_the_disk_fills_in_the_new_segment_header_is_undone_and_restarts_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = JournalWriter(tmp_path, CONFIG, fsync="batch", segment_bytes=600)
    seq = 1
    while writer.tell() + 2 * size_of(deposits(seq, 1)) < 600:
        writer.append_batch(deposits(seq, 1))
        seq += 1
    acked_seq = seq - 1
    while writer.tell() < 600:  # never acknowledged; the roll will fsync them all the same
        writer.append_batch(deposits(seq, 1), sync=False)
        seq += 1
    assert seq > acked_seq + 1
    assert 0 < 30 < SEGMENT_HEADER.size
    FullDisk.install(monkeypatch, room=30)  # room for part of the new segment's header
    with pytest.raises(OSError, match="No space left"):
        writer.append_batch(deposits(seq, 2))
    writer.discard_unacked()
    writer.close()
    # the new segment, named after a command answered 503, is gone; the old one is cut back
    assert [p.name for p in segments(tmp_path)] == ["journal-00000000000000000001.log"]
    assert journal_seqs(tmp_path) == list(range(1, acked_seq + 1))
    monkeypatch.undo()  # space again: the next start appends where the cut left off
    journal = DurableJournal(tmp_path, Engine, fsync="batch", segment_bytes=600)
    try:
        engine = journal.recover().engine
        assert engine.seq == acked_seq
        journal.append_batch([(c.Deposit(1, 5), engine.apply(c.Deposit(1, 5)))])
    finally:
        journal.close()
    assert journal_seqs(tmp_path) == list(range(1, acked_seq + 2))


@pytest.mark.parametrize("fsync", ["batch", "off"])
def test_cut_when_a_real_write_fails_past_rlimit_fsize_keeps_only_acknowledged_records(
    tmp_path: Path, fsync: str
) -> None:
    """A real process, a real limit: the write that crosses RLIMIT_FSIZE is cut short by the
    kernel (EFBIG) part-way through a record, and the cut still works at the limit."""
    out = run_child(
        f"""
        import json, resource
        from pathlib import Path
        from engine.engine import Engine
        from service.storage.journal import JournalWriter
        from tests.durability.test_full_disk import deposits

        limit = 4096 + 37  # mid-record, past the header and some records
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        writer = JournalWriter(Path({str(tmp_path)!r}), Engine().config_fingerprint(), fsync={fsync!r})
        seq, acked, error = 1, 0, None
        while error is None:
            try:
                writer.append_batch(deposits(seq, 3), sync={fsync == "off"!r})
                if {fsync!r} == "batch":
                    writer.append_batch(deposits(seq + 3, 1))  # the fsync that acknowledges both
                    seq += 1
                acked, seq = seq + 2, seq + 3
            except OSError as exc:
                error = exc.errno
        size = writer.path.stat().st_size
        cut = writer.discard_unacked()
        writer.close()
        print(json.dumps({{"acked": acked, "errno": error, "size": size, "cut": cut}}))
        """
    )
    assert out["errno"] == errno.EFBIG
    assert out["size"] == 4096 + 37 and isinstance(out["cut"], int) and out["cut"] > 0
    assert journal_seqs(tmp_path) == list(range(1, int(str(out["acked"])) + 1))


# -- snapshots, LOCK and ID ----------------------------------------------------------------------


def test_snapshot_when_the_disk_is_full_keeps_the_last_good_one_and_recovery_replays_on_it(
    tmp_path: Path,
) -> None:
    out = run_child(
        f"""
        import json, resource
        from pathlib import Path
        from engine.engine import Engine
        from service.storage.durable import DurableJournal
        from tests.durability.test_storage import random_commands

        d = Path({str(tmp_path)!r})
        journal = DurableJournal(d, Engine, fsync="batch")
        engine = journal.recover().engine
        commands = random_commands(21, 400)
        for cmd in commands[:200]:
            journal.append_batch([(cmd, engine.apply(cmd))])
        first = journal.snapshot(engine)
        for cmd in commands[200:]:
            journal.append_batch([(cmd, engine.apply(cmd))])
        limit = first.stat().st_size // 2  # the journal has all it needs; a snapshot does not fit
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        error = None
        try:
            journal.snapshot(engine)
        except OSError as exc:
            error = exc.errno
        due_again = journal.snapshot_due()
        journal.close()
        print(json.dumps({{"errno": error, "first": first.name, "seq": engine.seq,
                          "hash": engine.state_hash(), "due_again": due_again}}))
        """
    )
    assert out["errno"] == errno.EFBIG
    assert out["due_again"] is False  # not retried at every batch on a full disk
    assert [p.name for p in snapshots(tmp_path)] == [out["first"]]
    assert not list(tmp_path.glob("*.tmp"))  # the partial temp file gave its space back
    rec = recover(tmp_path, Engine)
    assert snapshot_module.snapshot_name(rec.snapshot_seq) == out["first"] and rec.replayed > 0
    assert (rec.engine.seq, rec.engine.state_hash()) == (out["seq"], out["hash"])


def test_snapshot_when_the_journal_has_failed_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed write the engine holds commands that were answered 503: a snapshot of
    it would bring them back."""
    journal = DurableJournal(tmp_path, Engine, fsync="off")
    engine = journal.recover().engine
    journal.append_batch([(c.CreateAccount("k1"), engine.apply(c.CreateAccount("k1")))])
    FullDisk.install(monkeypatch, room=0)
    cmd = c.Deposit(1, 10)
    with pytest.raises(OSError, match="No space left"):
        journal.append_batch([(cmd, engine.apply(cmd))])
    with pytest.raises(JournalBroken):
        journal.snapshot(engine)
    journal.close()
    assert snapshots(tmp_path) == [] and journal_seqs(tmp_path) == [1]


def test_data_dir_when_the_disk_is_full_at_first_start_locks_but_leaves_no_partial_id(
    tmp_path: Path,
) -> None:
    out = run_child(
        f"""
        import json, resource
        from pathlib import Path
        from service.storage.durable import DataDirLocked, data_dir_id, lock_data_dir

        d = Path({str(tmp_path)!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no byte may be written
        held = lock_data_dir(d)  # the pid cannot be written: logged, the flock holds all the same
        try:
            lock_data_dir(d)
            second = "taken"
        except DataDirLocked:
            second = "refused"
        try:
            data_dir_id(d)
            error = None
        except OSError as exc:
            error = exc.errno
        print(json.dumps({{"second": second, "errno": error}}))
        """
    )
    assert out == {"second": "refused", "errno": errno.EFBIG}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LOCK"]  # no ID, no ID.tmp
    journal = DurableJournal(tmp_path, Engine)  # space again: the next start makes its ID
    try:
        journal.recover()
        assert len(journal.id) == 32 and (tmp_path / "ID").read_text().strip() == journal.id
        assert (tmp_path / "LOCK").read_text() == f"{os.getpid()}\n"
    finally:
        journal.close()

