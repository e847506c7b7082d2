"""Rejection reasons: stable UPPER_SNAKE names with numeric codes grouped by module.

1xxx validation (stateless), 2xxx risk (margin, balances, reduce-only),
3xxx matching / order book, 4xxx accounts and admin.
A rejection is a value: the engine returns it and changes nothing else.
Exceptions (`InvariantViolation`) are reserved for broken invariants; the engine stops then.
"""

from __future__ import annotations

from enum import IntEnum


class Reject(IntEnum):
    """Why a command was refused. The name is the API `error`, the value its `code`."""

    # 1xxx validation
    INVALID_SYMBOL = 1001
    INVALID_SIDE = 1002
    INVALID_ORDER_TYPE = 1003
    INVALID_QUANTITY = 1004
    INVALID_PRICE = 1005
    INVALID_TIME_IN_FORCE = 1006
    INVALID_STP = 1007
    INVALID_AMOUNT = 1008
    INVALID_LEVERAGE = 1009
    INVALID_ADL_POLICY = 1010
    INVALID_CLIENT_ORDER_ID = 1011
    PRICE_REQUIRED = 1012
    PRICE_NOT_ALLOWED = 1013
    POST_ONLY_NOT_ALLOWED = 1014
    INVALID_FUNDING_RATE = 1015
    INVALID_TRIGGER_PRICE = 1016
    INVALID_TRIGGER_BY = 1017
    INVALID_MARGIN_MODE = 1018
    TRIGGER_NOT_ALLOWED = 1019
    # 2xxx risk
    INSUFFICIENT_MARGIN = 2001
    INSUFFICIENT_BALANCE = 2002
    NOTHING_TO_REDUCE = 2003
    LEVERAGE_TOO_HIGH_FOR_POSITION = 2004
    PRICE_OUT_OF_BAND = 2005
    ORDER_TOO_LARGE = 2006
    RISK_LIMIT_EXCEEDED = 2007
    POSITION_OR_ORDERS_OPEN = 2008
    NOT_ISOLATED = 2009
    NO_POSITION = 2010
    # 3xxx matching
    NO_MARK_PRICE = 3001
    WOULD_TAKE = 3002
    ORDER_NOT_FOUND = 3003
    DUPLICATE_CLIENT_ORDER_ID = 3004
    TOO_MANY_OPEN_ORDERS = 3005
    NOTHING_TO_AMEND = 3006
    WOULD_TRIGGER_IMMEDIATELY = 3007
    # 4xxx accounts
    ACCOUNT_NOT_FOUND = 4001
    ACCOUNT_EXISTS = 4002
    MARK_SOURCE_IS_INDEX = 4003


class InvariantViolation(RuntimeError):
    """A broken engine invariant. The engine must stop; state is no longer trustworthy."""


class Rejected(Exception):
    """Internal control flow: a validation step refused the command (never escapes apply)."""

    def __init__(self, reason: Reject, message: str = "", order_id: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message or reason.name.replace("_", " ").lower()
        self.order_id = order_id
