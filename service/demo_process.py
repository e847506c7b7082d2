"""The service the demo starts (service/demo.py): its address, admin token and market, a
busy port told in one line, and the subprocess itself (own process group, stopped with the
demo)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from api.client import ApiError, ExchangeClient

SANDBOX_ADMIN_TOKEN = "sandbox-admin-token"  # the same default as docker-compose.yml
FEEDS = Path(__file__).resolve().parents[1] / "feeds"
SANDBOX_CONFIG = FEEDS / "sandbox.toml"
FUNDING_INTERVAL_S = 60  # feeds/sandbox.toml's
CALM_FEED = FEEDS / "calm.csv"


class ServiceFailed(Exception):
    """The service the demo started exited before it answered."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_token_for(host: str, given: str | None) -> str:
    """`given` (EXCHANGE_ADMIN_TOKEN / --admin-token), else the fixed sandbox token on a
    loopback address, else a random one (reachable from other machines)."""
    if given:
        return given
    return SANDBOX_ADMIN_TOKEN if is_loopback(host) else secrets.token_urlsafe(16)


def bind_error(host: str, port: int) -> OSError | None:
    """Why the service could not listen on host:port (None: it can), tried as uvicorn binds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return exc
    return None


def port_busy_message(host: str, port: int, error: OSError) -> str:
    """One line: what is wrong with host:port and the command that avoids it."""
    if error.errno != errno.EADDRINUSE:
        return f"error: cannot listen on {host}:{port}: {error.strerror or error}"
    free = next((p for p in range(port + 1, min(port + 100, 65536)) if bind_error(host, p) is None), None)
    other = str(free) if free is not None else "<another port>"
    fix = f"make sandbox PORT={other}" if "MAKELEVEL" in os.environ else f"python -m service.demo --port {other}"
    return f"error: port {port} on {host} is in use (another sandbox?); run {fix}"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _url_for(host: str, port: int) -> str:
    if host in ("0.0.0.0", "", "::"):  # every interface: this machine reaches it on loopback
        host = "127.0.0.1" if host != "::" else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _die_with_parent() -> None:  # in the child, before exec: SIGTERM when the demo dies (Linux)
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def sandbox_env(feed: Path, speed: float) -> dict[str, str]:
    """The sandbox's market for the service the demo starts: config, feed, speed (calm: looped)."""
    return {
        "EXCHANGE_CONFIG": str(SANDBOX_CONFIG),
        "EXCHANGE_PRICE_FEED": str(feed),
        "EXCHANGE_FEED_SPEED": repr(speed),
        "EXCHANGE_FEED_LOOP": "1" if feed == CALM_FEED else "0",
    }


@contextlib.asynccontextmanager
async def _own_service(
    host: str, port: int, token: str, data_dir: str, stop: asyncio.Event, market: dict[str, str]
) -> AsyncIterator[str]:
    """Run `python -m service` in a subprocess (own process group) for the demo's lifetime."""
    env = {**os.environ, **market, "EXCHANGE_ADMIN_TOKEN": token, "EXCHANGE_DATA_DIR": data_dir}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", host, "--port", str(port)],
        env=env,
        process_group=0,  # the terminal's Ctrl-C goes to the demo only; it stops the service
        preexec_fn=_die_with_parent,
    )
    url = _url_for(host, port)
    try:
        async with ExchangeClient(url) as probe:
            deadline = time.monotonic() + 60
            while not stop.is_set():
                try:
                    await probe.healthz()
                    break
                except (httpx.HTTPError, ApiError):
                    if proc.poll() is not None:
                        raise ServiceFailed(
                            f"the service exited during start-up (status {proc.returncode}; its "
                            "messages are above)"
                        ) from None
                    if time.monotonic() > deadline:
                        raise ServiceFailed("the service did not answer within 60 s") from None
                    await asyncio.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
