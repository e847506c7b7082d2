"""`python -m service.tools dump DIR --events`: the events of a data dir, regenerated from its
journal, printed exactly as the API answered them (in-process app, no Redis)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from service import tools
from service.settings import Settings

TOKEN = "tools-admin-token-01234"
ADMIN = {"X-Admin-Token": TOKEN}


async def _account(c: httpx.AsyncClient, deposit: str, leverage: int) -> tuple[int, dict[str, str]]:
    acct = (await c.post("/v1/admin/accounts", headers=ADMIN)).json()
    await c.post("/v1/admin/deposit", headers=ADMIN, json={"account_id": acct["account_id"], "amount": deposit})
    key = {"X-API-Key": acct["api_key"]}
    r = await c.post("/v1/leverage", headers=key, json={"symbol": "BTC-PERP", "leverage": leverage})
    assert r.status_code == 200, r.text
    return acct["account_id"], key


async def _order(c: httpx.AsyncClient, key: dict[str, str], side: str, qty: str, price: str, **extra: Any) -> None:
    body = {"symbol": "BTC-PERP", "side": side, "type": "limit", "qty": qty, "price": price, **extra}
    r = await c.post("/v1/orders", headers=key, json=body)
    assert r.status_code == 200, r.text


async def _liquidation_scenario(data_dir: Path) -> dict[str, Any]:
    """Alice long 0.5 BTC at 10,000 with 300 USD, Bob short 0.5; the mark falls to 9,000 with
    one 0.1 BTC bid at 9,500 in the book: Alice is liquidated, the fund sells 0.1 into that bid
    and ADL closes 0.4 against Bob. Returns what `POST /v1/admin/mark-price` answered."""
    app = create_app(Settings(admin_token=TOKEN, data_dir=data_dir, redis_url=None))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app"
    ) as c:
        await c.post("/v1/admin/mark-price", headers=ADMIN, json={"symbol": "BTC-PERP", "price": "10000"})
        await c.post("/v1/admin/insurance-fund", headers=ADMIN, json={"amount": "1000"})
        _, maker = await _account(c, "1000000", 10)
        alice, alice_key = await _account(c, "300", 50)
        bob, bob_key = await _account(c, "300", 50)
        await _order(c, maker, "sell", "0.5", "10000")
        await _order(c, alice_key, "buy", "0.5", "10000", time_in_force="IOC")
        await _order(c, maker, "buy", "0.5", "10000")
        await _order(c, bob_key, "sell", "0.5", "10000", time_in_force="IOC")
        await _order(c, maker, "buy", "0.1", "9500")
        r = await c.post("/v1/admin/mark-price", headers=ADMIN, json={"symbol": "BTC-PERP", "price": "9000"})
        answer: dict[str, Any] = r.json()
    assert [x["account"] for x in answer["liquidations"]] == [alice]
    assert [x["counterparty_account_id"] for x in answer["adl_fills"]] == [bob]
    return answer


def _dump(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[list[dict[str, Any]], str]:
    assert tools.main(["dump", *args]) == 0
    captured = capsys.readouterr()
    return [json.loads(line) for line in captured.out.splitlines()], captured.err


async def test_dump_events_when_data_dir_holds_a_liquidation_prints_it_as_the_api_answered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = await _liquidation_scenario(tmp_path)
    capsys.readouterr()
    events, _ = _dump(capsys, str(tmp_path), "--events", "--types", "liquidation,adl")
    assert [e["type"] for e in events] == ["adl", "liquidation"]  # in seq order
    adl, liq = events[0]["data"], events[1]["data"]
    assert liq == answer["liquidations"][0]
    assert adl == answer["adl_fills"][0]
    assert (liq["book_fill_qty"], liq["book_fill_avg_price"], liq["adl_qty"]) == ("0.1", "9500", "0.4")
    assert isinstance(events[1]["seq"], int) and isinstance(events[1]["ts_ns"], int)


async def test_dump_events_when_from_seq_and_limit_given_prints_that_window_of_every_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _liquidation_scenario(tmp_path)
    capsys.readouterr()
    everything, _ = _dump(capsys, str(tmp_path), "--events")
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))  # gap-free
    assert everything[0]["type"] == "mark_price_changed"
    assert everything[0]["data"] == {"symbol": "BTC-PERP", "price": "10000"}  # not ticks
    window, _ = _dump(capsys, str(tmp_path), "--events", "--from-seq", "5", "--limit", "3")
    assert window == everything[4:7]
    # the raw command dump is unchanged: integers, one line per journal record
    records, _ = _dump(capsys, str(tmp_path), "--limit", "1")
    assert records[0]["command"][0] == "SetMarkPrice" and isinstance(records[0]["command"][2], int)


async def test_dump_events_when_type_is_misspelled_says_which_types_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _liquidation_scenario(tmp_path)
    capsys.readouterr()
    events, err = _dump(capsys, str(tmp_path), "--events", "--types", "liquidations")
    assert events == []
    assert "no event of type liquidations" in err and "liquidation, mark_price_changed" in err


def test_dump_when_types_given_without_events_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        tools.main(["dump", str(tmp_path), "--types", "adl"])
    assert exc.value.code == 2


def test_dump_events_when_journal_was_pruned_behind_a_snapshot_goes_on_from_there_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.engine import Engine
    from service.storage.durable import DurableJournal
    from service.storage.journal import segment_first_seq, segments
    from tests.durability.test_storage import random_commands, run_journaled

    run_journaled(tmp_path, random_commands(15, 300), segment_bytes=2048)
    assert tools.main(["snapshot", "--prune", str(tmp_path)]) == 0
    assert segment_first_seq(segments(tmp_path)[0]) > 1  # events 1.. are gone from the journal
    capsys.readouterr()
    events, err = _dump(capsys, str(tmp_path), "--events")
    assert events == [] and "none after it" in err  # everything journaled is behind the snapshot

    journal = DurableJournal(tmp_path, Engine, fsync="off")  # the service goes on after it
    live = journal.recover().engine
    base = live.seq
    for cmd in random_commands(16, 40)[8:]:  # orders and marks on the accounts of the first run
        journal.append_batch([(cmd, live.apply(cmd))])
    journal.close()
    events, err = _dump(capsys, str(tmp_path), "--events")
    assert f"note: events 1..{base} are no longer in the journal" in err
    assert f"going on from seq {base + 1}" in err
    assert [e["seq"] for e in events] == list(range(base + 1, live.seq + 1))
