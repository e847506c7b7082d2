"""Binance USDⓈ-M shapes of engine state: symbols, orders, trades, positions, balances.

Everything here reads engine state between two commands (or engine events) and renders it
the way Binance's documented responses do: decimal strings, times in milliseconds, enum
values in upper case. Nothing here changes state.

Symbols: an engine symbol `BASE-PERP` is `BASEUSD` here (`BTC-PERP` <-> `BTCUSD`), with base
asset BASE and quote and margin asset `USD`; other engine names lose their dashes and get
`USD` appended. The mapping is built once from the engine's instruments.

Orders: engine statuses map to Binance's (`new` NEW, `partially_filled` PARTIALLY_FILLED,
`filled` FILLED; `canceled` is EXPIRED for an IOC / FOK / market order whose rest the engine
canceled, CANCELED otherwise). Post-only GTC orders show `timeInForce` GTX. Engine STP modes
show as EXPIRE_TAKER / EXPIRE_MAKER / EXPIRE_BOTH. Orders placed without a client order id
show `clientOrderId` "".

Stop and take-profit orders (SPEC §12): the engine's `stop_limit` / `stop_market` /
`take_profit_limit` / `take_profit_market` are Binance's STOP / STOP_MARKET / TAKE_PROFIT /
TAKE_PROFIT_MARKET (`type` and `origType`), with `stopPrice` the trigger price, `workingType`
MARK_PRICE (trigger by mark) or CONTRACT_PRICE (by last trade) and `closePosition`. An
untriggered one is NEW, as Binance shows them; one refused when it triggered is EXPIRED.
The algo-order shape (`algo_order`, `POST /fapi/v1/algoOrder`) shows the same order with
`algoId` = its order id and `algoStatus` NEW (untriggered), CANCELED (canceled before it
triggered), EXPIRED (refused at trigger) or TRIGGERED (`actualOrderId` is the same id).

Isolated margin (SPEC §12): a position in an isolated symbol shows `isolated` true /
`marginType` isolated, `isolatedWallet` its margin and `isolatedMargin` margin + upnl (both
"0" for a cross one); its `positionInitialMargin` is its margin. Account totals follow
Binance: `totalWalletBalance` = the cross wallet plus the isolated margins, unrealized PnL
and maintenance over every position, `totalCrossWalletBalance` / `totalCrossUnPnl` the
cross part, `availableBalance` the engine's (cross) available.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from engine.accounts import Fill
from engine.book import Order
from engine.engine import Engine
from engine.instruments import Instrument
from engine.risk import (
    available_atoms,
    equity_atoms,
    initial_margin_atoms,
    leverage_of,
    liquidation_price_frac,
    total_equity_atoms,
    total_maintenance_atoms,
    worst_case_lots,
)
from engine.units import E8, div_ceil, div_half_even, e8_to_str

ASSET = "USD"
NS_PER_MS = 1_000_000

STATUS = {
    "new": "NEW", "partially_filled": "PARTIALLY_FILLED", "filled": "FILLED",
    "untriggered": "NEW",  # SPEC §12: Binance shows an untriggered conditional order as NEW
    "rejected": "EXPIRED",  # a stop refused when it triggered
}
# engine order type <-> Binance order type
TYPE_OUT = {
    "limit": "LIMIT", "market": "MARKET", "stop_limit": "STOP", "stop_market": "STOP_MARKET",
    "take_profit_limit": "TAKE_PROFIT", "take_profit_market": "TAKE_PROFIT_MARKET",
}
TYPE_IN = {v: k for k, v in TYPE_OUT.items()}
WORKING_TYPE_IN = {"MARK_PRICE": "mark", "CONTRACT_PRICE": "last"}  # Binance's default: CONTRACT_PRICE
WORKING_TYPE_OUT = {v: k for k, v in WORKING_TYPE_IN.items()}
STP_OUT = {"cancel_taker": "EXPIRE_TAKER", "cancel_maker": "EXPIRE_MAKER", "cancel_both": "EXPIRE_BOTH"}
STP_IN = {
    "NONE": "cancel_taker",  # the engine never lets an order trade with its own account
    "EXPIRE_TAKER": "cancel_taker",
    "EXPIRE_MAKER": "cancel_maker",
    "EXPIRE_BOTH": "cancel_both",
}


def now_ms() -> int:
    return time.time_ns() // NS_PER_MS


def ms(ts_ns: int) -> int:
    return ts_ns // NS_PER_MS


def binance_symbol(engine_symbol: str) -> str:
    """`BTC-PERP` -> `BTCUSD` (see the module docstring)."""
    base = engine_symbol[: -len("-PERP")] if engine_symbol.endswith("-PERP") else engine_symbol
    return base.replace("-", "").upper() + ASSET


class Venue:
    """The symbol map of one engine and the renderers that need it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.to_engine: dict[str, str] = {}
        self.to_binance: dict[str, str] = {}
        self.base: dict[str, str] = {}
        for symbol in engine.symbols:
            name = binance_symbol(symbol)
            self.to_engine[name] = symbol
            self.to_binance[symbol] = name
            self.base[symbol] = name[: -len(ASSET)]

    # -- numbers -----------------------------------------------------------------------------

    def price(self, inst: Instrument, ticks: int | None) -> str:
        return "0" if ticks is None else e8_to_str(ticks * inst.tick_size_e8)

    def qty(self, inst: Instrument, lots: int) -> str:
        return e8_to_str(lots * inst.lot_size_e8)

    # -- orders ------------------------------------------------------------------------------

    def order_status(self, order: Order) -> str:
        status = STATUS.get(order.status)
        if status is not None:
            return status
        if order.price_ticks is None or order.time_in_force != "GTC":  # market-like: its rest expired
            return "EXPIRED"
        return "CANCELED"

    def stop_fields(self, order: Order) -> tuple[str, str, str, bool]:
        """(Binance type, stopPrice, workingType, closePosition) of an order."""
        kind = TYPE_OUT.get(order.order_type, "LIMIT")
        if order.trigger_price_ticks is None:
            return kind, "0", "CONTRACT_PRICE", False
        inst = self.engine.instruments[order.symbol]
        return kind, self.price(inst, order.trigger_price_ticks), WORKING_TYPE_OUT[order.trigger_by], order.close_position

    def algo_status(self, order: Order) -> str:
        """`algoStatus` of a conditional order (module docstring)."""
        if order.status == "untriggered":
            return "NEW"
        if order.status == "rejected":
            return "EXPIRED"
        if order.status == "canceled" and order.filled_lots == 0 and self.order_status(order) == "CANCELED":
            return "CANCELED"
        return "TRIGGERED"

    def algo_order(self, order: Order) -> dict[str, Any]:
        """A conditional order as Binance's algo-order endpoints show it (`/fapi/v1/algoOrder`)."""
        inst = self.engine.instruments[order.symbol]
        kind, stop_price, working, close = self.stop_fields(order)
        status = self.algo_status(order)
        ts = ms(order.ts_ns)
        return {
            "algoId": order.order_id,
            "clientAlgoId": order.client_order_id or "",
            "algoType": "CONDITIONAL",
            "orderType": kind,
            "symbol": self.to_binance[order.symbol],
            "side": order.side.upper(),
            "positionSide": "BOTH",
            "timeInForce": "GTX" if order.post_only else order.time_in_force,
            "quantity": self.qty(inst, order.qty_lots),
            "algoStatus": status,
            "actualOrderId": str(order.order_id) if status == "TRIGGERED" else "",
            "actualPrice": self._avg(order, inst) if status == "TRIGGERED" else "0",
            "triggerPrice": stop_price,
            "price": self.price(inst, order.price_ticks),
            "icebergQuantity": None,
            "selfTradePreventionMode": STP_OUT.get(order.stp, "NONE"),
            "workingType": working,
            "priceMatch": "NONE",
            "closePosition": close,
            "priceProtect": False,
            "reduceOnly": order.reduce_only,
            "createTime": ts,
            "updateTime": ts,
            "triggerTime": 0,
            "goodTillDate": 0,
        }

    def _avg(self, order: Order, inst: Instrument) -> str:
        if not order.filled_lots:
            return "0"
        return e8_to_str(div_half_even(order.filled_value_ticks * inst.tick_size_e8, order.filled_lots))

    def order(self, order: Order, cum_qty: bool = False, with_time: bool = True) -> dict[str, Any]:
        """An order as `GET /fapi/v1/order` shows it (`cum_qty`: the new/cancel answer's `cumQty`)."""
        inst = self.engine.instruments[order.symbol]
        filled = order.filled_lots
        avg = self._avg(order, inst)
        order_type, stop_price, working, close = self.stop_fields(order)
        ts = ms(order.ts_ns)
        out: dict[str, Any] = {
            "orderId": order.order_id,
            "symbol": self.to_binance[order.symbol],
            "status": self.order_status(order),
            "clientOrderId": order.client_order_id or "",
            "price": self.price(inst, order.price_ticks),
            "avgPrice": avg,
            "origQty": self.qty(inst, order.qty_lots),
            "executedQty": self.qty(inst, filled),
        }
        if cum_qty:
            out["cumQty"] = out["executedQty"]
        out.update(
            {
                "cumQuote": e8_to_str(order.filled_value_ticks * inst.atoms_per_lot_tick),
                "timeInForce": "GTX" if order.post_only else order.time_in_force,
                "type": order_type,
                "reduceOnly": order.reduce_only,
                "closePosition": close,
                "side": order.side.upper(),
                "positionSide": "BOTH",
                "stopPrice": stop_price,
                "workingType": working,
                "priceProtect": False,
                "origType": order_type,
                "priceMatch": "NONE",
                "selfTradePreventionMode": STP_OUT.get(order.stp, "NONE"),
                "goodTillDate": 0,
            }
        )
        if with_time:
            out["time"] = ts
        out["updateTime"] = ts
        return out

    # -- trades ------------------------------------------------------------------------------

    def user_trade(self, fill: Fill) -> dict[str, Any]:
        """One of the account's fills as `GET /fapi/v1/userTrades` shows it.

        Book trades keep their trade and order ids. Liquidation takeovers and ADL closes have
        neither in the engine: both show the fill's time in microseconds as `id` and
        `orderId` (the WebSocket shows the event's seq instead, see user_stream.py)."""
        inst = self.engine.instruments[fill.symbol]
        book = fill.liquidity in ("maker", "taker")
        price_e8 = fill.price * inst.tick_size_e8 if book else fill.price
        qty_e8 = fill.qty_lots * inst.lot_size_e8
        synthetic = fill.ts_ns // 1000
        return {
            "buyer": fill.side == "buy",
            "commission": e8_to_str(fill.fee_atoms),
            "commissionAsset": ASSET,
            "id": fill.trade_id if fill.trade_id is not None else synthetic,
            "maker": fill.liquidity == "maker",
            "orderId": fill.order_id if fill.order_id is not None else synthetic,
            "price": e8_to_str(price_e8),
            "qty": e8_to_str(qty_e8),
            "quoteQty": e8_to_str(div_half_even(price_e8 * qty_e8, E8)),
            "realizedPnl": e8_to_str(fill.realized_atoms),
            "side": fill.side.upper(),
            "positionSide": "BOTH",
            "symbol": self.to_binance[fill.symbol],
            "time": ms(fill.ts_ns),
        }

    # -- account -----------------------------------------------------------------------------

    def position_rows(self, account_id: int, symbols: Iterable[str]) -> list[dict[str, Any]]:
        """Margin numbers per symbol (engine units), for the account and position routes.

        An isolated symbol (SPEC §12) has `isolated` True, `iso_wallet` its margin (Binance's
        `isolatedWallet`), `iso_margin` margin + upnl (`isolatedMargin`), and `pos_im` = its
        margin; `order_im` is, as for a cross one, what its open orders could add."""
        engine = self.engine
        acct = engine.accounts[account_id]
        iso = acct.isolated
        rows = []
        for symbol in symbols:
            inst = engine.instruments[symbol]
            mark = engine.marks.get(symbol)
            pos = acct.positions.get(symbol)
            size = pos.size_lots if pos is not None else 0
            entry_value = pos.entry_value_atoms if pos is not None else 0
            lev = leverage_of(acct, inst)
            b, s = acct.open_lots(symbol)
            k = inst.atoms_per_lot_tick
            m = mark or 0
            notional = size * m * k
            pos_im = div_ceil(abs(size) * m * k, lev)
            total_im = div_ceil(worst_case_lots(size, b, s) * m * k, lev)
            isolated = symbol in iso
            margin = iso.get(symbol, 0)
            upnl = notional - entry_value if size else 0
            liq = None
            if size and mark is not None:
                frac = liquidation_price_frac(acct, symbol, engine.instruments, engine.marks)
                if frac is not None:
                    liq = div_half_even(frac[0] * inst.tick_size_e8, frac[1])
            rows.append(
                {
                    "symbol": symbol,
                    "inst": inst,
                    "size": size,
                    "entry_value": entry_value,
                    "entry_e8": div_half_even(entry_value * E8, size * inst.lot_size_e8) if size else 0,
                    "mark": mark,
                    "upnl": upnl,
                    "notional": notional,
                    "leverage": lev,
                    "pos_im": margin if isolated else pos_im,
                    "order_im": total_im - pos_im,
                    "isolated": isolated,
                    "iso_wallet": margin,
                    "iso_margin": margin + upnl if isolated else 0,
                    "maint": inst.maintenance_atoms(notional),
                    "liq_e8": liq,
                    "bid_notional": b * m * k,
                    "ask_notional": s * m * k,
                    "max_notional": inst.tiers[-1].max_notional_atoms,
                }
            )
        return rows

    def totals(self, account_id: int) -> dict[str, int]:
        """Account totals (engine units), as Binance adds them up (SPEC §12 isolated margin):
        `wallet` = the cross wallet plus the isolated margins, `upnl` / `equity` / `maint`
        over every position, `cross_wallet` / `cross_upnl` the cross part alone, `available`
        the engine's (cross) available; an isolated position's initial margin is its margin.
        Without isolated symbols the cross and total numbers are the same."""
        engine = self.engine
        acct = engine.accounts[account_id]
        ins, marks = engine.instruments, engine.marks
        iso = acct.isolated
        cross_equity = equity_atoms(acct, ins, marks)
        equity = total_equity_atoms(acct, ins, marks) if iso else cross_equity
        available = available_atoms(acct, ins, marks)
        iso_margins = sum(iso.values())
        wallet = acct.wallet_atoms + iso_margins
        pos_im = 0
        for symbol, pos in acct.positions.items():
            if symbol in iso:
                pos_im += iso[symbol]
                continue
            inst = ins[symbol]
            pos_im += div_ceil(abs(pos.size_lots) * marks[symbol] * inst.atoms_per_lot_tick, leverage_of(acct, inst))
        # IM + open loss: what availableBalance is net of, plus the isolated margins set aside
        initial = cross_equity - available + iso_margins
        return {
            "wallet": wallet,
            "upnl": equity - wallet,
            "equity": equity,
            "cross_wallet": acct.wallet_atoms,
            "cross_upnl": cross_equity - acct.wallet_atoms,
            "maint": total_maintenance_atoms(acct, ins, marks),
            "initial": initial,
            "engine_im": initial_margin_atoms(acct, ins, marks),
            "pos_im": pos_im,
            "order_im": initial - pos_im,
            "available": available,
            "max_withdraw": max(0, min(available, acct.wallet_atoms)),
        }

    def update_time(self, account_id: int) -> int:
        """A non-zero `updateTime` for the account's asset row (its last fill, else now):
        ccxt drops asset rows whose updateTime is 0."""
        fills = self.engine.accounts[account_id].fills
        return ms(fills[-1][1]) if fills else now_ms()  # Fill.ts_ns
