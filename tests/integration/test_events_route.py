"""`GET /v1/events` (SPEC §9): the service's own history, from memory and from the journal.

A service without Redis keeps the last `EXCHANGE_MEMORY_EVENTS_KEPT` events in memory (here
20, so most of a crash is regenerated from the journal even before any restart); after a
restart memory is empty and every event comes from the journal.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.helpers import ADMIN_TOKEN, Api, ServiceProcess, assert_error

BTC = "BTC-PERP"


def _order(side: str, qty: str, price: str, **kw: Any) -> dict[str, Any]:
    return {"symbol": BTC, "side": side, "type": "limit", "qty": qty, "price": price, **kw}


@pytest.fixture(scope="module")
def crashed(start_service: Any) -> tuple[Api, dict[str, Any]]:
    """A long liquidated into an empty book and deleveraged against the short."""
    api = Api(start_service(memory_events_kept="20"))
    api.set_mark(BTC, "10000")
    _, long_key = api.new_account("1000")
    _, short_key = api.new_account("10000")
    with api.as_key(short_key) as s, api.as_key(long_key) as lo:
        assert s.post("/v1/orders", json=_order("sell", "0.5", "10000")).status_code == 200
        assert lo.post("/v1/orders", json=_order("buy", "0.5", "10000")).json()["status"] == "filled"
    crash = api.set_mark(BTC, "7500")
    assert len(crash["liquidations"]) == 1 and crash["adl_fills"]
    return api, crash


def _events(api: Api, admin: bool = False, **params: Any) -> Any:
    headers = {"X-Admin-Token": ADMIN_TOKEN} if admin else {}
    return api.http.get("/v1/events", params=params, headers=headers)


def _all(api: Api, admin: bool = False, **params: Any) -> list[dict[str, Any]]:
    """Every page, following next_from_seq."""
    out: list[dict[str, Any]] = []
    params = {"limit": 7, **params}
    while True:
        body = _events(api, admin, **params).json()
        out += body["events"]
        if body["next_from_seq"] is None:
            return out
        params["from_seq"] = body["next_from_seq"]


def test_events_when_a_crash_happened_show_its_liquidation_and_adl_like_the_mark_answer(
    crashed: tuple[Api, dict[str, Any]],
) -> None:
    api, crash = crashed
    got = _all(api, types="liquidation,adl")
    assert [e["type"] for e in got] == ["adl"] * len(crash["adl_fills"]) + ["liquidation"]
    # the admin answer and the history render events the same way (service/format.py)
    assert [e["data"] for e in got if e["type"] == "adl"] == crash["adl_fills"]
    (liq,) = [e for e in got if e["type"] == "liquidation"]
    assert (liq["data"]["account_id"], liq["data"]["bankruptcy_price"]) == (
        crash["liquidations"][0]["account_id"], crash["liquidations"][0]["bankruptcy_price"]
    )
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(seqs)


def test_events_when_public_hide_accounts_in_trades_and_refuse_private_types(
    crashed: tuple[Api, dict[str, Any]],
) -> None:
    api, _ = crashed
    (trade,) = _events(api, types="trade").json()["events"]
    assert "taker_account_id" not in trade["data"] and trade["data"]["price"] == "10000"
    full = _events(api, admin=True, types="trade").json()["events"][0]["data"]
    assert "taker_account_id" in full
    assert_error(_events(api, types="deposit"), 403, "FORBIDDEN")
    assert_error(_events(api, types="bogus"), 400, "VALIDATION_ERROR")
    assert_error(_events(api, types=","), 400, "VALIDATION_ERROR")
    assert_error(api.http.get("/v1/events", headers={"X-Admin-Token": "wrong-token-wrong-token"}), 403, "FORBIDDEN")
    for bad in ({"from_seq": 0}, {"from_seq": "x"}, {"from_seq": 2**64}, {"limit": 0}, {"limit": 1001}):
        assert _events(api, **bad).status_code == 400, bad
    # every event type, with the token, is gap-free from 1 to the head
    seq = api.admin("GET", "/v1/admin/engine").json()["seq"]
    everything = _all(api, admin=True)
    assert [e["seq"] for e in everything] == list(range(1, seq + 1))
    assert _events(api, from_seq=seq + 5).json() == {"events": [], "next_from_seq": None, "first_available_seq": seq + 5}


def test_events_when_service_restarted_are_regenerated_from_the_journal(
    crashed: tuple[Api, dict[str, Any]],
) -> None:
    api, _ = crashed
    before = _all(api, admin=True)
    svc: ServiceProcess = api.service
    assert svc.stop() in (0, -15), svc.log()
    svc.start()
    after = _all(api, admin=True)
    assert after == before
