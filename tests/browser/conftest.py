"""Browser fixtures: Debian's headless Chromium driven by Playwright for Python, and the demo
market on a free port (see tests/browser/helpers.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    CHROMIUM,
    ROOT,
    SYMBOL,
    Demo,
    demo_args,
    free_port,
    install_chromium,
    wait_until,
)

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # never fetch a browser build


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not CHROMIUM.exists():
        why = install_chromium()
        if why:
            pytest.skip(f"{CHROMIUM} is missing and could not be installed ({why}); "
                        "run `apt-get install -y chromium` (.ci/run does)")
    return str(CHROMIUM)


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """Chromium for one test module: Playwright's sync API runs an event loop of its own in
    this thread, which must be gone before any asyncio test of another module runs."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save their screenshots (paths printed; `pytest -s` shows them)."""
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`make sandbox CRASH=25%` on a free port, its data dir in a temp dir; stopped with
    Ctrl-C (SIGINT to its process group) at the end."""
    tmp = tmp_path_factory.mktemp("demo")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_") and k != "MAKELEVEL"}
    env.update(EXCHANGE_ADMIN_TOKEN=ADMIN_TOKEN, EXCHANGE_LOG_LEVEL="warning", TMPDIR=str(tmp))
    log = tmp / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.demo", "--host", "127.0.0.1", "--port", str(port),
             "--seconds", "0", "--crash", "25%", *demo_args(), "--data-dir", str(tmp / "data")],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    box = Demo(proc, f"http://127.0.0.1:{port}", port, log)
    try:
        with box.http() as http:

            def market_open() -> bool:
                six = http.get("/v1/admin/accounts/6", headers=ADMIN)
                book = http.get(f"/v1/orderbook/{SYMBOL}?depth=1").json()
                return six.status_code == 200 and bool(book.get("bids")) and bool(book.get("asks"))

            wait_until("the demo market to open", market_open, 90, demo=box)
        yield box
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the demo stops the service it started
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
