"""Background snapshots (service/storage/snapshotter.py, DurableJournal.start_snapshot): a
forked child writes the snapshot while the engine loop goes on. Real forks, real files;
a writer is held back by a gate file (`_gate`), never by timing."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import commands as c
from engine.engine import Engine
from service.engine_loop import EngineLoop
from service.metrics import Metrics
from service.storage import durable
from service.storage.durable import DurableJournal
from service.storage.journal import segments
from service.storage.recovery import recover
from service.storage.snapshot import read_snapshot, snapshot_seq, snapshots, write_snapshot
from service.storage.snapshotter import fork_child
from tests.builds import python_engine_only
from tests.durability.test_storage import random_commands

ROOT = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` on the event loop (the deadline only turns a hang into a failure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def _fds_of(pid: int) -> set[str]:
    """What the process's descriptors point at (a descriptor closed meanwhile is skipped)."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return held


def _gate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hold every snapshot writer (in its child) until the returned file exists."""
    go = tmp_path / "go"
    real = durable.write_snapshot

    def gated(directory: Path, engine: Engine, meta: dict[str, Any] | None = None) -> Path:
        while not go.exists():
            time.sleep(0.005)
        return real(directory, engine, meta)

    monkeypatch.setattr(durable, "write_snapshot", gated)
    return go


async def _loop_on(data: Path, **kw: Any) -> tuple[EngineLoop, DurableJournal]:
    journal = DurableJournal(data, Engine, fsync="batch", **kw)
    loop = EngineLoop(journal.recover().engine, Metrics(), journal=journal)
    loop.start()
    return loop, journal


# -- consistency under a flow of commands ----------------------------------------------------


async def test_background_snapshot_when_commands_keep_flowing_restores_to_the_live_hash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each snapshot holds exactly the state after the batch it followed (the hash its
    commands' answers saw), and snapshot + journal tail replays to the live state, also
    after segments behind it were pruned."""
    caplog.set_level(logging.INFO, logger="service.durability")
    loop, journal = await _loop_on(tmp_path, snapshot_every=40, segment_bytes=2048)
    loop.published_seq = lambda: loop.delivered_seq  # everything published: pruning runs
    live: dict[int, str] = {}  # seq after a command -> state hash there
    seen: dict[int, str] = {}  # snapshot seq -> the hash recorded in it
    cmds = random_commands(21, 900)
    try:
        for i in range(0, len(cmds), 25):  # waves of concurrent submissions: real batches
            answers = await asyncio.gather(
                *(loop.submit(cmd, after=lambda e, _: (e.seq, e.state_hash())) for cmd in cmds[i : i + 25])
            )
            live.update(answers)
            for path in snapshots(tmp_path):
                if snapshot_seq(path) not in seen:
                    seen[snapshot_seq(path)] = read_snapshot(path).state_hash()
        await _until(journal.poll_snapshot, "the last background snapshot")
        for path in snapshots(tmp_path):  # one may have finished after the last wave's look
            if snapshot_seq(path) not in seen:
                seen[snapshot_seq(path)] = read_snapshot(path).state_hash()
    finally:
        await loop.stop()
        journal.close()
    written = [r for r in caplog.records if "written in the background" in r.getMessage()]
    assert len(written) >= 5 and len(seen) >= 3, (len(written), seen)
    for seq, digest in seen.items():
        assert live[seq] == digest, seq
    rec = recover(tmp_path, Engine)
    # the newest snapshot, plus the journal tail behind it (none if it finished after the last wave)
    assert rec.snapshot_seq == max(seen) and (rec.replayed > 0) == (rec.snapshot_seq < loop.engine.seq)
    assert rec.engine.state_hash() == loop.engine.state_hash() == live[loop.engine.seq]
    assert segments(tmp_path)[0].name != "journal-00000000000000000001.log"  # pruned behind it


# -- the engine is not held up by the writer --------------------------------------------------


