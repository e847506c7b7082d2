"""The `/fapi` REST routes: Binance USDⓈ-M market data, trading and account endpoints.

Each handler takes a `Call` (the parsed, authenticated request, api/binance/edge.py) and
returns plain data that the edge serialises, or raises `BinanceError`. Reads look at engine
state directly (between two commands, like the /v1 routes); commands go through the same
single-writer engine loop as /v1 (`Services.loop.submit`), so they are journaled, published
and fanned out exactly like /v1 commands. Every value is checked here, before a command is
built: a refused request never reaches the engine or the journal.

What is not Binance here (docs/binance.md): one asset `USD`; one-way mode only (positionSide
BOTH); no trailing stops (-4136); no GTD; no auto-add margin; `ticker/24hr` counts the trades
the engine keeps (the last 1,000 per symbol) of the last 24 h.

Isolated margin (SPEC §12): `POST /fapi/v1/marginType` (CROSSED / ISOLATED per symbol, with
no position and no open orders in it) and `POST /fapi/v1/positionMargin` (add / reduce an
isolated position's margin) with Binance's error codes; positions and account totals show
isolated positions the way Binance does (account.py, views.py).

Stop and take-profit orders (SPEC §12): STOP, STOP_MARKET, TAKE_PROFIT, TAKE_PROFIT_MARKET
with `stopPrice`, `workingType` (CONTRACT_PRICE, Binance's default: the last trade price;
MARK_PRICE: the mark) and `closePosition`, on `POST /fapi/v1/order` (the classic API: the
order keeps its id when it triggers, and shows in `openOrders` as NEW with its stopPrice) and
on the algo-order endpoints ccxt 4.5 uses for conditional orders (`POST/GET/DELETE
/fapi/v1/algoOrder`, `GET /fapi/v1/openAlgoOrders`, `GET /fapi/v1/allAlgoOrders`, `DELETE
/fapi/v1/algoOpenOrders`; `triggerPrice`, `clientAlgoId`, `algoId` = the order id). Both are
the same engine orders: each endpoint family sees every stop of the account.

This module is the route table (`ROUTES`, read by edge.py). The handlers are in market.py
(market data, NONE), trading.py (orders and algo orders, SIGNED) and account.py (account,
positions, margin, listen keys); `Route` and the helpers they share are in common.py.
"""

from __future__ import annotations

from api.binance.account import (
    account_v2,
    account_v3,
    adl_quantile,
    balance,
    capital_config,
    commission_rate,
    leverage_bracket,
    listen_key_close,
    listen_key_keepalive,
    listen_key_new,
    margin_pairs,
    margin_type,
    position_margin,
    position_risk_v2,
    position_risk_v3,
    position_side_dual,
    set_leverage,
    set_position_side_dual,
    symbol_config,
)
from api.binance.common import Route
from api.binance.market import (
    agg_trades,
    book_ticker,
    depth,
    exchange_info,
    funding_info,
    funding_rate_history,
    open_interest,
    ping,
    premium_index,
    server_time,
    ticker_24hr,
    ticker_price,
    trades,
)
from api.binance.trading import (
    algo_order,
    all_algo_orders,
    all_orders,
    cancel_algo_open_orders,
    cancel_algo_order,
    cancel_all,
    cancel_order,
    new_order,
    open_algo_orders,
    open_orders,
    query_algo_order,
    query_order,
    user_trades,
)

# -- the table ---------------------------------------------------------------------------------

