"""Durability with real processes (issue 5): crash, clean restart, Redis outage, damaged
journal, publisher backlog overflow, Redis ahead of the engine, both streams of a batch or
neither, readiness while Redis is down.

Every test runs `python -m service` as a subprocess on its own data dir (start_service) and,
where Redis is involved, a redis-server of this module that the tests stop and restart (its
own logical database per test). The reference for "the state" is always an independent
replay of the data dir by `python -m service.tools verify`, compared by `state_hash`.
Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from service.config import build_engine, load_engine_config
from service.format import EventFormatter
from service.storage.codec import decode_command
from service.storage.journal import HEADER, read_journal, segments
from tests.integration.helpers import ROOT, Api, RedisServer, ServiceProcess

MARK = 50_000


def random_order(rng: random.Random, crossing: bool) -> dict[str, Any]:
    """A BTC-PERP limit order body: crossing (30 USD through the mark, takes the other side and
    rests the rest) or resting within 20 USD of the mark."""
    side = rng.choice(("buy", "sell"))
    if crossing:
        ticks = MARK * 10 + (300 if side == "buy" else -300)
    else:
        off = rng.randint(1, 200)
        ticks = MARK * 10 + (-off if side == "buy" else off)
    return {
        "symbol": "BTC-PERP",
        "side": side,
        "type": "limit",
        "qty": f"0.{rng.randint(1, 10):03d}",
        "price": f"{ticks // 10}.{ticks % 10}",
    }
STATUS_RANK = {"new": 0, "partially_filled": 1, "filled": 2, "canceled": 2}
STATIC = ("symbol", "side", "type", "price", "qty", "time_in_force", "client_order_id")


# -- fixtures and helpers ----------------------------------------------------------------------




def engine_state(api: Api) -> dict[str, Any]:
    r = api.admin("GET", "/v1/admin/engine")
    assert r.status_code == 200, r.text
    return dict(r.json())


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.tools", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def verified(data_dir: Path) -> tuple[int, str, str]:
    """(seq, state_hash, stdout) of an independent replay of `data_dir` (service stopped)."""
    out = run_tool("verify", str(data_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    seq = int(re.search(r"commands, seq (\d+),", out.stdout).group(1))  # type: ignore[union-attr]
    digest = re.search(r"^state_hash ([0-9a-f]{64})$", out.stdout, re.M).group(1)  # type: ignore[union-attr]
    return seq, digest, out.stdout


def journal_records(data_dir: Path) -> list[dict[str, Any]]:
    out = run_tool("dump", str(data_dir))
    assert out.returncode == 0, out.stderr
    return [orjson.loads(line) for line in out.stdout.splitlines()]


def wait_published(api: Api, timeout: float = 20.0) -> int:
    """Poll /v1/admin/engine until the publisher has caught up with the engine; the seq."""
    deadline = time.monotonic() + timeout
    while True:
        st = engine_state(api)
        if st["last_published_seq"] == st["seq"] and st["publish_backlog"] == 0:
            return int(st["seq"])
        assert time.monotonic() < deadline, f"publisher did not catch up: {st}"
        time.sleep(0.05)


def reference_events(data_dir: Path, upto: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The stream entries 1..upto as an independent replay of the whole journal renders them
    (a fresh engine with the service's default config, the service's event formatter)."""
    engine = build_engine(load_engine_config(None))
    fmt = EventFormatter(engine.instruments)
    records, _ = read_journal(data_dir)  # read-only; a record being written is ignored
    assert records and records[0].seq_before == 0, "journal does not start at seq 0"
    out = []
    for rec in records:
        if rec.seq_before >= upto:
            break
        for e in engine.apply(decode_command(rec.payload)):
            out.append(
                (
                    f"{e.seq}-0".encode(),
                    {b"type": e.TYPE.encode(), b"data": orjson.dumps(fmt.data(e))},
                )
            )
    return out[:upto]


def assert_streams_exact(redis_srv: RedisServer, url: str, seq: int, data_dir: Path) -> None:
    """exchange:events holds 1..seq exactly once, in order, each entry the event a replay of
    the journal gives; exchange:adl holds every adl event of them, once, in order."""
    r = redis_srv.client_for(url)
    entries = r.xrange("exchange:events")
    ids = [e[0].decode() for e in entries]
    assert all(i.endswith("-0") for i in ids)
    seqs = [int(i.split("-")[0]) for i in ids]
    if seqs != list(range(1, seq + 1)):
        missing = sorted(set(range(1, seq + 1)) - set(seqs))
        dup = len(seqs) - len(set(seqs))
        raise AssertionError(
            f"exchange:events not 1..{seq}: {len(seqs)} entries, {dup} duplicates, "
            f"missing {missing[:20]}{'...' if len(missing) > 20 else ''}, last {seqs[-3:]}"
        )
    reference = reference_events(data_dir, seq)
    assert len(reference) == seq
    for got, want in zip(entries, reference, strict=True):  # live and regenerated alike
        assert got == want, (got, want)
    adl = r.xrange("exchange:adl")
    assert adl, "no adl event to check"
    assert adl == [e for e in entries if e[1][b"type"] == b"adl"]


def stream_top(redis_srv: RedisServer, url: str) -> int:
    last = redis_srv.client_for(url).xrevrange("exchange:events", count=1)
    return int(last[0][0].decode().split("-")[0]) if last else 0


def setup_market(api: Api, accounts: int = 4) -> list[str]:
    api.set_mark("BTC-PERP", str(MARK))
    return [api.new_account("1000000")[1] for _ in range(accounts)]


