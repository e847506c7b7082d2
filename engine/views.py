"""Read-only views of engine state in engine units, for the API and for tests.

Nothing here changes state (the ADL ranking cache it may fill is derived, not state).
Prices that are not on the tick grid are `_e8` integers rounded half-even (SPEC §1).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.book import Order
from engine.engine import Engine
from engine.risk import (
    available_atoms,
    equity_atoms,
    initial_margin_atoms,
    leverage_of,
    liquidation_price_frac,
    maintenance_atoms,
    total_equity_atoms,
    total_maintenance_atoms,
    upnl_atoms,
)
from engine.units import E8, div_half_even


@dataclass(frozen=True, slots=True)
class PositionView:
    symbol: str
    size_lots: int
    entry_value_atoms: int
    entry_price_e8: int
    mark_ticks: int
    unrealized_pnl_atoms: int
    liquidation_price_e8: int | None
    leverage: int
    adl_quantile: int
    margin_mode: str = "cross"  # SPEC §12
    isolated_margin_atoms: int = 0


@dataclass(frozen=True, slots=True)
class AccountView:
    account_id: int
    wallet_balance_atoms: int
    equity_atoms: int
    maintenance_margin_atoms: int
    initial_margin_atoms: int
    available_atoms: int
    positions: tuple[PositionView, ...]
    cross_equity_atoms: int = 0  # SPEC §12: what backs the cross positions (isolated ones left out)
    cross_maintenance_margin_atoms: int = 0


def positions_view(engine: Engine, account_id: int) -> tuple[PositionView, ...]:
    """Every open position of the account, by symbol."""
    acct = engine.accounts[account_id]
    out = []
    for sym in sorted(acct.positions):
        pos = acct.positions[sym]
        inst = engine.instruments[sym]
        mark = engine.marks[sym]
        frac = liquidation_price_frac(acct, sym, engine.instruments, engine.marks)
        liq = None if frac is None else div_half_even(frac[0] * inst.tick_size_e8, frac[1])
        out.append(
            PositionView(
                symbol=sym,
                size_lots=pos.size_lots,
                entry_value_atoms=pos.entry_value_atoms,
                entry_price_e8=div_half_even(pos.entry_value_atoms * E8, pos.size_lots * inst.lot_size_e8),
                mark_ticks=mark,
                unrealized_pnl_atoms=upnl_atoms(inst, pos, mark),
                liquidation_price_e8=liq,
                leverage=leverage_of(acct, inst),
                adl_quantile=engine.adl_quantiles(sym).get(account_id, 0),
                margin_mode="isolated" if sym in acct.isolated else "cross",
                isolated_margin_atoms=acct.isolated.get(sym, 0),
            )
        )
    return tuple(out)


def account_view(engine: Engine, account_id: int) -> AccountView:
    """Balances, margins and positions of one account (SPEC §9 `GET /v1/account`).

    With isolated positions (SPEC §12): `equity` is everything the account owns (wallet,
    isolated margins, every upnl), `maintenance_margin` covers every position,
    `initial_margin` is the cross IM plus the isolated margins set aside, and `available`
    is the cross part's (what new orders, withdrawals and added margin may use). The cross
    part alone (what its liquidation compares) is `cross_equity` / `cross_maintenance_margin`.
    Without isolated positions each pair is equal.
    """
    acct = engine.accounts[account_id]
    ins, marks = engine.instruments, engine.marks
    cross_eq = equity_atoms(acct, ins, marks)
    cross_mm = maintenance_atoms(acct, ins, marks)
    return AccountView(
        account_id=account_id,
        wallet_balance_atoms=acct.wallet_atoms,
        equity_atoms=total_equity_atoms(acct, ins, marks) if acct.isolated else cross_eq,
        maintenance_margin_atoms=total_maintenance_atoms(acct, ins, marks) if acct.isolated else cross_mm,
        initial_margin_atoms=initial_margin_atoms(acct, ins, marks) + sum(acct.isolated.values()),
        available_atoms=available_atoms(acct, ins, marks),
        positions=positions_view(engine, account_id),
        cross_equity_atoms=cross_eq,
        cross_maintenance_margin_atoms=cross_mm,
    )


def avg_price_e8(engine: Engine, order: Order) -> int | None:
    """Average fill price of an order, half-even to 8 decimals; None before any fill."""
    if not order.filled_lots:
        return None
    tick = engine.instruments[order.symbol].tick_size_e8
    return div_half_even(order.filled_value_ticks * tick, order.filled_lots)
