"""The command bus's ledger (service/storage/bus_ledger.py) through the journal, snapshots and
recovery, and the engine loop's once-only rule for bus commands (service/engine_loop.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine import commands as c
from engine.engine import Engine
from service.engine_loop import Duplicate, EngineLoop
from service.metrics import Metrics
from service.storage.bus_ledger import BusLedger, entry_order
from service.storage.codec import decode_command, encode_command, parse_record, record_origin
from service.storage.durable import DurableJournal
from service.storage.journal import iter_records
from service.storage.recovery import recover
from service.storage.snapshot import read_snapshot_meta, snapshots


def test_ledger_keeps_the_last_keys_and_the_furthest_cursor() -> None:
    ledger = BusLedger(window=2)
    ledger.applied("5-0", "a", 0, 1)
    ledger.applied("7-1", "b", 1, 2)
    ledger.applied("7-0", "b", 1, 2)  # a duplicate found later in the stream: cursor stays
    assert ledger.cursor == "7-1"
    ledger.applied("8-0", "c", 2, 3)  # the window holds 2: "a" leaves
    assert ledger.seen("a") is None and ledger.seen("b") == (1, 2) and ledger.seen("c") == (2, 3)
    again = BusLedger.from_meta(ledger.to_meta(), window=1)
    assert again.cursor == "8-0" and list(again.keys) == ["c"]
    assert entry_order("10-0") > entry_order("9-5")  # numeric, not string, order
    with pytest.raises(ValueError):
        BusLedger.from_meta({"bus_cursor": "x-y"})
    with pytest.raises(ValueError):
        BusLedger(window=0)


def test_codec_carries_the_origin_and_the_command_exactly() -> None:
    cmd = c.CancelOrder(7, 10**40, 5)  # an order id beyond 64 bits: read back exactly
    data = encode_command(cmd, ("1700000000000-3", "gw-a:17"))
    assert data.startswith(b"{")
    assert decode_command(data) == cmd
    assert record_origin(data) == ("1700000000000-3", "gw-a:17")
    assert record_origin(parse_record(data)) == ("1700000000000-3", "gw-a:17")
    plain = encode_command(cmd)
    assert record_origin(plain) is None and record_origin(parse_record(plain)) is None
    with pytest.raises(ValueError):
        record_origin(b'{"c": ["Deposit", 1, 2], "bus": 5, "key": "k"}')


def _records(n: int, start: int = 0) -> list[tuple[Any, ...]]:
    return [(c.Deposit(1, 100 + i), f"{1000 + i}-0", f"key-{i}") for i in range(start, start + n)]


def _journal_with_bus_commands(directory: Path, snapshot_after: int | None) -> Engine:
    """Commands applied as the loop does: accounts by HTTP (no origin), deposits by the bus."""
    journal = DurableJournal(directory, Engine, fsync="off", snapshot_mode="inline")
    engine = journal.recover().engine
    assert journal.bus is not None
    for cmd in (c.CreateAccount("k1"), c.CreateAccount("k2")):
        journal.append_batch([(cmd, engine.apply(cmd))])
    for i, (cmd, entry, key) in enumerate(_records(30)):
        before = engine.seq
        events = engine.apply(cmd)
        journal.bus.applied(entry, key, before, engine.seq)
        journal.append_batch([(cmd, events, (entry, key))])
        if snapshot_after is not None and i == snapshot_after:
            journal.snapshot(engine)
    journal.close()
    return engine


@pytest.mark.parametrize("ahead", [False, True])
@pytest.mark.parametrize("snapshot_after", [None, 9, 29])
def test_recovery_rebuilds_the_ledger_from_snapshot_and_journal(
    tmp_path: Path, snapshot_after: int | None, ahead: bool
) -> None:
    live = _journal_with_bus_commands(tmp_path, snapshot_after)
    rec = recover(tmp_path, Engine, repair=False, read_ahead=ahead)
    assert rec.engine.state_hash() == live.state_hash()
    assert rec.bus is not None
    assert rec.bus.cursor == "1029-0"
    assert list(rec.bus.keys) == [f"key-{i}" for i in range(30)]
    # key-0 is the first deposit: seq 2 (two accounts) -> 3
    assert rec.bus.seen("key-0") == (2, 3)
    if snapshot_after is not None:
        _, meta = read_snapshot_meta(snapshots(tmp_path)[-1])
        assert meta["bus_cursor"] == f"{1000 + snapshot_after}-0"


def test_recovery_keeps_the_window(tmp_path: Path) -> None:
    _journal_with_bus_commands(tmp_path, 9)
    rec = recover(tmp_path, Engine, repair=False, bus_window=5)
    assert rec.bus is not None and list(rec.bus.keys) == [f"key-{i}" for i in range(25, 30)]


def test_a_snapshot_without_bus_commands_has_no_meta(tmp_path: Path) -> None:
    journal = DurableJournal(tmp_path, Engine, fsync="off", snapshot_mode="inline")
    engine = journal.recover().engine
    cmd = c.CreateAccount("k1")
    journal.append_batch([(cmd, engine.apply(cmd))])
    journal.snapshot(engine)
    journal.close()
    assert read_snapshot_meta(snapshots(tmp_path)[-1])[1] == {}


async def test_the_loop_applies_a_key_once_and_journals_its_origin(tmp_path: Path) -> None:
    journal = DurableJournal(tmp_path, Engine, fsync="batch")
    loop = EngineLoop(journal.recover().engine, Metrics(), journal=journal)
    loop.bus = journal.bus
    loop.start()
    try:
        await loop.submit(c.CreateAccount("k1"))
        # the same key twice in one batch, and once more later
        first, second = await asyncio.gather(
            loop.enqueue(c.Deposit(1, 500), origin=("10-0", "dep")),
            loop.enqueue(c.Deposit(1, 500), origin=("11-0", "dep")),
        )
        third = await loop.enqueue(c.Deposit(1, 500), origin=("12-0", "dep"))
        assert len(first) == 1 and first[0].seq == 2 and first[0].account_id == 1
        assert second == third == Duplicate(1, 2)
        assert loop.engine.accounts[1].wallet_atoms == 500
        assert loop.bus is not None and loop.bus.cursor == "12-0"
    finally:
        await loop.stop()
        journal.close()
    origins = [record_origin(r.payload) for r in iter_records(tmp_path)]
    assert origins == [None, ("10-0", "dep")]


def test_the_snapshot_tool_keeps_the_ledger(tmp_path: Path) -> None:
    """`python -m service.tools snapshot --prune` writes the newest snapshot and deletes the
    journal behind it: the ledger must be in it, or the next start reads the bus from 0."""
    from service.tools import main as tools

    _journal_with_bus_commands(tmp_path, None)
    assert tools(["snapshot", str(tmp_path), "--prune"]) == 0
    rec = recover(tmp_path, Engine, repair=False)
    assert rec.bus is not None and rec.bus.cursor == "1029-0" and len(rec.bus.keys) == 30


async def test_a_bus_command_that_changes_nothing_stays_out_of_the_ledger(tmp_path: Path) -> None:
    """Not journaled (no events), so not in the ledger either: the ledger says what the
    journal holds, live as after a restart."""
    journal = DurableJournal(tmp_path, Engine, fsync="off")
    loop = EngineLoop(journal.recover().engine, Metrics(), journal=journal)
    loop.bus = journal.bus
    loop.start()
    try:
        await loop.submit(c.CreateAccount("k1"))
        assert await loop.enqueue(c.CancelAllOrders(1), origin=("5-0", "noop")) == []
        assert loop.bus is not None and loop.bus.cursor == "0-0" and loop.bus.seen("noop") is None
    finally:
        await loop.stop()
        journal.close()
