"""The engine's ADL allocation (adl_line.AdlRanking.take_queue / take_pro_rata, kept incrementally)
against the reference (adl_reference.py: the line sorted from scratch, the policies walking
all of it), atom for atom: the same counterparties, lots and ranks, under every policy.

1. Random lines built and changed directly in the state (positions, wallets with equity <= 0,
   accounts in two symbols, scores whose denominators need the exact mode), every remainder
   from 1 lot to more than the side holds, re-checked after changes and mark moves.
2. Random cascades through `Engine.apply`: the same command stream into an engine using the
   line and one using the reference; every event and the state hash must be equal.
"""

from __future__ import annotations

import random
from typing import Any
from unittest import mock

import pytest

from engine import commands as c
from engine import deleverage
from engine import events as ev
from engine.accounts import Position
from engine.engine import Engine
from tests.builds import python_engine_only
from tests.property import adl_reference

BTC, ETH = "BTC-PERP", "ETH-PERP"
POLICIES = (c.ADL_QUEUE, c.ADL_PRO_RATA, c.ADL_CAPPED_PRO_RATA)



# == 1. lines built directly ===================================================================


def _set_position(eng: Engine, aid: int, symbol: str, size: int, entry: int) -> None:
    acct = eng.accounts[aid]
    if size == 0:
        acct.positions.pop(symbol, None)
    else:
        pos = acct.positions.get(symbol) or Position(symbol)
        pos.size_lots, pos.entry_value_atoms = size, entry
        acct.positions[symbol] = pos
    eng.holders_update(acct, symbol)
    eng.touch(aid)


