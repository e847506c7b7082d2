"""The fsync helper: a child process that fsyncs the journal for the engine loop.

Why a process and not a thread. The engine loop's group commit overlaps the fsync of one
batch with the applying of the next ones. Run in a worker thread (`run_in_executor`), the
fsync itself is off the loop, but the thread needs the GIL back after every fsync and each
hand-off costs executor futures and GIL switches: measured with `bench.http_bench
--fsync-only`, the main thread paid about 15 us more CPU per order than with fsync off and
batch/off was 0.86. A separate process shares no GIL: per fsync the loop pays one pipe
write and one reader callback, and batch/off rose to 0.93 (README, Benchmarks).

Protocol, bytes on the helper's stdin (requests) and stdout (answers):
    b"P" + u32 little-endian length + path   follow this journal segment from now on
    b"S"                                     fsync the followed segment
Each b"S" is answered, in order, with one b"D"; requests read together share one fsync.
On an OSError the helper writes b"E" + the error text and exits with status 1. It exits 0
at end of input: when the service closes the pipe or dies, so a kill -9 of the service
leaves no orphan.

fsync() flushes a file, not a descriptor: what the service wrote through its own
descriptor before sending b"S" is covered, and Linux reports a write-back error to every
descriptor that was open when it happened, the helper's included.

The helper is `fsync_child.py`, run as a plain script (`python -I -S`): it imports only
`os` and `sys`, so it starts in milliseconds and does not depend on the working directory.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

_CHILD = Path(__file__).with_name("fsync_child.py")
_PATH_LEN = 4  # bytes of the path length in a b"P" request (see fsync_child.py)


class FsyncFailed(OSError):
    """The journal could not be made durable (fsync error, or the helper died)."""


class FsyncHelper:
    """The service's side of the helper.

    `request(path, on_done)` asks for one fsync; `on_done(None)` runs once `path` is on
    disk, or `on_done(FsyncFailed)` if it cannot be. The answer is picked up by a reader
    callback on the event loop or, sooner, by `poll()`, which the engine loop calls between
    batches: on a busy loop a reader callback waits its turn behind every ready socket
    (measured: about 1 ms per commit), a `poll()` costs one non-blocking read.

    One request is in flight at a time (the engine loop's group commit issues the next when
    one returns). Any failure is final: every later request fails too, and the engine loop
    halts rather than acknowledge what may not be on disk.
    """

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,  # a terminal's Ctrl-C is for the service, not the helper
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in = self._proc.stdin.fileno()
        self._out = self._proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._path: Path | None = None
        self._on_done: Callable[[FsyncFailed | None], None] | None = None
        self.failed: str | None = None
        self.fsyncs = 0

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def in_flight(self) -> bool:
        return self._on_done is not None

    def request(self, path: Path, on_done: Callable[[FsyncFailed | None], None]) -> None:
        """Ask for an fsync of `path` (everything written to it so far); call from the loop."""
        if self._on_done is not None:
            raise RuntimeError("an fsync is already in flight")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._out)
            self._loop = loop
            if self.failed is None:
                loop.add_reader(self._out, self.poll)
        self._on_done = on_done
        if self.failed is not None:
            loop.call_soon(self._fail, self.failed)
            return
        try:
            if path != self._path:
                raw = os.fsencode(path)
                self._send(b"P" + len(raw).to_bytes(_PATH_LEN, "little") + raw)
                self._path = path
            self._send(b"S")
        except OSError as exc:  # the helper is gone (EPIPE)
            loop.call_soon(self._fail, f"fsync helper unreachable: {exc}")

    async def sync(self, path: Path) -> None:
        """`request` as a coroutine: returns once `path` is on disk."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_done(exc: FsyncFailed | None) -> None:
            if not done.done():
                done.set_exception(exc) if exc is not None else done.set_result(None)

        self.request(path, on_done)
        await done

    def poll(self) -> None:
        """Pick up the helper's answer if it is there (non-blocking; also the reader callback).

        Also reads while nothing is in flight: a helper that dies while the service is idle
        is noticed at once (and its closed pipe does not keep waking the loop)."""
        try:
            data = os.read(self._out, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"fsync helper unreadable: {exc}")
            return
        if not data:
            self._fail(f"fsync helper exited (status {self._proc.poll()})")
        elif b"E" in data:
            self._fail("fsync helper: " + data[data.index(b"E") + 1 :].decode(errors="replace"))
        elif self._on_done is not None:
            self.fsyncs += 1
            on_done, self._on_done = self._on_done, None
            on_done(None)

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view) :]

    def _fail(self, why: str) -> None:
        if self.failed is None:
            self.failed = why
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._out)
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(FsyncFailed(self.failed))

    def close(self, timeout: float = 5.0) -> None:
        """Close the pipe (the helper exits at end of input) and reap it. A request still in
        flight fails: nobody may take it as durable."""
        self._fail("fsync helper closed")
        self._loop = None
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
