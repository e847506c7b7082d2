"""The sandbox as a newcomer meets it (issue 6): the demo market against a real service and
Redis, and the README's own commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.integration.helpers import ADMIN_TOKEN, RedisServer

ROOT = Path(__file__).resolve().parents[2]


def test_demo_when_crashing_the_market_liquidates_and_deleverages_visible_in_redis(
    start_service: Any, redis_server: RedisServer
) -> None:
    db = 5
    redis_server.clear_streams(db)
    svc = start_service(redis_url=redis_server.url_for_db(db))
    out = subprocess.run(
        [sys.executable, "-m", "service.demo", "--url", svc.base_url, "--admin-token", ADMIN_TOKEN,
         "--seconds", "3", "--tick", "0.1", "--crash", "25%"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "LIQUIDATED" in out.stdout and "ADL rank 1" in out.stdout, out.stdout
    # the same story, read back from the streams once the publisher has caught up
    admin = {"X-Admin-Token": ADMIN_TOKEN}
    for _ in range(100):
        state = httpx.get(svc.base_url + "/v1/admin/engine", headers=admin).json()
        if state["last_published_seq"] == state["seq"]:
            break
        subprocess.run(["sleep", "0.1"], check=True)
    r = redis_server.client_for(redis_server.url_for_db(db))
    adl = r.xrange("exchange:adl")
    types = {fields[b"type"] for _, fields in r.xrange("exchange:events")}
    assert adl and b"liquidation" in types
    first = orjson.loads(adl[0][1][b"data"])
    assert first["rank"] >= 1 and first["side"] in ("long", "short")
    assert adl[0][0].decode().endswith("-0")


def test_readme_when_read_names_make_test_which_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands\s+```bash\n(.*?)```", readme, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make sandbox", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^test: venv\n((?:\t.*\n)+)", makefile, re.M)
    # the whole suite (no paths: one worker per core), then the compiled engine's subset
    assert recipe is not None and "$(BIN)/python -m pytest -p no:cacheprovider $(WORKERS)\n" in recipe.group(1)
    assert re.search(r"^WORKERS = -n auto", makefile, re.M)


def test_readme_when_sandbox_command_runs_serves_healthz_and_a_live_book(tmp_path: Path) -> None:
    # `make sandbox` = python -m service.demo --host 127.0.0.1 --port 8000 --seconds 0 (HOST
    # and PORT overridable); here on a free port, with the venv's python ($(BIN)/python).
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/python -m service.demo --host $(HOST) --port $(PORT) --seconds 0" in makefile
    assert re.search(r"^HOST = 127\.0\.0\.1$", makefile, re.M) and re.search(r"^PORT = 8000$", makefile, re.M)
    from tests.integration.helpers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.demo", "--port", str(port), "--seconds", "0", "--tick", "0.1",
         "--data-dir", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        book: dict[str, Any] = {}
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    book = httpx.get(base + "/v1/orderbook/BTC-PERP?depth=5", timeout=1).json()
                    if book.get("bids") and book.get("asks"):
                        break
            except httpx.HTTPError:
                pass
            subprocess.run(["sleep", "0.1"], check=True)
        assert book.get("bids") and book.get("asks"), book
    finally:
        proc.terminate()  # the demo stops the service it started, then exits
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
