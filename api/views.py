"""Response bodies built from engine state (read between two commands) and engine views.

Margin numbers come from engine.views (`account_view`, `positions_view`, `avg_price_e8`);
this module only renders them with service.format's decimal helpers (and reads a position's
cumulative funding, which the engine views do not carry).
"""

from __future__ import annotations

from typing import Any

from engine.accounts import Fill
from engine.book import Order
from engine.engine import Engine
from engine.units import e8_to_str
from engine.views import PositionView, account_view, avg_price_e8
from service.format import e8_str, money_str


def order_body(engine: Engine, order: Order) -> dict[str, Any]:
    """The SPEC §9 order shape."""
    inst = engine.instruments[order.symbol]
    tick, lot = inst.tick_size_e8, inst.lot_size_e8
    body: dict[str, Any] = {
        "order_id": order.order_id,
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side,
        "type": order.order_type,
        "price": None if order.price_ticks is None else e8_to_str(order.price_ticks * tick),
        "qty": e8_to_str(order.qty_lots * lot),
        "time_in_force": order.time_in_force,
        "post_only": order.post_only,
        "reduce_only": order.reduce_only,
        "stp": order.stp,
        "status": order.status,
        "filled_qty": e8_to_str(order.filled_lots * lot),
        "remaining_qty": e8_to_str(order.remaining_lots * lot),
        "avg_price": e8_str(avg_price_e8(engine, order)),
        "fills": [
            {
                "trade_id": trade_id,
                "price": e8_to_str(price * tick),
                "qty": e8_to_str(qty * lot),
                "fee": e8_to_str(fee),
                "liquidity": liquidity,
            }
            for trade_id, price, qty, fee, liquidity in order.fills
        ],
    }
    if order.trigger_price_ticks is not None:  # SPEC §12 stop / take-profit types only
        body["trigger_price"] = e8_to_str(order.trigger_price_ticks * tick)
        body["trigger_by"] = order.trigger_by
        body["close_position"] = order.close_position
    return body


def fill_body(engine: Engine, fill: Fill) -> dict[str, Any]:
    """One line of GET /v1/fills (engine.accounts.Fill)."""
    inst = engine.instruments[fill.symbol]
    book_trade = fill.liquidity in ("maker", "taker")  # price in ticks; else in 1e-8 USD
    return {
        "trade_id": fill.trade_id,
        "order_id": fill.order_id,
        "symbol": fill.symbol,
        "side": fill.side,
        "price": e8_to_str(fill.price * inst.tick_size_e8 if book_trade else fill.price),
        "qty": e8_to_str(fill.qty_lots * inst.lot_size_e8),
        "fee": e8_to_str(fill.fee_atoms),
        "liquidity": fill.liquidity,
        "realized_pnl": e8_to_str(fill.realized_atoms),
        "ts_ns": fill.ts_ns,
    }


def position_body(engine: Engine, account_id: int, p: PositionView) -> dict[str, Any]:
    """The SPEC §9 position shape, plus `funding`: what the position has received (+) or
    paid (-) in funding since it was opened (engine `Position.funding_atoms`)."""
    inst = engine.instruments[p.symbol]
    pos = engine.accounts[account_id].positions.get(p.symbol)
    return {
        "symbol": p.symbol,
        "size": e8_to_str(p.size_lots * inst.lot_size_e8),
        "entry_price": e8_to_str(p.entry_price_e8),
        "mark_price": e8_to_str(p.mark_ticks * inst.tick_size_e8),
        "unrealized_pnl": money_str(p.unrealized_pnl_atoms),
        "liquidation_price": e8_str(p.liquidation_price_e8),
        "leverage": p.leverage,
        "adl_quantile": p.adl_quantile,
        "funding": money_str(pos.funding_atoms if pos is not None else 0),
        "margin_mode": p.margin_mode,
        "isolated_margin": money_str(p.isolated_margin_atoms),
    }


def account_body(engine: Engine, account_id: int) -> dict[str, Any]:
    """The SPEC §9 account shape (GET /v1/account and GET /v1/admin/accounts/{id})."""
    v = account_view(engine, account_id)
    return {
        "account_id": v.account_id,
        "wallet_balance": money_str(v.wallet_balance_atoms),
        "equity": money_str(v.equity_atoms),
        "maintenance_margin": money_str(v.maintenance_margin_atoms),
        "initial_margin": money_str(v.initial_margin_atoms),
        "available": money_str(v.available_atoms),
        "cross_equity": money_str(v.cross_equity_atoms),
        "cross_maintenance_margin": money_str(v.cross_maintenance_margin_atoms),
        "positions": [position_body(engine, account_id, p) for p in v.positions],
    }
