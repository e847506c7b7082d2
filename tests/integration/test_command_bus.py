"""The command bus with real processes: `python -m service --role engine` consuming commands
from a real redis-server (service/bus.py), exactly once across a kill -9 and a clean restart.

Senders here do what a gateway does: add an entry with an idempotency key and a reply
stream, wait for the answer, and after a timeout (or an engine that died) send the same
key again. Nothing is mocked; the reference for "applied once" is the account's wallet
(each deposit a distinct amount) and the journal itself (each key in it once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from engine import commands as c
from service.bus import BusKeys, submit
from service.storage.codec import record_origin
from service.storage.journal import iter_records
from tests.integration.helpers import Api, RedisServer, ServiceProcess

pytestmark = pytest.mark.slow

KEYS = BusKeys()
REPLY = KEYS.reply("test")
E8 = 100_000_000


async def answers(client: aioredis.Redis, after: str = "0-0", block_ms: int = 200) -> tuple[str, dict[str, dict[str, Any]]]:
    """Answers on the reply stream after entry `after`: key -> fields (decoded)."""
    out: dict[str, dict[str, Any]] = {}
    resp = await client.xread({REPLY: after}, count=10_000, block=block_ms)
    for _, entries in resp or ():
        for entry_id, fields in entries:
            after = entry_id.decode()
            row = {k.decode(): v.decode() for k, v in fields.items()}
            if "events" in row:
                row["events"] = orjson.loads(row["events"])
            out[row["key"]] = row
    return after, out


async def until_answered(
    client: aioredis.Redis, keys: set[str], timeout: float = 20.0, cursor: str = "0-0"
) -> dict[str, dict[str, Any]]:
    """The answers to `keys` on the reply stream after entry `cursor`."""
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while not keys <= got.keys():
        assert time.monotonic() < deadline, f"no answer for {sorted(keys - got.keys())[:5]}"
        cursor, new = await answers(client, cursor)
        got.update(new)
    return got


def wallet(api: Api, key: str) -> Decimal:
    with api.as_key(key) as client:
        r = client.get("/v1/account")
        assert r.status_code == 200, r.text
        return Decimal(r.json()["wallet_balance"])


def journal_keys(svc: ServiceProcess) -> list[str]:
    keys = []
    for rec in iter_records(svc.data_dir):
        origin = record_origin(rec.payload)
        if origin is not None:
            keys.append(origin[1])
    return keys


_DB = iter(range(10, 14))


@pytest.fixture()
def engine_role(start_service: Any, redis_srv: RedisServer) -> Iterator[tuple[ServiceProcess, str]]:
    """An engine-role service on a Redis database of its own (one engine per command stream)."""
    url = redis_srv.fresh_db(next(_DB))
    svc = start_service(redis_url=url, role="engine", snapshot_every="50")
    yield svc, url
    svc.stop()


async def test_commands_over_the_bus_are_answered_once(engine_role: tuple[ServiceProcess, str]) -> None:
    svc, url = engine_role
    api = Api(svc)
    account, api_key = api.new_account(deposit=None)
    api.set_mark("BTC-PERP", "40000")
    client = aioredis.from_url(url)
    try:
        await submit(client, KEYS, "dep-1", c.Deposit(account, 1_000 * E8), REPLY)
        await submit(client, KEYS, "order-1", c.PlaceOrder(account, "BTC-PERP", "buy", 1, 400_000), REPLY)
        await submit(client, KEYS, "bad-order", c.PlaceOrder(account, "NOPE-PERP", "buy", 1, 400_000), REPLY)
        got = await until_answered(client, {"dep-1", "order-1", "bad-order"})
        dep = got["dep-1"]
        assert dep["status"] == "applied"
        assert [e["type"] for e in dep["events"]] == ["deposit"]
        assert dep["events"][0]["data"]["amount"] == "1000"
        assert int(dep["seq"]) == int(dep["seq_before"]) + 1 == dep["events"][0]["seq"]
        assert got["order-1"]["status"] == "applied", got["order-1"]
        assert got["order-1"]["events"][0]["type"] == "order_accepted"
        assert got["bad-order"]["status"] == "rejected"
        assert got["bad-order"]["events"][0]["data"]["reason"] == "INVALID_SYMBOL", got["bad-order"]
        assert wallet(api, api_key) == Decimal("1000")
        # the HTTP API sees the bus's order: it rests in the book
        with api.as_key(api_key) as http:
            assert len(http.get("/v1/orders").json()) == 1

        # the same key again (a gateway retrying after a timeout): not applied again
        seen = (await client.xinfo_stream(REPLY))["last-generated-id"].decode()
        await submit(client, KEYS, "dep-1", c.Deposit(account, 1_000 * E8), REPLY)
        again = await until_answered(client, {"dep-1"}, cursor=seen)
        assert again["dep-1"]["status"] == "duplicate"
        assert (again["dep-1"]["seq_before"], again["dep-1"]["seq"]) == (dep["seq_before"], dep["seq"])
        assert wallet(api, api_key) == Decimal("1000")

        # malformed entries: answered `invalid`, nothing applied, the engine goes on
        seq = api.seq()
        bad: list[dict[str, Any]] = [
            {"key": "inv-1", "cmd": b'["Deposit", true, 5]', "reply": REPLY},
            {"key": "inv-2", "cmd": b'["Deposit", 1, 5, 7]', "reply": REPLY},
            {"key": "inv-3", "cmd": b'["Shutdown"]', "reply": REPLY},
            {"key": "inv-4", "cmd": b"{not json", "reply": REPLY},
            {"key": "inv-5", "cmd": b'["Deposit", 1, 1.5]', "reply": REPLY},
            {"key": "inv-6", "cmd": b'["Deposit", 1, ' + b"9" * 60 + b"]", "reply": REPLY},
            {"key": "inv-9", "cmd": b'["SetMarkPrice", "BTC-PERP", 1267650600228229401496703205376]', "reply": REPLY},
            {"cmd": b'["Deposit", 1, 5]', "reply": REPLY},  # no key: no answer
            {"key": "inv-7", "reply": REPLY},
            {"key": "x" * 200, "cmd": b'["Deposit", 1, 5]', "reply": REPLY},  # no answer: key unusable
            {"key": "inv-8", "cmd": b'["Deposit", 1, 5]', "reply": "exchange:events"},  # not a reply stream
        ]
        for fields in bad:
            await client.xadd(KEYS.commands, fields)
        invalid = await until_answered(client, {f"inv-{i}" for i in range(1, 8)} | {"inv-9"})
        for i in range(1, 8):
            assert invalid[f"inv-{i}"]["status"] == "invalid", invalid[f"inv-{i}"]
            assert invalid[f"inv-{i}"]["error"]
        assert "cannot be bool" in invalid["inv-1"]["error"]
        assert "unknown command" in invalid["inv-3"]["error"]
        assert "10^23" in invalid["inv-9"]["error"]  # 2^100: the HTTP edge could not send it
        assert "" not in invalid
        await submit(client, KEYS, "dep-2", c.Deposit(account, 1 * E8), REPLY)
        assert (await until_answered(client, {"dep-2"}))["dep-2"]["status"] == "applied"
        assert api.seq() == seq + 1
        assert svc.proc is not None and svc.proc.poll() is None
        # every entry read is removed from the command stream
        assert await client.xlen(KEYS.commands) == 0
    finally:
        await client.aclose()


async def test_kill_9_under_bus_load_loses_nothing_and_applies_nothing_twice(
    engine_role: tuple[ServiceProcess, str],
) -> None:
    """Senders keep adding deposits (distinct amounts) while the engine is killed -9 and
    restarted; every unanswered key is sent again, as a retrying gateway does. In the end
    every key is answered, the wallet holds each deposit exactly once, and the journal holds
    each key once."""
    svc, url = engine_role
    api = Api(svc)
    account, api_key = api.new_account(deposit=None)
    client = aioredis.from_url(url)
    amounts = {f"k{i}": i + 1 for i in range(600)}  # key -> USD deposited
    try:
        async def send(keys: list[str]) -> None:
            for k in keys:
                with contextlib.suppress(Exception):  # Redis is up; the engine may be down
                    await submit(client, KEYS, k, c.Deposit(account, amounts[k] * E8), REPLY)

        order = list(amounts)
        await send(order[:200])
        sender = asyncio.create_task(send(order[200:400]))
        await asyncio.sleep(0.05)
        svc.kill()  # a crash while entries are being added and applied
        await sender
        svc.start()
        await send(order[400:])
        # a retrying gateway: whatever has no answer yet is sent again with the same key
        got: dict[str, dict[str, Any]] = {}
        cursor = "0-0"
        deadline = time.monotonic() + 30
        while len(got) < len(amounts):
            assert time.monotonic() < deadline, f"{len(amounts) - len(got)} keys never answered"
            cursor, new = await answers(client, cursor, block_ms=500)
            got.update(new)
            if not new:
                await send([k for k in order if k not in got])
        assert {row["status"] for row in got.values()} <= {"applied", "duplicate"}
        assert wallet(api, api_key) == Decimal(sum(amounts.values()))
        keys = journal_keys(svc)
        assert sorted(keys) == sorted(amounts), "each key journaled exactly once"

        # another kill -9, and every answer lost (the gateways died waiting): all 600 keys
        # sent again are recognised by the ledger the restart rebuilt (snapshot + journal tail)
        svc.kill()
        await client.delete(REPLY)
        svc.start()
        await send(order)
        again = await until_answered(client, set(amounts), timeout=30)
        assert {row["status"] for row in again.values()} == {"duplicate"}
        assert wallet(api, api_key) == Decimal(sum(amounts.values()))
        cursor = (await client.xinfo_stream(REPLY))["last-generated-id"].decode()

        # a clean restart: the final snapshot covers everything, the ledger goes with it
        svc.stop()
        svc.start()
        await submit(client, KEYS, "k0", c.Deposit(account, amounts["k0"] * E8), REPLY)
        deadline = time.monotonic() + 10
        while True:
            cursor, new = await answers(client, cursor, block_ms=500)
            if "k0" in new:
                assert new["k0"]["status"] == "duplicate"
                break
            assert time.monotonic() < deadline
        assert wallet(api, api_key) == Decimal(sum(amounts.values()))
    finally:
        await client.aclose()


async def test_an_answered_command_that_changed_nothing_is_not_applied_again_after_a_crash(
    engine_role: tuple[ServiceProcess, str],
) -> None:
    """A bus cancel-all with nothing open makes no events and is not journaled. Its entry is
    removed before it is answered, so after a kill -9 it is not read again at a later place
    in the order, where it would cancel the order placed after it."""
    svc, url = engine_role
    api = Api(svc)
    account, api_key = api.new_account(deposit="10000")
    api.set_mark("BTC-PERP", "40000")
    client = aioredis.from_url(url)
    try:
        await submit(client, KEYS, "cancel-all", c.CancelAllOrders(account), REPLY)
        got = await until_answered(client, {"cancel-all"})
        assert got["cancel-all"]["status"] == "applied" and got["cancel-all"]["events"] == []
        assert await client.xlen(KEYS.commands) == 0
        with api.as_key(api_key) as http:
            r = http.post("/v1/orders", json={"symbol": "BTC-PERP", "side": "buy", "type": "limit",
                                              "qty": "0.01", "price": "39000"})
            assert r.status_code == 200, r.text
        svc.kill()
        svc.start()
        await asyncio.sleep(0.5)  # the consumer has read whatever the stream holds
        with api.as_key(api_key) as http:
            assert len(http.get("/v1/orders").json()) == 1
    finally:
        await client.aclose()


async def test_a_full_bus_refuses_new_commands(redis_srv: RedisServer) -> None:
    """Back-pressure on the senders' side: no engine consumes this stream, so after
    `max_pending` entries `submit` raises BusFull and adds nothing."""
    from service.bus import BusFull

    client = aioredis.from_url(redis_srv.fresh_db(15))
    keys = BusKeys("{bp}")
    try:
        for i in range(3):
            await submit(client, keys, f"k{i}", c.Deposit(1, 1), max_pending=3)
        with pytest.raises(BusFull):
            await submit(client, keys, "k3", c.Deposit(1, 1), max_pending=3)
        assert await client.xlen(keys.commands) == 3
    finally:
        await client.aclose()


async def test_readiness_fails_when_the_bus_consumer_or_the_applied_log_stops(
    tmp_path: Path, redis_srv: RedisServer
) -> None:
    """In process: an engine-role service whose consumer task, then publisher task, ended
    (a fault) is not ready, and says which."""
    from service.runtime import Services
    from service.settings import Settings

    services = Services(Settings(data_dir=tmp_path, redis_url=redis_srv.fresh_db(14), admin_token="a" * 32, role="engine"))
    await services.start()
    try:
        assert (await services.ready()).ok
        assert services.bus is not None and services.applied_log is not None
        await services.bus.stop()
        ready = await services.ready()
        assert not ready.ok and "command bus consumer stopped" in ready.message
        services.bus = None
        await services.applied_log.stop()
        ready = await services.ready()
        assert not ready.ok and "applied log publisher stopped" in ready.message
    finally:
        await services.stop()
