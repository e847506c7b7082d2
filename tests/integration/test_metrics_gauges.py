"""/metrics gauges of market state (in-process app, no Redis): open interest per symbol,
insurance fund balance and bad debt."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from service.settings import Settings

TOKEN = "metrics-admin-token-0123"
ADMIN = {"X-Admin-Token": TOKEN}


def _sample(metrics: str, name: str) -> float:
    """The value of one sample line `name value` (name with its labels)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.M)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


async def _account(c: httpx.AsyncClient, deposit: str) -> dict[str, str]:
    acct = (await c.post("/v1/admin/accounts", headers=ADMIN)).json()
    r = await c.post("/v1/admin/deposit", headers=ADMIN, json={"account_id": acct["account_id"], "amount": deposit})
    assert r.status_code == 200, r.text
    return {"X-API-Key": acct["api_key"]}


async def _order(c: httpx.AsyncClient, key: dict[str, str], side: str, qty: str, **extra: Any) -> None:
    body = {"symbol": "BTC-PERP", "side": side, "type": "limit", "qty": qty, "price": "50000", **extra}
    r = await c.post("/v1/orders", headers=key, json=body)
    assert r.status_code == 200, r.text


async def test_metrics_when_positions_open_and_close_show_open_interest_per_symbol(tmp_path: Path) -> None:
    app = create_app(Settings(admin_token=TOKEN, data_dir=tmp_path, redis_url=None))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app"
    ) as c:
        await c.post("/v1/admin/mark-price", headers=ADMIN, json={"symbol": "BTC-PERP", "price": "50000"})
        await c.post("/v1/admin/insurance-fund", headers=ADMIN, json={"amount": "1234.5"})
        metrics = (await c.get("/metrics")).text
        assert _sample(metrics, 'exchange_open_interest{symbol="BTC-PERP"}') == 0
        assert _sample(metrics, 'exchange_open_interest{symbol="ETH-PERP"}') == 0
        assert _sample(metrics, "exchange_insurance_fund_usd") == 1234.5
        assert _sample(metrics, "exchange_bad_debt_usd") == 0

        maker, a, b = [await _account(c, d) for d in ("1000000", "100000", "100000")]
        await _order(c, maker, "sell", "0.5")
        await _order(c, a, "buy", "0.3", time_in_force="IOC")  # a long 0.3, maker short 0.3
        await _order(c, b, "buy", "0.2", time_in_force="IOC")  # b long 0.2, maker short 0.5
        metrics = (await c.get("/metrics")).text
        assert _sample(metrics, 'exchange_open_interest{symbol="BTC-PERP"}') == 0.5
        assert _sample(metrics, 'exchange_open_interest{symbol="ETH-PERP"}') == 0

        await _order(c, maker, "buy", "0.3")  # b sells back 0.2: only a's long is left
        await _order(c, b, "sell", "0.2", time_in_force="IOC")
        metrics = (await c.get("/metrics")).text
        assert _sample(metrics, 'exchange_open_interest{symbol="BTC-PERP"}') == 0.3
        assert "# TYPE exchange_open_interest gauge" in metrics
