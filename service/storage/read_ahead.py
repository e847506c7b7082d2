"""Recovery's journal reader in a second process: records read, checked and parsed ahead of the replay.

Per record, recovery reads and checks it (header and payload checksums, seq chain), parses
its JSON, builds the command and applies it. Only the last two need the engine; with the
compiled engine, the first two were a fifth of the time. `ReadAhead` moves them to a child
process (`python -m service.storage.read_ahead`), which walks the journal with the same
`JournalStream` (the same checks, the same errors, at the same records) and writes the
parsed records to a pipe in batches, so on a machine with two cores they overlap the
replay. `recover` uses it for journals above `MIN_BYTES` when there is a second core.

Frames on the child's stdout: a 4-byte little-endian length, then a `marshal`led tuple
(exact integers of any size; the child is this interpreter, so the format matches):
  ("records", [(seq_before, seq, ts_ns, parsed, path, offset), ...])
  ("bad", path, offset, repr)            a payload that is not JSON (the replay's "undecodable")
  ("corrupt", path, offset, why)         JournalCorrupt, rebuilt in the parent
  ("config", path, recorded, expected)   ConfigMismatch, rebuilt in the parent
  ("end", torn_path, torn_offset, torn_bytes, segments_read, largest_segment, peak_rss)
The records before a damaged one are sent first, so the replay applies exactly what the
in-process stream would have before it raises. Records at or below `after_seq` (in the
snapshot) are checked but not parsed or sent.

Memory: the child holds one segment and one batch, the pipe its buffer (the child blocks
when the replay is behind), the parent one batch. If the child dies, the iteration raises
`ReaderFailed` with what it wrote to stderr; recovery then stops, as for any unreadable
journal (nothing was answered from the engine it was building).
"""

from __future__ import annotations

import marshal
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from service.storage.codec import parse_record
from service.storage.journal import (
    ConfigMismatch,
    JournalCorrupt,
    JournalStream,
    TornTail,
    segments,
)

MIN_BYTES = 16 << 20  # below this (about 140k records) the process start (0.2 s) costs about what it saves
BATCH = 2048
_LEN = struct.Struct("<I")


class ReaderFailed(RuntimeError):
    """The reader process ended without finishing the journal."""


class Undecodable(ValueError):
    """A checksummed record whose payload is not JSON."""

    def __init__(self, path: Path, offset: int, error: str) -> None:
        super().__init__(error)
        self.path = path
        self.offset = offset


def worth_it(directory: Path, cpus: int | None = None) -> bool:
    """Whether reading ahead pays: a second core, and a journal of at least MIN_BYTES."""
    if (cpus if cpus is not None else len(os.sched_getaffinity(0))) < 2:
        return False
    return sum(p.stat().st_size for p in segments(directory)) >= MIN_BYTES


class ReadAhead:
    """The journal's records as `JournalStream` yields them, with the payload parsed
    (`parse_record`) instead of raw: `(seq_before, seq, ts_ns, parsed, path, offset)`."""

    def __init__(self, directory: Path, config: str | None = None, after_seq: int = 0) -> None:
        self.directory = directory
        self.config = config
        self.after_seq = after_seq
        self.torn: TornTail | None = None
        self.segments_read = 0
        self.largest_segment = 0
        self.peak_rss = 0  # the reader process's, in bytes (0 where /proc does not say)

    def command(self) -> list[str]:
        """The reader process's command line (this interpreter, this tree's code)."""
        return [sys.executable, "-m", "service.storage.read_ahead", str(self.directory), self.config or "", str(self.after_seq)]

    def __iter__(self) -> Iterator[tuple[int, int, int, Any, str, int]]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        try:
            while True:
                frame = _read_frame(proc.stdout)
                if frame is None:
                    raise ReaderFailed(f"the journal reader exited ({proc.wait()}): {_stderr(proc)}")
                kind = frame[0]
                if kind == "records":
                    yield from frame[1]
                elif kind == "end":
                    _, torn_path, torn_offset, torn_bytes, self.segments_read, self.largest_segment, self.peak_rss = frame
                    if torn_path is not None:
                        self.torn = TornTail(Path(torn_path), torn_offset, torn_bytes)
                    return
                elif kind == "corrupt":
                    raise JournalCorrupt(Path(frame[1]), frame[2], frame[3])
                elif kind == "config":
                    raise ConfigMismatch(Path(frame[1]), frame[2], frame[3])
                elif kind == "bad":
                    raise Undecodable(Path(frame[1]), frame[2], frame[3])
                else:
                    raise ReaderFailed(f"the journal reader sent an unknown frame {kind!r}")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            if proc.stderr is not None:
                proc.stderr.close()


_ROOT = str(Path(__file__).resolve().parents[2])


def _read_frame(stream: IO[bytes]) -> Any:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (length,) = _LEN.unpack(head)
    body = stream.read(length)
    if len(body) < length:
        return None
    return marshal.loads(body)


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stderr is not None
    return proc.stderr.read()[-2000:].decode(errors="replace").strip() or "no message"


def run(directory: Path, config: str | None, after_seq: int, out: IO[bytes]) -> None:
    """The child: walk the journal, send frames (see the module docstring)."""

    def send(frame: tuple[Any, ...]) -> None:
        body = marshal.dumps(frame)
        out.write(_LEN.pack(len(body)) + body)

    stream = JournalStream(directory, config)
    batch: list[tuple[int, int, int, Any, str, int]] = []
    last_path: Path | None = None
    name = ""
    try:
        for before, seq, ts, payload, path, offset in stream:
            if seq <= after_seq:
                continue
            if path is not last_path:
                last_path, name = path, str(path)
            try:
                parsed = parse_record(payload)
            except ValueError as exc:
                send(("records", batch))
                send(("bad", name, offset, repr(exc)))
                return
            batch.append((before, seq, ts, parsed, name, offset))
            if len(batch) >= BATCH:
                send(("records", batch))
                batch = []
    except JournalCorrupt as exc:
        send(("records", batch))
        send(("corrupt", str(exc.path), exc.offset, exc.why))
        return
    except ConfigMismatch as exc:
        send(("records", batch))
        send(("config", str(exc.path), exc.recorded, exc.expected))
        return
    send(("records", batch))
    torn = stream.torn
    send(("end", str(torn.path) if torn else None, torn.offset if torn else 0, torn.dropped_bytes if torn else 0,
          stream.segments_read, stream.largest_segment, _peak_rss()))


def _peak_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    directory_arg, config_arg, after_arg = sys.argv[1:4]
    with os.fdopen(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False) as stdout:
        run(Path(directory_arg), config_arg or None, int(after_arg), stdout)
