"""Request and response schemas of the HTTP API, separate from the engine's types.

Decimal inputs (`price`, `qty`, `amount`) are decimal strings; a JSON number is accepted
and read through its shortest decimal form (`repr` for floats, so `0.1` is "0.1"). They are
parsed exactly into `_e8` integers here (`Decimal`-free: engine.units.decimal_str_to_e8);
the tick/lot grid check needs the instrument and happens in api/convert.py. Booleans,
NaN/Infinity, more than 8 decimals, non-ASCII digits, zero and negatives are refused here.

Unknown fields are refused (`extra="forbid"`). Response models describe what the routes
return; the routes build those bodies directly (orjson) and do not validate them per request.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from engine.units import decimal_str_to_e8

MAX_DECIMAL_E8 = 10**23  # 1e15 units: far beyond any price, size or amount this venue sees

_DECIMAL_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": r"^[0-9]{1,15}(\.[0-9]{1,8})?$"},
        {"type": "number", "exclusiveMinimum": 0},
    ],
    "description": "positive decimal, as a string (a JSON number is read through its shortest decimal form)",
}


def _positive_e8(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError("decimal_type", "must be a decimal string")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError("decimal_parsing", "must be a finite decimal")
        text = repr(value)
    else:
        text = str(value) if isinstance(value, int) else value
    if len(text) > 64 or not text.isascii():
        raise PydanticCustomError("decimal_parsing", "must be a plain decimal number")
    e8 = decimal_str_to_e8(text)
    if e8 is None:
        raise PydanticCustomError("decimal_parsing", "must be a decimal with at most 8 decimals")
    if e8 <= 0:
        raise PydanticCustomError("decimal_positive", "must be positive")
    if e8 >= MAX_DECIMAL_E8:
        raise PydanticCustomError("decimal_too_large", "is too large")
    return e8


def _optional_positive_e8(value: Any) -> int | None:
    return None if value is None else _positive_e8(value)


def _strict_int(value: Any) -> int:
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    raise PydanticCustomError("int_type", "must be an integer")


def _decimal_schema(example: str) -> dict[str, Any]:
    return {**_DECIMAL_SCHEMA, "examples": [example]}


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
Int = Annotated[int, PlainValidator(_strict_int), WithJsonSchema({"type": "integer", "minimum": 0})]
Symbol = Annotated[str, Field(min_length=1, max_length=32, examples=["BTC-PERP"])]

_STRICT = ConfigDict(extra="forbid")


# -- requests -------------------------------------------------------------------------------


class PlaceOrderRequest(BaseModel):
    """A new order. `price` is required for limit orders and must be absent for market ones."""

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
            ]
        },
    )

    symbol: Symbol
    side: Literal["buy", "sell"]
    type: Literal["limit", "market"]
    qty: Qty
    price: OptPrice = None
    time_in_force: Literal["GTC", "IOC", "FOK"] = "GTC"
    post_only: bool = Field(False, strict=True)
    reduce_only: bool = Field(False, strict=True)
    stp: Literal["cancel_taker", "cancel_maker", "cancel_both"] = "cancel_taker"
    client_order_id: Annotated[str | None, Field(min_length=1, max_length=64)] = None


class AmendOrderRequest(BaseModel):
    """New price and/or new total quantity of an open order."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"price": "50010", "qty": "0.02"}]}
    )

    price: OptPrice = None
    qty: OptQty = None


class LeverageRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"symbol": "BTC-PERP", "leverage": 20}]}
    )

    symbol: Symbol
    leverage: Annotated[
        int,
        PlainValidator(_strict_int),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 100}),
    ]


class WithdrawRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"amount": "250.5"}]})

    amount: Amount


class DepositRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"account_id": 1, "amount": "10000"}]}
    )

    account_id: Int
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


class AdlPolicyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"symbol": "BTC-PERP", "policy": "pro_rata"}]},
    )

    symbol: Symbol
    policy: Literal["queue", "pro_rata"]


# -- responses ------------------------------------------------------------------------------

Dec = Annotated[str, Field(examples=["50000.5"])]


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": 2001,
                    "error": "INSUFFICIENT_MARGIN",
                    "message": "not enough available margin for this order",
                }
            ]
        }
    )

    code: int
    error: str
    message: str
    order_id: int | None = Field(
        None, description="the original order, for DUPLICATE_CLIENT_ORDER_ID"
    )


class FillOut(BaseModel):
    trade_id: int
    price: Dec
    qty: Dec
    fee: Dec
    liquidity: Literal["maker", "taker"]