def adl_scenario(api: Api) -> None:
    """A bankrupt long on ETH-PERP with an empty fund and no bids: liquidation + ADL events."""
    api.set_mark("ETH-PERP", "3000")
    _, alice = api.new_account("300")
    _, bob = api.new_account("5000")
    with api.as_key(alice) as a, api.as_key(bob) as b:
        assert (
            a.post("/v1/leverage", json={"symbol": "ETH-PERP", "leverage": 20}).status_code == 200
        )
        order = {"symbol": "ETH-PERP", "type": "limit", "qty": "1.5", "price": "3000"}
        assert b.post("/v1/orders", json={**order, "side": "sell"}).status_code == 200
        bought = a.post("/v1/orders", json={**order, "side": "buy"}).json()
        assert bought["status"] == "filled", bought
    out = api.set_mark("ETH-PERP", "2700")
    assert out["liquidations"] and out["adl_fills"], out


@dataclass
class Load:
    """What concurrent clients were told (2xx only): order id -> (api key, latest answer)."""

    acked: dict[int, tuple[str, dict[str, Any]]]
    requests: int = 0
    rejected: int = 0
    transport_errors: int = 0


async def order_load(
    base_url: str,
    keys: list[str],
    clients: int,
    seconds: float,
    load: Load,
    seed: int = 1,
    requests: int = 0,
) -> None:
    """`clients` asyncio tasks, each on one account: resting and crossing BTC-PERP limit
    orders and cancels of its own resting orders, until `seconds` pass or the server dies.
    With `requests`, the load goes on past `seconds` until that many were answered (the
    count a test needs must not depend on how fast a shared CI machine happens to be)."""
    start = time.monotonic()

    def going() -> bool:
        elapsed = time.monotonic() - start
        if elapsed < seconds:
            return True
        assert elapsed < 120, f"only {load.requests} of {requests} requests in {elapsed:.0f} s"
        return load.requests < requests

    async def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        key = keys[i % len(keys)]
        resting: list[int] = []
        async with httpx.AsyncClient(
            base_url=base_url, headers={"X-API-Key": key}, timeout=10
        ) as c:
            while going():
                roll = rng.random()
                try:
                    if roll < 0.2 and resting:
                        oid = resting.pop(rng.randrange(len(resting)))
                        r = await c.delete(f"/v1/orders/{oid}")
                    else:
                        body = random_order(rng, crossing=roll < 0.45)
                        r = await c.post("/v1/orders", json=body)
                except httpx.TransportError:
                    load.transport_errors += 1
                    return
                load.requests += 1
                if r.status_code == 200:
                    ans = r.json()
                    load.acked[ans["order_id"]] = (key, ans)
                    if ans["status"] in ("new", "partially_filled") and r.request.method == "POST":
                        resting.append(ans["order_id"])
                else:
                    assert r.status_code in (400, 404, 409, 422, 429), r.text
                    load.rejected += 1

    await asyncio.gather(*(client(i) for i in range(clients)))


async def load_then_kill(
    svc: ServiceProcess,
    keys: list[str],
    min_acked: int,
    clients: int = 8,
    before_kill: Any = None,
) -> Load:
    """Run `order_load` and SIGKILL the service once `min_acked` orders were acknowledged
    (`before_kill()` runs first, the load still going)."""
    load = Load({})
    task = asyncio.create_task(order_load(svc.base_url, keys, clients, 30.0, load))
    deadline = time.monotonic() + 20
    while len(load.acked) < min_acked:
        assert time.monotonic() < deadline and not task.done(), "load did not get going"
        await asyncio.sleep(0.005)
    if before_kill is not None:
        await before_kill()
    assert not task.done()
    svc.kill()  # mid-stream: requests in flight on every client
    await asyncio.wait_for(task, 15)
    assert load.transport_errors == clients  # every client saw the crash
    return load


def check_acked(api: Api, load: Load) -> None:
    """Every acknowledged order is there, same or later status, acknowledged fills as a prefix."""
    clients: dict[str, httpx.Client] = {}
    try:
        for oid, (key, before) in load.acked.items():
            if key not in clients:
                clients[key] = api.as_key(key)
            c = clients[key]
            r = c.get(f"/v1/orders/{oid}")
            assert r.status_code == 200, (oid, before, r.text)
            after = r.json()
            assert {k: after[k] for k in STATIC} == {k: before[k] for k in STATIC}, (before, after)
            if STATUS_RANK[before["status"]] == 2:
                assert after["status"] == before["status"], (before, after)
            else:
                assert STATUS_RANK[after["status"]] >= STATUS_RANK[before["status"]], (
                    before,
                    after,
                )
            assert after["fills"][: len(before["fills"])] == before["fills"], (before, after)
            assert Decimal(after["filled_qty"]) >= Decimal(before["filled_qty"])
    finally:
        for c in clients.values():
            c.close()


