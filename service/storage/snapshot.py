"""Snapshots of the whole engine, tagged with their `seq` and `state_hash()`.

File `snapshot-<seq, 20 digits>.snap`:
    magic b"PXSNAP1\\n" | u64 seq | u32 crc32(body) | 64 ascii hex state hash | body (pickle)
Written to a temporary file, fsynced, renamed into place atomically, directory fsynced, so
a crash leaves either the old set of snapshots or the new one, never a half file under the
final name. A snapshot is valid when its crc matches and the engine it holds hashes to the
recorded value. Snapshots are local files written by this service (pickle is not for
untrusted input). The body is the pickled engine, or (engine, meta) when the service keeps
state beside the engine that must agree with it (the command bus's cursor and recent
idempotency keys, service/bus.py): a JSON-able dict.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

from engine.engine import Engine
from service.storage.journal import fsync_dir

MAGIC = b"PXSNAP1\n"
HEAD = struct.Struct("<QI64s")
log = logging.getLogger("exchange.snapshot")


class SnapshotInvalid(RuntimeError):
    """A snapshot file that fails its checks."""


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.snap"


def snapshots(directory: Path) -> list[Path]:
    """Snapshot files, oldest first."""
    return sorted(directory.glob("snapshot-*.snap"))


def snapshot_seq(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def write_snapshot(directory: Path, engine: Engine, meta: dict[str, Any] | None = None) -> Path:
    """Write the engine's state (and `meta`, when given) atomically; return the final path."""
    directory.mkdir(parents=True, exist_ok=True)
    body = pickle.dumps(engine if meta is None else (engine, meta), protocol=pickle.HIGHEST_PROTOCOL)
    digest = engine.state_hash().encode()
    final = directory / snapshot_name(engine.seq)
    tmp = final.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + HEAD.pack(engine.seq, zlib.crc32(body), digest) + body)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a full disk: give the space back; the older snapshots stay as they are
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.replace(tmp, final)
    fsync_dir(directory)
    return final


def read_snapshot(path: Path) -> Engine:
    """Load and verify one snapshot."""
    return read_snapshot_meta(path)[0]


def read_snapshot_meta(path: Path) -> tuple[Engine, dict[str, Any]]:
    """Load and verify one snapshot: the engine and the meta written with it ({} if none)."""
    return parse_snapshot(path.read_bytes(), str(path))


def parse_snapshot(data: bytes, where: str) -> tuple[Engine, dict[str, Any]]:
    """Verify and load a snapshot file's bytes (`where` names it in errors)."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + HEAD.size:
        raise SnapshotInvalid(f"{where}: not a snapshot")
    seq, crc, digest = HEAD.unpack_from(data, len(MAGIC))
    body = data[len(MAGIC) + HEAD.size :]
    if zlib.crc32(body) != crc:
        raise SnapshotInvalid(f"{where}: checksum mismatch")
    engine = pickle.loads(body)
    meta: dict[str, Any] = {}
    if type(engine) is tuple and len(engine) == 2 and type(engine[1]) is dict:
        engine, meta = engine
    if not isinstance(engine, Engine) or engine.seq != seq:
        raise SnapshotInvalid(f"{where}: wrong content")
    if engine.state_hash().encode() != digest:
        raise SnapshotInvalid(f"{where}: state hash differs from the recorded one")
    return engine, meta


def load_newest(directory: Path, max_seq: int | None = None, meta: dict[str, Any] | None = None) -> Engine | None:
    """The newest valid snapshot (with seq <= max_seq when given); invalid ones are logged and
    skipped. `meta`, when given, receives the meta written with it."""
    for path in reversed(snapshots(directory)):
        if max_seq is not None and snapshot_seq(path) > max_seq:
            continue
        try:
            engine, found = read_snapshot_meta(path)
            if meta is not None:
                meta.update(found)
            return engine
        except (SnapshotInvalid, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            log.error("skipping invalid snapshot %s: %s", path, exc)
    return None


def prune_snapshots(directory: Path, keep: int = 2) -> list[Path]:
    """Keep the `keep` newest snapshots; delete older ones and stray temp files."""
    removed = []
    for path in snapshots(directory)[:-keep] if keep else snapshots(directory):
        path.unlink()
        removed.append(path)
    for tmp in directory.glob("snapshot-*.tmp"):
        tmp.unlink()
        removed.append(tmp)
    return removed
