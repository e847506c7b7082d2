"""Browser-test helpers: Debian's Chromium, the demo market on a free port, waiting for a
condition. Fixtures live in tests/browser/conftest.py.

Playwright never downloads a browser here: it is pointed at /usr/bin/chromium
(`apt-get install -y chromium`; .ci/run installs it when missing). When that binary is
missing and cannot be installed (not root, no apt-get, the install failed), the browser tests
are skipped with the reason.

The demo (`python -m service.demo`, what `make sandbox` runs) is used only through its
command line and the service's `GET /v1/...` routes, and every wait is for a condition,
never a fixed sleep.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ADMIN_TOKEN = "sandbox-admin-token"  # the demo's token on a loopback address
ADMIN = {"X-Admin-Token": ADMIN_TOKEN}
SYMBOL = "BTC-PERP"


def install_chromium() -> str:
    """Try `apt-get install -y chromium` (as root); what went wrong, or "" when installed."""
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return "no apt-get, or not root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        out = subprocess.run(
            [apt, "install", "-y", "-qq", "chromium"], capture_output=True, text=True, env=env, timeout=900
        )
    except subprocess.TimeoutExpired:
        return "apt-get install chromium timed out"
    if out.returncode != 0 or not CHROMIUM.exists():
        return f"apt-get install chromium failed: {(out.stdout + out.stderr)[-300:]}"
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Demo:
    proc: subprocess.Popen[bytes]
    base: str
    port: int
    log: Path

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=10)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def demo_args() -> list[str]:
    """`--speed 4` when this demo has it (it plays its price feed faster: the crash comes
    sooner); the rest is `make sandbox CRASH=25%`."""
    helped = subprocess.run(
        [sys.executable, "-m", "service.demo", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return ["--speed", "4"] if "--speed" in helped.stdout else []


def wait_until(
    what: str, check: Any, timeout: float, every: float = 0.2, demo: Demo | None = None, sleep: Any = time.sleep
) -> Any:
    """Call `check()` until it returns something truthy (returned); fail after `timeout` s.
    `sleep(seconds)` waits between calls (a page's own wait keeps Playwright's event
    handlers running: its sync API dispatches them only inside its calls)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if demo is not None:
            assert demo.proc.poll() is None, "the demo stopped:\n" + demo.text()
        try:
            last = check()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
