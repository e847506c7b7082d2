"""Background snapshots: a forked child pickles, writes and fsyncs; the engine loop goes on.

Why fork. A snapshot must be a consistent image of the engine between two commands. The
cheapest full copy CPython can make on the loop is `pickle.dumps` itself, which is the very
cost to take off the loop (0.8–0.9 s for 20k accounts with 40k resting orders; bench/RESULTS.md),
and a worker thread would not help: pickling and `state_hash()` hold the GIL. `os.fork()`
makes the copy in the kernel, copy-on-write, as Redis's BGSAVE does: the loop pays for
duplicating the page tables (5–15 ms at 230 MB of RSS) and the child holds the engine
exactly as it was between two batches, while the service keeps changing its own copy.

What the child does before `work` (see `fork_child`):
- ignores SIGINT and SIGTERM and drops the signal wakeup fd: a Ctrl-C or a group SIGTERM
  meant for the service does not cut the snapshot short, and no signal delivered to the
  child wakes the service's event loop through the shared wakeup socket;
- asks for SIGKILL when the service dies (`PR_SET_PDEATHSIG`, Linux): a kill -9 of the
  service takes the writer with it, which is just a crash mid-snapshot (the temp file is
  never renamed; the previous snapshot stays the newest);
- disables the cyclic GC (a collection would touch every object and copy its page);
- lowers its priority (nice +10) and volunteers for the OOM killer (`oom_score_adj` 1000):
  on a busy machine the service gets the CPU first, and short of memory the snapshot is
  lost (and retried later), not the service;
- points every inherited descriptor but stdio and its result pipe at /dev/null: it holds no
  socket, data-dir lock or fsync-helper pipe of the service, and a write through a stale
  descriptor number can never land in a file the child opens.

Then it runs `work`, writes `b"D" + result` or `b"E" + error` to the pipe and leaves with
`os._exit` (no atexit handlers, no stdio buffers flushed a second time). `work` must not log
or import: a lock that another thread of the service held at the fork (the logging lock, the
asyncio executor's resolver) stays held in the child forever. Pickling, hashing and file I/O
need none.

The service's side, `SnapshotChild.poll()`, reads the pipe without blocking and reaps the
child once the pipe reaches end of file (the kernel closes the child's descriptors after it
has torn down its memory, so the `waitpid` then returns at once).

Known limits: pages written while the child runs are copied, and CPython's reference
counting writes to every object the child pickles, so memory can reach about twice the
service's RSS during a snapshot. If `fork` fails (ENOMEM under strict overcommit: set
`vm.overcommit_memory=1` as for Redis) the caller falls back to writing on the loop.
`PR_SET_PDEATHSIG` follows the thread that forked: fork from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import select
import signal
import sys
import time
import warnings
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_IGNORED = {signal.SIGINT, signal.SIGTERM}
try:  # loaded here, never in the child (no imports or dlopen after the fork)
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
except OSError:
    _LIBC = None


class SnapshotChild:
    """A forked child running one snapshot; poll it from the service's event loop."""

    def __init__(self, pid: int, fd: int, pause_s: float) -> None:
        self.pid = pid
        self.fd = fd  # read end of the result pipe (non-blocking)
        self.pause_s = pause_s  # what the fork cost the caller's thread
        self.started = time.perf_counter()
        self.seconds = 0.0  # fork to reaped, once done
        self.done = False
        self.result: str | None = None  # what `work` returned
        self.error: str | None = None  # why it failed (an exception, a signal, a status)
        self._out = b""
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, callback: Callable[[], object]) -> None:
        """Have the running event loop call `callback` whenever the child writes or exits
        (it should call `poll`). Raises RuntimeError without a running loop."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self.fd, callback)
        self._loop = loop

    def poll(self) -> bool:
        """Read what the child wrote, without blocking; reap it at end of file. True once done."""
        if self.done:
            return True
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return False
            if not data:
                break
            self._out += data
        _, status = os.waitpid(self.pid, 0)  # it closed the pipe: it is exiting
        self._finish(status)
        return True

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for the child to finish. True once done."""
        deadline = time.monotonic() + timeout
        while not self.poll():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([self.fd], [], [], left)
        return True

    def kill(self) -> None:
        """SIGKILL the child and reap it (a crash mid-snapshot: safe by design)."""
        if self.done:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        self._finish(status)

    def _finish(self, status: int) -> None:
        self.done = True
        self.seconds = time.perf_counter() - self.started
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.fd)
        self._loop = None
        os.close(self.fd)
        out, self._out = self._out, b""
        if out.startswith(b"D") and status == 0:
            self.result = out[1:].decode(errors="replace")
        elif out.startswith(b"E"):
            self.error = out[1:].decode(errors="replace")
        elif os.WIFSIGNALED(status):
            self.error = f"snapshot writer killed by signal {os.WTERMSIG(status)}"
        else:
            self.error = f"snapshot writer exited with status {os.waitstatus_to_exitcode(status)}"


def fork_child(work: Callable[[], str]) -> SnapshotChild:
    """Run `work` in a forked child (a copy-on-write image of this process as it is now).
    Raises OSError when the fork fails."""
    t0 = time.perf_counter()
    r, w = os.pipe()
    parent = os.getpid()
    # SIGINT/SIGTERM blocked across the fork: the child ignores them before it can receive one
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _IGNORED)
    try:
        with warnings.catch_warnings():  # Python >= 3.12 warns on forking a threaded process;
            warnings.simplefilter("ignore", DeprecationWarning)  # the child obeys the rules above
            pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(r)
        os.close(w)
        raise
    if pid == 0:  # pragma: no cover - the child (coverage does not follow os._exit)
        _run_child(work, r, w, parent, old_mask)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)  # what arrived meanwhile is delivered now
    os.close(w)
    os.set_blocking(r, False)
    return SnapshotChild(pid, r, time.perf_counter() - t0)


def _run_child(
    work: Callable[[], str], r: int, w: int, parent: int, mask: set[int | signal.Signals]
) -> None:
    code = 1
    try:
        os.close(r)
        _detach(w, parent)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        result = work()
        _write_all(w, b"D" + result.encode())
        code = 0
    except BaseException as exc:  # report anything, then leave: never return to the caller
        with contextlib.suppress(BaseException):
            _write_all(w, b"E" + f"{type(exc).__name__}: {exc}".encode(errors="replace"))
    finally:
        os._exit(code)


def _detach(w: int, parent: int) -> None:
    with contextlib.suppress(ValueError):  # only possible on the main thread
        signal.set_wakeup_fd(-1)
    for sig in _IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the service died before the request above took effect
        os._exit(1)
    gc.disable()
    with contextlib.suppress(OSError):
        os.nice(10)  # background work: the service (and its fsync helper) come first
    # under memory pressure, the OOM killer takes this process first
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    null = os.open(os.devnull, os.O_RDWR)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: every possible descriptor
        fds = list(range(3, os.sysconf("SC_OPEN_MAX")))
    for fd in fds:
        if fd > 2 and fd not in (w, null):
            with contextlib.suppress(OSError):
                os.dup2(null, fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
