"""Command journal: append-only, length-prefixed, checksummed records in numbered segments.

Segment layout (little endian): a header, then records.
    segment header: b"PXJRNL2\n" | 64 ascii hex config fingerprint | u32 crc32 of both
    record:         u32 payload length | u32 header crc | u32 payload crc
                    | u64 seq_before | u64 seq | i64 ts_ns | payload
The header crc covers the length and the three numbers, so a damaged length is recognised
as damage (never mistaken for a record that runs past the end of the file, i.e. a torn
write). `seq_before` is the engine's event seq before the command, `seq` the seq after it:
replay must start each record exactly at `seq_before` (no gap) and reach exactly `seq`. The
config fingerprint (`Engine.config_fingerprint()`: instruments, fees, tiers, bands, limits)
says which rules the records were applied under; recovery refuses a data dir written under
other rules, since replaying it would silently compute other numbers.

Segments are `journal-<first seq, 20 digits>.log`; a new one starts when the current one
passes `segment_bytes`. Group commit: `append_batch` writes every record of a batch with
one `write` and, in `batch` mode, one `fsync`; `always` fsyncs after every record; `off`
leaves flushing to the OS (a crash of the machine, not just the process, can lose the tail).

The flush of an append is `fdatasync`: it writes the data and the metadata needed to read
it back (the new file size), skipping only timestamps, as PostgreSQL's WAL does on Linux;
measured here ~55 us of CPU per call against ~75 us for `fsync`. Closing a segment (roll,
shutdown) uses a full `fsync`, and the directory is fsynced when a segment is created.

Reading: a record at the very end of the newest segment whose header is intact but whose
bytes stop short (or whose last bytes are wrong), a partial header, or an all-zero tail, is
a torn write from a crash; it is reported (and truncated by `repair_tail`). Any other damage
(a bad header crc, a bad payload crc with records after it, anything in an older segment)
raises `JournalCorrupt` naming the file and byte offset: never silent loss.

`acked_offset` is how far the current segment may have been acknowledged to clients: on
disk (`batch`, `always`) or written to the OS (`off`). When the journal cannot be made
durable (`discard_unacked`), everything after it is cut off, so commands that were
answered with an error cannot come back at the next start.

Full disk (ENOSPC, or EFBIG past RLIMIT_FSIZE): the writer holds no user-space buffer
(`os.write` on the descriptor), so what a failed write left behind, part of a record
included, is cut with `os.ftruncate`, which needs no free space. A segment roll that fails
leaves at most a partial header in the new segment, which the cut removes. Known limit: if
the cut itself fails (an I/O error, not a full disk), it is logged as critical
(service/storage/durable.py) and those records may come back at the next start.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import struct
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct("<IIIQQq")
_HEAD_CRC = struct.Struct("<IQQq")  # what the header crc covers
SEGMENT_MAGIC = b"PXJRNL2\n"
SEGMENT_HEADER = struct.Struct("<8s64sI")
FSYNC_MODES = ("batch", "always", "off")
MAX_RECORD = 1 << 20


class ConfigMismatch(RuntimeError):
    """A segment written under other rules (another EXCHANGE_CONFIG) than the engine's."""

    def __init__(self, path: Path, recorded: str, expected: str) -> None:
        super().__init__(
            f"{path} was written with config fingerprint {recorded[:16]}..., but this engine's "
            f"is {expected[:16]}...: start with the EXCHANGE_CONFIG the data dir was written "
            "with (replaying it under other instruments, fees or tiers would compute other numbers)"
        )
        self.path = path
        self.recorded = recorded
        self.expected = expected


class JournalCorrupt(RuntimeError):
    """A journal record that is damaged where a crash cannot have damaged it."""

    def __init__(self, path: Path, offset: int, why: str) -> None:
        super().__init__(f"journal corrupt: {path} at byte offset {offset}: {why}")
        self.path = path
        self.offset = offset
        self.why = why


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
    length = len(payload)
    head_crc = zlib.crc32(_HEAD_CRC.pack(length, seq_before, seq, ts_ns))
    return HEADER.pack(length, head_crc, zlib.crc32(payload), seq_before, seq, ts_ns) + payload