class OrderOut(BaseModel):
    """An order as it stands (after matching, for a new one)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "order_id": 42,
                    "client_order_id": "my-1",
                    "symbol": "BTC-PERP",
                    "side": "buy",
                    "type": "limit",
                    "price": "50000",
                    "qty": "0.02",
                    "time_in_force": "GTC",
                    "post_only": False,
                    "reduce_only": False,
                    "stp": "cancel_taker",
                    "status": "partially_filled",
                    "filled_qty": "0.01",
                    "remaining_qty": "0.01",
                    "avg_price": "49999.5",
                    "fills": [
                        {
                            "trade_id": 7,
                            "price": "49999.5",
                            "qty": "0.01",
                            "fee": "0.24999750",
                            "liquidity": "taker",
                        }
                    ],
                }
            ]
        }
    )

    order_id: int
    client_order_id: str | None
    symbol: str
    side: Literal["buy", "sell"]
    type: Literal["limit", "market"]
    price: Dec | None
    qty: Dec
    time_in_force: Literal["GTC", "IOC", "FOK"]
    post_only: bool
    reduce_only: bool
    stp: str
    status: Literal["new", "partially_filled", "filled", "canceled"]
    filled_qty: Dec
    remaining_qty: Dec
    avg_price: Dec | None
    fills: list[FillOut]


class CanceledOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"canceled": [12, 13]}]})

    canceled: list[int]


class PositionOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "symbol": "BTC-PERP",
                    "size": "-0.5",
                    "entry_price": "50000",
                    "mark_price": "49000",
                    "unrealized_pnl": "500",
                    "liquidation_price": "68342.12",
                    "leverage": 10,
                    "adl_quantile": 3,
                }
            ]
        }
    )

    symbol: str
    size: Dec = Field(description="signed: negative is short")
    entry_price: Dec
    mark_price: Dec
    unrealized_pnl: Dec
    liquidation_price: Dec | None
    leverage: int
    adl_quantile: int = Field(ge=0, le=4)


class AccountOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "account_id": 1,
                    "wallet_balance": "995.035",
                    "equity": "1000",
                    "maintenance_margin": "25",
                    "initial_margin": "500",
                    "available": "500",
                    "positions": [],
                }
            ]
        }
    )

    account_id: int
    wallet_balance: Dec
    equity: Dec
    maintenance_margin: Dec
    initial_margin: Dec
    available: Dec
    positions: list[PositionOut]


class BookOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "symbol": "BTC-PERP",
                    "seq": 1234,
                    "bids": [["49999.5", "0.3"]],
                    "asks": [["50000", "1.2"]],
                }
            ]
        }
    )

    symbol: str
    seq: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


class TradeOut(BaseModel):
    trade_id: int
    symbol: str
    price: Dec
    qty: Dec
    taker_side: Literal["buy", "sell"]
    seq: int
    ts_ns: int


class TierOut(BaseModel):
    max_notional: Dec
    maintenance_ppm: int
    maintenance_amount: Dec
    max_leverage: int


class InstrumentOut(BaseModel):
    symbol: str
    tick_size: Dec
    lot_size: Dec
    max_leverage: int
    default_leverage: int
    maker_fee_ppm: int
    taker_fee_ppm: int
    market_band_ppm: int
    liquidation_band_ppm: int
    tiers: list[TierOut]
    mark_price: Dec | None
    adl_policy: Literal["queue", "pro_rata"]


class InsuranceFundOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"balance": "100000"}]})

    balance: Dec


class BalanceOut(BaseModel):
    account_id: int
    amount: Dec
    wallet_balance: Dec


class LeverageOut(BaseModel):
    symbol: str
    leverage: int


class AdlPolicyOut(BaseModel):
    symbol: str
    policy: Literal["queue", "pro_rata"]


class EngineStateOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"seq": 1234, "state_hash": "9f2c...", "journal_records": 1200, "fsync": "batch", "fsyncs": 85,
                 "last_published_seq": 1234, "publish_backlog": 0}
            ]
        }
    )

    seq: int = Field(description="last event seq applied")
    state_hash: str = Field(description="sha256 of the whole engine state (same after replay)")
    journal_records: int = Field(description="commands journaled since this process started")
    fsyncs: int = Field(description="journal fsyncs since this process started (group commit: fewer than records)")
    fsync: str
    last_published_seq: int = Field(description="highest seq known to be in exchange:events (or kept in process)")
    publish_backlog: int


class CreatedAccountOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"account_id": 3, "api_key": "q2p0Yg...shown once"}]}
    )

    account_id: int
    api_key: str = Field(description="shown once; only its sha256 is kept")


class LiquidationOut(BaseModel):
    account_id: int
    symbol: str
    qty: Dec = Field(description="signed size taken over")
    bankruptcy_price: Dec
    mark_price: Dec
    equity_before: Dec
    insurance_fund_delta: Dec


class AdlFillOut(BaseModel):
    symbol: str
    liquidated_account_id: int
    counterparty_account_id: int
    side: Literal["long", "short"] = Field(description="side of the counterparty's position")
    qty: Dec
    price: Dec
    realized_pnl: Dec
    position_after: Dec
    rank: int = Field(description="1 = first in line")


class MarkPriceOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"liquidations": [], "adl_fills": []}]}
    )

    liquidations: list[LiquidationOut]
    adl_fills: list[AdlFillOut]


class StatusOut(BaseModel):
    status: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "validation or business rejection; nothing changed"},
    401: {"model": ErrorBody, "description": "missing or unknown X-API-Key"},
    413: {"model": ErrorBody, "description": "body too large"},
    429: {"model": ErrorBody, "description": "rate limited (see Retry-After)"},
    503: {"model": ErrorBody, "description": "engine halted"},
}


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