_SYM = frozenset(("symbol",))
_ORDER = frozenset(
    (
        "symbol", "side", "type", "quantity", "price", "timeInForce", "reduceOnly", "newClientOrderId",
        "positionSide", "newOrderRespType", "selfTradePreventionMode", "closePosition", "workingType",
        "priceProtect", "priceMatch", "stopPrice", "activationPrice", "callbackRate", "goodTillDate",
    )
)
_FIND = frozenset(("symbol", "orderId", "origClientOrderId"))
_ALGO_FIND = frozenset(("symbol", "algoId", "clientAlgoId"))
_RANGE = frozenset(("symbol", "limit", "startTime", "endTime"))

ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/fapi/v1/ping"): Route(ping, "NONE"),
    ("GET", "/fapi/v1/time"): Route(server_time, "NONE"),
    ("GET", "/fapi/v1/exchangeInfo"): Route(exchange_info, "NONE"),
    ("GET", "/fapi/v1/depth"): Route(depth, "NONE", frozenset(("symbol", "limit"))),
    ("GET", "/fapi/v1/trades"): Route(trades, "NONE", frozenset(("symbol", "limit"))),
    ("GET", "/fapi/v1/aggTrades"): Route(agg_trades, "NONE", _RANGE | {"fromId"}),
    ("GET", "/fapi/v1/premiumIndex"): Route(premium_index, "NONE", _SYM),
    ("GET", "/fapi/v1/fundingRate"): Route(funding_rate_history, "NONE", _RANGE),
    ("GET", "/fapi/v1/fundingInfo"): Route(funding_info, "NONE"),
    ("GET", "/fapi/v1/ticker/24hr"): Route(ticker_24hr, "NONE", _SYM),
    ("GET", "/fapi/v1/ticker/price"): Route(ticker_price, "NONE", _SYM),
    ("GET", "/fapi/v2/ticker/price"): Route(ticker_price, "NONE", _SYM),
    ("GET", "/fapi/v1/ticker/bookTicker"): Route(book_ticker, "NONE", _SYM),
    ("GET", "/fapi/v1/openInterest"): Route(open_interest, "NONE", _SYM),
    ("GET", "/sapi/v1/capital/config/getall"): Route(capital_config, "SIGNED"),
    ("GET", "/sapi/v1/margin/allPairs"): Route(margin_pairs, "SIGNED"),
    ("POST", "/fapi/v1/order"): Route(new_order, "SIGNED", _ORDER),
    ("GET", "/fapi/v1/order"): Route(query_order, "SIGNED", _FIND),
    ("DELETE", "/fapi/v1/order"): Route(cancel_order, "SIGNED", _FIND),
    ("POST", "/fapi/v1/algoOrder"): Route(
        algo_order, "SIGNED", _ORDER | {"algoType", "triggerPrice", "clientAlgoId", "activatePrice"}
    ),
    ("GET", "/fapi/v1/algoOrder"): Route(query_algo_order, "SIGNED", _ALGO_FIND),
    ("DELETE", "/fapi/v1/algoOrder"): Route(cancel_algo_order, "SIGNED", _ALGO_FIND),
    ("GET", "/fapi/v1/openAlgoOrders"): Route(open_algo_orders, "SIGNED", _SYM | {"algoType"}),
    ("GET", "/fapi/v1/allAlgoOrders"): Route(all_algo_orders, "SIGNED", _RANGE | {"algoId", "page"}),
    ("DELETE", "/fapi/v1/algoOpenOrders"): Route(cancel_algo_open_orders, "SIGNED", _SYM),
    ("DELETE", "/fapi/v1/allOpenOrders"): Route(cancel_all, "SIGNED", _SYM),
    ("GET", "/fapi/v1/openOrders"): Route(open_orders, "SIGNED", _SYM),
    ("GET", "/fapi/v1/allOrders"): Route(all_orders, "SIGNED", _RANGE | {"orderId"}),
    ("GET", "/fapi/v1/userTrades"): Route(user_trades, "SIGNED", _RANGE | {"fromId", "orderId"}),
    ("GET", "/fapi/v2/account"): Route(account_v2, "SIGNED"),
    ("GET", "/fapi/v3/account"): Route(account_v3, "SIGNED"),
    ("GET", "/fapi/v2/balance"): Route(balance, "SIGNED"),
    ("GET", "/fapi/v3/balance"): Route(balance, "SIGNED"),
    ("GET", "/fapi/v2/positionRisk"): Route(position_risk_v2, "SIGNED", _SYM),
    ("GET", "/fapi/v3/positionRisk"): Route(position_risk_v3, "SIGNED", _SYM),
    ("GET", "/fapi/v1/leverageBracket"): Route(leverage_bracket, "SIGNED", _SYM),
    ("POST", "/fapi/v1/leverage"): Route(set_leverage, "SIGNED", frozenset(("symbol", "leverage"))),
    ("POST", "/fapi/v1/marginType"): Route(margin_type, "SIGNED", frozenset(("symbol", "marginType"))),
    ("POST", "/fapi/v1/positionMargin"): Route(
        position_margin, "SIGNED", frozenset(("symbol", "amount", "type", "positionSide"))
    ),
    ("GET", "/fapi/v1/adlQuantile"): Route(adl_quantile, "SIGNED", _SYM),
    ("GET", "/fapi/v1/positionSide/dual"): Route(position_side_dual, "SIGNED"),
    ("POST", "/fapi/v1/positionSide/dual"): Route(set_position_side_dual, "SIGNED", frozenset(("dualSidePosition",))),
    ("GET", "/fapi/v1/commissionRate"): Route(commission_rate, "SIGNED", _SYM),
    ("GET", "/fapi/v1/symbolConfig"): Route(symbol_config, "SIGNED", _SYM),
    ("POST", "/fapi/v1/listenKey"): Route(listen_key_new, "USER_STREAM"),
    ("PUT", "/fapi/v1/listenKey"): Route(listen_key_keepalive, "USER_STREAM", frozenset(("listenKey",))),
    ("DELETE", "/fapi/v1/listenKey"): Route(listen_key_close, "USER_STREAM", frozenset(("listenKey",))),
}
