"""Request and response schemas of the HTTP API, separate from the engine's types.

Strict input (SPEC §1), enforced here, before anything reaches the engine or the journal:

- Decimals (`price`, `qty`, `amount`) are strings matching `^[0-9]+(\\.[0-9]+)?$`
  (`DECIMAL_PATTERN`: no sign, exponent, whitespace, `_` or leading/trailing dot, ASCII
  digits only, at most 64 characters) with at most 8 significant decimals ("1.50000000000"
  is fine, "1.000000001" is not), positive, and below 10^15. Fields signed by nature (a
  funding rate, a position-margin amount) use `SignedAmount`: the same with an optional
  leading `-`, zero allowed. A JSON number is accepted and read through its shortest
  round-trip decimal form written without an exponent (`3e4` -> "30000", `1e-05` ->
  "0.00001"), then held to the same rules: a number that can only be written short with an
  exponent (1e300, 1e-300) is refused as too large / too many decimals. Booleans,
  NaN/Infinity and anything else are refused. They are parsed exactly into `_e8` integers
  (`decimal_e8`, no floats); the tick/lot grid check needs the instrument and happens in
  api/convert.py.
- A funding `rate` (`POST /v1/admin/funding`) is signed, and the one decimal allowed more
  than 8 decimals: the same syntax with an optional leading `-` (`"-0"` is 0), at most 64
  characters, converted exactly to parts per 1e8 (`rate_e8`) rounded half-even
  (`funding_rate_e8`: "0.000000015" -> 2, "0.000000025" -> 2, "-0.000000015" -> -2); a
  rate whose rounded magnitude is 1 or more is refused here (INVALID_FUNDING_RATE, as the
  engine would), so it never reaches the journal.
- Ids (account ids in bodies; order and account ids in paths) are integers in 1..2^63-1
  (`ID_MAX`): in a body a JSON integer (not a string, float or boolean); in a path
  canonical digits (`ID_PATTERN`: no sign, leading zero, fraction or exponent). Anything
  else is 400 INVALID_ID (api/errors.py).
- Query integers (`depth`, `limit`) are plain digits within the documented bounds;
  `leverage` is a positive JSON integer (or its digits as a string), never a float.

Unknown fields are refused (`extra="forbid"`). Response models describe what the routes
return; the routes build those bodies directly (orjson) and do not validate them per request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from engine.units import E8, div_half_even

MAX_DECIMAL_E8 = 10**23  # 1e15 units: far beyond any price, size or amount this venue sees
MAX_DECIMAL_CHARS = 64
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
SIGNED_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
ID_MAX = 2**63 - 1
ID_PATTERN = r"^[1-9][0-9]{0,18}$"  # then <= ID_MAX

_DECIMAL_RE = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")  # fullmatch; [0-9] is ASCII only
_ID_RE = re.compile(r"[1-9][0-9]{0,18}")  # fullmatch
_DIGITS_RE = re.compile(r"[0-9]{1,18}")  # fullmatch


def _decimal_text(value: Any) -> str:
    """The decimal text of a JSON string or number (numbers: shortest form, no exponent)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError("decimal_type", "must be a decimal string")
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        if abs(value) >= MAX_DECIMAL_E8:
            raise PydanticCustomError("decimal_too_large", "is too large")
        return str(value)
    if not math.isfinite(value):
        raise PydanticCustomError("decimal_parsing", "must be a finite decimal")
    text = repr(value)  # the shortest form that reads back as the same double
    if "e" in text or "E" in text:
        if not 1e-9 <= abs(value) < 1e16:  # needs an exponent to be written short
            raise PydanticCustomError(
                "decimal_too_large" if abs(value) >= 1 else "decimal_parsing",
                "is too large" if abs(value) >= 1 else "must have at most 8 decimals",
            )
        text = format(Decimal(text), "f")
    return text


