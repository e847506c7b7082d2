"""Recovery with the journal read in a second process (service/storage/read_ahead.py) must end
exactly as recovery reading it in process: the same engine (seq, state hash, records replayed,
torn tail), or the same error with the same message, on clean and on damaged journals."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import commands as c
from engine.engine import Engine
from service.storage import read_ahead
from service.storage.codec import encode_command
from service.storage.journal import JournalWriter, encode_record, read_journal, segments
from service.storage.recovery import RecoveryError, recover
from service.storage.snapshot import write_snapshot
from tests.durability.test_storage import CONFIG, _with_taker_fee, random_commands, run_journaled


def _outcome(directory: Path, ahead: bool, new_engine: Callable[[], Engine] = Engine) -> tuple[Any, ...]:
    try:
        rec = recover(directory, new_engine, repair=False, read_ahead=ahead)
    except Exception as exc:  # the comparison is the point: any error, by type and message
        return ("error", type(exc).__name__, str(exc))
    torn = rec.torn and (rec.torn.path, rec.torn.offset, rec.torn.dropped_bytes)
    return ("ok", rec.engine.seq, rec.engine.state_hash(), rec.replayed, rec.snapshot_seq, torn)


def _clean(d: Path) -> None:
    run_journaled(d, random_commands(21, 300), segment_bytes=2048)


def _snapshot_in_the_middle(d: Path) -> None:
    engine = Engine()
    writer = JournalWriter(d, CONFIG, fsync="off", segment_bytes=4096)
    for i, cmd in enumerate(random_commands(22, 300)):
        before = engine.seq
        engine.apply(cmd)
        writer.append_batch([(before, engine.seq, cmd.ts_ns, encode_command(cmd))])
        if i == 150:
            write_snapshot(d, engine)
    writer.close()


def _torn_last_record(d: Path) -> None:
    run_journaled(d, random_commands(23, 100))
    (seg,) = segments(d)
    seg.write_bytes(seg.read_bytes()[:-7])


def _corrupt_middle_record(d: Path) -> None:
    run_journaled(d, random_commands(24, 100))
    (seg,) = segments(d)
    data = bytearray(seg.read_bytes())
    data[read_journal(d)[0][40].offset + 40] ^= 0xFF
    seg.write_bytes(bytes(data))


def _missing_segment(d: Path) -> None:
    run_journaled(d, random_commands(25, 300), segment_bytes=2048)
    segments(d)[1].unlink()


def _newest_segment_without_header(d: Path) -> None:
    run_journaled(d, random_commands(26, 300), segment_bytes=2048)
    (d / "journal-99999999999999999999.log").write_bytes(b"PXJR")


def _append_raw(d: Path, payload: bytes) -> None:
    """A checksummed record whose payload is `payload`, after a clean journal."""
    engine = run_journaled(d, random_commands(27, 50))
    (seg,) = segments(d)
    with seg.open("ab") as f:
        f.write(encode_record(engine.seq, engine.seq + 1, 5, payload))


def _gap_then_garbage(d: Path) -> None:
    """A record that starts after a seq the journal never reached and is not JSON: the broken
    seq chain is what recovery reports, read in process or ahead (not the payload)."""
    engine = run_journaled(d, random_commands(32, 50))
    (seg,) = segments(d)
    with seg.open("ab") as f:
        f.write(encode_record(engine.seq + 5, engine.seq + 6, 5, b"not json"))


SCENARIOS: dict[str, Callable[[Path], None]] = {
    "clean_many_segments": _clean,
    "snapshot_in_the_middle": _snapshot_in_the_middle,
    "torn_last_record": _torn_last_record,
    "corrupt_middle_record": _corrupt_middle_record,
    "missing_segment": _missing_segment,
    "newest_segment_without_header": _newest_segment_without_header,
    "payload_not_json": lambda d: _append_raw(d, b"[\"Deposit\", 1, 2"),
    "unknown_command": lambda d: _append_raw(d, b"[\"Teleport\", 1]"),
    "wrong_field_count": lambda d: _append_raw(d, b"[\"Deposit\"]"),
    "integer_beyond_64_bits": lambda d: _append_raw(d, encode_command(c.Withdraw(1, 10**30, ts_ns=9))),
    "nested_too_deep": lambda d: _append_raw(d, b"[" * 3000 + b"]" * 3000),
    "nested_list_field": lambda d: _append_raw(d, b"[\"Deposit\", [[1]], 5]"),
    "seq_chain_broken_by_a_payload_not_json": _gap_then_garbage,
}


@pytest.mark.parametrize("build", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_recover_when_read_ahead_ends_as_reading_in_process(tmp_path: Path, build: Callable[[Path], None]) -> None:
    build(tmp_path)
    inline = _outcome(tmp_path, ahead=False)
    assert _outcome(tmp_path, ahead=True) == inline


def test_recover_when_read_ahead_and_config_differs_refuses_alike(tmp_path: Path) -> None:
    run_journaled(tmp_path, random_commands(28, 100))
    other = lambda: _with_taker_fee(100)  # noqa: E731
    inline = _outcome(tmp_path, ahead=False, new_engine=other)
    assert inline[:2] == ("error", "RecoveryError") and "config fingerprint" in inline[2]
    assert _outcome(tmp_path, ahead=True, new_engine=other) == inline


def test_recover_when_the_reader_process_dies_raises_with_its_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_journaled(tmp_path, random_commands(29, 100))
    monkeypatch.setattr(read_ahead.ReadAhead, "command", lambda self: [
        sys.executable, "-c", "import sys; sys.stderr.write('reader: out of memory'); sys.exit(3)"])
    with pytest.raises(RecoveryError, match=r"exited \(3\): reader: out of memory"):
        recover(tmp_path, Engine, repair=False, read_ahead=True)


def test_worth_it_when_one_core_or_a_small_journal_says_no(tmp_path: Path) -> None:
    run_journaled(tmp_path, random_commands(30, 50))
    assert not read_ahead.worth_it(tmp_path, cpus=8)  # a few KiB
    (seg,) = segments(tmp_path)
    with seg.open("ab") as f:
        f.truncate(read_ahead.MIN_BYTES)
    assert read_ahead.worth_it(tmp_path, cpus=2) and not read_ahead.worth_it(tmp_path, cpus=1)
    assert read_ahead.worth_it(tmp_path)  # the CPUs this process may use (the test machine has 2)
    # only segments with records after the snapshot count: a newer segment starting at seq 10**6
    (tmp_path / "journal-00000000000001000000.log").write_bytes(b"")
    assert not read_ahead.worth_it(tmp_path, after_seq=10**6, cpus=2)
    assert read_ahead.worth_it(tmp_path, after_seq=10**6 - 2, cpus=2)


def test_recover_when_the_reader_writes_much_to_stderr_before_dying_reports_its_last_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1 MB of stderr would fill a pipe nobody reads and block the reader forever
    run_journaled(tmp_path, random_commands(31, 20))
    monkeypatch.setattr(read_ahead.ReadAhead, "command", lambda self: [
        sys.executable, "-c", "import sys; sys.stderr.write('x' * 1_000_000 + ' the end'); sys.exit(4)"])
    with pytest.raises(RecoveryError, match=r"exited \(4\): x+ the end$"):
        recover(tmp_path, Engine, repair=False, read_ahead=True)