async def test_engine_when_a_snapshot_writer_is_held_keeps_answering_and_starts_no_second_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    go = _gate(monkeypatch, tmp_path)
    loop, journal = await _loop_on(data, snapshot_every=10)
    try:
        await loop.submit(c.CreateAccount("k1"))
        while journal._snapshot_child is None:
            await loop.submit(c.Deposit(1, 100))
        child, at_fork = journal._snapshot_child, loop.engine.seq
        for wave in range(10):  # twenty snapshots' worth of commands, all answered
            await asyncio.gather(*(loop.submit(c.Deposit(1, 1 + wave * 20 + i)) for i in range(20)))
        assert loop.engine.seq == at_fork + 200 and loop.delivered_seq == loop.engine.seq
        assert journal._snapshot_child is child and not child.poll()  # still the only one
        assert snapshots(data) == []
        # the writer holds nothing of the service: not the data dir lock, not the journal (it
        # lets go of them first thing after the fork; on a loaded machine it may not have run yet)
        ours = {str(data / "LOCK"), *map(str, segments(data))}
        deadline = time.monotonic() + 10
        while (held := _fds_of(child.pid)) & ours and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not held & ours, held
        # ... and it yields: CPU to the service, memory to the OOM killer
        assert Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[16] == str(min(19, os.nice(0) + 10))
        assert Path(f"/proc/{child.pid}/oom_score_adj").read_text().strip() == "1000"
        go.touch()
        await _until(lambda: journal._snapshot_child is None, "the held writer")
        assert [snapshot_seq(p) for p in snapshots(data)] == [at_fork]
        assert child.error is None and child.result == f"snapshot-{at_fork:020d}.snap"
    finally:
        go.touch()
        await loop.stop()
        journal.close()
    rec = recover(data, Engine)
    assert (rec.snapshot_seq, rec.replayed) == (at_fork, 200)
    assert rec.engine.state_hash() == loop.engine.state_hash()


# -- failures of the writer ------------------------------------------------------------------


