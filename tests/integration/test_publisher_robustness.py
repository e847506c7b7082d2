"""Old journals with hostile records replay and publish; a stuck publisher fails /readyz
(issue 10, finding 2).

Before the API edge refused ids outside 1..2^63-1, `DELETE /v1/orders/<id>` journaled a
`CancelOrder` with any id: from 2^64 up, orjson could not encode its `order_rejected` event
and Redis publication stopped for good while /readyz said `"redis": "ok"`; a 400-digit id
made the next start (and `tools verify`) fail with `number is infinity`. Such journals exist,
so they must keep working: the data dirs here are written record by record with the
journal writer, as the service of that time wrote them, then served by the real service.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine import commands as c
from engine.engine import Engine
from service.config import build_engine, load_engine_config
from service.keys import hash_key
from service.storage.codec import encode_command
from service.storage.journal import JournalWriter
from tests.integration.helpers import ROOT, Api, RedisServer, ServiceProcess

BTC = "BTC-PERP"
KEY = "old-journal-key"
HUGE = 10**399  # 400 digits




def write_old_journal(directory: Path, bad_order_ids: list[int]) -> Engine:
    """A data dir whose journal holds, between ordinary commands, a `CancelOrder` per id in
    `bad_order_ids` (what today's edge refuses); the engine that wrote it."""
    engine = build_engine(load_engine_config(None))
    inst = engine.instruments[BTC]
    mark = inst.ticks_from_e8(50_000 * 10**8)
    assert mark is not None
    cmds: list[Any] = [
        c.CreateAccount(hash_key(KEY), ts_ns=1),
        c.Deposit(1, 10_000 * 10**8, ts_ns=2),
        c.SetMarkPrice(BTC, mark, ts_ns=3),
    ]
    cmds += [c.CancelOrder(1, oid, ts_ns=4 + i) for i, oid in enumerate(bad_order_ids)]
    cmds.append(c.Deposit(1, 5 * 10**8, ts_ns=100))
    writer = JournalWriter(directory, engine.config_fingerprint(), fsync="off")
    for cmd in cmds:
        before = engine.seq
        engine.apply(cmd)
        assert engine.seq > before, cmd  # every one of them was journaled (it made an event)
        writer.append_batch([(before, engine.seq, cmd.ts_ns, encode_command(cmd))])
    writer.close()
    return engine


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.tools", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def wait_published(api: Api, seq: int, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = api.admin("GET", "/v1/admin/engine").json()
        if st["last_published_seq"] >= seq:
            return dict(st)
        assert time.monotonic() < deadline, f"publication stopped before seq {seq}: {st}"
        time.sleep(0.05)


def stream(redis_srv: RedisServer, url: str) -> list[tuple[int, str, dict[str, Any]]]:
    entries = redis_srv.client_for(url).xrange("exchange:events")
    return [
        (int(eid.decode().split("-")[0]), f[b"type"].decode(), orjson.loads(f[b"data"]))
        for eid, f in entries
    ]


@pytest.mark.parametrize(
    "bad_ids",
    [[2**64], [2**64 + 12345, -(2**70)], [HUGE]],
    ids=["2^64", "above_2^64_and_below_-2^63", "400_digits"],
)
def test_tools_verify_when_journal_holds_ids_beyond_64_bits_replays_to_same_state(
    tmp_path: Path, bad_ids: list[int]
) -> None:
    engine = write_old_journal(tmp_path, bad_ids)
    out = run_tool("verify", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"seq {engine.seq}," in out.stdout and f"state_hash {engine.state_hash()}" in out.stdout


def test_tools_dump_when_journal_holds_400_digit_id_prints_it_exactly(tmp_path: Path) -> None:
    write_old_journal(tmp_path, [HUGE])
    out = run_tool("dump", str(tmp_path))
    assert out.returncode == 0, out.stderr
    commands = [line for line in out.stdout.splitlines() if '"CancelOrder"' in line]
    assert len(commands) == 1 and f",{HUGE}," in commands[0], commands


@pytest.mark.parametrize(
    ("db", "bad_ids"),
    [(1, [2**64, -(2**70)]), (2, [HUGE])],
    ids=["beyond_64_bits", "400_digits"],
)
def test_service_when_journal_holds_ids_beyond_64_bits_starts_and_publishes_every_event(
    start_service: Any, redis_srv: RedisServer, tmp_path: Path, db: int, bad_ids: list[int]
) -> None:
    engine = write_old_journal(tmp_path, bad_ids)
    url = redis_srv.fresh_db(db)
    svc: ServiceProcess = start_service(redis_url=url, data_dir=str(tmp_path))
    api = Api(svc)
    st = api.admin("GET", "/v1/admin/engine").json()
    assert (st["seq"], st["state_hash"]) == (engine.seq, engine.state_hash())
    wait_published(api, engine.seq)
    # and what comes after them too (publication did not stop at the bad record)
    with api.as_key(KEY) as client:
        r = client.post("/v1/orders", json={"symbol": BTC, "side": "buy", "type": "limit",
                                            "qty": "0.01", "price": "30000"})
        assert r.status_code == 200, r.text
    head = api.admin("GET", "/v1/admin/engine").json()["seq"]
    wait_published(api, head)
    entries = stream(redis_srv, url)
    assert [seq for seq, _, _ in entries] == list(range(1, head + 1))
    rejected = [data for _, typ, data in entries if typ == "order_rejected"]
    # ids beyond 64 bits are published exactly, as decimal strings (JSON cannot carry them
    # through orjson, and most consumers' parsers would round them)
    assert [d["order_id"] for d in rejected] == [str(i) for i in bad_ids]
    ready = api.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["publisher"] == "ok", ready.text
    metrics = api.http.get("/metrics").text
    assert f"exchange_publish_values_stringified_total {float(len(bad_ids))}" in metrics


def test_readyz_when_publisher_stuck_with_redis_up_answers_503_then_recovers(
    start_service: Any, redis_srv: RedisServer
) -> None:
    url = redis_srv.fresh_db(3)
    svc: ServiceProcess = start_service(redis_url=url, publish_stall_s="1")
    api = Api(svc)
    assert api.http.get("/readyz").json()["publisher"] == "ok"
    r = redis_srv.client_for(url)
    r.delete("exchange:adl")
    r.set("exchange:adl", "not a stream")  # every append now fails, yet Redis answers PING
    try:
        api.new_account("100")  # events to publish
        deadline = time.monotonic() + 10
        while (ready := api.http.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.1)
        body = ready.json()
        assert ready.status_code == 503 and body["error"] == "NOT_READY", body
        assert body["publisher"] == "stuck" and body["redis"] == "ok", body
        assert body["publish_backlog"] > 0 and "WRONGTYPE" in body["message"], body
        assert "exchange_publish_stuck 1.0" in api.http.get("/metrics").text
    finally:
        r.delete("exchange:adl")
    head = api.admin("GET", "/v1/admin/engine").json()["seq"]
    wait_published(api, head)
    ready = api.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["publisher"] == "ok", ready.text