def encode_segment_header(config: str) -> bytes:
    fingerprint = config.encode().ljust(64, b"0")[:64]
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, fingerprint, zlib.crc32(SEGMENT_MAGIC + fingerprint))


def segment_name(first_seq: int) -> str:
    return f"journal-{first_seq:020d}.log"


def segments(directory: Path) -> list[Path]:
    """Journal segments, oldest first."""
    return sorted(directory.glob("journal-*.log"))


def segment_first_seq(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def _segment_config(path: Path, data: bytes, is_last: bool) -> str | None:
    """The config fingerprint in a segment's header; None for a torn (crash-time) header."""
    if len(data) < SEGMENT_HEADER.size or not any(data[: SEGMENT_HEADER.size]):
        if is_last and not any(data[SEGMENT_HEADER.size :]):
            return None  # created, then the crash came before its header was on disk
        raise JournalCorrupt(path, 0, "missing segment header")
    magic, fingerprint, crc = SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise JournalCorrupt(path, 0, "not a journal segment of format 2 (written by another version?)")
    if zlib.crc32(magic + fingerprint) != crc:
        raise JournalCorrupt(path, 0, "segment header checksum mismatch")
    return str(fingerprint.decode())


RawRecord = tuple[int, int, int, bytes, Path, int]  # seq_before, seq, ts_ns, payload, segment, offset


def _zeros_from(data: bytes) -> int:
    """len(data.rstrip(b"\0")) without copying the segment: the end of the last non-zero byte."""
    view = memoryview(data)
    end = len(data)
    while end > 0:
        start = max(0, end - 65536)
        chunk = bytes(view[start:end]).rstrip(b"\0")
        if chunk:
            return start + len(chunk)
        end = start
    return 0


def _segment_records(
    path: Path, data: bytes, is_last: bool, config: str | None, torn: list[TornTail], after: int | None = None
) -> Generator[RawRecord, None, int | None]:
    """The intact records of one segment's bytes, one at a time; returns the last one's seq. A
    torn tail (only allowed in the newest segment) ends the iteration and is appended to
    `torn`; other damage raises. `after`: the previous segment's last seq, which the first
    record must start from."""
    size = len(data)
    recorded = _segment_config(path, data, is_last)
    if recorded is None:
        torn.append(TornTail(path, 0, size))
        return after
    if config is not None and recorded != config:
        raise ConfigMismatch(path, recorded, config)
    offset = SEGMENT_HEADER.size
    zeros_from = _zeros_from(data) if is_last else size  # once: per record it would be quadratic
    unpack_from, head_pack, crc32, head_size = HEADER.unpack_from, _HEAD_CRC.pack, zlib.crc32, HEADER.size
    last_seq = after
    while offset < size:
        if offset >= zeros_from:  # zero-filled tail left by a crash (newest segment only)
            torn.append(TornTail(path, offset, size - offset))
            return last_seq
        if size - offset < head_size:
            if is_last:
                torn.append(TornTail(path, offset, size - offset))
                return last_seq
            raise JournalCorrupt(path, offset, "truncated header")
        length, head_crc, crc, seq_before, seq, ts_ns = unpack_from(data, offset)
        if crc32(head_pack(length, seq_before, seq, ts_ns)) != head_crc or length > MAX_RECORD:
            raise JournalCorrupt(path, offset, "record header checksum mismatch")
        end = offset + head_size + length
        if end > size:  # an intact header, the payload cut short: a crash mid-write
            if is_last:
                torn.append(TornTail(path, offset, size - offset))
                return last_seq
            raise JournalCorrupt(path, offset, "record runs past the end of the segment")
        payload = data[offset + head_size : end]
        if crc32(payload) != crc:
            if is_last and end == size:
                torn.append(TornTail(path, offset, size - offset))
                return last_seq
            raise JournalCorrupt(path, offset, "checksum mismatch")
        if seq <= seq_before or (last_seq is not None and seq_before != last_seq):
            if seq > seq_before and after is not None and offset == SEGMENT_HEADER.size:  # seq_before != after
                raise JournalCorrupt(path, 0, "segment does not continue the previous one")
            raise JournalCorrupt(path, offset, f"seq {seq_before}..{seq} does not follow the previous record")
        last_seq = seq
        yield seq_before, seq, ts_ns, payload, path, offset
        offset = end
    return last_seq


def _scan(path: Path, is_last: bool, config: str | None) -> tuple[list[Record], TornTail | None]:
    torn: list[TornTail] = []
    out = [
        Record(*raw) for raw in _segment_records(path, path.read_bytes(), is_last, config, torn)
    ]
    return out, (torn[0] if torn else None)


def read_journal(directory: Path, config: str | None = None) -> tuple[list[Record], TornTail | None]:
    """Every intact record, oldest first, and the torn tail of the newest segment if any.
    With `config`, every segment must have been written under that config fingerprint.
    Holds the whole journal in memory: recovery streams it instead (`JournalStream`)."""
    paths = segments(directory)
    records: list[Record] = []
    torn: TornTail | None = None
    for i, path in enumerate(paths):
        recs, torn_here = _scan(path, i == len(paths) - 1, config)
        if recs and records and recs[0].seq_before != records[-1].seq:
            raise JournalCorrupt(path, 0, "segment does not continue the previous one")
        records.extend(recs)
        torn = torn_here or torn
    return records, torn


class JournalStream:
    """The journal's records, oldest first, read one segment at a time.

    Iterating yields `(seq_before, seq, ts_ns, payload, path, offset)`; only the current
    segment's bytes are held (plus what the consumer keeps). The checks are `read_journal`'s,
    made as the records come: damage raises `JournalCorrupt` when it is reached, after the
    records before it were yielded. `torn` is set once the iteration is over.
    """

    def __init__(self, directory: Path, config: str | None = None) -> None:
        self.directory = directory
        self.config = config
        self.torn: TornTail | None = None

    def __iter__(self) -> Iterator[tuple[int, int, int, bytes, Path, int]]:
        paths = segments(self.directory)
        last_seq: int | None = None
        for i, path in enumerate(paths):
            data = path.read_bytes()
            torn: list[TornTail] = []
            last_seq = yield from _segment_records(path, data, i == len(paths) - 1, self.config, torn, last_seq)
            del data
            if torn:
                self.torn = torn[0]


def iter_records(directory: Path, after_seq: int = 0) -> Iterator[Record]:
    """Intact records with seq > after_seq (a torn tail is ignored, corruption raises)."""
    for before, seq, ts, payload, path, offset in JournalStream(directory):
        if seq > after_seq:
            yield Record(before, seq, ts, payload, path, offset)


def repair_tail(torn: TornTail) -> None:
    """Cut a torn tail off its segment (the crash-time partial write)."""
    cut_file(torn.path, torn.offset)


def cut_file(path: Path, offset: int) -> int:
    """Shorten `path` to `offset` bytes with `ftruncate` (which writes no data, so a full disk
    cannot stop it), then fsync it, best effort. Returns the bytes cut (0 if it was no longer)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        return _cut_fd(fd, offset)
    finally:
        os.close(fd)


def _cut_fd(fd: int, offset: int) -> int:
    size = os.fstat(fd).st_size
    if size <= offset:
        return 0
    os.ftruncate(fd, offset)
    with contextlib.suppress(OSError):  # best effort: the disk may be failing already
        os.fsync(fd)
    return size - offset


def _write_all(fd: int, data: bytes) -> int:
    """os.write until all of `data` is written; a short write is retried, so the error that
    stopped it (ENOSPC, EFBIG) is raised. Returns len(data)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # not for regular files; never loop forever
            raise OSError(errno.ENOSPC, "write wrote nothing")
        view = view[n:]
    return len(data)


def sync_file(path: Path) -> None:
    """fsync one file, or directory, through a descriptor of its own."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """fsync a directory's entries (a file created, renamed or deleted in it)."""
    sync_file(directory)


class JournalBroken(OSError):
    """A write or fsync of the journal failed before, or its tail was cut: nothing more is
    appended to it, and no snapshot claims the engine state."""


class JournalWriter:
    """Appends batches to the newest segment (after recovery has repaired any torn tail).

    Unbuffered: every append goes to the file descriptor with `os.write` before
    `append_batch` returns, so nothing waits in user space for a later flush. When a write
    fails (a full disk: ENOSPC, or EFBIG past RLIMIT_FSIZE, typically after part of a record
    went out), `discard_unacked` cuts the segment back with `os.ftruncate`, which writes no
    data and so does not need the space that just ran out. A buffered file cannot do that:
    its `truncate` flushes the unwritten buffer first and fails on the same full disk, and
    its close would write that buffer after the cut.

    After a failed write or fsync, or a cut, the writer is broken for good (`JournalBroken`
    on the next append or `sync`): the engine loop halts and a restart recovers from what
    is on disk.
    """

    def __init__(
        self, directory: Path, config: str, fsync: str = "batch", segment_bytes: int = 64 << 20
    ) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync mode must be one of {FSYNC_MODES}")
        self.directory = directory
        self.config = config
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.bytes_written = 0
        self.fsyncs = 0
        self.broken: str | None = None  # why appends are refused, once a write or fsync failed
        directory.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0  # bytes in the current segment (everything written went to the OS)
        self.acked_offset = 0
        # older segments rolled over while their tail was not acknowledged yet: (path, acked)
        self._rolled_unacked: list[tuple[Path, int]] = []
        # the fsync in flight (batch mode): (segment, offset it covers), see `sync_requested`
        self._in_flight: tuple[Path, int] | None = None
        existing = segments(directory)
        if existing:
            self._open(existing[-1])
            if self._size == 0:  # its header was torn off
                self._write_header()
            self.acked_offset = self._size

    def append_batch(self, records: list[tuple[int, int, int, bytes]], sync: bool = True) -> None:
        """Write (seq_before, seq, ts_ns, payload) records per the fsync mode, in one go.

        In `batch` mode with `sync=False` the fsync is left to the caller (the engine loop's
        pipelined group commit has the fsync helper process do it, service/storage/syncer.py),
        which reports it with `sync_requested` and `synced`. `acked_offset` moves only once
        the whole batch is written (and, per mode, fsynced): a batch that fails half-way is
        answered with an error as a whole, so none of its records may stay.
        """
        if self.broken is not None:
            raise JournalBroken(f"the journal failed before ({self.broken}); nothing more is written")
        if not records:
            return
        try:
            if self._fd is None or self._size >= self.segment_bytes:
                self._roll(records[0][1])
            fd = self._fd
            assert fd is not None
            if self.fsync == "always":
                for before, seq, ts, payload in records:
                    n = self._write(encode_record(before, seq, ts, payload))
                    os.fdatasync(fd)
                    self.fsyncs += 1
                    self.bytes_written += n
            else:
                n = self._write(b"".join(encode_record(*rec) for rec in records))
                if self.fsync == "batch" and sync:
                    os.fdatasync(fd)
                    self.fsyncs += 1
                self.bytes_written += n
        except Exception as exc:
            self.broken = f"{type(exc).__name__}: {exc}"
            raise
        if self.fsync != "batch" or sync:
            self.acked_offset = self._size

    @property
    def path(self) -> Path | None:
        """The segment being appended to."""
        return self._path

    def tell(self) -> int:
        """Bytes written to the current segment so far (all of them handed to the OS)."""
        return self._size

    def sync_requested(self, path: Path, offset: int) -> None:
        """An fsync of `path` up to `offset` is in flight elsewhere (the fsync helper): if a
        later write fails, `discard_unacked(keep_in_flight=True)` keeps what it covers."""
        self._in_flight = (path, offset)

    def synced(self, path: Path, offset: int) -> None:
        """An fsync done elsewhere covered `path` up to `offset`."""
        self._in_flight = None
        if path == self._path:
            self.acked_offset = max(self.acked_offset, offset)
            # asked for after the roll, which fsynced the older segments whole: all acknowledged
            self._rolled_unacked.clear()
        else:
            self._rolled_unacked = [
                (p, max(acked, offset) if p == path else acked) for p, acked in self._rolled_unacked
            ]

    def sync(self) -> None:
        """fsync what was written, in any mode (before a snapshot claims it)."""
        if self.broken is not None:
            raise JournalBroken(f"the journal failed before ({self.broken}); nothing is durable past it")
        if self._fd is not None:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self.broken = f"{type(exc).__name__}: {exc}"
                raise
            self.fsyncs += 1
            self.acked_offset = self._size

    def discard_unacked(self, keep_in_flight: bool = False) -> int:
        """Cut the segments back to what was acknowledged: what was written after it was never
        acknowledged and its commands are answered with an error. With `keep_in_flight` (a
        write failed, the fsync in flight may still succeed and its batches be answered) what
        that fsync covers stays; without (that fsync failed) it goes too. Uses only
        `ftruncate`, never a write. Returns the bytes cut."""
        in_flight = self._in_flight if keep_in_flight else None
        if not keep_in_flight:
            self._in_flight = None
        self.broken = self.broken or "unacknowledged records were cut off"

        def keep(path: Path, acked: int) -> int:
            return max(acked, in_flight[1]) if in_flight is not None and in_flight[0] == path else acked

        cut = 0
        for path, acked in self._rolled_unacked:  # the roll made them durable, not acknowledged
            cut += cut_file(path, keep(path, acked))
        # the segment of an fsync still in flight may yet be cut further if that fsync fails
        self._rolled_unacked = [
            (p, acked) for p, acked in self._rolled_unacked if in_flight is not None and p == in_flight[0]
        ]
        if self._fd is not None and self._path is not None:
            target = keep(self._path, self.acked_offset)
            cut += _cut_fd(self._fd, target)
            self._size = min(self._size, target)
            if target == 0:  # a roll that failed before its header was durable: no segment at all
                fd, path, self._fd, self._path = self._fd, self._path, None, None
                os.close(fd)
                path.unlink()
                with contextlib.suppress(OSError):
                    fsync_dir(self.directory)
        return cut

    def _write(self, data: bytes) -> int:
        assert self._fd is not None
        try:
            return _write_all(self._fd, data)
        finally:  # what reached the file, also when the write stopped part-way
            self._size = os.fstat(self._fd).st_size

    def _open(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._path = path
        self._size = os.fstat(self._fd).st_size

    def _write_header(self) -> None:
        assert self._fd is not None
        self._write(encode_segment_header(self.config))
        os.fsync(self._fd)

    def _roll(self, first_seq: int) -> None:
        if self._fd is not None:  # the old segment is complete and durable before the new one
            os.fsync(self._fd)
            self.fsyncs += 1
            if self.acked_offset < self._size and self._path is not None:
                self._rolled_unacked.append((self._path, self.acked_offset))
            fd, self._fd, self._path, self._size, self.acked_offset = self._fd, None, None, 0, 0
            os.close(fd)
        # On a full disk any step below may fail: then the new segment holds at most part of
        # its header (cut to nothing by `discard_unacked`; recovery starts such a segment again)
        self._open(self.directory / segment_name(first_seq))
        self._write_header()
        fsync_dir(self.directory)
        self.acked_offset = self._size

    def close(self) -> None:
        """Close the segment (fsynced first unless `off` or broken). Writes no data."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self.fsync != "off" and self.broken is None:
                os.fsync(fd)
        finally:
            os.close(fd)


def prune_segments(directory: Path, covered_seq: int) -> list[Path]:
    """Delete segments whose every record has seq <= covered_seq; return what was deleted."""
    paths = segments(directory)
    removed = []
    for path, nxt in itertools.pairwise(paths):
        if segment_first_seq(nxt) - 1 <= covered_seq:
            path.unlink()
            removed.append(path)
    if removed:  # or a power loss could bring them back
        fsync_dir(directory)
    return removed
