"""The fsync helper process (service/storage/syncer.py) and the engine loop's pipelined
group commit on top of it. Real child processes and real files; nothing is mocked."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import commands as c
from engine.engine import Engine
from service.engine_loop import EngineHalted, EngineLoop
from service.metrics import Metrics
from service.storage import syncer
from service.storage.durable import DurableJournal
from service.storage.journal import read_journal, segments
from service.storage.syncer import FsyncFailed, FsyncHelper
from tests.durability.faults import FullDisk


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


# -- the child's protocol -----------------------------------------------------------------------


def _child(stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-I", "-S", str(syncer._CHILD)], input=stdin, capture_output=True, timeout=10
    )


def _follow(path: Path | str) -> bytes:
    raw = os.fsencode(path)
    return b"P" + len(raw).to_bytes(4, "little") + raw


def test_child_answers_every_sync_in_order_and_exits_0_at_end_of_input(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    out = _child(_follow(a) + b"SSS" + _follow(b) + b"S")
    assert (out.returncode, out.stdout) == (0, b"DDDD")


@pytest.mark.parametrize(
    ("stdin", "code", "message"),
    [
        (b"S", 1, b"no journal segment"),
        (_follow("/nonexistent/journal.log") + b"S", 1, b"/nonexistent/journal.log"),
        (_follow("/dev/null") + b"S", 1, b"fsync: [Errno 22]"),  # fsync of a char device: EINVAL
        (b"X", 1, b"bad request byte"),
    ],
    ids=["nothing-followed", "missing-file", "fsync-error", "bad-byte"],
)
def test_child_reports_errors_and_exits_1(stdin: bytes, code: int, message: bytes) -> None:
    out = _child(stdin)
    assert out.returncode == code
    assert out.stdout.startswith(b"E") and message in out.stdout, out.stdout


def test_child_fsyncs_the_old_segment_before_following_a_new_one(tmp_path: Path) -> None:
    """`S` then `P(new)` in one read: the `S` is for the old file (here one that cannot be
    fsynced, which makes the order visible)."""
    b = tmp_path / "b.log"
    b.write_bytes(b"y")
    out = _child(_follow("/dev/null") + b"S" + _follow(b) + b"S")
    assert out.returncode == 1 and out.stdout.startswith(b"E") and b"Errno 22" in out.stdout


# -- FsyncHelper -------------------------------------------------------------------------------


@pytest.fixture
def segment(tmp_path: Path) -> Path:
    path = tmp_path / "a.log"
    path.write_bytes(b"x")
    return path


@pytest.fixture
def helper() -> Iterator[FsyncHelper]:
    h = FsyncHelper()
    yield h
    h.close()  # closing twice is harmless: tests that check the exit status close first


async def test_helper_ignores_sigint_and_sigterm_and_has_its_own_session(
    helper: FsyncHelper, segment: Path
) -> None:
    """Ctrl-C or a group SIGTERM must not take the helper away while the service drains."""
    await helper.sync(segment)
    assert os.getsid(helper.pid) != os.getsid(0)
    os.kill(helper.pid, signal.SIGINT)
    os.kill(helper.pid, signal.SIGTERM)
    await asyncio.sleep(0.1)
    await helper.sync(segment)
    assert helper.fsyncs == 2 and helper.failed is None
    helper.close()
    assert helper._proc.returncode == 0


async def test_helper_death_while_idle_is_noticed_at_once_without_spinning(
    helper: FsyncHelper, segment: Path
) -> None:
    await helper.sync(segment)  # the reader is registered from now on
    os.kill(helper.pid, signal.SIGKILL)
    helper._proc.wait(5)
    cpu0 = time.process_time()
    await asyncio.sleep(0.3)
    assert time.process_time() - cpu0 < 0.15  # a closed pipe must not wake the loop forever
    assert helper.failed is not None and "exited" in helper.failed
    with pytest.raises(FsyncFailed):
        await helper.sync(segment)


async def test_close_fails_a_request_in_flight(helper: FsyncHelper, segment: Path) -> None:
    done: list[object] = []
    os.kill(helper.pid, signal.SIGSTOP)
    try:
        helper.request(segment, done.append)
    finally:
        os.kill(helper.pid, signal.SIGCONT)
    helper.close()
    assert len(done) == 1 and isinstance(done[0], FsyncFailed)


async def test_helper_syncs_the_followed_segment_and_counts(helper: FsyncHelper, tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    for path in (a, a, b, a):
        await helper.sync(path)
    assert helper.fsyncs == 4 and helper.failed is None
    helper.close()
    assert helper._proc.returncode == 0  # closed pipe: a clean exit, no orphan


async def test_poll_picks_up_the_answer_without_yielding_to_the_event_loop(
    helper: FsyncHelper, segment: Path
) -> None:
    """The engine loop polls between batches instead of waiting for its reader callback."""
    done: list[object] = []
    helper.request(segment, done.append)
    with pytest.raises(RuntimeError, match="in flight"):
        helper.request(segment, done.append)
    deadline = time.monotonic() + 5
    while not done:  # no await: only poll() can deliver
        assert time.monotonic() < deadline
        helper.poll()
    assert done == [None] and helper.fsyncs == 1 and not helper.in_flight
    helper.poll()  # nothing in flight: a no-op
    await asyncio.sleep(0.05)  # the reader callback finds nothing more
    assert done == [None]


async def test_helper_fsync_error_is_final(helper: FsyncHelper, segment: Path) -> None:
    with pytest.raises(FsyncFailed, match="Invalid argument"):
        await helper.sync(Path("/dev/null"))
    with pytest.raises(FsyncFailed, match="Invalid argument"):  # never durable again
        await helper.sync(segment)


async def test_helper_killed_fails_the_waiting_and_every_later_sync(
    helper: FsyncHelper, segment: Path
) -> None:
    await helper.sync(segment)
    os.kill(helper.pid, signal.SIGKILL)
    helper._proc.wait(5)
    with pytest.raises(FsyncFailed, match=r"exited|unreachable"):
        await helper.sync(segment)
    with pytest.raises(FsyncFailed):
        await helper.sync(segment)


def test_helper_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    """kill -9 of the service must not leave the helper behind (it reads EOF)."""
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from service.storage.syncer import FsyncHelper\n"
        "h = FsyncHelper()\n"
        f"asyncio.run(h.sync(Path({str(tmp_path / 'j.log')!r})))\n"
        "print(h.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    (tmp_path / "j.log").write_bytes(b"x")
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    helper_pid = int(parent.stdout.readline())
    assert _alive(helper_pid)
    parent.kill()
    parent.wait(5)
    assert _wait_gone(helper_pid), "fsync helper outlived the killed service"


# -- the engine loop's pipelined commit --------------------------------------------------------


async def _loop_on(
    tmp_path: Path, segment_bytes: int = 64 << 20
) -> tuple[EngineLoop, DurableJournal, list[object]]:
    journal = DurableJournal(tmp_path, Engine, fsync="batch", segment_bytes=segment_bytes)
    engine = journal.recover().engine
    delivered: list[object] = []
    loop = EngineLoop(engine, Metrics(), journal=journal, sinks=[delivered.extend])
    loop.start()
    await loop.submit(c.CreateAccount("k1"))
    return loop, journal, delivered


async def test_no_answer_or_event_leaves_before_its_fsync_returns(tmp_path: Path) -> None:
    loop, journal, delivered = await _loop_on(tmp_path)
    assert journal._helper is not None
    try:
        seq0, n0 = loop.engine.seq, len(delivered)
        os.kill(journal._helper.pid, signal.SIGSTOP)  # the disk "hangs"
        try:
            tasks = [asyncio.create_task(loop.submit(c.Deposit(1, 10 + i))) for i in range(50)]
            deadline = time.monotonic() + 5
            while loop.engine.seq < seq0 + 50:  # the engine applies on: the fsync is pipelined
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert not any(t.done() for t in tasks)  # ... but nobody hears of it
            assert len(delivered) == n0 and loop.delivered_seq == seq0
            # written already (to the OS), durable only once the fsync returns
            assert read_journal(tmp_path)[0][-1].seq == seq0 + 50
        finally:
            os.kill(journal._helper.pid, signal.SIGCONT)
        await asyncio.gather(*tasks)
        assert loop.delivered_seq == loop.engine.seq == seq0 + 50
        assert len(delivered) == n0 + 50
        # group commit: 50 commands needed far fewer than 50 fsyncs
        assert 1 <= journal.fsyncs < 10
    finally:
        await loop.stop()
        journal.close()


async def test_a_failed_fsync_halts_the_loop_and_nobody_hears_of_the_batch(tmp_path: Path) -> None:
    loop, journal, delivered = await _loop_on(tmp_path)
    assert journal._helper is not None
    try:
        n0 = len(delivered)
        os.kill(journal._helper.pid, signal.SIGKILL)
        results = await asyncio.gather(
            *(loop.submit(c.Deposit(1, 5)) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, EngineHalted) for r in results), results
        assert "fsync helper" in (loop.halt_reason or "")
        assert len(delivered) == n0 and loop.halted
        with pytest.raises(EngineHalted):
            await loop.submit(c.Deposit(1, 5))
    finally:
        await loop.stop()
        journal.close()


async def _wait_applied(loop: EngineLoop, seq: int) -> None:
    deadline = time.monotonic() + 5
    while loop.engine.seq < seq:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)


async def test_answers_keep_batch_order_even_for_commands_that_journal_nothing(tmp_path: Path) -> None:
    loop, journal, _ = await _loop_on(tmp_path)
    assert journal._helper is not None
    try:
        seq0 = loop.engine.seq
        os.kill(journal._helper.pid, signal.SIGSTOP)
        try:
            deposit = asyncio.create_task(loop.submit(c.Deposit(1, 10)))
            await _wait_applied(loop, seq0 + 1)
            nothing = asyncio.create_task(loop.submit(c.CancelAllOrders(1)))  # no event, no record
            await asyncio.sleep(0.1)
            assert loop.queue_depth() == 0 and loop.engine.seq == seq0 + 1
            assert not deposit.done() and not nothing.done()  # not answered ahead of the deposit
        finally:
            os.kill(journal._helper.pid, signal.SIGCONT)
        done_order: list[str] = []
        deposit.add_done_callback(lambda _: done_order.append("deposit"))
        nothing.add_done_callback(lambda _: done_order.append("cancel-all"))
        assert await nothing == []
        await deposit
        assert done_order == ["deposit", "cancel-all"]
    finally:
        await loop.stop()
        journal.close()


async def test_a_failed_journal_write_fails_every_unsynced_batch_and_delivers_the_synced_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop, journal, delivered = await _loop_on(tmp_path)
    assert journal._helper is not None and journal.writer is not None
    try:
        seq0, n0 = loop.engine.seq, len(delivered)
        os.kill(journal._helper.pid, signal.SIGSTOP)
        try:
            a = asyncio.create_task(loop.submit(c.Deposit(1, 1)))  # written; its fsync in flight
            await _wait_applied(loop, seq0 + 1)
            b = asyncio.create_task(loop.submit(c.Deposit(1, 2)))  # written; waits for the next
            await _wait_applied(loop, seq0 + 2)
            FullDisk.install(monkeypatch, room=10)  # the disk fills in the middle of the next record
            cmd = asyncio.create_task(loop.submit(c.Deposit(1, 3)))
            await asyncio.sleep(0.1)
            assert loop.halted and cmd.done() and b.done() and not a.done()
            # B and the part of C are cut at once; A stays, its fsync may still succeed
            assert read_journal(tmp_path)[0][-1].seq == seq0 + 1
        finally:
            os.kill(journal._helper.pid, signal.SIGCONT)
        assert [type(e).__name__ for e in await a] == ["DepositMade"]  # its fsync succeeded
        for task in (b, cmd):
            with pytest.raises(EngineHalted, match="No space left on device"):
                await task
        assert len(delivered) == n0 + 1  # only the durable batch's event left
    finally:
        await loop.stop()
        journal.close()
    records, torn = read_journal(tmp_path)
    assert torn is None and records[-1].seq == seq0 + 1  # A, and nothing answered 503


async def test_a_failed_journal_write_then_a_failed_fsync_cuts_the_batch_in_flight_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop, journal, delivered = await _loop_on(tmp_path)
    assert journal._helper is not None
    try:
        seq0, n0 = loop.engine.seq, len(delivered)
        os.kill(journal._helper.pid, signal.SIGSTOP)
        a = asyncio.create_task(loop.submit(c.Deposit(1, 1)))  # written; its fsync in flight
        await _wait_applied(loop, seq0 + 1)
        FullDisk.install(monkeypatch, room=10)
        b = asyncio.create_task(loop.submit(c.Deposit(1, 2)))
        await asyncio.sleep(0.1)
        assert loop.halted and b.done() and not a.done()
        os.kill(journal._helper.pid, signal.SIGKILL)  # and A's fsync fails after all
        for task in (a, b):
            with pytest.raises(EngineHalted):
                await task
        assert len(delivered) == n0
    finally:
        await loop.stop()
        journal.close()
    records, torn = read_journal(tmp_path)
    assert torn is None and records[-1].seq == seq0  # neither A nor B: both were answered 503


async def test_a_batch_taken_when_the_fsync_fails_is_not_applied(tmp_path: Path) -> None:
    loop, journal, _ = await _loop_on(tmp_path)
    assert journal._helper is not None
    try:
        seq0 = loop.engine.seq
        os.kill(journal._helper.pid, signal.SIGSTOP)
        a = asyncio.create_task(loop.submit(c.Deposit(1, 1)))
        await _wait_applied(loop, seq0 + 1)
        os.kill(journal._helper.pid, signal.SIGKILL)
        journal._helper._proc.wait(5)  # no yield: the engine may take B before it sees the EOF
        b = asyncio.create_task(loop.submit(c.Deposit(1, 2)))
        for task in (a, b):
            with pytest.raises(EngineHalted):
                await task
        assert loop.engine.seq == seq0 + 1  # B was never applied, nor journaled
        # A was answered 503: its record is cut off, so a restart cannot bring it back
        assert read_journal(tmp_path)[0][-1].seq == seq0
    finally:
        await loop.stop()
        journal.close()


async def test_stop_that_times_out_fails_uncommitted_answers_and_halts(tmp_path: Path) -> None:
    loop, journal, delivered = await _loop_on(tmp_path)
    assert journal._helper is not None
    n0 = len(delivered)
    os.kill(journal._helper.pid, signal.SIGSTOP)
    try:
        a = asyncio.create_task(loop.submit(c.Deposit(1, 1)))
        await _wait_applied(loop, 2)
        t0 = time.monotonic()
        await loop.stop(timeout=0.3)
        assert time.monotonic() - t0 < 1.0  # one deadline for both waits
        with pytest.raises(EngineHalted, match="journal commit did not finish"):
            await asyncio.wait_for(a, 1)
        assert loop.halted and len(delivered) == n0  # so no snapshot claims it either
    finally:
        os.kill(journal._helper.pid, signal.SIGCONT)
        journal.close()


async def test_a_batch_that_writes_nothing_needs_no_segment_and_no_fsync(tmp_path: Path) -> None:
    """A data dir with a snapshot and no journal segment (pruned, or restored from a
    snapshot-only backup): a command without events must not ask for an fsync."""
    first = DurableJournal(tmp_path, Engine, fsync="off")
    engine = first.recover().engine
    engine.apply(c.CreateAccount("k1"))
    first.snapshot(engine)
    first.close()
    for seg in tmp_path.glob("journal-*.log"):
        seg.unlink()
    journal = DurableJournal(tmp_path, Engine, fsync="batch")
    restored = journal.recover().engine
    assert journal.writer is not None and journal.writer.path is None
    loop = EngineLoop(restored, Metrics(), journal=journal)
    loop.start()
    try:
        assert await asyncio.wait_for(loop.submit(c.CancelAllOrders(1)), 5) == []
        assert loop.alive and journal.fsyncs == 0
        await asyncio.wait_for(loop.submit(c.Deposit(1, 5)), 5)  # and the first write commits
        assert journal.fsyncs == 1
    finally:
        await loop.stop()
        journal.close()


async def test_helper_death_when_segments_rolled_meanwhile_cuts_every_unanswered_record(
    tmp_path: Path,
) -> None:
    """A roll fsyncs the old segment whole, but what it holds past the last acknowledged
    fsync was answered 503 all the same: it must not come back at restart either."""
    loop, journal, _ = await _loop_on(tmp_path, segment_bytes=1024)
    assert journal._helper is not None
    seq0 = loop.engine.seq
    segments_before = len(segments(tmp_path))
    try:
        os.kill(journal._helper.pid, signal.SIGSTOP)
        tasks = []
        for i in range(80):  # one at a time: every deposit its own batch, several rolls
            tasks.append(asyncio.create_task(loop.submit(c.Deposit(1, 100 + i))))
            await _wait_applied(loop, seq0 + i + 1)
        assert len(segments(tmp_path)) >= segments_before + 3
        os.kill(journal._helper.pid, signal.SIGKILL)
        for task in tasks:
            with pytest.raises(EngineHalted):
                await task
    finally:
        await loop.stop()
        journal.close()
    records, torn = read_journal(tmp_path)
    assert torn is None and records[-1].seq == seq0  # not one of the 80 survives
    again = DurableJournal(tmp_path, Engine, fsync="off")
    try:
        assert again.recover().engine.seq == seq0
    finally:
        again.close()