def _random_position(rng: random.Random, eng: Engine, aid: int, symbol: str) -> None:
    mark = eng.marks[symbol]
    k = eng.instruments[symbol].atoms_per_lot_tick
    size = rng.choice((1, 1, 2, 3, 5, 8, rng.randint(1, 50), rng.randint(1, 2_000))) * rng.choice((1, -1))
    entry_price = mark + rng.choice((0, 0, rng.randint(-mark // 5, mark // 5), rng.randint(-50, 50)))
    entry = size * max(1, entry_price) * k
    if rng.random() < 0.03:  # values far beyond 64-bit denominators: the line's exact mode
        entry *= 10**25
    _set_position(eng, aid, symbol, size, entry)


def _random_wallet(rng: random.Random, eng: Engine, aid: int) -> None:
    acct = eng.accounts[aid]
    r = rng.random()
    if r < 0.1:
        acct.wallet_atoms = -rng.randint(1, 10**13)  # equity may be <= 0 even when profitable
    elif r < 0.2:
        acct.wallet_atoms = rng.choice((0, 1))
    else:
        acct.wallet_atoms = rng.randint(10**8, 10**13)
    eng.touch(aid)


def _compare_all(eng: Engine, rng: random.Random) -> int:
    checked = 0
    for symbol in (BTC, ETH):
        for side in (1, -1):
            held = sum(abs(eng.accounts[a].positions[symbol].size_lots) for a in eng.holders[symbol]
                       if (eng.accounts[a].positions[symbol].size_lots > 0) == (side > 0))
            amounts = {1, 2, 3, held, held + 1, held + 5, *(rng.randint(1, held + 3) for _ in range(6))}
            for policy in POLICIES:
                eng.adl_policy[symbol] = policy
                for lots in sorted(a for a in amounts if a > 0):
                    want = adl_reference.allocate(eng, symbol, side, lots)
                    got = deleverage.allocate(eng, symbol, side, lots)
                    assert got[0] == want[0], (symbol, side, policy, lots)
                    assert {a: got[1][a] for a, _ in got[0]} == {a: want[1][a] for a, _ in want[0]}, (symbol, side, policy, lots)
                    checked += 1
    return checked


@pytest.mark.parametrize("seed", range(12))
def test_allocation_when_line_kept_incrementally_equals_reference(seed: int) -> None:
    rng = random.Random(seed)
    eng = Engine()
    eng.apply(c.SetMarkPrice(BTC, rng.randint(5_000, 20_000)))
    eng.apply(c.SetMarkPrice(ETH, rng.randint(50_000, 200_000)))
    n = rng.choice((5, 30, 150, 400))
    ids = [eng.apply(c.CreateAccount())[0].account_id for _ in range(n)]
    for aid in ids:
        _random_wallet(rng, eng, aid)
        _random_position(rng, eng, aid, BTC)
        if rng.random() < 0.2:
            _random_position(rng, eng, aid, ETH)
    checked = _compare_all(eng, rng)
    for _ in range(6):  # change some accounts (incremental refresh), sometimes move a mark
        for aid in rng.sample(ids, max(1, n // 10)):
            what = rng.random()
            if what < 0.4:
                _random_position(rng, eng, aid, BTC)
            elif what < 0.6:
                _set_position(eng, aid, BTC, 0, 0)
            elif what < 0.8:
                _random_wallet(rng, eng, aid)
            else:
                _random_position(rng, eng, aid, ETH)
        if rng.random() < 0.4:
            symbol = rng.choice((BTC, ETH))
            eng.move_mark(symbol, max(1, eng.marks[symbol] + rng.randint(-eng.marks[symbol] // 10, eng.marks[symbol] // 10)))
            for aid in ids:  # two-symbol accounts' equity in the other line moved: the engine touches them
                if len(eng.accounts[aid].positions) > 1:
                    eng.touch(aid)
        checked += _compare_all(eng, rng)
    assert checked > 100


def test_allocation_when_numbers_too_large_for_int_keys_uses_exact_keys_and_equals_reference() -> None:
    rng = random.Random(99)
    eng = Engine()
    eng.apply(c.SetMarkPrice(BTC, 10_000))
    eng.apply(c.SetMarkPrice(ETH, 100_000))
    ids = [eng.apply(c.CreateAccount())[0].account_id for _ in range(60)]
    for aid in ids:
        _random_wallet(rng, eng, aid)
        size = rng.randint(1, 30) * rng.choice((1, -1))
        _set_position(eng, aid, BTC, size, size * rng.randint(9_000, 11_000) * 10**4)
    _compare_all(eng, rng)
    assert not any(line.exact for line in eng.rankings.values())
    for aid in ids[::7]:  # entry values of 10**37 atoms: denominators past 2**128
        pos = eng.accounts[aid].positions[BTC]
        _set_position(eng, aid, BTC, pos.size_lots, pos.entry_value_atoms * 10**25)
    _compare_all(eng, rng)
    assert any(line.exact for line in eng.rankings.values())


# == 2. cascades through the engine ============================================================


def _cascade_commands(seed: int) -> list[Any]:
    """Accounts trading at a drifting mark (so entries and profits differ), then shocks."""
    rng = random.Random(seed)
    cmds: list[Any] = [c.SetMarkPrice(BTC, 10_000), c.SetMarkPrice(ETH, 100_000), c.TopUpInsuranceFund(rng.choice((0, 10**9, 10**12)) or 1)]
    n = rng.choice((20, 60, 120))
    for aid in range(1, n + 1):
        cmds.append(c.CreateAccount())
        cmds.append(c.Deposit(aid, rng.randint(10**9, 2 * 10**10)))
    cmds.append(c.SetAdlPolicy(BTC, rng.choice(POLICIES)))
    cmds.append(c.SetAdlPolicy(ETH, rng.choice(POLICIES)))
    mark = 10_000
    for _ in range(n * 2):
        if rng.random() < 0.15:
            mark = max(1_000, mark + rng.randint(-300, 300))
            cmds.append(c.SetMarkPrice(BTC, mark))
        a, b = rng.sample(range(1, n + 1), 2)
        symbol, price = (BTC, mark) if rng.random() < 0.85 else (ETH, 100_000)
        lots = rng.randint(1, 60)
        cmds.append(c.PlaceOrder(a, symbol, "sell", lots, price))
        cmds.append(c.PlaceOrder(b, symbol, "buy", lots, price))
        if rng.random() < 0.05:
            cmds.append(c.SetAdlPolicy(BTC, rng.choice(POLICIES)))
    for _ in range(4):  # shocks both ways, with some depth left in the book sometimes
        if rng.random() < 0.3:
            a = rng.randint(1, n)
            cmds.append(c.PlaceOrder(a, BTC, rng.choice(("buy", "sell")), rng.randint(1, 20), mark + rng.randint(-500, 500)))
        mark = max(1_000, mark * rng.choice((70, 80, 88, 112, 125, 140)) // 100)
        cmds.append(c.SetMarkPrice(BTC, mark))
    return cmds


def _run(cmds: list[Any], reference: bool) -> tuple[list[Any], str]:
    eng = Engine()
    events: list[Any] = []
    ctx = mock.patch.object(deleverage, "allocate", adl_reference.allocate) if reference else mock.patch.object(deleverage, "allocate", deleverage.allocate)
    with ctx:
        for cmd in cmds:
            events.extend(eng.apply(cmd))
    eng.check_invariants()
    return events, eng.state_hash()


@python_engine_only  # the reference is patched in
@pytest.mark.parametrize("seed", range(16))
def test_cascade_when_line_allocates_gives_the_reference_events_and_state(seed: int) -> None:
    cmds = _cascade_commands(seed)
    got, want = _run(cmds, reference=False), _run(cmds, reference=True)
    assert len(got[0]) == len(want[0])
    for a, b in zip(got[0], want[0], strict=True):
        assert a == b
    assert got[1] == want[1]


def test_cascades_reach_adl_under_both_policies() -> None:
    """The stream above is not toothless: across the seeds, ADL runs under both policies."""
    seen: dict[str, int] = {}
    for seed in range(16):
        events, _ = _run(_cascade_commands(seed), reference=False)
        for e in events:
            if isinstance(e, ev.PositionDeleveraged):
                seen[e.policy] = seen.get(e.policy, 0) + 1
    assert seen.get(c.ADL_QUEUE, 0) >= 10 and seen.get(c.ADL_PRO_RATA, 0) >= 10, seen


# == 3. the int key orders as the exact key =====================================================


@pytest.mark.parametrize("seed", range(4))
def test_fast_rank_key_when_numbers_fit_orders_as_the_exact_key(seed: int) -> None:
    from engine.adl import fast_rank_key, rank_key

    rng = random.Random(seed)
    rows = []
    for aid in range(1, 3_000):
        size = rng.choice((1, 2, 3, rng.randint(1, 10**6))) * rng.choice((1, -1))
        price = rng.choice((100, 101, rng.randint(1, 10**5)))
        entry = size * rng.choice((price, price + 1, price - 1, rng.randint(1, 10**5))) * 10**4
        notional = size * price * 10**4
        equity = rng.choice((0, -5, 1, 10**8, rng.randint(1, 10**12), notional - entry + 7))
        rows.append((aid, size, entry, notional, equity))
    rows += [(aid + 5_000, *row[1:]) for aid, row in enumerate(rows[:500])]  # exact ties on score and size
    rows.append((9_999, 1, 10**30, 10**30 + 1, 10**30))  # too large for an int key
    fast = [fast_rank_key(*row) for row in rows]
    assert fast[-1] is None and fast.count(None) == 1
    rows, fast = rows[:-1], fast[:-1]
    by_fast = [row[0] for _, row in sorted(zip(fast, rows, strict=True), key=lambda kr: kr[0])]
    by_exact = [row[0] for row in sorted(rows, key=lambda row: rank_key(*row))]
    assert by_fast == by_exact
    reference = [row[0] for row in sorted(rows, key=lambda row: adl_reference.rank_key(*row))]
    assert by_exact == reference


# == 4. snapshots: the lines are derived, left out of the pickle and rebuilt ===================


@pytest.mark.parametrize("seed", [9, 11])
def test_snapshot_when_taken_mid_stream_drops_lines_and_replays_identically(seed: int) -> None:
    import pickle

    cmds = _cascade_commands(seed)
    live = Engine()
    half = len(cmds) * 2 // 3
    for cmd in cmds[:half]:
        live.apply(cmd)
    for symbol in live.symbols:
        live.adl_quantiles(symbol)  # lines built: they must not travel in the snapshot
    assert live.rankings
    restored = pickle.loads(pickle.dumps(live, protocol=pickle.HIGHEST_PROTOCOL))
    assert not restored.rankings and restored.state_hash() == live.state_hash()
    for cmd in cmds[half:]:
        assert restored.apply(cmd) == live.apply(cmd)
    assert restored.state_hash() == live.state_hash()
