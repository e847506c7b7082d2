"""Account routes of `/fapi` (SIGNED): account, balance, position risk, leverage and its
brackets, margin type, position margin, ADL quantile, position side, commission rate,
symbol config; the two `/sapi` asset reads ccxt asks for; listen keys (USER_STREAM).

One asset `USD`; one-way mode only (positionSide BOTH). Isolated margin (SPEC §12) as Binance
has it: `marginType` CROSSED / ISOLATED per symbol (-4046 when already so, -4048 with a
position, -4047 with open orders or untriggered stops), `positionMargin` adds (type 1) or
removes (type 2) an isolated position's margin (-4049 cross symbol, -4054 no position,
-4050 more than the cross available, -4051 below the initial margin at the mark, -4055 an
amount that is not positive). Positions show `isolated` / `marginType`, `isolatedWallet` (the
margin) and `isolatedMargin` (margin + upnl); the account totals add up as Binance's do
(views.py `Venue.totals`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.binance import errors as err
from api.binance.common import ppm, rejection, submit, symbol_of, symbols
from api.binance.signing import boolean, decimal_e8, integer
from api.binance.views import ASSET
from engine.accounts import Account
from engine.commands import (
    MARGIN_CROSS,
    MARGIN_ISOLATED,
    AdjustPositionMargin,
    SetLeverage,
    SetMarginMode,
)
from engine.engine import Engine
from engine.events import REJECTION_TYPES
from engine.units import E8, PPM, e8_to_str
from service.format import money_str

if TYPE_CHECKING:
    from api.binance.edge import Call


# -- asset reads ccxt asks for (SIGNED) ---------------------------------------------------------


async def capital_config(call: Call) -> Any:
    """`/sapi/v1/capital/config/getall`, minimally: the one asset, no networks."""
    available = call.venue.totals(call.account_id)["available"]
    return [
        {
            "coin": ASSET, "name": "US Dollar", "depositAllEnable": False, "withdrawAllEnable": False,
            "free": money_str(max(0, available)), "locked": "0", "freeze": "0", "withdrawing": "0",
            "ipoing": "0", "ipoable": "0", "storage": "0", "isLegalMoney": True, "trading": True,
            "networkList": [],
        }
    ]


async def margin_pairs(call: Call) -> Any:
    """`/sapi/v1/margin/allPairs` (ccxt asks it with `fetchCurrencies`): no spot margin here."""
    return []


# -- account (SIGNED) --------------------------------------------------------------------------


def _asset_row(call: Call, v2: bool) -> dict[str, Any]:
    t = call.venue.totals(call.account_id)
    row: dict[str, Any] = {
        "asset": ASSET,
        "walletBalance": money_str(t["wallet"]),
        "unrealizedProfit": money_str(t["upnl"]),
        "marginBalance": money_str(t["equity"]),
        "maintMargin": money_str(t["maint"]),
        "initialMargin": money_str(t["initial"]),
        "positionInitialMargin": money_str(t["pos_im"]),
        "openOrderInitialMargin": money_str(t["order_im"]),
        "crossWalletBalance": money_str(t["cross_wallet"]),
        "crossUnPnl": money_str(t["cross_upnl"]),
        "availableBalance": money_str(t["available"]),
        "maxWithdrawAmount": money_str(t["max_withdraw"]),
    }
    if v2:
        row["marginAvailable"] = True
    row["updateTime"] = call.venue.update_time(call.account_id)
    return row


def _account(call: Call, v2: bool) -> dict[str, Any]:
    venue = call.venue
    t = venue.totals(call.account_id)
    out: dict[str, Any] = {}
    if v2:
        out.update(
            {
                "feeTier": 0, "feeBurn": False, "canTrade": True, "canDeposit": True,
                "canWithdraw": True, "updateTime": 0, "multiAssetsMargin": False, "tradeGroupId": -1,
            }
        )
    out.update(
        {
            "totalInitialMargin": money_str(t["initial"]),
            "totalMaintMargin": money_str(t["maint"]),
            "totalWalletBalance": money_str(t["wallet"]),
            "totalUnrealizedProfit": money_str(t["upnl"]),
            "totalMarginBalance": money_str(t["equity"]),
            "totalPositionInitialMargin": money_str(t["pos_im"]),
            "totalOpenOrderInitialMargin": money_str(t["order_im"]),
            "totalCrossWalletBalance": money_str(t["cross_wallet"]),
            "totalCrossUnPnl": money_str(t["cross_upnl"]),
            "availableBalance": money_str(t["available"]),
            "maxWithdrawAmount": money_str(t["max_withdraw"]),
            "assets": [_asset_row(call, v2)],
        }
    )
    acct = call.engine.accounts[call.account_id]
    if v2:
        rows = venue.position_rows(call.account_id, call.engine.symbols)
    else:
        held = sorted(set(acct.positions) | set(acct.open_buy_lots) | set(acct.open_sell_lots))
        rows = venue.position_rows(call.account_id, held)
    positions = []
    for r in rows:
        inst = r["inst"]
        row: dict[str, Any] = {
            "symbol": venue.to_binance[r["symbol"]],
            "positionSide": "BOTH",
            "positionAmt": venue.qty(inst, r["size"]),
            "unrealizedProfit": money_str(r["upnl"]),
            "isolatedMargin": money_str(r["iso_margin"]),
            "notional": money_str(r["notional"]),
            "isolatedWallet": money_str(r["iso_wallet"]),
            "initialMargin": money_str(r["pos_im"] + r["order_im"]),
            "maintMargin": money_str(r["maint"]),
            "updateTime": 0,
        }
        if v2:
            row.update(
                {
                    "positionInitialMargin": money_str(r["pos_im"]),
                    "openOrderInitialMargin": money_str(r["order_im"]),
                    "leverage": str(r["leverage"]),
                    "isolated": r["isolated"],
                    "entryPrice": e8_to_str(r["entry_e8"]),
                    "breakEvenPrice": e8_to_str(r["entry_e8"]),
                    "maxNotional": money_str(r["max_notional"]),
                    "bidNotional": money_str(r["bid_notional"]),
                    "askNotional": money_str(r["ask_notional"]),
                }
            )
        positions.append(row)
    out["positions"] = positions
    return out


async def account_v2(call: Call) -> Any:
    return _account(call, v2=True)


async def account_v3(call: Call) -> Any:
    return _account(call, v2=False)


async def balance(call: Call) -> Any:
    row = _asset_row(call, v2=True)
    return [
        {
            "accountAlias": f"acct{call.account_id}",
            "asset": ASSET,
            "balance": row["walletBalance"],
            "crossWalletBalance": row["crossWalletBalance"],
            "crossUnPnl": row["crossUnPnl"],
            "availableBalance": row["availableBalance"],
            "maxWithdrawAmount": row["maxWithdrawAmount"],
            "marginAvailable": True,
            "updateTime": row["updateTime"],
        }
    ]


def _position_risk(call: Call, v2: bool) -> list[dict[str, Any]]:
    venue, engine = call.venue, call.engine
    acct = engine.accounts[call.account_id]
    symbol = symbol_of(call, required=False)
    if v2:
        symbols = [symbol] if symbol is not None else list(engine.symbols)
    else:
        symbols = [s for s in ([symbol] if symbol is not None else engine.symbols) if s in acct.positions]
    quantiles = {s: engine.adl_quantiles(s).get(call.account_id, 0) for s in symbols if s in acct.positions}
    out = []
    for r in venue.position_rows(call.account_id, symbols):
        inst = r["inst"]
        common: dict[str, Any] = {
            "symbol": venue.to_binance[r["symbol"]],
            "positionSide": "BOTH",
            "positionAmt": venue.qty(inst, r["size"]),
            "entryPrice": e8_to_str(r["entry_e8"]),
            "breakEvenPrice": e8_to_str(r["entry_e8"]),
            "markPrice": venue.price(inst, r["mark"]),
            "unRealizedProfit": money_str(r["upnl"]),
            "liquidationPrice": "0" if r["liq_e8"] is None else e8_to_str(r["liq_e8"]),
            "isolatedMargin": money_str(r["iso_margin"]),
            "notional": money_str(r["notional"]),
        }
        if v2:
            common.update(
                {
                    "marginType": "isolated" if r["isolated"] else "cross",
                    "isAutoAddMargin": "false",
                    "leverage": str(r["leverage"]),
                    "maxNotionalValue": money_str(r["max_notional"]),
                    "isolatedWallet": money_str(r["iso_wallet"]),
                    "updateTime": 0,
                }
            )
        else:
            common.update(
                {
                    "marginAsset": ASSET,
                    "isolatedWallet": money_str(r["iso_wallet"]),
                    "initialMargin": money_str(r["pos_im"] + r["order_im"]),
                    "maintMargin": money_str(r["maint"]),
                    "positionInitialMargin": money_str(r["pos_im"]),
                    "openOrderInitialMargin": money_str(r["order_im"]),
                    "adl": quantiles.get(r["symbol"], 0),
                    "bidNotional": money_str(r["bid_notional"]),
                    "askNotional": money_str(r["ask_notional"]),
                    "updateTime": venue.update_time(call.account_id),
                }
            )
        out.append(common)
    return out


async def position_risk_v2(call: Call) -> Any:
    return _position_risk(call, v2=True)


async def position_risk_v3(call: Call) -> Any:
    return _position_risk(call, v2=False)


async def leverage_bracket(call: Call) -> Any:
    engine, venue = call.engine, call.venue

    def render(symbol: str) -> dict[str, Any]:
        inst = engine.instruments[symbol]
        brackets = []
        floor = 0
        for i, tier in enumerate(inst.tiers, 1):
            brackets.append(
                {
                    "bracket": i,
                    "initialLeverage": min(tier.max_leverage, inst.max_leverage),
                    "notionalCap": tier.max_notional_atoms // E8,
                    "notionalFloor": floor // E8,
                    "maintMarginRatio": tier.maintenance_ppm / PPM,
                    "cum": tier.maintenance_amount_atoms / E8,
                }
            )
            floor = tier.max_notional_atoms
        return {"symbol": venue.to_binance[symbol], "notionalCoef": 1.0, "brackets": brackets}

    symbol = symbol_of(call, required=False)
    return [render(s) for s in ([symbol] if symbol is not None else engine.symbols)]


async def set_leverage(call: Call) -> Any:
    symbol = symbol_of(call)
    assert symbol is not None
    lev = integer(call.params, "leverage", required=True, low=1, high=125)
    inst = call.engine.instruments[symbol]
    assert lev is not None
    if lev > inst.max_leverage:
        raise err.invalid_leverage(f"leverage must be within 1..{inst.max_leverage}")
    venue = call.venue

    def done(engine: Engine, events: list[Any]) -> Any:
        rejected = rejection(events)
        if rejected is not None:
            return rejected
        return {"leverage": events[0].leverage, "maxNotionalValue": money_str(inst.tiers[-1].max_notional_atoms),
                "symbol": venue.to_binance[symbol]}

    return await submit(call, SetLeverage(call.account_id, symbol, lev), done)


_MARGIN_TYPE_IN = {"CROSSED": MARGIN_CROSS, "ISOLATED": MARGIN_ISOLATED}


def _margin_type_blocker(acct: Account, symbol: str) -> err.BinanceError | None:
    """What keeps `symbol`'s margin type from changing: a position (-4048), else open orders
    or untriggered stops (-4047); None when nothing does."""
    if symbol in acct.positions:
        return err.margin_type_position_open()
    if (
        symbol in acct.open_buy_lots
        or symbol in acct.open_sell_lots
        or any(o.symbol == symbol for o in acct.stop_orders.values())
    ):
        return err.margin_type_orders_open()
    return None


async def margin_type(call: Call) -> Any:
    """POST /fapi/v1/marginType: CROSSED / ISOLATED (SPEC §12). The same type again is -4046
    (ccxt's MarginModeAlreadySet); a position -4048, open orders -4047, decided here from
    engine state before the command is built (the engine checks again)."""
    symbol = symbol_of(call)
    assert symbol is not None
    value = call.params.get("marginType")
    mode = _MARGIN_TYPE_IN.get(value or "")
    if mode is None:
        raise err.mandatory("marginType") if not value else err.invalid_value("marginType", "CROSSED or ISOLATED")
    acct = call.engine.accounts[call.account_id]
    current = MARGIN_ISOLATED if symbol in acct.isolated else MARGIN_CROSS
    if mode == current:
        raise err.no_need_to_change_margin_type()
    blocked = _margin_type_blocker(acct, symbol)
    if blocked is not None:
        raise blocked
    account_id = call.account_id

    def done(engine: Engine, events: list[Any]) -> Any:
        rejected = rejection(events)
        if rejected is not None:
            if rejected.code == -4048 and symbol not in engine.accounts[account_id].positions:  # orders, not a position
                return err.margin_type_orders_open(rejected.detail)
            return rejected
        return {"code": 200, "msg": "success"}

    return await submit(call, SetMarginMode(call.account_id, symbol, mode), done)


async def position_margin(call: Call) -> Any:
    """POST /fapi/v1/positionMargin: `type` 1 adds `amount` to the isolated position's margin,
    2 removes it (SPEC §12); engine refusals get Binance's codes (errors.position_margin_rejection)."""
    p = call.params
    symbol = symbol_of(call)
    assert symbol is not None
    kind = p.get("type")
    if kind not in ("1", "2"):
        raise err.mandatory("type") if not kind else err.invalid_value("type", "1 (add margin) or 2 (reduce margin)")
    if p.get("positionSide", "BOTH") != "BOTH":
        raise err.BinanceError(-4061, "Order's position side does not match user's setting.")
    text = p.get("amount") or ""
    if text.startswith("-") and decimal_e8({"amount": text[1:]}, "amount") is not None:
        raise err.amount_not_positive()
    amount = decimal_e8(p, "amount", required=True)
    assert amount is not None
    if amount < 0:  # more than 8 decimals
        raise err.BinanceError(-1111, "Precision is over the maximum defined for this asset.",
                               detail="amount has at most 8 decimals")
    if amount == 0:
        raise err.amount_not_positive()
    add = kind == "1"

    def done(engine: Engine, events: list[Any]) -> Any:
        if events and isinstance(events[0], REJECTION_TYPES):
            return err.position_margin_rejection(events[0])
        return {"amount": amount / E8, "code": 200, "msg": "Successfully modify position margin.", "type": 1 if add else 2}

    command = AdjustPositionMargin(call.account_id, symbol, amount if add else -amount)
    return await submit(call, command, done)


async def adl_quantile(call: Call) -> Any:
    engine, venue = call.engine, call.venue
    acct = engine.accounts[call.account_id]
    out = []
    for symbol in symbols(call):
        size = acct.size(symbol)
        q = engine.adl_quantiles(symbol).get(call.account_id, 0) if size else 0
        out.append(
            {
                "symbol": venue.to_binance[symbol],
                "adlQuantile": {"LONG": q if size > 0 else 0, "SHORT": q if size < 0 else 0, "BOTH": q},
            }
        )
    return out


async def position_side_dual(call: Call) -> Any:
    return {"dualSidePosition": False}


async def set_position_side_dual(call: Call) -> Any:
    if boolean(call.params, "dualSidePosition"):
        raise err.BinanceError(-4068, "Hedge mode is not supported: one-way mode only (see docs/binance.md).")
    raise err.BinanceError(-4059, "No need to change position side.")


async def commission_rate(call: Call) -> Any:
    symbol = symbol_of(call)
    assert symbol is not None
    inst = call.engine.instruments[symbol]
    return {
        "symbol": call.venue.to_binance[symbol],
        "makerCommissionRate": ppm(inst.maker_fee_ppm),
        "takerCommissionRate": ppm(inst.taker_fee_ppm),
    }


async def symbol_config(call: Call) -> Any:
    engine, venue = call.engine, call.venue
    acct = engine.accounts[call.account_id]
    return [
        {
            "symbol": venue.to_binance[s],
            "marginType": "ISOLATED" if s in acct.isolated else "CROSSED",
            "isAutoAddMargin": False,
            "leverage": acct.leverage.get(s, engine.instruments[s].default_leverage),
            "maxNotionalValue": money_str(engine.instruments[s].tiers[-1].max_notional_atoms),
        }
        for s in symbols(call)
    ]


# -- user data stream (USER_STREAM) ------------------------------------------------------------


async def listen_key_new(call: Call) -> Any:
    return {"listenKey": call.edge.streams.listen_keys.open(call.account_id)}


async def listen_key_keepalive(call: Call) -> Any:
    key = call.params.get("listenKey") or None
    found = call.edge.streams.listen_keys.keepalive(call.account_id, key)
    if found is None:
        raise err.listen_key_unknown()
    return {"listenKey": found}


async def listen_key_close(call: Call) -> Any:
    call.edge.streams.close_listen_key(call.account_id, call.params.get("listenKey") or None)
    return {}