async def test_background_snapshot_when_the_writer_fails_logs_it_leaves_no_temp_and_tries_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.durability")
    real = durable.write_snapshot

    def full_disk(directory: Path, engine: Engine, meta: dict[str, Any] | None = None) -> Path:
        tmp = directory / f"snapshot-{engine.seq:020d}.tmp"
        tmp.write_bytes(b"PXSNAP1\n")  # a partial temp file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable, "write_snapshot", full_disk)
    loop, journal = await _loop_on(tmp_path, snapshot_every=10)
    try:
        await loop.submit(c.CreateAccount("k1"))
        while journal._snapshot_child is None:
            await loop.submit(c.Deposit(1, 100))
        await _until(journal.poll_snapshot, "the failing writer")
        assert any("No space left" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
        assert list(tmp_path.glob("snapshot-*")) == []
        assert not journal.snapshot_due()  # not at every batch: after another snapshot_every
        monkeypatch.setattr(durable, "write_snapshot", real)
        for i in range(10):
            await loop.submit(c.Deposit(1, 1 + i))
        await _until(lambda: bool(snapshots(tmp_path)) and journal.poll_snapshot(), "the retry")
    finally:
        await loop.stop()
        journal.close()
    assert recover(tmp_path, Engine).engine.state_hash() == loop.engine.state_hash()


async def test_start_snapshot_when_fork_fails_writes_it_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fork(work: Callable[[], str]) -> Any:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(durable, "fork_child", no_fork)
    journal = DurableJournal(tmp_path, Engine, fsync="off")
    engine = journal.recover().engine
    journal.append_batch([(cmd, engine.apply(cmd)) for cmd in random_commands(22, 50)])
    journal.start_snapshot(engine)
    assert journal._snapshot_child is None
    assert [snapshot_seq(p) for p in snapshots(tmp_path)] == [engine.seq]
    journal.close()


def test_start_snapshot_when_the_engine_is_ahead_of_the_journal_refuses(tmp_path: Path) -> None:
    """A snapshot must never claim commands the journal does not hold."""
    journal = DurableJournal(tmp_path, Engine, fsync="off")
    engine = journal.recover().engine
    engine.apply(c.CreateAccount("not journaled"))
    with pytest.raises(RuntimeError, match="journal at 0"):
        journal.start_snapshot(engine)
    journal.close()
    assert snapshots(tmp_path) == []


def test_snapshot_child_ignores_sigint_and_sigterm_and_reports_a_kill(tmp_path: Path) -> None:
    go = tmp_path / "go"

    def work() -> str:
        while not go.exists():
            time.sleep(0.005)
        return "done"

    child = fork_child(work)
    os.kill(child.pid, signal.SIGINT)
    os.kill(child.pid, signal.SIGTERM)
    go.touch()
    assert child.wait(30) and (child.result, child.error) == ("done", None)
    go.unlink()
    held = fork_child(work)
    held.kill()
    assert held.done and held.error == "snapshot writer killed by signal 9" and _gone(held.pid)


# -- crash and shutdown -----------------------------------------------------------------------

_CRASH_SCRIPT = """
import asyncio, os, sys, time
from pathlib import Path
from engine import commands as c
from engine.engine import Engine
from service.engine_loop import EngineLoop
from service.metrics import Metrics
from service.storage import durable

data = Path(sys.argv[1])
ARMED = False  # read in the child: the second snapshot's writer is torn, then held forever
real = durable.write_snapshot

def torn(directory, engine, meta=None):
    if ARMED:
        (directory / f"snapshot-{engine.seq:020d}.tmp").write_bytes(b"PXSNAP1\\n" + os.urandom(4096))
        while True:
            time.sleep(1)
    return real(directory, engine, meta)

durable.write_snapshot = torn

async def main():
    global ARMED
    journal = durable.DurableJournal(data, Engine, fsync="batch", snapshot_every=20)
    loop = EngineLoop(journal.recover().engine, Metrics(), journal=journal)
    loop.start()
    await loop.submit(c.CreateAccount("k1"))
    while journal._snapshot_child is None:
        await loop.submit(c.Deposit(1, 7))
    first = loop.engine.seq
    while not journal.poll_snapshot():
        await asyncio.sleep(0.005)
    ARMED = True
    while journal._snapshot_child is None:
        await loop.submit(c.Deposit(1, 9))
    for i in range(50):
        await loop.submit(c.Deposit(1, 10 + i))
    while not list(data.glob("snapshot-*.tmp")):  # the writer runs at nice +10: let it start
        await asyncio.sleep(0.01)
    e = loop.engine
    print("READY", journal._snapshot_child.pid, journal._helper.pid, first, e.seq, e.state_hash(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_kill9_during_a_background_snapshot_leaves_a_recoverable_data_dir_and_no_writer(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_SCRIPT, str(data)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line and line[0] == "READY", line
        writer, helper, first, seq, digest = int(line[1]), int(line[2]), int(line[3]), int(line[4]), line[5]
        assert not _gone(writer) and list(data.glob("snapshot-*.tmp"))  # mid-write
    finally:
        proc.kill()  # kill -9: no shutdown code runs
        proc.wait(30)
    deadline = time.monotonic() + 30
    while not (_gone(writer) and _gone(helper)):  # the writer dies with the service (PDEATHSIG)
        assert time.monotonic() < deadline, "a child of the killed service lives on"
        time.sleep(0.01)
    journal = DurableJournal(data, Engine, fsync="off")  # the lock is free again
    rec = journal.recover()
    assert (rec.snapshot_seq, rec.engine.seq) == (first, seq)  # the torn temp is no snapshot
    assert rec.engine.state_hash() == digest and rec.torn is None
    journal.snapshot(rec.engine)
    assert list(data.glob("snapshot-*.tmp")) == []  # the next snapshot clears what was left
    journal.close()


def _services(data: Path, **kw: Any) -> Any:
    from service.runtime import Services
    from service.settings import Settings

    return Services(Settings(data_dir=data, redis_url=None, admin_token="a" * 32, **kw))


async def test_stop_when_a_background_snapshot_is_in_flight_kills_it_and_writes_the_final_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    go = _gate(monkeypatch, tmp_path)  # never opened: the writer would run forever
    services = _services(data, snapshot_every=10)
    await services.start()
    try:
        await services.loop.submit(c.CreateAccount("k1"))
        while services.journal._snapshot_child is None:
            await services.loop.submit(c.Deposit(1, 100))
        child = services.journal._snapshot_child
        await asyncio.gather(*(services.loop.submit(c.Deposit(1, 1 + i)) for i in range(30)))
    finally:
        monkeypatch.setattr(durable, "write_snapshot", write_snapshot)  # for the final one
        await services.stop()
    assert not go.exists() and child.done and _gone(child.pid)
    assert child.error == "snapshot writer killed by signal 9"
    final = services.engine.seq
    assert [snapshot_seq(p) for p in snapshots(data)] == [final]
    assert list(data.glob("snapshot-*.tmp")) == []
    rec = recover(data, Engine)
    assert (rec.snapshot_seq, rec.replayed) == (final, 0)
    assert rec.engine.state_hash() == services.engine.state_hash()


@python_engine_only
async def test_stop_after_a_halt_waits_for_the_background_snapshot_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a halt no final snapshot is written (the state is not trusted); the one forked
    before it holds a good state and is let finish."""
    data = tmp_path / "data"
    go = _gate(monkeypatch, tmp_path)
    services = _services(data, snapshot_every=10)
    await services.start()
    await services.loop.submit(c.CreateAccount("k1"))
    while services.journal._snapshot_child is None:
        await services.loop.submit(c.Deposit(1, 100))
    at_fork, good = services.engine.seq, services.engine.state_hash()

    def broken(command: Any) -> Any:
        raise RuntimeError("injected bug")

    services.engine.apply = broken  # type: ignore[method-assign]  # the child's copy is intact
    with pytest.raises(Exception, match="halted"):
        await services.loop.submit(c.Deposit(1, 5))
    asyncio.get_running_loop().call_later(0.05, go.touch)
    await services.stop()
    assert services.journal._snapshot_child is None
    assert [snapshot_seq(p) for p in snapshots(data)] == [at_fork]
    rec = recover(data, Engine)
    assert (rec.snapshot_seq, rec.replayed) == (at_fork, 0) and rec.engine.state_hash() == good