def decimal_e8(value: Any, signed: bool = False) -> int:
    """A strict decimal (SPEC §1) as an exact `_e8` integer; PydanticCustomError otherwise.

    Positive unless `signed`: then an optional leading `-` and zero are allowed."""
    text = _decimal_text(value)
    if len(text) > MAX_DECIMAL_CHARS:
        raise PydanticCustomError("decimal_parsing", "must be a plain decimal number")
    m = _DECIMAL_RE.fullmatch(text)
    if m is None:
        raise PydanticCustomError(
            "decimal_parsing",
            "must be a plain decimal string like \"123.45\" (digits, optionally one dot and "
            "more digits; no sign, exponent or spaces)",
        )
    sign, whole, frac = m.group(1), m.group(2), (m.group(3) or "").rstrip("0")
    if sign and not signed:
        raise PydanticCustomError("decimal_positive", "must be positive")
    if len(frac) > 8:
        raise PydanticCustomError("decimal_parsing", "must have at most 8 decimals")
    magnitude = int(whole) * E8 + int(frac.ljust(8, "0"))
    if magnitude >= MAX_DECIMAL_E8:
        raise PydanticCustomError("decimal_too_large", "is too large")
    if not signed and magnitude == 0:
        raise PydanticCustomError("decimal_positive", "must be positive")
    return -magnitude if sign else magnitude


def _positive_e8(value: Any) -> int:
    return decimal_e8(value)


def _optional_positive_e8(value: Any) -> int | None:
    return None if value is None else decimal_e8(value)


def _signed_e8(value: Any) -> int:
    return decimal_e8(value, signed=True)


def funding_rate_e8(value: Any) -> int | None:
    """A funding rate (signed decimal fraction per interval) in parts per 1e8, rounded
    half-even; None stays None (the engine computes the rate). Refused: anything that is not
    a signed plain decimal of at most 64 characters, and |rate_e8| >= 1e8 after rounding."""
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and ("e" in repr(value)):
        if abs(value) >= 1:
            raise PydanticCustomError("funding_rate_range", "must be within (-1, 1)")
        text = format(Decimal(repr(value)), "f")  # 1e-05 -> "0.00001"
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1:
        raise PydanticCustomError("funding_rate_range", "must be within (-1, 1)")
    else:
        text = _decimal_text(value)
    m = _DECIMAL_RE.fullmatch(text) if len(text) <= MAX_DECIMAL_CHARS else None
    if m is None:
        raise PydanticCustomError(
            "decimal_parsing",
            "must be a plain decimal string like \"0.0001\" or \"-0.00025\" (an optional "
            "leading -, digits, optionally one dot and more digits; at most 64 characters)",
        )
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    magnitude = div_half_even(int(whole + frac) * E8, 10 ** len(frac))
    if magnitude >= E8:
        raise PydanticCustomError(
            "funding_rate_range", "must be within (-1, 1) once rounded to 8 decimals"
        )
    return -magnitude if sign else magnitude


def body_id(value: Any) -> int:
    """An id in a JSON body: a JSON integer in 1..2^63-1."""
    if type(value) is not int or not 1 <= value <= ID_MAX:
        raise PydanticCustomError("invalid_id", "must be a JSON integer in 1..9223372036854775807")
    return value


def path_id(value: Any) -> int:
    """An id in a path: canonical digits of an integer in 1..2^63-1."""
    if isinstance(value, str) and _ID_RE.fullmatch(value) and int(value) <= ID_MAX:
        return int(value)
    raise PydanticCustomError(
        "invalid_id", "must be an integer in 1..9223372036854775807 (digits only, no leading zero)"
    )


def _positive_int(value: Any) -> int:
    """A JSON integer (or its canonical digits as a string) in 1..2^63-1 (e.g. `leverage`;
    the engine checks the instrument's own bounds)."""
    if type(value) is int and 1 <= value <= ID_MAX:
        return value
    if isinstance(value, str) and _ID_RE.fullmatch(value) and int(value) <= ID_MAX:
        return int(value)
    raise PydanticCustomError("int_type", "must be a positive integer")


