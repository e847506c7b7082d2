"""Binance-style errors of the `/fapi` edge: `{"code": -NNNN, "msg": "..."}`.

How codes and messages are chosen. A ccxt bot learns what went wrong from the exception
class ccxt raises, and ccxt's `binanceusdm.handle_errors` picks that class, in this order:
a 418/429 status (DDoSProtection); the substrings `LOT_SIZE` / `PRICE_FILTER` anywhere in
the body (InvalidOrder); the `msg` in its exact and broad message tables; then the `code`
in its code tables. Binance's market-specific code table (`exceptions.linear`, where e.g.
-2019 "Margin is insufficient." is InsufficientFunds) is used only for responses from
Binance's own hosts; at our URL only the common tables apply. So, per rejection:

1. Binance's own code and message where the common table maps that code to the class
   Binance's host would give (-1021 InvalidNonce, -1022 AuthenticationError, -1121
   BadSymbol, -2011/-2013 OrderNotFound, -5022 InvalidOrder, -4xxx BadRequest, ...);
2. else Binance's code with a message from ccxt's exact message table that maps to that
   class (insufficient margin: -2019 with "Account has insufficient balance for requested
   action." -> InsufficientFunds);
3. else -2010 (NEW_ORDER_REJECTED, InvalidOrder everywhere) with Binance's message for
   order rejections that Binance's host classes as InvalidOrder (-2022 reduce-only, -4116
   duplicate client order id);
4. else Binance's code as is (ccxt then raises its parent class ExchangeError, as it
   would for an OperationRejected at Binance: -2025, -2027).

The engine's own message (with the amounts) is kept in an extra `detail` field where it
adds something; ccxt ignores it, people read it. HTTP statuses follow Binance: 400 for
rejections, 401 for a missing/unknown API key, 404 for an unknown route, 429 rate limits,
503 when the engine has halted.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import Reject


class BinanceError(Exception):
    """An error answer of the `/fapi` edge."""

    def __init__(
        self,
        code: int,
        msg: str,
        status: int = 400,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status
        self.detail = detail
        self.headers = headers

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.detail and self.detail != self.msg:
            out["detail"] = self.detail
        return out

    def payload(self) -> bytes:
        return orjson.dumps(self.body())


# -- edge errors (nothing reached the engine) ------------------------------------------------

def internal_error() -> BinanceError:
    return BinanceError(-1000, "An unknown error occurred while processing the request.", 500)


def too_many_requests(wait_s: str) -> BinanceError:
    return BinanceError(
        -1003,
        "Too many requests; current request has been limited; please use the websocket for live updates.",
        429,
        headers={"Retry-After": wait_s},
    )


def engine_halted(message: str) -> BinanceError:
    return BinanceError(-1001, "Internal error; unable to process your request. Please try again.", 503, message)


def unknown_route() -> BinanceError:
    return BinanceError(-5000, "Path not found.", 404)


def method_not_allowed() -> BinanceError:
    return BinanceError(-1020, "This operation is not supported.", 405)


def body_too_large(limit: int) -> BinanceError:
    return BinanceError(-1104, f"Request body above {limit} bytes.", 413)


def api_key_format() -> BinanceError:
    return BinanceError(-2014, "API-key format invalid.", 401)


def api_key_invalid() -> BinanceError:
    return BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def auth_throttled(wait_s: str) -> BinanceError:
    return BinanceError(
        -1003, "Too many failed authentications from this address.", 429, headers={"Retry-After": wait_s}
    )


def bad_signature() -> BinanceError:
    return BinanceError(-1022, "Signature for this request is not valid.")


def timestamp_outside_window() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")


def timestamp_ahead() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def replayed() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request was already used (a signed request is accepted once).")


def recv_window_too_large() -> BinanceError:
    return BinanceError(-1131, "recvWindow must be less than 60000")


def mandatory(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def illegal_chars(name: str) -> BinanceError:
    return BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]+(\\.[0-9]+)?$'.")


def duplicate_param(name: str) -> BinanceError:
    return BinanceError(-1101, f"Duplicate values for parameter '{name}'.")


def unknown_param(name: str) -> BinanceError:
    return BinanceError(-1104, f"Not all sent parameters were read; unknown parameter '{name}'.")


def invalid_value(name: str, why: str) -> BinanceError:
    return BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.", detail=why)


def invalid_symbol() -> BinanceError:
    return BinanceError(-1121, "Invalid symbol.")


def invalid_side() -> BinanceError:
    return BinanceError(-1117, "Invalid side.")


def invalid_order_type() -> BinanceError:
    return BinanceError(-1116, "Invalid orderType.")


def invalid_tif() -> BinanceError:
    return BinanceError(-1115, "Invalid timeInForce.")


def lot_size(detail: str) -> BinanceError:
    return BinanceError(-1013, "Filter failure: LOT_SIZE", detail=detail)


def price_filter(detail: str) -> BinanceError:
    return BinanceError(-1013, "Filter failure: PRICE_FILTER", detail=detail)


def quantity_too_large(detail: str) -> BinanceError:
    return BinanceError(-4005, "Quantity greater than max quantity.", detail=detail)


def trailing_not_supported() -> BinanceError:
    return BinanceError(
        -4136,
        "Trailing stop orders (TRAILING_STOP_MARKET, activationPrice, callbackRate) are not supported "
        "by this exchange: use STOP_MARKET / TAKE_PROFIT_MARKET (see docs/binance.md).",
    )


def unknown_order_query() -> BinanceError:
    return BinanceError(-2013, "Order does not exist.")


def unknown_order_cancel() -> BinanceError:
    return BinanceError(-2011, "Unknown order sent.")


def no_need_to_change_margin_type() -> BinanceError:
    return BinanceError(-4046, "No need to change margin type.")


def margin_type_position_open(detail: str | None = None) -> BinanceError:
    return BinanceError(-4048, "Margin type cannot be changed if there exists position.", detail=detail)


def margin_type_orders_open(detail: str | None = None) -> BinanceError:
    return BinanceError(-4047, "Margin type cannot be changed if there exists open orders.", detail=detail)


def amount_not_positive() -> BinanceError:
    return BinanceError(-4055, "Amount must be positive.")


# An engine refusal of `AdjustPositionMargin` -> Binance's codes for `POST /fapi/v1/positionMargin`
# (ccxt's common table: -4049 BadRequest, -4050 / -4051 InsufficientFunds, -4054 OperationRejected).
_POSITION_MARGIN: dict[Reject, tuple[int, str]] = {
    Reject.NOT_ISOLATED: (-4049, "Add margin only support for isolated position."),
    Reject.NO_POSITION: (-4054, "Cannot add position margin: position is 0."),
    Reject.INSUFFICIENT_BALANCE: (-4050, "Cross balance insufficient."),
    Reject.INSUFFICIENT_MARGIN: (-4051, "Isolated balance insufficient."),
}


def position_margin_rejection(event: Any) -> BinanceError:
    """The Binance error for an engine refusal of a position-margin change."""
    try:
        reason = Reject(event.code)
    except ValueError:
        return from_rejection(event)
    mapped = _POSITION_MARGIN.get(reason)
    if mapped is None:
        return from_rejection(event)
    return BinanceError(mapped[0], mapped[1], detail=f"{reason.name}: {event.message}")


def listen_key_unknown() -> BinanceError:
    return BinanceError(-1125, "This listenKey does not exist.")


def invalid_leverage(detail: str) -> BinanceError:
    return BinanceError(-4028, "Leverage is not valid", detail=detail)


def client_order_id_invalid() -> BinanceError:
    return BinanceError(-4015, "Client order id is not valid.")


# -- engine rejections -----------------------------------------------------------------------

# Reject -> (code, msg): the rule in the module docstring; the engine's message goes to `detail`.
_REJECTIONS: dict[Reject, tuple[int, str]] = {
    Reject.INVALID_SYMBOL: (-1121, "Invalid symbol."),
    Reject.INVALID_SIDE: (-1117, "Invalid side."),
    Reject.INVALID_ORDER_TYPE: (-1116, "Invalid orderType."),
    Reject.INVALID_QUANTITY: (-1013, "Filter failure: LOT_SIZE"),
    Reject.INVALID_PRICE: (-1013, "Filter failure: PRICE_FILTER"),
    Reject.INVALID_TIME_IN_FORCE: (-1115, "Invalid timeInForce."),
    Reject.INVALID_STP: (-5039, "Invalid self trade prevention mode"),
    Reject.INVALID_AMOUNT: (-4055, "Amount must be positive."),
    Reject.INVALID_LEVERAGE: (-4028, "Leverage is not valid"),
    Reject.INVALID_CLIENT_ORDER_ID: (-4015, "Client order id is not valid."),
    Reject.PRICE_REQUIRED: (-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed."),
    Reject.PRICE_NOT_ALLOWED: (-1106, "Parameter 'price' sent when not required."),
    Reject.POST_ONLY_NOT_ALLOWED: (-1014, "Unsupported order combination."),
    Reject.INSUFFICIENT_MARGIN: (-2019, "Account has insufficient balance for requested action."),
    Reject.INSUFFICIENT_BALANCE: (-2019, "Account has insufficient balance for requested action."),
    Reject.NOTHING_TO_REDUCE: (-2010, "ReduceOnly Order is rejected."),
    Reject.LEVERAGE_TOO_HIGH_FOR_POSITION: (-2027, "Exceeded the maximum allowable position at current leverage."),
    Reject.PRICE_OUT_OF_BAND: (-4016, "Limit price is outside of the allowed range around the mark price."),
    Reject.ORDER_TOO_LARGE: (-4005, "Quantity greater than max quantity."),
    Reject.RISK_LIMIT_EXCEEDED: (-2027, "Exceeded the maximum allowable position at current leverage."),
    Reject.NO_MARK_PRICE: (-1013, "Market is closed."),
    Reject.WOULD_TAKE: (-5022, "Due to the order could not be executed as maker, the Post Only order will be rejected."),
    Reject.ORDER_NOT_FOUND: (-2013, "Order does not exist."),
    Reject.DUPLICATE_CLIENT_ORDER_ID: (-2010, "ClientOrderId is duplicated."),
    Reject.TOO_MANY_OPEN_ORDERS: (-2025, "Reach max open order limit."),
    Reject.NOTHING_TO_AMEND: (-5027, "No need to modify the order."),
    # SPEC §12 stop and take-profit orders
    Reject.INVALID_TRIGGER_PRICE: (-1102, "Mandatory parameter 'stopPrice' was not sent, was empty/null, or malformed."),
    Reject.INVALID_TRIGGER_BY: (-4031, "Invalid workingType."),
    Reject.TRIGGER_NOT_ALLOWED: (-1106, "Parameter 'stopPrice' sent when not required."),
    Reject.WOULD_TRIGGER_IMMEDIATELY: (-2021, "Order would immediately trigger."),
    Reject.ACCOUNT_NOT_FOUND: (-2015, "Invalid API-key, IP, or permissions for action."),
    Reject.ACCOUNT_EXISTS: (-1000, "An unknown error occurred while processing the request."),
    Reject.MARK_SOURCE_IS_INDEX: (-1000, "An unknown error occurred while processing the request."),
    # SPEC §12 isolated margin (POST /fapi/v1/positionMargin maps its own, position_margin_rejection)
    Reject.POSITION_OR_ORDERS_OPEN: (-4048, "Margin type cannot be changed if there exists position."),
    Reject.INVALID_MARGIN_MODE: (-1130, "Data sent for parameter 'marginType' is not valid."),
    Reject.NOT_ISOLATED: (-4049, "Add margin only support for isolated position."),
    Reject.NO_POSITION: (-4054, "Cannot add position margin: position is 0."),
}


def from_rejection(event: Any) -> BinanceError:
    """The Binance error for an engine `OrderRejected` / `CommandRejected` event."""
    try:
        reason = Reject(event.code)
    except ValueError:
        return BinanceError(-1000, "An unknown error occurred while processing the request.", detail=event.message)
    code, msg = _REJECTIONS.get(reason, (-1000, "An unknown error occurred while processing the request."))
    detail = f"{reason.name}: {event.message}"
    if reason is Reject.DUPLICATE_CLIENT_ORDER_ID and event.order_id is not None:
        detail += f" (orderId {event.order_id})"
    return BinanceError(code, msg, detail=detail)
