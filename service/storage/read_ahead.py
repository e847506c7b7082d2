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
                                         parsed: the JSON, or (repr of the parse error,)
  ("corrupt", path, offset, why)         JournalCorrupt, rebuilt in the parent
  ("config", path, recorded, expected)   ConfigMismatch, rebuilt in the parent
  ("end", torn_path, torn_offset, torn_bytes, peak_rss)
The records before a damaged one are sent first, so the replay applies exactly what the
in-process stream would have before it raises. Records at or below `after_seq` (in the
snapshot) are checked but not parsed or sent.

Memory: the child holds one segment and one batch, the pipe its buffer (the child blocks
when the replay is behind), the parent one batch. If the child dies, the iteration raises
`ReaderFailed` with what it wrote to stderr; recovery then stops, as for any unreadable
journal (nothing was answered from the engine it was building).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from service.storage.codec import command_from_fields, parse_record
from service.storage.journal import (
    ConfigMismatch,
    JournalCorrupt,
    JournalStream,
    TornTail,
    segment_first_seq,
    segments,
)

MIN_BYTES = 16 << 20  # below this (about 140k records) the process start (0.2 s) costs about what it saves
BATCH = 2048  # records per frame, and at most
BATCH_BYTES = 8 << 20  # payload bytes per frame (a record may be up to 1 MiB)
_LEN = struct.Struct("<I")


class ReaderFailed(RuntimeError):
    """The reader process ended without finishing the journal."""


class Unparsable(ValueError):
    """A checksummed record the reader could not parse; its repr is the parse error's."""

    def __repr__(self) -> str:
        return str(self.args[0])


def command_of(parsed: Any) -> Any:
    """The command of a record as the reader sent it (`codec.command_from_fields`)."""
    if type(parsed) is tuple:
        raise Unparsable(parsed[0])
    return command_from_fields(parsed)


def worth_it(directory: Path, after_seq: int = 0, cpus: int | None = None) -> bool:
    """Whether reading ahead pays: a second core, and at least MIN_BYTES of segments holding
    records after `after_seq` (the snapshot's seq)."""
    if cpus is None:
        affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere the CPU count
        cpus = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    if cpus < 2:
        return False
    paths = segments(directory)
    if not paths:
        return False
    # a segment holds seqs from its first up to the next segment's first (exclusive)
    later = [p for p, nxt in zip(paths, [*paths[1:], None], strict=True)
             if nxt is None or segment_first_seq(nxt) > after_seq + 1]
    return sum(p.stat().st_size for p in later) >= MIN_BYTES


class ReadAhead:
    """The journal's records as `JournalStream` yields them, with the payload parsed
    (`parse_record`) instead of raw: `(seq_before, seq, ts_ns, parsed, path, offset)`."""

    def __init__(self, directory: Path, config: str | None = None, after_seq: int = 0) -> None:
        self.directory = directory
        self.config = config
        self.after_seq = after_seq
        self.torn: TornTail | None = None
        self.peak_rss = 0  # the reader process's, in bytes (0 where /proc does not say)

    def command(self) -> list[str]:
        """The reader process's command line (this interpreter, this tree's code)."""
        # -P: not the working directory first on sys.path, which could shadow this tree's packages
        return [sys.executable, "-P", "-m", "service.storage.read_ahead", str(self.directory), self.config or "",
                str(self.after_seq)]

    def __iter__(self) -> Iterator[tuple[int, int, int, Any, str, int]]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
        # stderr to a file, not a pipe: a pipe nobody reads while the child writes could fill
        with _stderr_file() as errors:
            proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=errors or subprocess.DEVNULL, env=env)
            assert proc.stdout is not None
            try:
                yield from self._frames(proc.stdout, lambda: f"the journal reader exited ({proc.wait()}): {_tail(errors)}")
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                proc.stdout.close()

    def _frames(self, stdout: IO[bytes], failed: Callable[[], str]) -> Iterator[tuple[int, int, int, Any, str, int]]:
        while True:
            frame = _read_frame(stdout)
            if frame is None:
                raise ReaderFailed(failed())
            kind = frame[0]
            if kind == "records":
                yield from frame[1]
            elif kind == "end":
                _, torn_path, torn_offset, torn_bytes, self.peak_rss = frame
                if torn_path is not None:
                    self.torn = TornTail(Path(torn_path), torn_offset, torn_bytes)
                return
            elif kind == "corrupt":
                raise JournalCorrupt(Path(frame[1]), frame[2], frame[3])
            elif kind == "config":
                raise ConfigMismatch(Path(frame[1]), frame[2], frame[3])
            else:
                raise ReaderFailed(f"the journal reader sent an unknown frame {kind!r}")


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


@contextlib.contextmanager
def _stderr_file() -> Iterator[IO[bytes] | None]:
    """Where the reader's stderr goes: a temp file, or nowhere without a writable temp dir."""
    try:
        errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, or never opened)
    except OSError:
        yield None
        return
    with errors:
        yield errors


def _tail(errors: IO[bytes] | None) -> str:
    if errors is None:
        return "no stderr kept (no writable temp dir)"
    errors.seek(0)
    return errors.read()[-2000:].decode(errors="replace").strip() or "no message"


def run(directory: Path, config: str | None, after_seq: int, out: IO[bytes]) -> None:
    """The child: walk the journal, send frames (see the module docstring)."""

    def send(frame: tuple[Any, ...]) -> None:
        body = marshal.dumps(frame)
        out.write(_LEN.pack(len(body)) + body)

    stream = JournalStream(directory, config)
    batch: list[tuple[int, int, int, Any, str, int]] = []
    last_path: Path | None = None
    name = ""
    held = 0  # payload bytes in the batch
    last: tuple[Any, ...]  # the frame after the last records: the end, or the damage found
    try:
        for before, seq, ts, payload, path, offset in stream:
            if seq <= after_seq:
                continue
            if path is not last_path:
                last_path, name = path, str(path)
            try:
                parsed = parse_record(payload)
            except ValueError as exc:  # a tuple (JSON gives none): the replay raises it in its turn
                parsed = (repr(exc),)
            batch.append((before, seq, ts, parsed, name, offset))
            held += len(payload)
            if len(batch) >= BATCH or held >= BATCH_BYTES:
                send(("records", batch))
                batch, held = [], 0
    except JournalCorrupt as exc:
        last = ("corrupt", str(exc.path), exc.offset, exc.why)
    except ConfigMismatch as exc:
        last = ("config", str(exc.path), exc.recorded, exc.expected)
    else:
        torn = stream.torn
        last = ("end", str(torn.path) if torn else None, torn.offset if torn else 0, torn.dropped_bytes if torn else 0,
                _peak_rss())
    send(("records", batch))
    send(last)


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