def _decimal_schema(example: str, signed: bool = False) -> dict[str, Any]:
    return {
        "anyOf": [
            {
                "type": "string",
                "pattern": SIGNED_DECIMAL_PATTERN if signed else DECIMAL_PATTERN,
                "maxLength": MAX_DECIMAL_CHARS,
            },
            {"type": "number"} if signed else {"type": "number", "exclusiveMinimum": 0},
        ],
        "description": (
            "decimal string (optionally negative)" if signed else "positive decimal string"
        )
        + ", at most 8 significant decimals, below 10^15; a JSON number is read through its "
        "shortest decimal form written without an exponent",
        "examples": [example],
    }


_RATE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": SIGNED_DECIMAL_PATTERN, "maxLength": MAX_DECIMAL_CHARS},
        {"type": "number", "exclusiveMinimum": -1, "exclusiveMaximum": 1},
        {"type": "null"},
    ],
    "description": "funding rate per interval as a signed decimal fraction (positive: longs "
    "pay shorts), |rate| < 1; rounded half-even to 8 decimals (parts per 1e8); absent or "
    "null: the rate computed from the premium samples. A JSON number is read through its "
    "shortest decimal form written without an exponent",
    "examples": ["0.0001", "-0.00025"],
}


def _query_int(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, str) and _DIGITS_RE.fullmatch(value) and lo <= int(value) <= hi:
            return int(value)
        raise PydanticCustomError("int_range", f"must be an integer in {lo}..{hi} (digits only)")

    return parse


# int64 from 1: exactly 1..2^63-1. (No "maximum": FastAPI's OpenAPI model stores it as a
# float, and 9223372036854775807.0 is 2^63.)
_ID_SCHEMA = {
    "type": "integer",
    "format": "int64",
    "minimum": 1,
    "description": "an id: an integer in 1..9223372036854775807 (2^63-1)",
}

# A positive decimal parsed to an `_e8` integer.
Price = Annotated[int, PlainValidator(_positive_e8), WithJsonSchema(_decimal_schema("50000.5"))]
OptPrice = Annotated[
    int | None, PlainValidator(_optional_positive_e8), WithJsonSchema(_decimal_schema("50000.5"))
]
Qty = Annotated[int, PlainValidator(_positive_e8), WithJsonSchema(_decimal_schema("0.25"))]
OptQty = Annotated[
    int | None, PlainValidator(_optional_positive_e8), WithJsonSchema(_decimal_schema("0.25"))
]
Amount = Annotated[int, PlainValidator(_positive_e8), WithJsonSchema(_decimal_schema("1000"))]
# For fields signed by nature (funding rate, position-margin amount): may be zero or negative.
SignedAmount = Annotated[
    int, PlainValidator(_signed_e8), WithJsonSchema(_decimal_schema("-250.5", signed=True))
]
# A funding rate in parts per 1e8 (rounded half-even), or None.
FundingRate = Annotated[int | None, PlainValidator(funding_rate_e8), WithJsonSchema(_RATE_SCHEMA)]
# Ids: 1..2^63-1 (body: a JSON integer; path: canonical digits).
BodyId = Annotated[int, PlainValidator(body_id), WithJsonSchema({**_ID_SCHEMA, "examples": [1]})]
PathId = Annotated[int, PlainValidator(path_id), WithJsonSchema({**_ID_SCHEMA, "examples": [42]})]
# A query-string count in 1..1000 (`depth`, `limit`), plain digits.
Count1000 = Annotated[
    int,
    PlainValidator(_query_int(1, 1000)),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 1000}),
]
Symbol = Annotated[str, Field(min_length=1, max_length=32, examples=["BTC-PERP"])]

_STRICT = ConfigDict(extra="forbid")
OrderType = Literal["limit", "market", "stop_market", "stop_limit", "take_profit_market", "take_profit_limit"]


# -- requests -------------------------------------------------------------------------------


