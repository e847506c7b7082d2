"""Start-up recovery: newest valid snapshot + replay of the journal tail.

Replay goes through the same deterministic engine. The snapshot and every journal segment
must carry this engine's config fingerprint (instruments, fees, tiers, limits), and after
every record the engine's seq must equal the seq recorded with it; else the data dir does not
describe this engine (other config, other version, tampering) and recovery stops with an
error rather than guess.
A torn last record is truncated and logged; any other damage raises `JournalCorrupt`.

Streaming: the journal is read one segment at a time and each record is decoded and applied
as it is read (`JournalStream`), so recovery holds the engine plus one segment, never the
whole journal. Damage is found when it is reached, after the records before it were applied
to an engine that is then thrown away (recovery raises; nothing was answered or published
from it, `on_events` aside). The torn tail, in the newest segment, is known (and cut) at the
end, and the segments are fsynced before `recover` returns.

Garbage collection is off during the replay: the replay builds a large heap of long-lived,
acyclic objects (orders, accounts, histories), and CPython's collector would walk it again
and again as it grows (a third of the time of a 1M-command replay). At the end the heap is
either moved to the permanent generation (`freeze_gc=True`, what the service does with
EXCHANGE_GC_FREEZE on: the collector never walks it again) or collected once.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.engine import Engine
from service.storage.bus_ledger import BusLedger
from service.storage.codec import decode_command, record_origin
from service.storage.journal import (
    ConfigMismatch,
    JournalStream,
    TornTail,
    fsync_dir,
    repair_tail,
    segments,
    sync_file,
)
from service.storage.read_ahead import ReadAhead, ReaderFailed, command_of, worth_it
from service.storage.snapshot import load_newest

log = logging.getLogger("exchange.recovery")


class RecoveryError(RuntimeError):
    """The data dir cannot be replayed into a consistent engine."""


@dataclass
class Recovered:
    engine: Engine
    snapshot_seq: int
    replayed: int
    torn: TornTail | None
    reader_peak_rss: int = 0  # bytes held at most by the read-ahead process (0: read in process)
    bus: BusLedger | None = None  # where the engine stands in the command bus (bus_ledger.py)


def recover(
    directory: Path,
    new_engine: Callable[[], Engine],
    repair: bool = True,
    on_events: Callable[[list[Any]], None] | None = None,
    max_snapshot_seq: int | None = None,
    freeze_gc: bool = False,
    read_ahead: bool | None = None,
    bus_window: int = 100_000,
) -> Recovered:
    """Rebuild the engine from `directory`. `on_events` sees the replayed events (for
    re-publishing). `read_ahead`: read and parse the journal in a second process (None:
    when there is a second core and the journal is large enough, read_ahead.worth_it).
    `bus_window`: how many idempotency keys of bus commands the returned ledger keeps."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _recover(directory, new_engine, repair, on_events, max_snapshot_seq, read_ahead, bus_window)
    finally:
        if freeze_gc:
            gc.freeze()
        elif collecting:
            gc.collect()
        if collecting:
            gc.enable()


def _recover(
    directory: Path,
    new_engine: Callable[[], Engine],
    repair: bool,
    on_events: Callable[[list[Any]], None] | None,
    max_snapshot_seq: int | None,
    read_ahead: bool | None,
    bus_window: int,
) -> Recovered:
    directory.mkdir(parents=True, exist_ok=True)
    fresh = new_engine()
    config = fresh.config_fingerprint()
    meta: dict[str, Any] = {}
    engine = load_newest(directory, max_seq=max_snapshot_seq, meta=meta)
    try:
        bus = BusLedger.from_meta(meta, bus_window)
    except (ValueError, TypeError) as exc:
        raise RecoveryError(f"the newest snapshot's bus ledger is unreadable: {exc!r}") from exc
    snapshot_seq = engine.seq if engine is not None else 0
    if engine is None:
        engine = fresh
    elif engine.config_fingerprint() != config:
        raise RecoveryError(
            f"the snapshot at seq {snapshot_seq} in {directory} holds other instruments or limits "
            "than this service is configured with: start with the EXCHANGE_CONFIG the data dir "
            "was written with, or start from an empty data dir"
        )
    if read_ahead is None:
        read_ahead = worth_it(directory, engine.seq)
    # records as read and checked here, or parsed ahead by a second process (read_ahead.py)
    stream: JournalStream | ReadAhead
    stream, decode = (
        (ReadAhead(directory, config, engine.seq), command_of) if read_ahead else (JournalStream(directory, config), decode_command)
    )
    replayed = 0
    apply = engine.apply
    try:
        # decode and apply as the records come: one segment in memory at a time
        for seq_before, seq, _ts, item, path, offset in stream:
            if seq <= engine.seq:
                continue
            if seq_before != engine.seq:
                raise RecoveryError(
                    f"journal gap at {path} offset {offset}: record starts after seq {seq_before}, "
                    f"state is at seq {engine.seq}"
                )
            try:
                command = decode(item)
                origin = record_origin(item)
            except (ValueError, KeyError, TypeError) as exc:  # checksummed, yet not a command
                raise RecoveryError(f"undecodable record at {path} offset {offset}: {exc!r}") from exc
            events = apply(command)
            if engine.seq != seq:
                raise RecoveryError(
                    f"replay diverged at {path} offset {offset}: recorded seq {seq}, engine reached {engine.seq}"
                )
            if origin is not None:
                bus.applied(origin[0], origin[1], seq_before, seq)
            if on_events is not None:
                on_events(events)
            replayed += 1
    except ConfigMismatch as exc:
        raise RecoveryError(str(exc)) from exc
    except ReaderFailed as exc:
        raise RecoveryError(str(exc)) from exc
    torn = stream.torn
    if torn is not None:
        log.warning(
            "torn journal tail in %s at offset %d (%d bytes): a crash interrupted a write; %s",
            torn.path, torn.offset, torn.dropped_bytes, "truncating" if repair else "ignored",
        )
        if repair:
            repair_tail(torn)
    if repair:
        # A kill -9 leaves written but unsynced records that replay has now treated as real:
        # make them durable before anything built on them is answered, published or snapshotted
        # (recover returns only after this).
        for path in segments(directory):
            sync_file(path)
        fsync_dir(directory)
    return Recovered(engine, snapshot_seq, replayed, torn, stream.peak_rss if isinstance(stream, ReadAhead) else 0, bus)
