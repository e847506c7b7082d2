"""A broken invariant halts the engine loop for good: 503 ENGINE_HALTED, /readyz fails.

The real app runs in process (lifespan and all); the fault is injected by making the
engine raise `InvariantViolation` for one marked command, since no valid input can reach
that state.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from engine.commands import CreateAccount, Deposit
from engine.engine import Engine
from engine.errors import InvariantViolation
from service.engine_loop import EngineHalted, EngineLoop
from service.metrics import Metrics
from service.settings import Settings
from service.storage.durable import DurableJournal
from tests.builds import python_engine_only

ADMIN = {"X-Admin-Token": "halt-admin-token-0123"}
POISON_ATOMS = 1_337_000_000  # a deposit of 13.37 trips the injected fault


async def test_engine_when_apply_raises_halts_and_answers_503_everywhere(tmp_path: Any) -> None:
    app = create_app(Settings(admin_token="halt-admin-token-0123", data_dir=tmp_path, redis_url=None))
    async with app.router.lifespan_context(app):
        services = app.state.services
        original = services.engine.apply

        def faulty(command: Any) -> Any:
            if isinstance(command, Deposit) and command.amount_atoms == POISON_ATOMS:
                raise InvariantViolation("injected")
            return original(command)

        services.engine.apply = faulty
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
            acct = (await c.post("/v1/admin/accounts", headers=ADMIN)).json()
            key = {"X-API-Key": acct["api_key"]}
            await c.post(
                "/v1/admin/deposit",
                headers=ADMIN,
                json={"account_id": acct["account_id"], "amount": "1000"},
            )
            await c.post(
                "/v1/admin/mark-price", headers=ADMIN, json={"symbol": "BTC-PERP", "price": "50000"}
            )
            order = {
                "symbol": "BTC-PERP",
                "side": "buy",
                "type": "limit",
                "qty": "0.001",
                "price": "40000",
            }

            before = await c.post("/v1/orders", headers=key, json=order)
            assert before.status_code == 200
            poisoned = await c.post(
                "/v1/admin/deposit",
                headers=ADMIN,
                json={"account_id": acct["account_id"], "amount": "13.37"},
            )
            assert (poisoned.status_code, poisoned.json()["error"]) == (503, "ENGINE_HALTED")
            later = await c.post("/v1/orders", headers=key, json=order)
            assert (later.status_code, later.json()["error"]) == (503, "ENGINE_HALTED")
            ready = await c.get("/readyz")
            assert ready.status_code == 503 and "halted" in ready.json()["message"]
            assert (await c.get("/healthz")).status_code == 200
            assert "exchange_engine_halted 1.0" in (await c.get("/metrics")).text
            # reads still answer from the last good state
            assert (await c.get("/v1/orders", headers=key)).json()[0]["order_id"] == before.json()[
                "order_id"
            ]


@python_engine_only
async def test_engine_loop_when_a_command_in_a_batch_raises_answers_earlier_ones_and_fails_the_rest(
    tmp_path: Path,
) -> None:
    journal = DurableJournal(tmp_path, Engine, fsync="off")
    engine = journal.recover().engine
    original = engine.apply

    def faulty(command: Any) -> Any:
        if isinstance(command, Deposit) and command.amount_atoms == POISON_ATOMS:
            raise InvariantViolation("injected")
        return original(command)

    engine.apply = faulty  # type: ignore[method-assign]
    published: list[Any] = []
    loop = EngineLoop(engine, Metrics(), journal=journal, sinks=[published.extend])
    loop.start()
    tasks = [
        asyncio.create_task(loop.submit(CreateAccount("h"))),
        asyncio.create_task(loop.submit(Deposit(1, POISON_ATOMS))),
        asyncio.create_task(loop.submit(Deposit(1, 5))),
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert type(results[0][0]).__name__ == "AccountCreated"
    assert isinstance(results[1], EngineHalted) and isinstance(results[2], EngineHalted)
    assert [type(e).__name__ for e in published] == [
        "AccountCreated"
    ]  # what was applied still goes out
    assert not loop.alive and loop.halted
    try:
        await loop.submit(Deposit(1, 5))
    except EngineHalted as exc:
        assert "injected" in exc.message
    else:
        raise AssertionError("a halted loop accepted a command")
