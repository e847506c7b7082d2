"""Replicas over Redis with real processes (service/replication.py): an engine-role service
ships its journal to `<prefix>:applied` and its snapshots to `<prefix>:snapshot`; a Replica
in this process replays them. The reference is the engine's own `state_hash` at the same
seq (GET /v1/admin/engine), across snapshots, a kill -9, a clean restart and a new data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine import commands as c
from service.config import build_engine, load_engine_config
from service.replication import Replica, ReplicationKeys
from tests.integration.helpers import Api, RedisServer, ServiceProcess

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def following(url: str, seen: list[Any]) -> AsyncIterator[Replica]:
    config = load_engine_config(None)
    replica = Replica(url, ReplicationKeys(), lambda: build_engine(config), on_events=seen.extend)
    task = asyncio.create_task(replica.run())
    try:
        yield replica
    finally:
        replica.stopped = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 5)


async def same_state(api: Api, replica: Replica) -> int:
    """Wait until the replica reaches the engine's seq; both states hash the same there."""
    r = api.admin("GET", "/v1/admin/engine")
    assert r.status_code == 200, r.text
    body = r.json()
    deadline = time.monotonic() + 20
    while replica.engine is None or replica.engine.seq != body["seq"]:  # == : a new history may be shorter
        assert time.monotonic() < deadline, f"replica at {replica.engine and replica.engine.seq}, engine at {body['seq']}"
        await asyncio.sleep(0.05)
    assert replica.engine.state_hash() == body["state_hash"]
    return int(body["seq"])


def trade(api: Api, rng: random.Random, keys: list[str], n: int) -> None:
    """Crossing and resting orders from the accounts of `keys`, around a 50,000 mark."""
    for _ in range(n):
        with api.as_key(rng.choice(keys)) as http:
            side = rng.choice(("buy", "sell"))
            off = rng.randint(-30, 30)
            price = 50_000 + (off if side == "buy" else -off)
            http.post("/v1/orders", json={"symbol": "BTC-PERP", "side": side, "type": "limit",
                                          "qty": f"0.0{rng.randint(1, 9)}", "price": str(price)})


async def test_a_replica_follows_the_engine_to_the_state_hash(start_service: Any, redis_srv: RedisServer) -> None:
    url = redis_srv.fresh_db(9)
    svc: ServiceProcess = start_service(redis_url=url, role="engine", snapshot_every="40", fsync="batch")
    api = Api(svc)
    rng = random.Random(5)
    seen: list[Any] = []
    api.set_mark("BTC-PERP", "50000")
    keys = [api.new_account("20000")[1] for _ in range(6)]
    async with following(url, seen) as replica:
        trade(api, rng, keys, 60)  # past a snapshot (every 40 records): the stream is trimmed
        first = await same_state(api, replica)
        assert replica.bootstraps == 1
        # the events the replica made are the engine's, seq for seq
        assert [e.seq for e in seen] == list(range(seen[0].seq, first + 1))

        # kill -9 and restart on the same data dir: a new epoch from the newest snapshot (what
        # Redis holds could be records a machine crash took from the journal), then on
        svc.kill()
        svc.start()
        trade(api, rng, keys, 30)
        api.set_mark("BTC-PERP", "43000")  # a crash of the mark: liquidations, maybe ADL
        await same_state(api, replica)
        assert replica.bootstraps == 2

        # a clean restart: its final snapshot starts the next epoch
        svc.stop()
        svc.start()
        trade(api, rng, keys, 10)
        await same_state(api, replica)
        assert replica.bootstraps == 3

        # another data dir on the same Redis (its event streams removed, as the events
        # publisher asks): a new history; the replica starts over
        svc.stop()
        redis_srv.clear_streams(9)
        other: ServiceProcess = start_service(redis_url=url, role="engine")
        api2 = Api(other)
        api2.new_account("5")
        await same_state(api2, replica)
        assert replica.bootstraps == 4
        other.stop()


async def test_a_replica_started_late_bootstraps_from_the_snapshot(start_service: Any, redis_srv: RedisServer) -> None:
    url = redis_srv.fresh_db(10)
    svc: ServiceProcess = start_service(redis_url=url, role="engine", snapshot_every="25")
    api = Api(svc)
    api.set_mark("BTC-PERP", "50000")
    keys = [api.new_account("20000")[1] for _ in range(4)]
    trade(api, random.Random(6), keys, 80)
    client = redis_srv.client_for(url)
    # the snapshot in Redis is past the start, and the stream holds only what follows it
    first = client.xrange("exchange:applied", count=1)
    assert first and int(first[0][0].split(b"-")[0]) > 25
    seen: list[Any] = []
    async with following(url, seen) as replica:
        await same_state(api, replica)
        assert replica.bootstraps == 1
    # a command sent over the bus reaches the replica too
    import redis.asyncio as aioredis

    from service.bus import BusKeys, submit

    bus = aioredis.from_url(url)
    try:
        await submit(bus, BusKeys(), "late-1", c.TopUpInsuranceFund(5))
    finally:
        await bus.aclose()
    async with following(url, seen) as replica:
        await asyncio.sleep(0.3)
        await same_state(api, replica)
    svc.stop()
