"""Start-up recovery: newest valid snapshot + replay of the journal tail.

Replay goes through the same deterministic engine. The snapshot and every journal segment
must carry this engine's config fingerprint (instruments, fees, tiers, limits), and after
every record the engine's seq must equal the seq recorded with it; else the data dir does not
describe this engine (other config, other version, tampering) and recovery stops with an
error rather than guess.
A torn last record is truncated and logged; any other damage raises `JournalCorrupt`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.engine import Engine
from service.storage.codec import decode_command
from service.storage.journal import (
    ConfigMismatch,
    TornTail,
    fsync_dir,
    read_journal,
    repair_tail,
    segments,
    sync_file,
)
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


def recover(
    directory: Path,
    new_engine: Callable[[], Engine],
    repair: bool = True,
    on_events: Callable[[list[Any]], None] | None = None,
    max_snapshot_seq: int | None = None,
) -> Recovered:
    """Rebuild the engine from `directory`. `on_events` sees the replayed events (for re-publishing)."""
    directory.mkdir(parents=True, exist_ok=True)
    fresh = new_engine()
    config = fresh.config_fingerprint()
    engine = load_newest(directory, max_seq=max_snapshot_seq)
    snapshot_seq = engine.seq if engine is not None else 0
    if engine is None:
        engine = fresh
    elif engine.config_fingerprint() != config:
        raise RecoveryError(
            f"the snapshot at seq {snapshot_seq} in {directory} holds other instruments or limits "
            "than this service is configured with: start with the EXCHANGE_CONFIG the data dir "
            "was written with, or start from an empty data dir"
        )
    try:
        records, torn = read_journal(directory, config)
    except ConfigMismatch as exc:
        raise RecoveryError(str(exc)) from exc
    if torn is not None:
        log.warning(
            "torn journal tail in %s at offset %d (%d bytes): a crash interrupted a write; %s",
            torn.path, torn.offset, torn.dropped_bytes, "truncating" if repair else "ignored",
        )
        if repair:
            repair_tail(torn)
    if repair:
        # A kill -9 leaves written but unsynced records that replay will now treat as real:
        # make them durable before anything built on them is answered, published or snapshotted.
        for path in segments(directory):
            sync_file(path)
        fsync_dir(directory)
    replayed = 0
    for rec in records:
        if rec.seq <= engine.seq:
            continue
        if rec.seq_before != engine.seq:
            raise RecoveryError(
                f"journal gap at {rec.path} offset {rec.offset}: record starts after seq {rec.seq_before}, "
                f"state is at seq {engine.seq}"
            )
        try:
            command = decode_command(rec.payload)
        except (ValueError, KeyError, TypeError) as exc:  # checksummed, yet not a command
            raise RecoveryError(
                f"undecodable record at {rec.path} offset {rec.offset}: {exc!r}"
            ) from exc
        events = engine.apply(command)
        if engine.seq != rec.seq:
            raise RecoveryError(
                f"replay diverged at {rec.path} offset {rec.offset}: recorded seq {rec.seq}, engine reached {engine.seq}"
            )
        if on_events is not None:
            on_events(events)
        replayed += 1
    return Recovered(engine, snapshot_seq, replayed, torn)
