"""The price feed and the funding scheduler in the real service (`python -m service` in a
subprocess, no Redis).

- A CSV feed moves the index of an index-marked symbol, and its mark follows; every price is
  a journaled `SetIndexPrice` command.
- A feed-driven crash (a small CSV played at 10x) liquidates a levered long into an empty
  book and ADL closes it against the short, seen on the WebSocket.
- The scheduler applies funding every 2 s: `funding_paid` events, stamped with the round's
  time (a whole multiple of 2 s), longs paying shorts; after a restart across missed rounds,
  one catch-up round at the latest round time.
- SIGTERM with a feed running: exit status 0, no traceback, no task left pending.
- A bad feed file: one line on stderr, exit status 2, before anything starts.

Nothing here asserts on wall-clock speed: the waits poll for an outcome with a generous
deadline.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import ADMIN_TOKEN, Api, ServiceProcess, ws_connect

ROOT = Path(__file__).resolve().parents[2]
S = 1_000_000_000


def _config(tmp_path: Path, **defaults: str | int) -> Path:
    """BTC-PERP (and ETH-PERP) with an initial mark of 10,000 (2,000) and `defaults`."""
    path = tmp_path / "exchange.toml"
    lines = ["[defaults]", *(f"{k} = {json.dumps(v)}" for k, v in defaults.items())]
    lines += ["[instruments.BTC-PERP]", 'initial_mark = "10000"', "[instruments.ETH-PERP]", 'initial_mark = "2000"']
    path.write_text("\n".join(lines) + "\n")
    return path


def _csv(tmp_path: Path, rows: list[tuple[float, str]], symbol: str = "BTC-PERP") -> Path:
    path = tmp_path / "feed.csv"
    path.write_text("offset_s,symbol,price\n" + "".join(f"{t},{symbol},{p}\n" for t, p in rows))
    return path


def _until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _mark(api: Api, symbol: str = "BTC-PERP") -> str | None:
    insts = api.http.get("/v1/instruments").json()
    return next(i["mark_price"] for i in insts if i["symbol"] == symbol)


def _metric(api: Api, name: str, symbol: str = "BTC-PERP") -> float | None:
    for line in api.http.get("/metrics").text.splitlines():
        if line.startswith(f'{name}{{symbol="{symbol}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return None


def _dump(svc: ServiceProcess, config: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "service.tools", "--config", str(config), "dump", str(svc.data_dir), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def _pair(api: Api, long_deposit: str, short_deposit: str, qty: str, price: str = "10000") -> tuple[int, int]:
    """A long and a short of `qty` BTC made by crossing orders; the book is empty after."""
    long_id, long_key = api.new_account(long_deposit)
    short_id, short_key = api.new_account(short_deposit)
    for key, side in ((short_key, "sell"), (long_key, "buy")):
        with api.as_key(key) as c:
            if side == "buy":
                assert c.post("/v1/leverage", json={"symbol": "BTC-PERP", "leverage": 50}).status_code == 200
            r = c.post("/v1/orders", json={"symbol": "BTC-PERP", "side": side, "type": "limit", "qty": qty, "price": price})
            assert r.status_code == 200, r.text
    return long_id, short_id


@pytest.mark.slow
def test_feed_when_a_csv_moves_the_index_an_index_marked_symbol_follows_it(
    start_service: Any, tmp_path: Path
) -> None:
    config = _config(tmp_path, mark_source="index")
    feed = _csv(tmp_path, [(0, "10000"), (0.5, "10100"), (1, "10200.5")])
    svc = start_service(config=str(config), price_feed=str(feed), feed_speed="2", funding="off", log_level="info")
    api = Api(svc)
    _until("the mark to follow the last index", lambda: _mark(api) == "10200.5")
    assert _metric(api, "exchange_index_price") == 10200.5
    assert _mark(api, "ETH-PERP") == "2000"  # not in the feed: its initial mark
    _until("the feed's last line in the log", lambda: "finished after 3 prices" in svc.log())
    commands = [r["command"] for r in _dump(svc, config)]
    index = [cmd for cmd in commands if cmd[0] == "SetIndexPrice"]
    assert index[-1][1:3] == ["BTC-PERP", 102_005]  # journaled: a replay applies the same
    assert 1 <= len(index) <= 3  # prices due while one was in flight may have been coalesced
    # an admin mark is refused on an index-marked symbol: the feed is the only way
    r = api.admin("POST", "/v1/admin/mark-price", json={"symbol": "BTC-PERP", "price": "9000"})
    assert r.status_code == 409, r.text


@pytest.mark.slow
async def test_feed_when_it_crashes_the_index_liquidates_a_levered_long_and_ends_in_adl(
    start_service: Any, tmp_path: Path
) -> None:
    config = _config(tmp_path, mark_source="index")
    # 60 s of calm at 10,000 (6 s at 10x: time to open the positions), then -20% in 3 s
    calm = [(t, "10000") for t in range(0, 61, 5)]
    feed = _csv(tmp_path, [*calm, (61, "9500"), (62, "9000"), (63, "8000"), (70, "8000")])
    svc = start_service(config=str(config), price_feed=str(feed), feed_speed="10", funding="off")
    api = Api(svc)
    async with ws_connect(svc.ws_url) as ws:
        await ws.send(op="subscribe", channels=["liquidations", "adl"])
        await ws.control("subscribed")
        # a 40x long against a well-funded short, nobody else in the book
        long_id, short_id = _pair(api, long_deposit="250", short_deposit="100000", qty="1")
        assert _mark(api) == "10000", "the crash came before the positions were open"
        liq = await ws.expect(lambda m: m["channel"] == "liquidations", timeout=60)
        adl = [m for m in ws.seen if m["channel"] == "adl"]
        if not adl:
            adl = [await ws.expect(lambda m: m["channel"] == "adl", timeout=10)]
    assert liq["data"]["account_id"] == long_id and liq["data"]["qty"] == "1"
    assert liq["data"]["book_fill_qty"] == "0" and liq["data"]["adl_qty"] == "1"  # empty book: all ADL
    fill = adl[0]["data"]
    assert (fill["liquidated_account_id"], fill["counterparty_account_id"]) == (long_id, short_id)
    assert (fill["qty"], fill["rank"], fill["side"]) == ("1", 1, "short")
    short = api.admin("GET", f"/v1/admin/accounts/{short_id}").json()
    assert short["positions"] == []  # closed by ADL, at the long's bankruptcy price
    assert "Traceback" not in svc.log()


@pytest.mark.slow
def test_scheduler_when_funding_is_every_2_s_pays_rounds_stamped_with_the_round_time(
    start_service: Any, tmp_path: Path
) -> None:
    config = _config(tmp_path, funding_interval_s=2)
    svc = start_service(config=str(config), log_level="info")  # admin marks, no feed
    api = Api(svc)
    long_id, short_id = _pair(api, long_deposit="100000", short_deposit="100000", qty="1")
    _until("two rounds with positions", lambda: (_metric(api, "exchange_funding_rounds") or 0) >= 3)
    events = _dump(svc, config, "--events", "--types", "funding_rate_changed,funding_paid")
    paid = [e for e in events if e["type"] == "funding_paid"]
    rates = [e for e in events if e["type"] == "funding_rate_changed" and e["data"]["symbol"] == "BTC-PERP"]
    assert len(paid) >= 2 and rates
    for e in events:
        assert e["ts_ns"] % (2 * S) == 0, e  # the round's time, not when it ran
    first = [e for e in paid if e["ts_ns"] == paid[0]["ts_ns"]]
    by_account = {e["data"]["account_id"]: e["data"] for e in first}
    # 1 BTC at 10,000, the interest 0.01% (no premium samples: no book): 1 USD a round
    assert by_account[long_id]["amount"] == "-1" and by_account[short_id]["amount"] == "1"
    assert by_account[long_id]["rate"] == "0.0001"
    assert _metric(api, "exchange_funding_paid_usd") >= 1
    log = svc.log()
    assert "funding scheduler on: BTC-PERP every 2 s, ETH-PERP every 2 s" in log
    assert "funding BTC-PERP at " in log and "rate +0.0100%" in log
    # ETH-PERP has a mark (its initial mark) but no positions: rounds without payments
    assert any(e["data"]["symbol"] == "ETH-PERP" for e in events if e["type"] == "funding_rate_changed")

    # stopped across missed rounds: one catch-up round at the latest round time, then on time
    assert svc.stop() == 0
    stopped_ns = time.time_ns()
    time.sleep(5)  # two rounds or more missed
    svc.start()
    started_ns = time.time_ns()
    api = Api(svc)
    _until("a round after the restart", lambda: (_metric(api, "exchange_funding_rounds") or 0) >= 2)
    after = [
        e["ts_ns"]
        for e in _dump(svc, config, "--events", "--types", "funding_rate_changed")
        if e["data"]["symbol"] == "BTC-PERP" and e["ts_ns"] > stopped_ns
    ]
    # one round for the gap, not one per missed interval (a slow start may already have
    # run the next regular round before `started_ns`: the log tells which was the catch-up)
    assert svc.log().count("funding BTC-PERP (catch-up round) at ") == 1
    # ... stamped with the latest round time before the restart (the first missed one was at
    # most 2 s after the stop; the restart came 5 s after it), then every 2 s on the grid
    assert stopped_ns + 3 * S <= after[0] <= started_ns, after
    assert all(b - a == 2 * S for a, b in itertools.pairwise(after)), after


@pytest.mark.slow
def test_shutdown_when_a_feed_is_running_exits_0_without_a_traceback(
    start_service: Any, tmp_path: Path
) -> None:
    config = _config(tmp_path, mark_source="index", funding_interval_s=1)
    svc = start_service(config=str(config), price_feed="synthetic:5", feed_speed="50", log_level="info")
    api = Api(svc)
    _until("the synthetic feed to move the mark", lambda: (_metric(api, "exchange_feed_prices_sent") or 0) >= 50)
    assert _mark(api) != "10000"
    assert svc.proc is not None
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(30) == 0
    log = svc.log()
    for bad in ("Traceback", "Task was destroyed", "exception was never retrieved", "ENGINE HALTED", "Error"):
        assert bad not in log, log[-3000:]
    assert "stopped at seq" in log
    assert svc.stop() == 0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("0,BTC-PERP,10000\n1,BTC-PERP,10000.05\n", "line 2: price '10000.05' is not a positive price on BTC-PERP's tick grid (0.1)"),
        ("0,DOGE-PERP,1\n", "line 1: unknown symbol 'DOGE-PERP'"),
        ("2,BTC-PERP,10000\n1,BTC-PERP,10000\n", "line 2: offset_s 1 goes back"),
    ],
    ids=["off-grid", "unknown-symbol", "offset-back"],
)
def test_service_when_the_feed_file_is_bad_prints_one_line_and_exits_2(tmp_path: Path, rows: str, message: str) -> None:
    feed = tmp_path / "bad.csv"
    feed.write_text(rows)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env.update(EXCHANGE_PRICE_FEED=str(feed), EXCHANGE_DATA_DIR=str(tmp_path / "data"), EXCHANGE_ADMIN_TOKEN=ADMIN_TOKEN)
    out = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"error: EXCHANGE_PRICE_FEED: {feed} {message}\n" or (
        out.stderr.startswith(f"error: EXCHANGE_PRICE_FEED: {feed} {message}") and out.stderr.count("\n") == 1
    ), out.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started
