"""The typed client (api/client.py) against the real service: the calls the demo relies on."""

from __future__ import annotations

import asyncio

import pytest

from api.client import ApiError, ExchangeClient
from tests.integration.helpers import ADMIN_TOKEN, ServiceProcess


async def test_client_when_trading_round_trip_matches_the_http_contract(service: ServiceProcess) -> None:
    async with ExchangeClient(service.base_url, admin_token=ADMIN_TOKEN) as admin:
        await admin.set_mark_price("ETH-PERP", "2000")
        maker, taker = await admin.create_account(), await admin.create_account()
        for acct in (maker, taker):
            await admin.deposit(acct.account_id, "50000")
        async with ExchangeClient(service.base_url, api_key=maker.api_key) as m, ExchangeClient(
            service.base_url, api_key=taker.api_key
        ) as t, admin.websocket() as ws:
            await ws.auth(taker.api_key)
            resting = await m.place_order("ETH-PERP", "sell", "1.5", price="2001.25", client_order_id="m-1")
            assert resting["status"] == "new" and resting["remaining_qty"] == "1.5"
            with pytest.raises(ApiError) as dup:
                await m.place_order("ETH-PERP", "sell", "1", price="2002", client_order_id="m-1")
            assert dup.value.status == 409 and dup.value.body["order_id"] == resting["order_id"]
            filled = await t.place_order("ETH-PERP", "buy", "1", type="market")
            assert filled["status"] == "filled" and filled["avg_price"] == "2001.25"
            # taker fee 0.05% of 2001.25 = 1.000625
            assert filled["fills"][0]["fee"] == "1.000625" and filled["fills"][0]["liquidity"] == "taker"
            (pos,) = await t.positions()
            assert pos["size"] == "1" and pos["entry_price"] == "2001.25"
            amended = await m.amend(resting["order_id"], qty="1.2")  # new total: 0.2 left
            assert amended["remaining_qty"] == "0.2"
            assert await m.cancel_all("ETH-PERP") == [resting["order_id"]]
            with pytest.raises(ApiError) as gone:
                await m.cancel(resting["order_id"])
            assert (gone.value.status, gone.value.error) == (404, "ORDER_NOT_FOUND")
            seen = set()
            while "fill" not in seen or "position_changed" not in seen:
                msg = await asyncio.wait_for(ws.recv(), 5)
                if msg["channel"] == "account":
                    seen.add(msg["data"]["type"])
            acct = await admin.admin_account(taker.account_id)
            assert acct["positions"][0]["size"] == "1"


async def test_client_when_protecting_an_isolated_position_with_a_stop(service: ServiceProcess) -> None:
    """What the demo does for its traders (SPEC §12): isolated margin, a close-position stop."""
    async with ExchangeClient(service.base_url, admin_token=ADMIN_TOKEN) as admin:
        await admin.set_mark_price("ETH-PERP", "2000")
        maker, trader = await admin.create_account(), await admin.create_account()
        await admin.deposit(maker.account_id, "50000")
        await admin.deposit(trader.account_id, "1000")
        async with ExchangeClient(service.base_url, api_key=maker.api_key) as m, ExchangeClient(
            service.base_url, api_key=trader.api_key
        ) as t:
            assert await t.set_margin_mode("ETH-PERP", "isolated") == {"symbol": "ETH-PERP", "mode": "isolated"}
            await m.place_order("ETH-PERP", "sell", "1", price="2000")
            await t.place_order("ETH-PERP", "buy", "1", price="2000", time_in_force="IOC")
            # isolated at the default 10x: 2000 / 10 = 200 moves into the position's margin
            (pos,) = await t.positions()
            assert (pos["margin_mode"], pos["isolated_margin"]) == ("isolated", "200")
            added = await t.position_margin("ETH-PERP", "50")
            assert added["isolated_margin"] == "250"
            stop = await t.place_order(
                "ETH-PERP", "sell", None, type="stop_market", trigger_price="1900", close_position=True
            )
            assert stop["status"] == "untriggered"
            (listed,) = await t.open_orders("ETH-PERP")
            assert listed["order_id"] == stop["order_id"]