def book_and_accounts(api: Api, n_accounts: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sym in ("BTC-PERP", "ETH-PERP"):
        out[sym] = api.http.get(f"/v1/orderbook/{sym}?depth=1000").json()
        out[f"trades {sym}"] = api.http.get(f"/v1/trades/{sym}?limit=1000").json()
    out["fund"] = api.http.get("/v1/insurance-fund").json()
    for aid in range(1, n_accounts + 1):
        out[f"account {aid}"] = api.admin("GET", f"/v1/admin/accounts/{aid}").json()
    return out


# -- 1. kill -9 under concurrent load ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fsync", "snapshot_every", "read_ahead"),
    [("batch", "150", "auto"), ("always", "100000", "on"), ("off", "100000", "auto")],
    ids=["batch+snapshots", "always", "off"],
)
async def test_kill9_under_load_keeps_every_acknowledged_order_and_fill_and_matches_replay(
    start_service: Any, fsync: str, snapshot_every: str, read_ahead: str
) -> None:
    # `off` too: a killed process loses nothing the OS already has (only a machine crash can);
    # `always` restarts with the journal read by a second process (read_ahead.py)
    svc: ServiceProcess = start_service(fsync=fsync, snapshot_every=snapshot_every, recovery_read_ahead=read_ahead)
    api = Api(svc)
    keys = setup_market(api)
    load = await load_then_kill(svc, keys, min_acked=400)
    fills_acked = sum(len(ans["fills"]) for _, ans in load.acked.values())
    assert fills_acked > 0 and any(a["status"] == "canceled" for _, a in load.acked.values())

    seq, digest, out = verified(svc.data_dir)  # replay of the data dir, service down
    snap = int(re.search(r"snapshot seq (\d+)", out).group(1))  # type: ignore[union-attr]
    assert (snap > 0) == (snapshot_every == "150"), out  # recovery from snapshot + tail, or all
    svc.start()
    try:
        state = engine_state(api)
        assert (state["seq"], state["state_hash"]) == (seq, digest)
        check_acked(api, load)
        with api.as_key(keys[0]) as c:  # and it trades on from there
            r = c.post(
                "/v1/orders",
                json={
                    "symbol": "BTC-PERP",
                    "side": "buy",
                    "type": "limit",
                    "qty": "0.001",
                    "price": "40000",
                },
            )
            assert r.status_code == 200, r.text
        assert engine_state(api)["seq"] > seq
    finally:
        svc.stop()


# -- 2. clean restart ---------------------------------------------------------------------------


def test_sigterm_restart_keeps_state_hash_and_seq_and_continues_at_seq_plus_one(
    start_service: Any, redis_srv: RedisServer
) -> None:
    url = redis_srv.fresh_db(2)
    svc: ServiceProcess = start_service(redis_url=url)
    api = Api(svc)
    keys = setup_market(api)
    asyncio.run(order_load(svc.base_url, keys, 4, 1.0, Load({})))
    adl_scenario(api)
    n_accounts = len(keys) + 2
    before_state = engine_state(api)
    before_view = book_and_accounts(api, n_accounts)
    assert svc.stop() in (0, -15), svc.log()

    # a clean stop leaves a snapshot at the last seq: nothing to replay
    seq, digest, out = verified(svc.data_dir)
    assert (seq, digest) == (before_state["seq"], before_state["state_hash"])
    assert f"snapshot seq {seq}, replayed 0 commands" in out, out

    svc.start()
    try:
        after_state = engine_state(api)
        assert (after_state["seq"], after_state["state_hash"]) == (seq, digest)
        assert book_and_accounts(api, n_accounts) == before_view
        d = api.admin("POST", "/v1/admin/deposit", json={"account_id": 1, "amount": "7"})
        assert d.status_code == 200, d.text
        assert engine_state(api)["seq"] == seq + 1
        assert wait_published(api) == seq + 1
        assert_streams_exact(redis_srv, url, seq + 1, svc.data_dir)
        last = redis_srv.client_for(url).xrevrange("exchange:events", count=1)[0]
        assert last[0] == f"{seq + 1}-0".encode() and last[1][b"type"] == b"deposit"
        assert orjson.loads(last[1][b"data"])["account_id"] == 1
    finally:
        svc.stop()


# -- 3. exactly-once publication: Redis outage, and kill -9 of the service ----------------------


async def test_redis_outage_during_load_publishes_every_seq_exactly_once(
    start_service: Any, redis_srv: RedisServer
) -> None:
    url = redis_srv.fresh_db(3)
    svc: ServiceProcess = start_service(redis_url=url)
    api = Api(svc)
    keys = setup_market(api)
    load = Load({})
    task = asyncio.create_task(order_load(svc.base_url, keys, 6, 5.0, load, requests=250))
    await asyncio.sleep(1.0)
    redis_srv.stop(save=True)  # what it holds survives, as with a persistent Redis
    await asyncio.sleep(0.5)
    await asyncio.to_thread(adl_scenario, api)  # adl events while Redis is down
    await asyncio.sleep(1.5)
    during = engine_state(api)
    assert during["seq"] > during["last_published_seq"] and during["publish_backlog"] > 0
    redis_srv.start()
    await task
    assert load.transport_errors == 0 and len(load.acked) > 100
    try:
        assert_streams_exact(redis_srv, url, wait_published(api), svc.data_dir)
    finally:
        svc.stop()


async def test_kill9_with_unpublished_events_restart_regenerates_them_exactly_once(
    start_service: Any, redis_srv: RedisServer
) -> None:
    url = redis_srv.fresh_db(4)
    # frequent snapshots: pruning must keep a base the unpublished events can be replayed from
    svc: ServiceProcess = start_service(redis_url=url, log_level="info", snapshot_every="100")
    api = Api(svc)
    keys = setup_market(api)
    adl_scenario(api)

    async def stall_redis() -> None:
        # Redis stays up but stops answering for a moment, so the crash below surely leaves
        # journaled events that never reached Redis (the publisher otherwise keeps up).
        redis_srv.pause()
        await asyncio.sleep(0.5)

    try:
        await load_then_kill(svc, keys, min_acked=300, before_kill=stall_redis)
    finally:
        redis_srv.resume()
    seq, digest, out = verified(svc.data_dir)
    assert "snapshot seq 0," not in out, out  # recovery starts from a snapshot
    time.sleep(0.2)  # let Redis run what the dead publisher had already sent
    top = stream_top(redis_srv, url)
    assert top < seq, (top, seq)
    svc.start()
    try:
        state = engine_state(api)
        assert (state["seq"], state["state_hash"]) == (seq, digest)
        assert wait_published(api) == seq
        assert_streams_exact(redis_srv, url, seq, svc.data_dir)
        # the restarted publisher replayed the journal for what Redis had not seen
        chunks = [
            (int(a), int(b)) for a, b in re.findall(r"regenerated events (\d+)\.\.(\d+)", svc.log())
        ]
        assert chunks and chunks[0][0] == top + 1 and chunks[-1][1] == seq, chunks
        assert all(b + 1 == a for (_, b), (a, _) in pairwise(chunks)), chunks
    finally:
        svc.stop()