class PlaceOrderRequest(BaseModel):
    """A new order. `price` is required for limit orders and must be absent for market ones.

    Stop and take-profit orders (SPEC §12): `type` stop_market / stop_limit /
    take_profit_market / take_profit_limit with `trigger_price` (on the tick grid) and
    `trigger_by` (mark, the default, or last); the *_limit types need `price`. With
    `close_position` (the *_market types only) `qty` is omitted: the whole position is
    closed when the order triggers."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "symbol": "BTC-PERP",
                    "side": "buy",
                    "type": "limit",
                    "qty": "0.01",
                    "price": "50000.5",
                },
                {
                    "symbol": "ETH-PERP",
                    "side": "sell",
                    "type": "market",
                    "qty": "1.5",
                    "reduce_only": True,
                },
                {
                    "symbol": "BTC-PERP",
                    "side": "sell",
                    "type": "stop_market",
                    "trigger_price": "48000",
                    "trigger_by": "mark",
                    "close_position": True,
                },
            ]
        },
    )

    symbol: Symbol
    side: Literal["buy", "sell"]
    type: OrderType
    qty: OptQty = Field(None, description="required, except with close_position (then omitted)")
    price: OptPrice = None
    time_in_force: Literal["GTC", "IOC", "FOK"] = "GTC"
    post_only: bool = Field(False, strict=True)
    reduce_only: bool = Field(False, strict=True)
    stp: Literal["cancel_taker", "cancel_maker", "cancel_both"] = "cancel_taker"
    client_order_id: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    trigger_price: OptPrice = Field(None, description="stop / take-profit types: the price that triggers it")
    trigger_by: Literal["mark", "last"] = Field("mark", description="what the trigger watches: mark or last trade")
    close_position: bool = Field(
        False, strict=True, description="stop_market / take_profit_market: close the whole position at trigger"
    )


class AmendOrderRequest(BaseModel):
    """New price and/or new total quantity of an open order; for an untriggered stop also a
    new `trigger_price`."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"price": "50010", "qty": "0.02"}]}
    )

    price: OptPrice = None
    qty: OptQty = None
    trigger_price: OptPrice = None


class LeverageRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"symbol": "BTC-PERP", "leverage": 20}]}
    )

    symbol: Symbol
    leverage: Annotated[
        int,
        PlainValidator(_positive_int),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 100}),
    ]


class WithdrawRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"amount": "250.5"}]})

    amount: Amount


class MarginModeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"symbol": "BTC-PERP", "mode": "isolated"}]}
    )

    symbol: Symbol
    mode: Literal["cross", "isolated"]



class PositionMarginRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"symbol": "BTC-PERP", "amount": "-250.5"}]}
    )

    symbol: Symbol
    amount: SignedAmount = Field(description="> 0 adds margin from the wallet, < 0 removes it")



class DepositRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"account_id": 1, "amount": "10000"}]}
    )

    account_id: BodyId
    amount: Amount


class CreateAccountRequest(BaseModel):
    """No fields: the body may be absent or `{}`, but a malformed or unknown one is refused."""

    model_config = _STRICT


class TopUpRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"amount": "100000"}]}
    )

    amount: Amount


class MarkPriceRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"symbol": "BTC-PERP", "price": "49000"}]}
    )

    symbol: Symbol
    price: Price


class IndexPriceRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"symbol": "BTC-PERP", "price": "50010"}]}
    )

    symbol: Symbol
    price: Price


class FundingRequest(BaseModel):
    """A funding round now: at the given `rate`, or (absent) at the computed one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"symbol": "BTC-PERP", "rate": "0.0001"}, {"symbol": "BTC-PERP"}]
        },
    )

    symbol: Symbol
    rate: FundingRate = None


class AdlPolicyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"symbol": "BTC-PERP", "policy": "pro_rata"}]},
    )

    symbol: Symbol
    policy: Literal["queue", "pro_rata", "capped_pro_rata"]


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting `model` as the JSON body of a route that parses it itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": model.model_json_schema(ref_template="#/components/schemas/{model}")
                }
            },
        }
    }
