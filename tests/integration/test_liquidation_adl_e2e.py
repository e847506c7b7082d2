"""A full liquidation + ADL, driven only over HTTP, observed over HTTP, WebSocket and Redis.

Fresh service (its own Redis database, so account ids and seqs start from 1).

    mark 50,000. Alice deposits 1,500, leverage 20, buys 0.3 BTC at 50,000 from two makers:
      Bob   (deposit 2,000)   sells 0.2 -> short 0.2, maker fee 2     -> wallet 1,998
      Carol (deposit 100,000) sells 0.1 -> short 0.1, maker fee 1     -> wallet 99,999
      Alice taker fee 500 ppm of 15,000 = 7.5                          -> wallet 1,492.5
    mark 45,000: Alice's equity = 1,492.5 - 0.3 * 5,000 = -7.5 < maintenance -> liquidated.
      bankruptcy value = q*M - E = 13,500 + 7.5 = 13,507.5 -> bankruptcy price 45,025.
      The fund holds 0 and nobody bids: the whole 0.3 goes to ADL at 45,025.
      Ranking (pnl% x effective leverage): Bob 0.1 x 9,000/2,998 > Carol 0.1 x 4,500/100,499.
      Bob  (rank 1) closes 0.2: realized 0.2 * (50,000 - 45,025) = 995    -> wallet 2,993
      Carol (rank 2) closes 0.1: realized 0.1 * 4,975           = 497.5  -> wallet 100,496.5
    Conservation: 103,500 deposited = 0 + 2,993 + 100,496.5 wallets + 10.5 fees.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.integration.helpers import Api, RedisServer, ServiceProcess, ws_connect

LIQUIDATION = {
    "account_id": 1,
    "account": 1,  # SPEC §8's name for it
    "symbol": "BTC-PERP",
    "qty": "0.3",
    "bankruptcy_price": "45025",
    "mark_price": "45000",
    "equity_before": "-7.5",
    "insurance_fund_delta": "0",
    "book_fill_qty": "0",
    "book_fill_avg_price": None,  # nothing filled in the book
    "adl_qty": "0.3",
    "bad_debt": "0",
}
ADL_BOB = {
    "symbol": "BTC-PERP",
    "liquidated_account_id": 1,
    "counterparty_account_id": 2,
    "side": "short",
    "qty": "0.2",
    "price": "45025",
    "realized_pnl": "995",
    "position_after": "0",
    "haircut": "5",  # buys back 0.2 at 45025 against the mark 45000: 0.2 x 25
    "policy": "queue",
    "rank": 1,
}
ADL_CAROL = {
    **ADL_BOB,
    "counterparty_account_id": 3,
    "qty": "0.1",
    "realized_pnl": "497.5",
    "haircut": "2.5",
    "rank": 2,
}


@pytest.fixture(scope="module")
def fresh(start_service: Any, redis_server: RedisServer) -> tuple[Api, RedisServer, str]:
    url = redis_server.url_for_db(1)
    redis_server.clear_streams(1)
    svc: ServiceProcess = start_service(redis_url=url, adl_quantile_interval_s="0.05")
    return Api(svc), redis_server, url


async def test_crash_when_long_is_bankrupt_liquidates_and_adl_reaches_http_ws_and_redis(
    fresh: tuple[Api, RedisServer, str],
) -> None:
    api, redis_server, url = fresh
    alice, alice_key = api.new_account("1500")
    bob, bob_key = api.new_account("2000")
    carol, carol_key = api.new_account("100000")
    assert (alice, bob, carol) == (1, 2, 3)
    api.set_mark("BTC-PERP", "50000")
    with api.as_key(alice_key) as a, api.as_key(bob_key) as b, api.as_key(carol_key) as c:
        assert (
            a.post("/v1/leverage", json={"symbol": "BTC-PERP", "leverage": 20}).status_code == 200
        )
        assert (
            b.post(
                "/v1/orders",
                json={
                    "symbol": "BTC-PERP",
                    "side": "sell",
                    "type": "limit",
                    "qty": "0.2",
                    "price": "50000",
                },
            ).status_code
            == 200
        )
        assert (
            c.post(
                "/v1/orders",
                json={
                    "symbol": "BTC-PERP",
                    "side": "sell",
                    "type": "limit",
                    "qty": "0.1",
                    "price": "50000",
                },
            ).status_code
            == 200
        )
        bought = a.post(
            "/v1/orders",
            json={
                "symbol": "BTC-PERP",
                "side": "buy",
                "type": "limit",
                "qty": "0.3",
                "price": "50000",
            },
        ).json()
        assert (bought["status"], bought["avg_price"]) == ("filled", "50000")
        assert [f["fee"] for f in bought["fills"]] == ["5", "2.5"]
        assert a.get("/v1/account").json()["wallet_balance"] == "1492.5"
        bob_pos = b.get("/v1/positions").json()[0]
        assert (bob_pos["size"], bob_pos["adl_quantile"]) == ("-0.2", 4)
        assert c.get("/v1/positions").json()[0]["adl_quantile"] == 2

    async with (
        ws_connect(api.service.ws_url) as public,
        ws_connect(api.service.ws_url) as bob_ws,
        ws_connect(api.service.ws_url) as alice_ws,
    ):
        await public.send(op="subscribe", channels=["adl", "liquidations", "mark:BTC-PERP"])
        assert (await public.control("subscribed"))["channels"] == [
            "adl",
            "liquidations",
            "mark:BTC-PERP",
        ]
        await bob_ws.send(op="auth", api_key=bob_key)
        assert (await bob_ws.control("authenticated"))["account_id"] == bob
        first = await bob_ws.expect(
            lambda m: m["channel"] == "account" and m["data"]["type"] == "adl_quantile"
        )
        assert first["data"] == {"type": "adl_quantile", "symbol": "BTC-PERP", "adl_quantile": 4}
        await alice_ws.send(op="auth", api_key=alice_key)
        await alice_ws.control("authenticated")

        result = await asyncio.to_thread(api.set_mark, "BTC-PERP", "45000")
        assert result == {"liquidations": [LIQUIDATION], "adl_fills": [ADL_BOB, ADL_CAROL]}

        # public channels: the two ADL fills in rank order, then the liquidation
        adl1 = await public.expect(lambda m: m["channel"] == "adl")
        adl2 = await public.expect(lambda m: m["channel"] == "adl")
        liq = await public.expect(lambda m: m["channel"] == "liquidations")
        assert adl1["data"] == {"type": "adl", **ADL_BOB}
        assert adl2["data"] == {"type": "adl", **ADL_CAROL}
        assert liq["data"] == {"type": "liquidation", **LIQUIDATION}
        assert adl1["seq"] < adl2["seq"] < liq["seq"]

        # Bob's private channel: his ADL notice, his position change, and his light going out
        notice = await bob_ws.expect(
            lambda m: m["channel"] == "account" and m["data"]["type"] == "adl"
        )
        assert notice["data"] == {"type": "adl", **ADL_BOB} and notice["seq"] == adl1["seq"]
        pos = await bob_ws.expect(
            lambda m: m["channel"] == "account" and m["data"]["type"] == "position_changed"
        )
        assert (pos["data"]["size"], pos["data"]["reason"], pos["data"]["wallet_balance"]) == (
            "0",
            "adl",
            "2993",
        )
        light = await bob_ws.expect(
            lambda m: m["channel"] == "account" and m["data"]["type"] == "adl_quantile"
        )
        assert light["data"]["adl_quantile"] == 0
        assert not any(
            m["channel"] == "account" and m["data"].get("counterparty_account_id") == carol
            for m in bob_ws.seen
        )

        # Alice's private channel: her liquidation notice
        notice = await alice_ws.expect(
            lambda m: m["channel"] == "account" and m["data"]["type"] == "liquidation"
        )
        assert notice["data"] == {"type": "liquidation", **LIQUIDATION}

    # balances over HTTP, exact to the atom
    wallets = {
        aid: api.admin("GET", f"/v1/admin/accounts/{aid}").json() for aid in (alice, bob, carol)
    }
    assert (wallets[alice]["wallet_balance"], wallets[alice]["positions"]) == ("0", [])
    assert (wallets[bob]["wallet_balance"], wallets[bob]["positions"]) == ("2993", [])
    assert (wallets[carol]["wallet_balance"], wallets[carol]["positions"]) == ("100496.5", [])
    assert api.http.get("/v1/insurance-fund").json() == {"balance": "0", "bad_debt": "0"}

    # Redis: exchange:adl holds exactly the two fills, ids <seq>-0, fields type/data
    r = redis_server.client_for(url)
    seq = api.seq()
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        last = r.xrevrange("exchange:events", count=1)
        if last and last[0][0] == f"{seq}-0".encode():
            break
        assert asyncio.get_running_loop().time() < deadline, (
            f"publisher did not reach seq {seq}: {last}"
        )
        await asyncio.sleep(0.05)
    entries = r.xrange("exchange:adl")
    assert [e[0].decode() for e in entries] == [f"{adl1['seq']}-0", f"{adl2['seq']}-0"]
    for (_, fields), expected in zip(entries, (ADL_BOB, ADL_CAROL), strict=True):
        assert set(fields) == {b"type", b"data"}
        assert fields[b"type"] == b"adl"
        assert json.loads(fields[b"data"]) == expected
    events = r.xrange("exchange:events")
    ids = [int(e[0].decode().split("-")[0]) for e in events]
    assert ids == list(range(1, seq + 1))  # every event, gap-free, no duplicates
    assert all(e[0].endswith(b"-0") for e in events)
    by_seq = {int(e[0].split(b"-")[0]): e[1] for e in events}
    assert by_seq[liq["seq"]][b"type"] == b"liquidation"
    assert json.loads(by_seq[liq["seq"]][b"data"]) == LIQUIDATION