def test_redis_restarted_without_its_data_gets_every_event_again(
    start_service: Any, redis_srv: RedisServer
) -> None:
    url = redis_srv.fresh_db(6)
    svc: ServiceProcess = start_service(redis_url=url)
    api = Api(svc)
    setup_market(api, accounts=2)
    adl_scenario(api)
    wait_published(api)
    # An outage after which Redis has lost this database's streams (a restart without
    # persistence, a failover to a lagging replica); the module's other databases survive.
    redis_srv.clear_streams(6)
    redis_srv.stop(save=True)
    redis_srv.start()
    api.new_account("1")
    try:
        assert_streams_exact(redis_srv, url, wait_published(api), svc.data_dir)
    finally:
        svc.stop()


# -- 4. damaged journal -------------------------------------------------------------------------


def test_torn_tail_is_cut_and_logged_but_corrupt_middle_refuses_to_start(
    start_service: Any,
) -> None:
    svc: ServiceProcess = start_service()
    api = Api(svc)
    keys = setup_market(api, accounts=2)
    asyncio.run(order_load(svc.base_url, keys, 2, 0.7, Load({}), requests=40))
    svc.kill()
    data = svc.data_dir

    # torn tail: the newest record loses its last bytes (a crash mid-write)
    records = journal_records(data)
    assert len(records) > 20
    newest = segments(data)[-1]
    last = records[-1]
    assert last["file"] == newest.name
    size = newest.stat().st_size
    with open(newest, "r+b") as f:
        f.truncate(size - 3)
    seq, digest, out = verified(data)
    assert seq == last["seq_before"], (seq, last)  # the torn command is not part of the state
    assert f"torn tail at {newest}:{last['offset']}" in out, out
    svc.start()
    state = engine_state(api)
    assert (state["seq"], state["state_hash"]) == (seq, digest)
    log = svc.log()
    assert "torn journal tail" in log and f"{newest} at offset {last['offset']}" in log, log
    assert newest.stat().st_size == last["offset"]  # cut at the record boundary
    api.admin("POST", "/v1/admin/deposit", json={"account_id": 1, "amount": "1"})
    assert engine_state(api)["seq"] == seq + 1
    svc.kill()
    seq2, _, out = verified(data)  # appends after the cut are intact
    assert seq2 == seq + 1 and "no torn tail" in out

    # corruption in the middle: never silently dropped
    records = journal_records(data)
    mid = records[len(records) // 2]
    path = data / mid["file"]
    blob = bytearray(path.read_bytes())
    blob[mid["offset"] + HEADER.size + 2] ^= 0x20  # a byte of the payload
    path.write_bytes(bytes(blob))
    where = f"{path} at byte offset {mid['offset']}"
    bad = run_tool("verify", str(data))
    assert bad.returncode == 1 and where in bad.stderr, (bad.stdout, bad.stderr)
    with pytest.raises(RuntimeError, match="service exited"):
        svc.start()
    assert svc.proc is not None and svc.proc.returncode not in (0, None)
    assert where in svc.log(), svc.log()
    assert path.read_bytes() == bytes(blob)  # left as found for the operator
    svc.stop()


# -- 5. publisher backlog overflow --------------------------------------------------------------


async def test_backlog_overflow_while_redis_down_regenerates_dropped_events(
    start_service: Any, redis_srv: RedisServer
) -> None:
    url = redis_srv.fresh_db(5)
    redis_srv.stop(save=True)
    try:
        svc: ServiceProcess = start_service(ready="/healthz", redis_url=url, publish_backlog="50")
        api = Api(svc)
        keys = setup_market(api)
        await asyncio.to_thread(adl_scenario, api)
        load = Load({})  # a few hundred orders, Redis still down
        await order_load(svc.base_url, keys, 4, 0.5, load, requests=200)
        assert load.requests >= 200, load
        state = engine_state(api)
        # the backlog counts every unpublished event; at most 50 of them are held in memory
        assert state["publish_backlog"] == state["seq"] and state["last_published_seq"] == 0
        assert metric(api, "exchange_publish_backlog_in_memory") <= 50
        dropped = metric(api, "exchange_publish_dropped_events_total")
        assert dropped >= state["seq"] - 50, (dropped, state)
    finally:
        redis_srv.start()
    try:
        assert_streams_exact(redis_srv, url, wait_published(api), svc.data_dir)
    finally:
        svc.stop()


# -- 6. the fsync helper process (batch mode) ----------------------------------------------------


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_fsync_helper_death_halts_the_service_and_a_restart_recovers(start_service: Any) -> None:
    """If the journal can no longer be made durable, nothing more is acknowledged."""
    svc: ServiceProcess = start_service(fsync="batch")
    api = Api(svc)
    keys = setup_market(api, accounts=2)
    asyncio.run(order_load(svc.base_url, keys, 2, 0.5, Load({})))
    state = engine_state(api)
    # at most one fsync per record (fewer under load: group commit, proved in test_syncer.py)
    assert 0 < state["fsyncs"] <= state["journal_records"], state
    assert svc.proc is not None
    (helper,) = _children(svc.proc.pid)
    os.kill(helper, signal.SIGKILL)
    deadline = time.monotonic() + 10  # noticed while idle: /readyz fails before any order
    while (ready := api.http.get("/readyz")).status_code == 200:
        assert time.monotonic() < deadline, "readyz still 200 after the fsync helper died"
        time.sleep(0.05)
    assert ready.status_code == 503 and "journal cannot be made durable" in ready.text, ready.text
    with api.as_key(keys[0]) as c:
        r = c.post(
            "/v1/orders",
            json={"symbol": "BTC-PERP", "side": "buy", "type": "limit", "qty": "0.001", "price": "40000"},
        )
    assert r.status_code == 503 and r.json()["error"] == "ENGINE_HALTED", r.text
    assert "fsync helper" in r.json()["message"]
    assert api.http.get("/readyz").status_code == 503
    svc.kill()
    # the order applied in memory but never acknowledged may or may not be on disk; either
    # way the restart equals an independent replay of the data dir
    seq, digest, _ = verified(svc.data_dir)
    assert seq >= state["seq"]
    svc.start()
    try:
        after = engine_state(api)
        assert (after["seq"], after["state_hash"]) == (seq, digest)
    finally:
        svc.stop()


def test_kill9_of_the_service_leaves_no_fsync_helper_behind(start_service: Any) -> None:
    svc: ServiceProcess = start_service(fsync="batch")
    assert svc.proc is not None
    (helper,) = _children(svc.proc.pid)
    svc.kill()
    assert _gone(helper), "the fsync helper outlived the killed service"
    svc.start()  # and a restart gets a new one
    try:
        assert svc.proc is not None and len(_children(svc.proc.pid)) == 1
    finally:
        svc.stop()


# -- 7. publication: Redis ahead of the engine, both streams or neither, readiness --------------


def metric(api: Api, name: str) -> float:
    """The value of an unlabelled series at /metrics."""
    for line in api.http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_readyz(api: Api, status: int, timeout: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while (r := api.http.get("/readyz")).status_code != status:
        assert time.monotonic() < deadline, f"/readyz not {status}: {r.status_code} {r.text}"
        time.sleep(0.05)
    return r


def stream_entries(redis_srv: RedisServer, url: str) -> tuple[list[Any], list[Any]]:
    r = redis_srv.client_for(url)
    return r.xrange("exchange:events"), r.xrange("exchange:adl")


@pytest.mark.parametrize("emptied", [False, True], ids=["streams-intact", "streams-emptied-by-xtrim"])
def test_restart_when_engine_is_below_redis_last_id_stops_publication_and_fails_readyz(
    start_service: Any, redis_srv: RedisServer, emptied: bool
) -> None:
    """A wiped data dir against the old run's streams (audit R3; S4 with XTRIM MAXLEN 0): the
    new run's events must never be written into (or skipped as "already in") that history."""
    url = redis_srv.fresh_db(9 if emptied else 10)
    old: ServiceProcess = start_service(redis_url=url)
    api = Api(old)
    setup_market(api, accounts=2)
    adl_scenario(api)
    top = wait_published(api)
    old.stop()
    if emptied:  # every entry gone, the last-generated id stays
        r = redis_srv.client_for(url)
        r.xtrim("exchange:events", maxlen=0, approximate=False)
        r.xtrim("exchange:adl", maxlen=0, approximate=False)
    before = stream_entries(redis_srv, url)

    svc: ServiceProcess = start_service(ready="/healthz", redis_url=url)  # a new, empty data dir
    api = Api(svc)
    try:
        body = wait_readyz(api, 503).json()
        assert body["error"] == "NOT_READY" and body["redis"] == "ahead of the engine", body
        assert f"exchange:events holds ids up to {top}" in body["message"], body
        assert re.search(r"the engine is at seq \d+", body["message"]), body
        # trading goes on, and the engine even passes the old run's last id
        setup_market(api, accounts=2)
        adl_scenario(api)
        while api.seq() <= top + 3:
            api.new_account("1")
        time.sleep(0.3)
        seq = engine_state(api)["seq"]
        assert api.http.get("/readyz").status_code == 503  # latched: the history is still foreign
        assert metric(api, "exchange_publish_redis_ahead") == 1
        assert metric(api, "exchange_publish_backlog") == seq
        assert stream_entries(redis_srv, url) == before  # nothing written into the other history
        log = svc.log()
        assert "Redis is ahead of the engine" in log and f"up to {top}" in log, log
        # a restart now that the engine is past the old run's last id: the streams' origin
        # marker still tells the other data dir's history from this one's (audit n8b)
        svc.stop()
        svc.start(ready="/healthz")
        body = wait_readyz(api, 503).json()
        assert body["redis"] == "another data dir's streams", body
        assert stream_entries(redis_srv, url) == before
        # the operator removes the old streams: the new run is published from seq 1
        redis_srv.client_for(url).delete("exchange:events", "exchange:adl", "exchange:origin")
        assert_streams_exact(redis_srv, url, wait_published(api, timeout=30), svc.data_dir)
        ready = wait_readyz(api, 200).json()
        assert ready["redis"] == "ok" and ready["publish_backlog"] == 0, ready
        assert metric(api, "exchange_publish_redis_ahead") == 0
    finally:
        svc.stop()


class CuttingRedisProxy:
    """A TCP proxy to Redis that forwards whole RESP commands and, at the first batch append
    carrying an adl entry (the publisher's EVALSHA), drops the connection and stops listening:
    with `forward`, after passing the append on (it lands, the answer is lost: the publisher
    cannot know), else before (nothing lands)."""

    def __init__(self, target_port: int, forward: bool) -> None:
        self.target_port = target_port
        self.forward = forward
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = int(self.server.getsockname()[1])
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.close()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        buf = b""
        try:  # any error ends this connection quietly (a traceback printed from a thread
            # races the main thread's ast use in CPython 3.11: "AST constructor recursion")
            while data := client.recv(65536):
                buf += data
                while (parsed := _resp_command(buf)) is not None:
                    args, size = parsed
                    if args[0] in (b"EVALSHA", b"EVAL") and b"adl" in args:
                        if self.forward:
                            upstream.sendall(buf[:size])
                        self.cut.set()
                        time.sleep(0.2)  # what was forwarded reaches Redis first
                        self.close()
                        return
                    upstream.sendall(buf[:size])
                    buf = buf[size:]
        except Exception:
            pass
        finally:
            client.close()
            upstream.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(Exception):
            while data := src.recv(65536):
                dst.sendall(data)


def _resp_command(buf: bytes) -> tuple[list[bytes], int] | None:
    """The first complete RESP command in `buf` (its arguments and byte size), or None."""
    if not buf.startswith(b"*"):
        return None
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    args, pos = [], end + 2
    for _ in range(int(buf[1:end])):
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        n = int(buf[pos + 1 : end])
        if len(buf) < end + 2 + n + 2:
            return None
        args.append(buf[end + 2 : end + 2 + n])
        pos = end + 2 + n + 2
    return [args[0].upper(), *args[1:]], pos


@pytest.mark.parametrize("forward", [False, True], ids=["cut-before", "answer-lost"])
def test_adl_events_when_connection_dies_mid_batch_land_in_both_or_neither(
    start_service: Any, redis_srv: RedisServer, forward: bool
) -> None:
    """Audit R5: a batch's entries in exchange:events and exchange:adl are one atomic append;
    when its answer is lost, the restarted publisher neither repeats nor skips anything."""
    url = redis_srv.fresh_db(11 if forward else 13)
    proxy = CuttingRedisProxy(redis_srv.port, forward)
    svc: ServiceProcess = start_service(redis_url=proxy.url(11), shutdown_timeout_s="1")
    api = Api(svc)
    try:
        setup_market(api, accounts=2)
        wait_published(api)
        adl_scenario(api)
        assert proxy.cut.wait(10), "no adl append went through the proxy"
        time.sleep(0.3)
        events, adl = stream_entries(redis_srv, url)
        assert [e for e in events if e[1][b"type"] == b"adl"] == adl, (events[-3:], adl)
        assert bool(adl) == forward
        svc.stop()  # Redis unreachable: the backlog is lost with the process
        svc.env["EXCHANGE_REDIS_URL"] = url
        svc.start()
        assert_streams_exact(redis_srv, url, wait_published(api), svc.data_dir)
    finally:
        proxy.close()
        svc.stop()


def test_restart_when_exchange_adl_lacks_entries_copies_them_from_exchange_events(
    start_service: Any, redis_srv: RedisServer
) -> None:
    """Audit R5: resume per stream. exchange:adl as an interrupted write of the old,
    non-transactional publisher left it: exchange:events holds the last adl entry, exchange:adl
    stops before it."""
    url = redis_srv.fresh_db(12)
    svc: ServiceProcess = start_service(redis_url=url)
    api = Api(svc)
    setup_market(api, accounts=2)
    adl_scenario(api)
    wait_published(api)
    svc.stop()
    r = redis_srv.client_for(url)
    adl = r.xrange("exchange:adl")
    assert adl
    r.delete("exchange:adl")
    for entry_id, fields in adl[:-1]:
        r.xadd("exchange:adl", fields, id=entry_id)
    svc.start()
    try:
        api.new_account("1")
        assert_streams_exact(redis_srv, url, wait_published(api), svc.data_dir)
        assert "exchange:adl lacked 1 adl entries" in svc.log(), svc.log()
    finally:
        svc.stop()


def test_readyz_when_only_redis_is_down_stays_200_and_shows_the_backlog_also_after_a_restart(
    start_service: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Audit R9: trading goes on while Redis is down, so the instance stays in service; the
    backlog counts every event not yet published, in memory or to be regenerated."""
    late = RedisServer(tmp_path_factory.mktemp("redis-late"))  # nothing listens on its port yet
    svc: ServiceProcess = start_service(ready="/healthz", redis_url=late.url, shutdown_timeout_s="1")
    api = Api(svc)
    try:
        setup_market(api, accounts=2)
        adl_scenario(api)
        seq = engine_state(api)["seq"]
        ready = api.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready" and body["redis"] == "unreachable", body
        assert "Redis unreachable" in body["message"], body
        assert (body["engine_seq"], body["last_published_seq"]) == (seq, 0), body
        assert body["publish_backlog"] == body["publish_lag_events"] == seq, body
        assert metric(api, "exchange_publish_backlog") == seq
        assert metric(api, "exchange_publish_redis_connected") == 0

        svc.stop()
        svc.start()  # Redis still down: nothing in memory, everything to be regenerated
        body = wait_readyz(api, 200).json()
        assert body["redis"] == "unreachable" and body["publish_backlog"] == seq, body
        assert metric(api, "exchange_publish_backlog") == seq
        assert metric(api, "exchange_publish_backlog_in_memory") == 0

        late.start()
        assert_streams_exact(late, late.url, wait_published(api), svc.data_dir)
        body = api.http.get("/readyz").json()
        assert body["redis"] == "ok" and body["publish_backlog"] == 0, body
    finally:
        svc.stop()
        late.stop()


def test_redis_restarted_empty_while_idle_gets_every_event_again_exactly_once(
    start_service: Any, redis_srv: RedisServer
) -> None:
    """A Redis that restarts without its data while the publisher is idle: a /readyz probe
    reconnects the shared client before the publisher notices anything, so only the streams'
    last ids, checked with every append, can tell that history is missing."""
    url = redis_srv.fresh_db(14)
    svc: ServiceProcess = start_service(redis_url=url)
    api = Api(svc)
    try:
        keys = setup_market(api, accounts=2)
        adl_scenario(api)
        before = wait_published(api)
        redis_srv.stop(save=False)
        redis_srv.start()
        redis_srv.client_for(url).flushdb()  # whatever an older dump held: this db starts empty
        assert api.http.get("/readyz").status_code == 200  # the probe reconnects
        asyncio.run(order_load(svc.base_url, keys, 2, 0.2, Load({}), requests=20))
        seq = wait_published(api)
        assert seq > before
        assert_streams_exact(redis_srv, url, seq, svc.data_dir)
    finally:
        svc.stop()


async def test_publisher_when_only_part_of_a_gap_is_lost_skips_that_part_and_sends_the_rest(
    tmp_path: Path, redis_srv: RedisServer
) -> None:
    """Redis empty, journal pruned behind a snapshot: what the snapshot and the journal after
    it still give is published (audit n4: the whole first chunk used to be skipped)."""
    from engine.engine import Engine
    from service.format import EventFormatter
    from service.metrics import Metrics
    from service.publisher import RedisPublisher
    from service.storage.regen import EventRegenerator
    from tests.durability.test_regen import _pruned_behind_a_snapshot

    live, _, snap = _pruned_behind_a_snapshot(tmp_path)
    url = redis_srv.url_for_db(15)
    redis_srv.clear_streams(15)
    metrics = Metrics()
    pub = RedisPublisher(
        url,
        EventFormatter(live.instruments),
        metrics,
        regenerate=EventRegenerator(tmp_path, Engine),
        head_seq=lambda: live.seq,
    )
    await pub.start()
    try:
        deadline = time.monotonic() + 20
        while pub.last_published_seq < live.seq:
            assert time.monotonic() < deadline, pub.last_published_seq
            await asyncio.sleep(0.02)
    finally:
        await pub.stop()
    ids = [int(i.decode().split("-")[0]) for i, _ in redis_srv.client_for(url).xrange("exchange:events")]
    assert ids == list(range(snap + 1, live.seq + 1))
    assert pub.dropped == 0 and metrics.publish_dropped._value.get() == snap


# -- 8. a full disk (issue 10, finding 3) ---------------------------------------------------------


@dataclass
class FullDiskLoad:
    """What the clients were told, by client_order_id: 2xx (key, answer), 503 (key, request)."""

    acked: dict[str, tuple[str, dict[str, Any]]]
    halted: dict[str, tuple[str, dict[str, Any]]]
    halt_messages: set[str]
    other: int = 0  # 400/422/429 answers (refused at the edge or by the engine, or throttled)


async def orders_until_halted(
    base_url: str, keys: list[str], load: FullDiskLoad, cap: int = 4000, seed: int = 7
) -> None:
    """One client per key, concurrently, placing crossing and resting BTC-PERP limit orders,
    each with a client_order_id of its own, until its first 503 (at most `cap` requests
    each: the disk must fill long before that)."""

    async def client(i: int, key: str) -> None:
        rng = random.Random(seed * 1000 + i)
        async with httpx.AsyncClient(
            base_url=base_url, headers={"X-API-Key": key}, timeout=30
        ) as c:
            for n in range(cap):
                body = random_order(rng, crossing=rng.random() < 0.4)
                body["client_order_id"] = f"fd-{i}-{n}"
                r = await c.post("/v1/orders", json=body)
                if r.status_code == 200:
                    load.acked[body["client_order_id"]] = (key, r.json())
                elif r.status_code == 503:
                    assert r.json()["error"] == "ENGINE_HALTED", r.text
                    load.halted[body["client_order_id"]] = (key, body)
                    load.halt_messages.add(r.json()["message"])
                    return
                else:  # never 409: every client_order_id is new
                    assert r.status_code in (400, 422, 429), r.text
                    load.other += 1
        raise AssertionError(f"client {i}: {cap} orders and the service never halted")

    await asyncio.gather(*(client(i, key) for i, key in enumerate(keys)))


def journaled_client_order_ids(data_dir: Path) -> set[str]:
    """client_order_id of every PlaceOrder in the journal (read with the service stopped)."""
    records, torn = read_journal(data_dir)
    assert torn is None, f"the cut left part of a record behind: {torn}"
    out = set()
    for rec in records:
        cmd = decode_command(rec.payload)
        if type(cmd).__name__ == "PlaceOrder" and cmd.client_order_id is not None:
            out.add(cmd.client_order_id)
    return out


def check_full_disk_outcome(api: Api, load: FullDiskLoad, journaled: set[str]) -> None:
    """After a restart with space again: every order answered 2xx is there as answered, no
    order answered 503 is (a retry with its client_order_id is accepted, never a 409)."""
    assert not (set(load.halted) & journaled), "orders answered 503 are in the journal"
    assert set(load.acked) <= journaled, "orders answered 2xx are missing from the journal"
    check_acked(api, Load({ans["order_id"]: (key, ans) for key, ans in load.acked.values()}))
    by_key: dict[str, httpx.Client] = {}
    try:
        for coid, (key, body) in load.halted.items():
            c = by_key.setdefault(key, api.as_key(key))
            r = c.post("/v1/orders", json=body)
            assert r.status_code == 200, (coid, r.text)  # a 409 would name the "lost" order
            assert r.json()["client_order_id"] == coid
    finally:
        for c in by_key.values():
            c.close()


def report_full_disk(label: str, load: FullDiskLoad, applied: int, seq_gap: int) -> None:
    print(
        f"\nfull disk ({label}): {len(load.acked)} orders answered 2xx, {len(load.halted)} "
        f"answered 503 ({applied} of them open in memory when it halted; in-memory seq "
        f"{seq_gap} past the journal), {load.other} other; after restart every 2xx exists, "
        "no 503 does"
    )


def in_memory_halted(api: Api, load: FullDiskLoad) -> int:
    """How many orders answered 503 the halted engine holds open in memory (GET shows the
    engine's state; they were applied, then their journal records were cut)."""
    open_coids = set()
    for key in {key for key, _ in load.halted.values()}:
        with api.as_key(key) as c:
            r = c.get("/v1/orders")
            assert r.status_code == 200, r.text
            open_coids |= {o["client_order_id"] for o in r.json()}
    return len(open_coids & set(load.halted))


@pytest.mark.parametrize(
    ("fsync", "crash"),
    [("batch", False), ("always", True), ("off", False)],
    ids=["batch+sigterm", "always+kill9", "off+sigterm"],
)
def test_full_disk_under_load_no_order_answered_503_exists_after_restart(
    start_service: Any, fsync: str, crash: bool
) -> None:
    """RLIMIT_FSIZE set on the running service (`prlimit`): its journal write past the limit
    fails with EFBIG after a short write, exactly as on a full disk (ENOSPC)."""
    import resource

    svc: ServiceProcess = start_service(fsync=fsync)
    api = Api(svc)
    keys = setup_market(api, accounts=16)
    journal_size = segments(svc.data_dir)[-1].stat().st_size
    limit = journal_size + 64 * 1024  # some 400 orders more
    assert svc.log_path.stat().st_size < limit  # its log (stdout) must not be what fills up
    assert svc.proc is not None
    resource.prlimit(svc.proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
    load = FullDiskLoad({}, {}, set())
    asyncio.run(orders_until_halted(svc.base_url, keys, load))
    assert load.acked and load.halted
    assert any("File too large" in m for m in load.halt_messages), load.halt_messages
    assert api.http.get("/readyz").status_code == 503
    applied = in_memory_halted(api, load)
    seq_in_memory = engine_state(api)["seq"]
    if crash:
        svc.kill()
    else:
        svc.stop()
    seq, _, out = verified(svc.data_dir)
    assert "no torn tail" in out, out
    journaled = journaled_client_order_ids(svc.data_dir)
    assert seq < seq_in_memory  # commands were applied, answered 503, and their records cut
    svc.start()  # no limit any more
    try:
        assert engine_state(api)["seq"] == seq
        check_full_disk_outcome(api, load, journaled)
    finally:
        svc.stop()
    report_full_disk(f"RLIMIT_FSIZE, fsync={fsync}", load, applied, seq_in_memory - seq)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (real ENOSPC for every file of the data dir); skipped where mounting is
    not permitted (not root, or a container without CAP_SYS_ADMIN)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (FileNotFoundError, PermissionError):
        pytest.skip("no mount command")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_full_disk_on_a_small_tmpfs_no_order_answered_503_exists_after_restart(
    start_service: Any, small_tmpfs: Path
) -> None:
    """The finding's own setup (a small tmpfs, real ENOSPC), and a restart while the disk is
    still full: the service starts and shows the acknowledged orders; its shutdown snapshot
    fails for lack of space and leaves nothing behind."""
    data = small_tmpfs / "data"
    svc: ServiceProcess = start_service(data_dir=str(data), fsync="batch")
    api = Api(svc)
    filler = small_tmpfs / "filler"
    try:
        keys = setup_market(api, accounts=16)
        free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
        assert free > 128 * 1024, free
        filler.write_bytes(b"\1" * (free - 64 * 1024))  # some 400 orders from full
        load = FullDiskLoad({}, {}, set())
        asyncio.run(orders_until_halted(svc.base_url, keys, load))
        assert load.acked and load.halted
        assert any("No space left" in m for m in load.halt_messages), load.halt_messages
        applied = in_memory_halted(api, load)
        seq_in_memory = engine_state(api)["seq"]
        svc.stop()
        journaled = journaled_client_order_ids(data)
        assert not (set(load.halted) & journaled)

        svc.start()  # still full: recovery writes nothing it needs space for
        seq = engine_state(api)["seq"]
        assert seq < seq_in_memory  # applied, answered 503, cut
        check_acked(api, Load({ans["order_id"]: (key, ans) for key, ans in load.acked.values()}))
        svc.stop()  # its final snapshot does not fit: logged, no partial file left
        assert "snapshot at shutdown failed" in svc.log()
        assert not list(data.glob("snapshot-*"))

        filler.unlink()  # space again
        svc.start()
        try:
            assert engine_state(api)["seq"] == seq
            check_full_disk_outcome(api, load, journaled)
        finally:
            svc.stop()
        report_full_disk("1 MiB tmpfs, fsync=batch", load, applied, seq_in_memory - seq)
    finally:
        svc.stop()
