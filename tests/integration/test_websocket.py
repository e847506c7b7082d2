"""WebSocket /v1/ws with real clients: ops, public channels, the private channel, slow consumers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.integration.helpers import Api, RawWsClient, ServiceProcess, ws_connect

BUY = {"symbol": "BTC-PERP", "side": "buy", "type": "limit"}
SELL = {"symbol": "BTC-PERP", "side": "sell", "type": "limit"}


@pytest.fixture(scope="module", autouse=True)
def marks(api: Api) -> None:
    api.set_mark("BTC-PERP", "50000")


async def test_ops_when_malformed_or_unknown_answer_errors_and_keep_connection(api: Api) -> None:
    async with ws_connect(api.service.ws_url) as ws:
        await ws.conn.send("{not json")
        assert (await ws.control("error"))["error"] == "BAD_MESSAGE"
        await ws.send(op="dance")
        assert (await ws.control("error"))["error"] == "UNKNOWN_OP"
        await ws.send(op="subscribe", channels=["trades:DOGE-PERP", "nonsense"])
        errors = [await ws.control("error"), await ws.control("error")]
        assert {e["error"] for e in errors} == {"UNKNOWN_CHANNEL"}
        await ws.send(op="subscribe", channels="adl")
        assert (await ws.control("error"))["error"] == "BAD_MESSAGE"
        await ws.send(op="subscribe", channels=["account"])
        assert (await ws.control("error"))["error"] == "AUTH_REQUIRED"
        await ws.send(op="auth", api_key="wrong")
        assert (await ws.control("error"))["error"] == "AUTH_FAILED"
        await ws.send(op="ping")
        pong = await ws.expect(lambda m: m["channel"] == "control")
        assert pong["data"] == {"type": "pong"} and isinstance(pong["seq"], int)


async def test_idle_connection_when_quiet_gets_heartbeats(api: Api) -> None:
    async with ws_connect(api.service.ws_url) as ws:
        beat = await ws.expect(lambda m: m["channel"] == "heartbeat", timeout=3)
        assert isinstance(beat["seq"], int) and isinstance(beat["data"]["ts_ns"], int)


async def test_book_channel_when_subscribed_sends_snapshot_then_updates(api: Api) -> None:
    _, key = api.new_account()
    async with ws_connect(api.service.ws_url) as ws:
        await ws.send(op="subscribe", channels=["book:BTC-PERP"])
        await ws.control("subscribed")
        snap = await ws.expect(lambda m: m["channel"] == "book:BTC-PERP")
        assert set(snap["data"]) == {"type", "symbol", "bids", "asks"}
        with api.as_key(key) as c:
            r = await asyncio.to_thread(
                c.post, "/v1/orders", json={**BUY, "qty": "0.007", "price": "33333.3"}
            )
            assert r.status_code == 200
            update = await ws.expect(
                lambda m: (
                    m["channel"] == "book:BTC-PERP" and ["33333.3", "0.007"] in m["data"]["bids"]
                )
            )
            assert update["seq"] >= snap["seq"]
            await asyncio.to_thread(c.delete, "/v1/orders")
        gone = await ws.expect(
            lambda m: (
                m["channel"] == "book:BTC-PERP" and ["33333.3", "0.007"] not in m["data"]["bids"]
            )
        )
        assert gone["seq"] > update["seq"]
        await ws.send(op="unsubscribe", channels=["book:BTC-PERP"])
        assert (await ws.control("unsubscribed"))["channels"] == ["book:BTC-PERP"]


async def test_trades_and_account_channels_when_a_trade_prints_carry_public_and_private_views(
    api: Api,
) -> None:
    maker_id, maker = api.new_account()
    taker_id, taker = api.new_account()
    async with (
        ws_connect(api.service.ws_url) as pub,
        ws_connect(api.service.ws_url) as priv,
        ws_connect(api.service.ws_url) as other,
    ):
        await pub.send(op="subscribe", channels=["trades:BTC-PERP"])
        await pub.control("subscribed")
        await priv.send(op="auth", api_key=taker)
        assert (await priv.control("authenticated"))["account_id"] == taker_id
        await other.send(op="auth", api_key=maker)
        await other.control("authenticated")
        with api.as_key(maker) as m, api.as_key(taker) as t:
            await asyncio.to_thread(
                m.post, "/v1/orders", json={**SELL, "qty": "0.01", "price": "52000"}
            )
            r = await asyncio.to_thread(
                t.post, "/v1/orders", json={**BUY, "qty": "0.01", "price": "52000"}
            )
            order_id = r.json()["order_id"]
            trade = await pub.expect(lambda m: m["channel"] == "trades:BTC-PERP")
            assert {k: trade["data"][k] for k in ("type", "price", "qty", "taker_side")} == {
                "type": "trade",
                "price": "52000",
                "qty": "0.01",
                "taker_side": "buy",
            }
            assert not any("account" in k or "order" in k for k in trade["data"])
            accepted = await priv.expect(
                lambda m: m["channel"] == "account" and m["data"]["type"] == "order_accepted"
            )
            assert (
                accepted["data"]["order_id"] == order_id
                and accepted["data"]["account_id"] == taker_id
            )
            fill = await priv.expect(
                lambda m: m["channel"] == "account" and m["data"]["type"] == "fill"
            )
            assert fill["data"] == {
                "type": "fill",
                "trade_id": trade["data"]["trade_id"],
                "order_id": order_id,
                "symbol": "BTC-PERP",
                "side": "buy",
                "price": "52000",
                "qty": "0.01",
                "fee": "0.26",
                "liquidity": "taker",
                "remaining_qty": "0",
            }
            assert fill["seq"] == trade["seq"]
            pos = await priv.expect(
                lambda m: m["channel"] == "account" and m["data"]["type"] == "position_changed"
            )
            assert (pos["data"]["size"], pos["data"]["account_id"]) == ("0.01", taker_id)
            maker_fill = await other.expect(
                lambda m: m["channel"] == "account" and m["data"]["type"] == "fill"
            )
            assert (
                maker_fill["data"]["liquidity"],
                maker_fill["data"]["side"],
                maker_fill["data"]["fee"],
            ) == ("maker", "sell", "0.104")
            # flatten again
            await asyncio.to_thread(
                m.post, "/v1/orders", json={**BUY, "qty": "0.01", "price": "52000"}
            )
            await asyncio.to_thread(
                t.post,
                "/v1/orders",
                json={**SELL, "qty": "0.01", "price": "52000", "reduce_only": True},
            )
        await priv.drain()
        await other.drain()
    # isolation: nothing of the other account ever reached either private connection
    assert all(
        m["data"].get("account_id") in (None, taker_id)
        for m in priv.seen
        if m["channel"] == "account"
    )
    assert all(
        m["data"].get("account_id") in (None, maker_id)
        for m in other.seen
        if m["channel"] == "account"
    )


async def test_account_channel_when_key_authenticated_never_carries_other_accounts(
    api: Api,
) -> None:
    _, key_a = api.new_account()
    b_id, key_b = api.new_account()
    async with ws_connect(api.service.ws_url) as ws_b:
        await ws_b.send(op="auth", api_key=key_b)
        await ws_b.control("authenticated")
        with api.as_key(key_a) as a:
            for i in range(5):
                await asyncio.to_thread(
                    a.post, "/v1/orders", json={**BUY, "qty": "0.001", "price": f"{20000 + i}"}
                )
            await asyncio.to_thread(a.delete, "/v1/orders")
        await ws_b.send(op="auth", api_key=key_a)  # cannot switch to another account
        assert (await ws_b.control("error"))["error"] == "AUTH_FAILED"
        await ws_b.drain()
    assert not [
        m
        for m in ws_b.seen
        if m["channel"] == "account" and m["data"].get("account_id") not in (None, b_id)
    ]


async def test_account_channel_when_unsubscribed_then_subscribed_again_delivers_again(
    api: Api,
) -> None:
    _, key = api.new_account()
    async with ws_connect(api.service.ws_url) as ws:
        await ws.send(op="auth", api_key=key)
        await ws.control("authenticated")
        await ws.send(op="unsubscribe", channels=["account"])
        assert (await ws.control("unsubscribed"))["channels"] == ["account"]
        with api.as_key(key) as c:
            # events go out before the answer: by now anything sent is on its way
            await asyncio.to_thread(
                c.post, "/v1/orders", json={**BUY, "qty": "0.001", "price": "20001"}
            )
            assert not [m for m in await ws.drain() if m["channel"] == "account"]
            await ws.send(op="subscribe", channels=["account"])
            assert (await ws.control("subscribed"))["channels"] == ["account"]
            r = await asyncio.to_thread(
                c.post, "/v1/orders", json={**BUY, "qty": "0.001", "price": "20002"}
            )
            accepted = await ws.expect(
                lambda m: m["channel"] == "account" and m["data"]["type"] == "order_accepted"
            )
            assert accepted["data"]["order_id"] == r.json()["order_id"]
            await asyncio.to_thread(c.delete, "/v1/orders")
            for _ in range(2):
                await ws.expect(
                    lambda m: m["channel"] == "account" and m["data"]["type"] == "order_canceled"
                )


# -- slow consumers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_queue(start_service: Any, tmp_path_factory: pytest.TempPathFactory) -> Api:
    cfg = tmp_path_factory.mktemp("cfg") / "many-orders.toml"
    cfg.write_text("max_open_orders = 100000\n")
    svc: ServiceProcess = start_service(ws_queue_size="16", ws_book_depth="200", config=str(cfg))
    small = Api(svc)
    small.set_mark("BTC-PERP", "50000")
    return small


async def test_slow_client_when_it_never_reads_is_cut_off_while_orders_keep_flowing(
    small_queue: Api,
) -> None:
    api = small_queue
    _, key = api.new_account("100000000")
    slow = RawWsClient(api.service.port)
    slow.send_text('{"op": "subscribe", "channels": ["book:BTC-PERP", "trades:BTC-PERP"]}')
    # ... and it never reads again while the book changes under it
    worst = 0.0
    cut = False
    try:
        async with httpx.AsyncClient(
            base_url=api.service.base_url, headers={"X-API-Key": key}, timeout=10
        ) as c:
            for i in range(5000):
                t0 = time.perf_counter()
                side, price = (
                    ("buy", 40000 + (i % 400) * 0.1) if i % 2 else ("sell", 60000 - (i % 400) * 0.1)
                )
                body = {
                    "symbol": "BTC-PERP",
                    "side": side,
                    "type": "limit",
                    "qty": "0.001",
                    "price": f"{price:.1f}",
                }
                r = await c.post("/v1/orders", json=body)
                worst = max(worst, time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                if i % 50 == 49:
                    metrics = (await c.get("/metrics")).text
                    if "exchange_ws_slow_consumer_disconnects_total 1.0" in metrics:
                        cut = True
                        break
            assert cut, "the slow client was never cut off"
            assert "exchange_ws_clients 0.0" in (await c.get("/metrics")).text
            # a hang detector, not a speed check: an engine that waited on the stalled client
            # would never answer (the client is cut off only because the engine went on)
            print(f"worst order latency with a stalled client: {worst:.3f}s")
            assert worst < 10, f"an order took {worst:.3f}s while a client was stalled"
            assert (await c.get("/v1/account")).status_code == 200
        # once it reads again, it finds the close frame behind what was already buffered
        code, reason, frames = await asyncio.to_thread(slow.read_until_close)
        assert (code, reason) == (1008, "slow consumer")
        assert frames > 16
    finally:
        slow.close()
