"""A full disk for the journal writer, injected where it writes (`journal._write_all`).

`FullDisk(room)` lets `room` more bytes through, writes the part of the next write that
still fits and raises ENOSPC, as a real full disk does; from then on every write fails.
Only data writes are affected: `ftruncate`, `fsync` and reads are real, so a test sees
whether the writer's cut needs free space. Where a real limit is wanted, the tests use
RLIMIT_FSIZE in a child process instead (a write past it fails with EFBIG).
"""

from __future__ import annotations

import errno
import os

import pytest

from service.storage import journal

_real_write_all = journal._write_all


class FullDisk:
    """Install with `FullDisk.install(monkeypatch, room)`; `writes` counts writes tried."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.writes = 0
        self.failed = 0

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch, room: int) -> FullDisk:
        disk = cls(room)
        monkeypatch.setattr(journal, "_write_all", disk.write_all)
        return disk

    def write_all(self, fd: int, data: bytes) -> int:
        self.writes += 1
        if len(data) <= self.room:
            self.room -= len(data)
            return _real_write_all(fd, data)
        if self.room:
            os.write(fd, data[: self.room])  # part of a record reaches the file
            self.room = 0
        self.failed += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
