"""The liquidation index never misses an account below maintenance (engine/liq_index.py).

Accounts with one or two positions (long/short, tier 1 to tier 3 notionals, thin to fat
margins) are indexed at some marks; then random mark moves of either symbol, from ticks to
crashes and squeezes. Each move is handled as the engine does: marks updated, accounts
checked at the previous move refreshed at the new marks, then `candidates(symbol, mark)`.
Every account whose equity is below maintenance (brute force, engine.risk) must be among
them. Also measured: how few of the two-symbol accounts a small move visits.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.accounts import Account, Position
from engine.instruments import Tier, default_instruments
from engine.liq_index import LiquidationIndex, _mm_slope_ppm
from engine.risk import equity_atoms, isolated_equity_atoms, maintenance_atoms
from engine.units import E8

INSTRUMENTS = default_instruments()
BTC, ETH = "BTC-PERP", "ETH-PERP"
MARK0 = {BTC: 300_000, ETH: 200_000}  # $30,000.0 and $2,000.00


def _account(aid: int, wallet_usd: int, legs: list[tuple[str, int, int]]) -> Account:
    acct = Account(aid)
    acct.wallet_atoms = wallet_usd * E8
    for sym, lots, entry_ticks in legs:
        if lots:
            pos = Position(sym)
            pos.size_lots = lots
            pos.entry_value_atoms = INSTRUMENTS[sym].notional_atoms(lots, entry_ticks)
            acct.positions[sym] = pos
    return acct


legs = st.tuples(
    st.integers(-40_000, 40_000),  # BTC lots of 0.001: up to 40 BTC (tier 3 at $30k)
    st.integers(90, 110),  # entry, % of the starting mark
    st.integers(-30_000, 30_000),  # ETH lots of 0.01: up to 300 ETH
    st.integers(90, 110),
)
accounts = st.lists(st.tuples(st.integers(0, 300_000), legs), min_size=1, max_size=12)
moves = st.lists(
    st.tuples(st.sampled_from([BTC, ETH]), st.integers(-40, 40), st.integers(0, 3)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(accounts=accounts, moves=moves)
def test_every_account_below_maintenance_is_a_candidate_after_any_mark_move(
    accounts: list[tuple[int, tuple[int, int, int, int]]], moves: list[tuple[str, int, int]]
) -> None:
    marks = dict(MARK0)
    book = {}
    for aid, (wallet, (btc, btc_px, eth, eth_px)) in enumerate(accounts, start=1):
        book[aid] = _account(
            aid,
            wallet,
            [(BTC, btc, MARK0[BTC] * btc_px // 100), (ETH, eth, MARK0[ETH] * eth_px // 100)],
        )
    index = LiquidationIndex([BTC, ETH])
    for acct in book.values():
        index.update(acct, INSTRUMENTS, marks)
    stale: set[int] = set()
    for sym, pct, scale in moves:
        step = [1, 10, 100, 1000][scale]  # from a tick to large jumps (x pct)
        marks[sym] = max(1, marks[sym] + pct * step * (1 if sym == ETH else 3))
        for aid in stale:  # the engine refreshes the accounts it checked, at the new marks
            index.update(book[aid], INSTRUMENTS, marks)
        cands = index.candidates(sym, marks[sym])
        for aid, acct in book.items():
            if acct.positions and sym in acct.positions:
                below = equity_atoms(acct, INSTRUMENTS, marks) < maintenance_atoms(acct, INSTRUMENTS, marks)
                assert not below or aid in cands, (aid, sym, dict(marks), index._entries.get(aid))
        stale = cands


def _any_part_below(acct: Account, marks: dict[str, int]) -> bool:
    """Brute force: the cross part, or one isolated position, below its maintenance (SPEC §12)."""
    if any(s not in acct.isolated for s in acct.positions) and (
        equity_atoms(acct, INSTRUMENTS, marks) < maintenance_atoms(acct, INSTRUMENTS, marks)
    ):
        return True
    for sym in acct.isolated:
        pos = acct.positions.get(sym)
        if pos is not None:
            inst = INSTRUMENTS[sym]
            notional = inst.notional_atoms(pos.size_lots, marks[sym])
            if isolated_equity_atoms(acct, sym, inst, marks[sym]) < inst.maintenance_atoms(notional):
                return True
    return False


@settings(max_examples=300, deadline=None)
@given(
    accounts=st.lists(
        st.tuples(st.integers(0, 300_000), legs, st.sampled_from([(), (BTC,), (ETH,), (BTC, ETH)]),
                  st.integers(0, 100_000)),
        min_size=1, max_size=12,
    ),
    moves=moves,
)
def test_isolated_positions_below_their_maintenance_are_candidates(
    accounts: list[tuple[int, tuple[int, int, int, int], tuple[str, ...], int]], moves: list[tuple[str, int, int]]
) -> None:
    """Accounts mixing isolated and cross positions (SPEC §12): an isolated position is indexed
    by its own liquidation price, the cross part by the cross equity alone."""
    marks = dict(MARK0)
    book = {}
    for aid, (wallet, (btc, btc_px, eth, eth_px), iso, margin) in enumerate(accounts, start=1):
        acct = _account(aid, wallet, [(BTC, btc, MARK0[BTC] * btc_px // 100), (ETH, eth, MARK0[ETH] * eth_px // 100)])
        for sym in iso:
            acct.isolated[sym] = margin * E8 if sym in acct.positions else 0
        book[aid] = acct
    index = LiquidationIndex([BTC, ETH])
    for acct in book.values():
        index.update(acct, INSTRUMENTS, marks)
    stale: set[int] = set()
    for sym, pct, scale in moves:
        step = [1, 10, 100, 1000][scale]
        marks[sym] = max(1, marks[sym] + pct * step * (1 if sym == ETH else 3))
        for aid in stale:
            index.update(book[aid], INSTRUMENTS, marks)
        cands = index.candidates(sym, marks[sym])
        for aid, acct in book.items():
            if sym in acct.positions and _any_part_below(acct, marks):
                # the part that moved: this symbol's isolated position, or the cross part
                if sym in acct.isolated:
                    inst = INSTRUMENTS[sym]
                    pos = acct.positions[sym]
                    below = isolated_equity_atoms(acct, sym, inst, marks[sym]) < inst.maintenance_atoms(
                        inst.notional_atoms(pos.size_lots, marks[sym])
                    )
                else:
                    below = equity_atoms(acct, INSTRUMENTS, marks) < maintenance_atoms(acct, INSTRUMENTS, marks)
                assert not below or aid in cands, (aid, sym, dict(marks), acct.isolated, index._entries.get(aid))
        stale = cands


@settings(max_examples=300, deadline=None)
@given(
    account=st.tuples(st.integers(0, 300_000), legs),
    offsets=st.lists(st.integers(-3, 3), min_size=1, max_size=4),
)
def test_marks_right_at_a_trigger_are_sound(
    account: tuple[int, tuple[int, int, int, int]], offsets: list[int]
) -> None:
    """Probe each trigger's own neighbourhood, where a too-generous bound would show."""
    wallet, (btc, btc_px, eth, eth_px) = account
    acct = _account(1, wallet, [(BTC, btc, MARK0[BTC] * btc_px // 100), (ETH, eth, MARK0[ETH] * eth_px // 100)])
    index = LiquidationIndex([BTC, ETH])
    index.update(acct, INSTRUMENTS, MARK0)
    for sym, _is_long, key in list(index._entries.get(1, ())):
        for off in offsets:
            mark = key + off
            if not 0 < mark < 1 << 40:
                continue
            marks = {**MARK0, sym: mark}
            below = equity_atoms(acct, INSTRUMENTS, marks) < maintenance_atoms(acct, INSTRUMENTS, marks)
            assert not below or 1 in index.candidates(sym, mark), (sym, key, off)


def test_a_small_move_visits_only_two_symbol_accounts_near_their_limit() -> None:
    marks = dict(MARK0)
    index = LiquidationIndex([BTC, ETH])
    # 200 comfortable two-symbol accounts (long 1 BTC and 10 ETH, $20k wallet) and one thin one
    for aid in range(1, 201):
        index.update(_account(aid, 20_000, [(BTC, 1_000, MARK0[BTC]), (ETH, 1_000, MARK0[ETH])]), INSTRUMENTS, marks)
    thin = _account(201, 0, [(BTC, 1_000, MARK0[BTC]), (ETH, 1_000, MARK0[ETH])])
    thin.wallet_atoms = maintenance_atoms(thin, INSTRUMENTS, marks) + 10 * E8  # $10 above MM
    index.update(thin, INSTRUMENTS, marks)
    # the thin one's $10 of slack (less 2 atoms for MM rounding): $5.99999998 for BTC ($30k of
    # its $50k notional); 1 BTC loses $0.1 a tick, so 59 ticks fit; the 59th is flagged
    # (conservatively), 58 down is not
    assert index.candidates(BTC, marks[BTC] - 58) == set()
    assert index.candidates(BTC, marks[BTC] - 59) == {201}
    assert index.candidates(BTC, marks[BTC] - 100) == {201}  # $10 down: only the thin one
    assert index.candidates(ETH, marks[ETH] + 5) == set()  # up is safe for longs
    # the others have ~$19,750 of slack, $11,850 of it for BTC: a $5,000 crash is safe for
    # them, a $15,000 one makes every account a candidate
    assert index.candidates(BTC, marks[BTC] - 50_000) == {201}
    assert index.candidates(BTC, marks[BTC] - 150_000) == set(range(1, 202))


def test_tiers_with_a_jump_in_maintenance_give_no_bound() -> None:
    assert _mm_slope_ppm(INSTRUMENTS[BTC].tiers) == 25_000
    jump = (Tier(100_000 * E8, 5_000, 0, 50), Tier(1_000_000 * E8, 10_000, 0, 25))  # no amount
    assert _mm_slope_ppm(jump) is None
    marks = dict(MARK0)
    index = LiquidationIndex([BTC, ETH])
    acct = _account(1, 50_000, [(BTC, 1_000, MARK0[BTC]), (ETH, 1_000, MARK0[ETH])])
    odd = {**INSTRUMENTS, BTC: INSTRUMENTS[BTC].__class__(BTC, 10_000_000, 100_000, tiers=jump)}
    index.update(acct, odd, marks)
    assert index.candidates(ETH, marks[ETH]) == {1}  # checked on every move instead
