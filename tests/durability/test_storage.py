"""Journal, snapshots and recovery on real files (SPEC §7 determinism; issue 5)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import commands as c
from engine.engine import Engine
from service.storage.codec import decode_command, encode_command
from service.storage.journal import (
    JournalCorrupt,
    JournalWriter,
    prune_segments,
    read_journal,
    segments,
)
from service.storage.recovery import RecoveryError, recover
from service.storage.regen import EventRegenerator
from service.storage.snapshot import load_newest, snapshots, write_snapshot

BTC = "BTC-PERP"
CONFIG = Engine().config_fingerprint()


def random_commands(seed: int, n: int) -> list[c.Command]:
    """A seeded mix of every command kind, including ones that get rejected."""
    rng = random.Random(seed)
    out: list[c.Command] = [c.CreateAccount(f"k{i}") for i in range(4)]
    out += [c.Deposit(i, rng.randint(1, 50_000) * 10**8) for i in range(1, 5)]
    out.append(c.SetMarkPrice(BTC, 100_000))
    for i in range(n):
        r = rng.random()
        aid = rng.randint(1, 4)
        ts = 1_000 + i
        if r < 0.55:
            out.append(
                c.PlaceOrder(
                    aid, BTC, rng.choice(("buy", "sell")), rng.randint(1, 400),
                    100_000 + rng.randint(-30, 30),
                    time_in_force=rng.choice(("GTC", "GTC", "IOC", "FOK")),
                    client_order_id=rng.choice((None, None, f"c{rng.randint(0, 30)}")),
                    ts_ns=ts,
                )
            )
        elif r < 0.7:
            out.append(c.CancelOrder(aid, rng.randint(1, i + 1), ts_ns=ts))
        elif r < 0.8:
            out.append(c.AmendOrder(aid, rng.randint(1, i + 1), qty_lots=rng.randint(1, 400), ts_ns=ts))
        elif r < 0.9:
            out.append(c.SetMarkPrice(BTC, 100_000 + rng.randint(-3_000, 3_000), ts_ns=ts))
        elif r < 0.95:
            out.append(c.Withdraw(aid, rng.randint(1, 5_000) * 10**8, ts_ns=ts))
        else:
            out.append(c.PlaceOrder(aid, BTC, rng.choice(("buy", "sell")), rng.randint(1, 100), None, order_type="market", ts_ns=ts))
    return out


def run_journaled(directory: Path, cmds: list[c.Command], fsync: str = "off", segment_bytes: int = 1 << 20) -> Engine:
    engine = Engine()
    writer = JournalWriter(directory, CONFIG, fsync=fsync, segment_bytes=segment_bytes)
    for cmd in cmds:
        before = engine.seq
        engine.apply(cmd)
        writer.append_batch([(before, engine.seq, cmd.ts_ns, encode_command(cmd))])
    writer.close()
    return engine


@pytest.mark.parametrize("cmd", random_commands(3, 60), ids=lambda x: type(x).__name__)
def test_codec_when_round_tripped_gives_equal_command(cmd: c.Command) -> None:
    assert decode_command(encode_command(cmd)) == cmd


def test_recover_when_journal_only_replays_to_same_state_hash(tmp_path: Path) -> None:
    cmds = random_commands(1, 400)
    engine = run_journaled(tmp_path, cmds, fsync="batch")
    rec = recover(tmp_path, Engine)
    assert rec.replayed == len(cmds) and rec.torn is None
    assert rec.engine.state_hash() == engine.state_hash()
    assert rec.engine.seq == engine.seq


def test_recover_when_snapshot_in_the_middle_replays_only_the_tail(tmp_path: Path) -> None:
    cmds = random_commands(2, 400)
    engine = Engine()
    writer = JournalWriter(tmp_path, CONFIG, fsync="off", segment_bytes=4096)
    for i, cmd in enumerate(cmds):
        before = engine.seq
        engine.apply(cmd)
        writer.append_batch([(before, engine.seq, cmd.ts_ns, encode_command(cmd))])
        if i == 250:
            write_snapshot(tmp_path, engine)
            snap_seq = engine.seq
    writer.close()
    assert len(segments(tmp_path)) > 3
    removed = prune_segments(tmp_path, snap_seq)
    assert removed
    rec = recover(tmp_path, Engine)
    assert rec.snapshot_seq == snap_seq
    assert rec.replayed == len(cmds) - 251
    assert rec.engine.state_hash() == engine.state_hash()


def test_recover_when_last_record_torn_truncates_and_keeps_the_rest(tmp_path: Path) -> None:
    cmds = random_commands(4, 100)
    run_journaled(tmp_path, cmds)
    (seg,) = segments(tmp_path)
    data = seg.read_bytes()
    seg.write_bytes(data[:-7])  # a crash in the middle of the last write
    rec = recover(tmp_path, Engine)
    assert rec.torn is not None and rec.torn.path == seg
    assert rec.replayed == len(cmds) - 1
    expected = Engine()
    for cmd in cmds[:-1]:
        expected.apply(cmd)
    assert rec.engine.state_hash() == expected.state_hash()
    # the tail was cut: reading again finds nothing torn
    assert read_journal(tmp_path)[1] is None


def test_recover_when_middle_record_corrupted_raises_naming_file_and_offset(tmp_path: Path) -> None:
    run_journaled(tmp_path, random_commands(5, 100))
    (seg,) = segments(tmp_path)
    data = bytearray(seg.read_bytes())
    records, _ = read_journal(tmp_path)
    victim = records[40]
    data[victim.offset + 40] ^= 0xFF  # flip a byte inside record 40's payload
    seg.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as err:
        recover(tmp_path, Engine)
    assert err.value.path == seg and err.value.offset == victim.offset
    assert str(seg) in str(err.value) and str(victim.offset) in str(err.value)


def test_recover_when_a_segment_is_missing_refuses_with_gap_error(tmp_path: Path) -> None:
    run_journaled(tmp_path, random_commands(6, 300), segment_bytes=2048)
    segs = segments(tmp_path)
    assert len(segs) >= 3
    segs[1].unlink()
    with pytest.raises(JournalCorrupt):
        recover(tmp_path, Engine)


def test_recover_when_snapshot_is_damaged_falls_back_to_older_state(tmp_path: Path) -> None:
    cmds = random_commands(7, 200)
    engine = Engine()
    writer = JournalWriter(tmp_path, CONFIG, fsync="off")
    for i, cmd in enumerate(cmds):
        before = engine.seq
        engine.apply(cmd)
        writer.append_batch([(before, engine.seq, cmd.ts_ns, encode_command(cmd))])
        if i in (50, 150):
            write_snapshot(tmp_path, engine)
    writer.close()
    newest = snapshots(tmp_path)[-1]
    raw = bytearray(newest.read_bytes())
    raw[-10] ^= 0x01
    newest.write_bytes(bytes(raw))
    rec = recover(tmp_path, Engine)
    assert rec.snapshot_seq < int(newest.stem.split("-")[1])
    assert rec.engine.state_hash() == engine.state_hash()


def test_recover_when_config_differs_refuses_with_divergence(tmp_path: Path) -> None:
    run_journaled(tmp_path, random_commands(8, 200))
    with pytest.raises(RecoveryError):
        recover(tmp_path, lambda: Engine(max_open_orders=1))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(0, 150))
def test_snapshot_restore_when_cut_anywhere_then_replay_equals_uninterrupted_run(seed: int, cut: int) -> None:
    cmds = random_commands(seed, 150)
    whole = Engine()
    for cmd in cmds:
        whole.apply(cmd)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        part = Engine()
        for cmd in cmds[:cut]:
            part.apply(cmd)
        write_snapshot(Path(d), part)
        restored = load_newest(Path(d))
        assert restored is not None and restored.state_hash() == part.state_hash()
        for cmd in cmds[cut:]:
            restored.apply(cmd)
            restored.check_invariants()
        assert restored.state_hash() == whole.state_hash()


def test_durable_journal_when_events_regenerated_they_equal_the_original_events(tmp_path: Path) -> None:
    from service.storage.durable import DurableJournal

    cmds = random_commands(9, 300)
    dj = DurableJournal(tmp_path, Engine, fsync="off", snapshot_every=10**9)
    live = dj.recover().engine
    original: list = []
    for i, cmd in enumerate(cmds):
        events = live.apply(cmd)
        original.extend(events)
        dj.append_batch([(cmd, events)])
        if i == 120:
            dj.snapshot(live, published_seq=0)  # publisher behind: the journal must stay whole
    dj.close()
    a, b = original[50].seq, original[-30].seq
    regenerated = EventRegenerator(tmp_path, Engine)(a, b)
    assert regenerated == [e for e in original if a < e.seq <= b]
    # once the publisher has passed the snapshot, segments behind it may go
    dj.prune(published_seq=live.seq)
    assert EventRegenerator(tmp_path, Engine)(original[-10].seq, live.seq) == [e for e in original if e.seq > original[-10].seq]


@pytest.mark.parametrize("cmd", [
    c.Withdraw(1, 10**20 + 1, ts_ns=5),  # orjson reads it as a float
    c.Withdraw(1, -(10**25) - 7, ts_ns=5),
    c.CancelOrder(3, int("9" * 400), ts_ns=6),  # orjson refuses it ("number is infinity")
    c.PlaceOrder(2, "BTC-PERP", c.BUY, 10**30, 10**19, client_order_id="1e5", ts_ns=2**64),
], ids=["20_digits", "negative_26_digits", "400_digits", "several_fields"])
def test_codec_when_integers_beyond_64_bits_round_trips_exactly(cmd: Any) -> None:
    assert decode_command(encode_command(cmd)) == cmd


def test_durable_journal_when_range_was_pruned_raises_lookup_error(tmp_path: Path) -> None:
    from service.storage.durable import DurableJournal

    cmds = random_commands(10, 300)
    dj = DurableJournal(tmp_path, Engine, fsync="off", segment_bytes=2048)
    live = dj.recover().engine
    for i, cmd in enumerate(cmds):
        dj.append_batch([(cmd, live.apply(cmd))])
        if i == 200:
            dj.snapshot(live, published_seq=live.seq)  # published: segments behind it go
    dj.close()
    (tmp_path / next(p.name for p in snapshots(tmp_path))).unlink()  # and the base snapshot is lost
    with pytest.raises(LookupError):
        EventRegenerator(tmp_path, Engine)(5, 50)


# -- damage that a crash cannot cause is never taken for a torn tail (audit R1) ------------------


@pytest.mark.parametrize("which", ["middle", "last"])
def test_recover_when_a_length_field_is_damaged_refuses_instead_of_cutting_records(
    tmp_path: Path, which: str
) -> None:
    run_journaled(tmp_path, random_commands(11, 100))
    (seg,) = segments(tmp_path)
    records, _ = read_journal(tmp_path)
    victim = records[len(records) // 2] if which == "middle" else records[-1]
    data = bytearray(seg.read_bytes())
    data[victim.offset + 1] ^= 0x40  # the length now points past the end of the file
    seg.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="header checksum") as err:
        recover(tmp_path, Engine)
    assert err.value.path == seg and err.value.offset == victim.offset
    assert seg.read_bytes() == bytes(data)  # nothing was cut


def test_recover_when_the_newest_segment_lost_its_header_in_a_crash_starts_it_again(
    tmp_path: Path,
) -> None:
    engine = run_journaled(tmp_path, random_commands(12, 300), segment_bytes=2048)
    newest = tmp_path / "journal-99999999999999999999.log"
    newest.write_bytes(b"PXJR")  # created, then the crash came mid-header
    rec = recover(tmp_path, Engine)
    assert rec.torn is not None and rec.torn.path == newest and rec.torn.offset == 0
    assert rec.engine.state_hash() == engine.state_hash()
    writer = JournalWriter(tmp_path, CONFIG, fsync="off")  # writes the header afresh
    writer.append_batch([(engine.seq, engine.seq + 1, 1, encode_command(c.CreateAccount("z")))])
    writer.close()
    assert read_journal(tmp_path)[0][-1].seq == engine.seq + 1


# -- the journal remembers the rules it was written under (audit R7) ---------------------------


def _with_taker_fee(ppm: int) -> Engine:
    from dataclasses import replace

    from engine.instruments import default_instruments

    return Engine({s: replace(i, taker_fee_ppm=ppm) for s, i in default_instruments().items()})


def test_recover_when_fees_differ_refuses_although_seq_counts_would_match(tmp_path: Path) -> None:
    cmds = random_commands(13, 200)
    run_journaled(tmp_path, cmds)
    other = _with_taker_fee(100)
    for cmd in cmds:  # the same commands give the same seqs under other fees...
        other.apply(cmd)
    assert other.seq == run_journaled(tmp_path / "b", cmds).seq
    with pytest.raises(RecoveryError, match="config fingerprint"):  # ...but other balances
        recover(tmp_path, lambda: _with_taker_fee(100))


def test_recover_when_the_snapshot_holds_other_rules_refuses(tmp_path: Path) -> None:
    engine = run_journaled(tmp_path, random_commands(14, 100))
    write_snapshot(tmp_path, engine)
    with pytest.raises(RecoveryError, match="snapshot"):
        recover(tmp_path, lambda: _with_taker_fee(100))


# -- the data dir lock and the operator's snapshot (audit R4, R6) --------------------------------


def test_data_dir_when_held_by_one_journal_refuses_a_second_until_closed(tmp_path: Path) -> None:
    from service.storage.durable import DataDirLocked, DurableJournal

    first = DurableJournal(tmp_path, Engine, fsync="off")
    first.recover()
    second = DurableJournal(tmp_path, Engine, fsync="off")
    with pytest.raises(DataDirLocked, match="in use by another process"):
        second.recover()
    first.close()
    second.recover()
    second.close()


def test_tools_snapshot_when_run_keeps_segments_unless_asked_to_prune(tmp_path: Path) -> None:
    from service.storage.durable import DurableJournal
    from service.tools import main

    run_journaled(tmp_path, random_commands(15, 300), segment_bytes=2048)
    before = segments(tmp_path)
    assert len(before) >= 3
    held = DurableJournal(tmp_path, Engine, fsync="off")
    held.recover()
    assert main(["snapshot", str(tmp_path)]) == 1  # the service holds the dir
    held.close()
    assert main(["snapshot", str(tmp_path)]) == 0
    assert segments(tmp_path) == before  # Redis may still need them
    assert main(["snapshot", "--prune", str(tmp_path)]) == 0
    assert len(segments(tmp_path)) == 1


def test_snapshot_when_fsync_off_first_makes_the_journal_durable(tmp_path: Path) -> None:
    from service.storage.durable import DurableJournal

    dj = DurableJournal(tmp_path, Engine, fsync="off")
    live = dj.recover().engine
    for cmd in random_commands(16, 50):
        dj.append_batch([(cmd, live.apply(cmd))])
    assert dj.writer is not None
    synced = dj.writer.fsyncs
    dj.snapshot(live)  # a snapshot must never claim records the disk may not have
    assert dj.writer.fsyncs == synced + 1
    dj.close()


def test_recover_when_repairing_fsyncs_every_segment_before_anything_builds_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a kill -9, records written but never fsynced are replayed as real: they must be
    on disk before the service answers, publishes or snapshots anything built on them."""
    import os

    run_journaled(tmp_path, random_commands(17, 300), segment_bytes=2048)
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    recover(tmp_path, Engine, repair=False)  # `verify` reads only
    assert synced == []
    recover(tmp_path, Engine)
    assert {str(p) for p in segments(tmp_path)} <= set(synced) and str(tmp_path) in synced


def test_cancel_and_amend_records_written_before_client_order_ids_decode_unchanged() -> None:
    # journal records are positional: the by-client-id field was appended after ts_ns, so a
    # record of an earlier version keeps its timestamp and names the order by its id
    assert decode_command(b'["CancelOrder",3,17,99]') == c.CancelOrder(3, 17, ts_ns=99)
    assert decode_command(b'["AmendOrder",3,17,500,null,99]') == c.AmendOrder(3, 17, 500, None, ts_ns=99)
    new = c.AmendOrder(3, 0, None, 20, ts_ns=5, client_order_id="bot-1")
    assert decode_command(encode_command(new)) == new
