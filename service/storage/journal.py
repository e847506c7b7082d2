"""Command journal: append-only, length-prefixed, checksummed records in numbered segments.

Record layout (little endian):
    u32 payload length | u32 crc32 | u64 seq_before | u64 seq | i64 ts_ns | payload
The crc covers everything after it. `seq_before` is the engine's event seq before the
command, `seq` the seq after it: replay must start each record exactly at `seq_before`
(no gap) and reach exactly `seq`, which proves it is the same run.

Segments are `journal-<first seq, 20 digits>.log`; a new one starts when the current one
passes `segment_bytes`. Group commit: `append_batch` writes every record of a batch with
one `write` and, in `batch` mode, one `fsync`; `always` fsyncs after every record; `off`
leaves flushing to the OS (a crash of the machine, not just the process, can lose the tail).

The flush of an append is `fdatasync`: it writes the data and the metadata needed to read
it back (the new file size), skipping only timestamps, as PostgreSQL's WAL does on Linux;
measured here ~55 us of CPU per call against ~75 us for `fsync`. Closing a segment (roll,
shutdown) uses a full `fsync`, and the directory is fsynced when a segment is created.

Reading: a damaged record at the very end of the newest segment is a torn write from a
crash; it is reported (and truncated by `repair_tail`). Damage anywhere else raises
`JournalCorrupt` naming the file and byte offset: never silent loss.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct("<IIQQq")
_META = struct.Struct("<QQq")
FSYNC_MODES = ("batch", "always", "off")
MAX_RECORD = 1 << 20


class JournalCorrupt(RuntimeError):
    """A journal record that is damaged where a crash cannot have damaged it."""

    def __init__(self, path: Path, offset: int, why: str) -> None:
        super().__init__(f"journal corrupt: {path} at byte offset {offset}: {why}")
        self.path = path
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Record:
    seq_before: int
    seq: int
    ts_ns: int
    payload: bytes
    path: Path
    offset: int


@dataclass(frozen=True, slots=True)
class TornTail:
    path: Path
    offset: int
    dropped_bytes: int


def encode_record(seq_before: int, seq: int, ts_ns: int, payload: bytes) -> bytes:
    """One record's bytes."""
    crc = zlib.crc32(payload, zlib.crc32(_META.pack(seq_before, seq, ts_ns)))
    return HEADER.pack(len(payload), crc, seq_before, seq, ts_ns) + payload


def segment_name(first_seq: int) -> str:
    return f"journal-{first_seq:020d}.log"


def segments(directory: Path) -> list[Path]:
    """Journal segments, oldest first."""
    return sorted(directory.glob("journal-*.log"))


def segment_first_seq(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def _scan(path: Path, is_last: bool) -> tuple[list[Record], TornTail | None]:
    data = path.read_bytes()
    out: list[Record] = []
    offset = 0
    size = len(data)
    while offset < size:
        rest = data[offset:]
        if not any(rest) and is_last:  # zero-filled tail left by a crash
            return out, TornTail(path, offset, size - offset)
        if len(rest) < HEADER.size:
            if is_last:
                return out, TornTail(path, offset, size - offset)
            raise JournalCorrupt(path, offset, "truncated header")
        length, crc, seq_before, seq, ts_ns = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if length > MAX_RECORD or end > size:
            if is_last:
                return out, TornTail(path, offset, size - offset)
            raise JournalCorrupt(path, offset, "record runs past the end of the segment")
        payload = data[offset + HEADER.size : end]
        if zlib.crc32(payload, zlib.crc32(_META.pack(seq_before, seq, ts_ns))) != crc:
            if is_last and end == size:
                return out, TornTail(path, offset, size - offset)
            raise JournalCorrupt(path, offset, "checksum mismatch")
        if seq <= seq_before or (out and seq_before != out[-1].seq):
            raise JournalCorrupt(path, offset, f"seq {seq_before}..{seq} does not follow the previous record")
        out.append(Record(seq_before, seq, ts_ns, payload, path, offset))
        offset = end
    return out, None


def read_journal(directory: Path) -> tuple[list[Record], TornTail | None]:
    """Every intact record, oldest first, and the torn tail of the newest segment if any."""
    paths = segments(directory)
    records: list[Record] = []
    torn: TornTail | None = None
    for i, path in enumerate(paths):
        recs, torn_here = _scan(path, is_last=i == len(paths) - 1)
        if recs and records and recs[0].seq_before != records[-1].seq:
            raise JournalCorrupt(path, 0, "segment does not continue the previous one")
        records.extend(recs)
        torn = torn_here or torn
    return records, torn


def iter_records(directory: Path, after_seq: int = 0) -> Iterator[Record]:
    """Intact records with seq > after_seq (a torn tail is ignored, corruption raises)."""
    records, _ = read_journal(directory)
    for rec in records:
        if rec.seq > after_seq:
            yield rec


def repair_tail(torn: TornTail) -> None:
    """Cut a torn tail off its segment (the crash-time partial write)."""
    with open(torn.path, "r+b") as f:
        f.truncate(torn.offset)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalWriter:
    """Appends batches to the newest segment (after recovery has repaired any torn tail)."""

    def __init__(self, directory: Path, fsync: str = "batch", segment_bytes: int = 64 << 20) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync mode must be one of {FSYNC_MODES}")
        self.directory = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        existing = segments(directory)
        self._path: Path | None = existing[-1] if existing else None
        self._file = open(self._path, "ab") if self._path else None  # noqa: SIM115
        self.bytes_written = 0
        self.fsyncs = 0

    def append_batch(self, records: list[tuple[int, int, int, bytes]], sync: bool = True) -> None:
        """Write (seq_before, seq, ts_ns, payload) records per the fsync mode, in one go.

        In `batch` mode with `sync=False` the fsync is left to the caller (the engine loop's
        pipelined group commit has the fsync helper process do it, service/storage/syncer.py).
        """
        if not records:
            return
        if self._file is None or self._file.tell() >= self.segment_bytes:
            self._roll(records[0][1])
        f = self._file
        assert f is not None
        if self.fsync == "always":
            for before, seq, ts, payload in records:
                blob = encode_record(before, seq, ts, payload)
                f.write(blob)
                f.flush()
                os.fdatasync(f.fileno())
                self.fsyncs += 1
                self.bytes_written += len(blob)
        else:
            blob = b"".join(encode_record(*rec) for rec in records)
            f.write(blob)
            f.flush()
            if self.fsync == "batch" and sync:
                os.fdatasync(f.fileno())
                self.fsyncs += 1
            self.bytes_written += len(blob)

    @property
    def path(self) -> Path | None:
        """The segment being appended to."""
        return self._path

    def _roll(self, first_seq: int) -> None:
        if self._file is not None:  # the old segment is complete and durable before the new one
            self._file.flush()
            os.fsync(self._file.fileno())
            self.fsyncs += 1
            self._file.close()
        self._path = self.directory / segment_name(first_seq)
        self._file = open(self._path, "ab")  # noqa: SIM115
        fsync_dir(self.directory)

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            if self.fsync != "off":
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def prune_segments(directory: Path, covered_seq: int) -> list[Path]:
    """Delete segments whose every record has seq <= covered_seq; return what was deleted."""
    paths = segments(directory)
    removed = []
    for path, nxt in itertools.pairwise(paths):
        if segment_first_seq(nxt) - 1 <= covered_seq:
            path.unlink()
            removed.append(path)
    return removed
