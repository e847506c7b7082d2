"""Without Redis, events stay in process in the same shape Redis would get (in-process app)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from api.app import create_app
from service.memory_store import MemoryEventStore
from service.publisher import ADL_STREAM, EVENTS_STREAM
from service.settings import Settings

ADMIN = {"X-Admin-Token": "mem-admin-token-01234"}


async def test_memory_store_when_redis_unset_keeps_every_event_formatted_like_redis(
    tmp_path: Any,
) -> None:
    app = create_app(Settings(admin_token="mem-admin-token-01234", data_dir=tmp_path, redis_url=None))
    async with app.router.lifespan_context(app):
        store = app.state.services.publisher
        assert isinstance(store, MemoryEventStore)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://app"
        ) as c:
            ids = []
            for deposit in ("1000", "100000"):
                acct = (await c.post("/v1/admin/accounts", headers=ADMIN)).json()
                await c.post(
                    "/v1/admin/deposit",
                    headers=ADMIN,
                    json={"account_id": acct["account_id"], "amount": deposit},
                )
                ids.append(acct)
            await c.post(
                "/v1/admin/mark-price", headers=ADMIN, json={"symbol": "BTC-PERP", "price": "50000"}
            )
            await c.post("/v1/admin/insurance-fund", headers=ADMIN, json={"amount": "1"})
            a, b = ({"X-API-Key": x["api_key"]} for x in ids)
            await c.post("/v1/leverage", headers=a, json={"symbol": "BTC-PERP", "leverage": 20})
            await c.post(
                "/v1/orders",
                headers=b,
                json={
                    "symbol": "BTC-PERP",
                    "side": "sell",
                    "type": "limit",
                    "qty": "0.3",
                    "price": "50000",
                },
            )
            await c.post(
                "/v1/orders",
                headers=a,
                # an IOC at the mark: a market order at 20x could not pay its open loss at
                # the band limit (SPEC §3) on top of the initial margin
                json={
                    "symbol": "BTC-PERP",
                    "side": "buy",
                    "type": "limit",
                    "qty": "0.3",
                    "price": "50000",
                    "time_in_force": "IOC",
                },
            )
            await c.post(
                "/v1/orders",
                headers=a,
                json={
                    "symbol": "BTC-PERP",
                    "side": "buy",
                    "type": "limit",
                    "qty": "5",
                    "price": "1",
                },
            )
            await c.post(
                "/v1/orders",
                headers=b,
                json={
                    "symbol": "BTC-PERP",
                    "side": "sell",
                    "type": "limit",
                    "qty": "0.001",
                    "price": "52000",
                },
            )
            crash = (
                await c.post(
                    "/v1/admin/mark-price",
                    headers=ADMIN,
                    json={"symbol": "BTC-PERP", "price": "45000"},
                )
            ).json()
            assert len(crash["liquidations"]) == 1 and len(crash["adl_fills"]) == 1
            seq = (await c.get("/v1/orderbook/BTC-PERP")).json()["seq"]
        entries = store.entries(EVENTS_STREAM)
        assert [e[0] for e in entries] == [f"{n}-0" for n in range(1, seq + 1)]
        types = {e[1]["type"] for e in entries}
        assert {
            "account_created",
            "deposit",
            "mark_price_changed",
            "insurance_fund_changed",
            "leverage_changed",
            "order_accepted",
            "order_rejected",
            "trade",
            "position_changed",
            "order_canceled",
            "liquidation",
            "adl",
        } <= types
        for _, fields in entries:
            data = json.loads(fields["data"])
            assert not any(k.endswith(("_ticks", "_lots", "_atoms", "_e8")) for k in data), data
        (adl,) = store.entries(ADL_STREAM)
        assert json.loads(adl[1]["data"]) == crash["adl_fills"][0]
        assert store.last_published_seq == seq
