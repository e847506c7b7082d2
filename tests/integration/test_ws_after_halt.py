"""After the engine halts, WebSocket subscribers still see the final state (what GET shows).

The real app runs in process (starlette's TestClient, lifespan and all); the fault is
injected as in test_engine_halt.py, here after the command has emitted an event, so the
engine's seq is past the last delivered one for good (a re-audit found owed snapshots were
then never sent).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from api.app import create_app
from engine.commands import Deposit
from engine.errors import InvariantViolation
from service.settings import Settings

with warnings.catch_warnings():  # the in-process WebSocket client asks for httpx2 over httpx
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ADMIN = {"X-Admin-Token": "halt-admin-token-0123"}
POISON = "13.37"


def test_subscribe_after_a_halt_mid_command_gets_book_and_mark_snapshots(tmp_path: Path) -> None:
    app = create_app(Settings(admin_token="halt-admin-token-0123", data_dir=tmp_path, redis_url=None))
    with TestClient(app) as client:
        services = app.state.services
        original = services.engine.apply

        def faulty(command: Any) -> Any:
            events = original(command)  # the deposit happened and emitted its event...
            if isinstance(command, Deposit) and command.amount_atoms == 1_337_000_000:
                raise InvariantViolation("injected after an event")  # ...then the fault
            return events

        services.engine.apply = faulty
        acct = client.post("/v1/admin/accounts", headers=ADMIN).json()
        client.post("/v1/admin/deposit", headers=ADMIN, json={"account_id": acct["account_id"], "amount": "1000"})
        client.post("/v1/admin/mark-price", headers=ADMIN, json={"symbol": "BTC-PERP", "price": "50000"})
        order = {"symbol": "BTC-PERP", "side": "buy", "type": "limit", "qty": "0.001", "price": "40000"}
        assert client.post("/v1/orders", headers={"X-API-Key": acct["api_key"]}, json=order).status_code == 200
        r = client.post("/v1/admin/deposit", headers=ADMIN, json={"account_id": acct["account_id"], "amount": POISON})
        assert r.status_code == 503 and r.json()["error"] == "ENGINE_HALTED"
        assert services.engine.seq > services.loop.delivered_seq  # the fault's event never left

        with client.websocket_connect("/v1/ws") as ws:
            ws.send_json({"op": "subscribe", "channels": ["book:BTC-PERP", "mark:BTC-PERP"]})
            ws.send_json({"op": "ping"})  # answered after whatever the subscribe sends at once
            got: dict[str, Any] = {}
            while (m := ws.receive_json())["data"].get("type") != "pong":
                got[m["channel"]] = m
        assert set(got) == {"control", "book:BTC-PERP", "mark:BTC-PERP"}, got
        assert got["book:BTC-PERP"]["data"]["bids"] == [["40000", "0.001"]], got
        assert got["mark:BTC-PERP"]["data"]["price"] == "50000", got
        assert {m["seq"] for m in got.values()} == {services.loop.delivered_seq}, got  # stamped with the last delivered seq
