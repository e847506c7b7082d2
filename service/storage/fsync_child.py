"""The fsync helper process (see syncer.py for why and for the protocol).

Run as `python -I -S fsync_child.py`; stdin carries requests, stdout answers. Only `os`,
`signal` and `sys`: it must start fast and import nothing of the service.

SIGINT and SIGTERM are ignored: a Ctrl-C in a terminal or a service manager signalling the
whole process group must not take the helper away while the service drains; the helper
exits when its input closes, i.e. once the service has closed the pipe or died.
"""

import os
import signal
import sys

PATH_LEN = 4


def _sync(fd: int) -> None:
    if fd < 0:
        raise OSError("no journal segment to fsync")
    os.fdatasync(fd)  # data + the size needed to read it (journal.py)


def _serve() -> int:
    fd = -1
    buf = b""
    while True:
        data = os.read(0, 65536)
        if not data:
            return 0
        buf += data
        syncs = 0
        try:
            while buf:
                kind = buf[:1]
                if kind == b"S":
                    syncs += 1
                    buf = buf[1:]
                    continue
                if kind != b"P":
                    os.write(1, b"E" + f"bad request byte {kind!r}".encode())
                    return 1
                if len(buf) < 1 + PATH_LEN:
                    break
                end = 1 + PATH_LEN + int.from_bytes(buf[1 : 1 + PATH_LEN], "little")
                if len(buf) < end:
                    break
                path, buf = buf[1 + PATH_LEN : end], buf[end:]
                if syncs:  # requests for the segment followed so far are served on it
                    _sync(fd)
                new_fd = os.open(path, os.O_WRONLY)
                if fd >= 0:
                    os.close(fd)
                fd = new_fd
            if syncs:
                _sync(fd)
        except OSError as exc:
            os.write(1, b"E" + f"fsync: {exc}".encode())
            return 1
        if syncs:
            os.write(1, b"D" * syncs)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        return _serve()
    except BrokenPipeError:  # the service closed its end while we were answering
        return 0


if __name__ == "__main__":
    sys.exit(main())
