"""Response models of the HTTP API (SPEC §9): the shapes routes answer with, for the OpenAPI
document at /docs, and `ERROR_RESPONSES`. Request bodies and their validators are in
api/schemas.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import OrderType

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
    type: OrderType
    price: Dec | None
    qty: Dec
    time_in_force: Literal["GTC", "IOC", "FOK"]
    post_only: bool
    reduce_only: bool
    stp: str
    status: Literal["untriggered", "new", "partially_filled", "filled", "canceled", "rejected"] = Field(
        description="untriggered: a stop waiting for its trigger; rejected: a stop refused when it triggered"
    )
    filled_qty: Dec
    remaining_qty: Dec
    avg_price: Dec | None
    fills: list[FillOut]
    # SPEC §12, only on stop / take-profit types (before and after they trigger)
    trigger_price: Dec | None = None
    trigger_by: Literal["mark", "last"] | None = None
    close_position: bool | None = None


class AccountFillOut(BaseModel):
    """One line of the account's trade history (GET /v1/fills), newest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "trade_id": 17,
                    "order_id": 42,
                    "symbol": "BTC-PERP",
                    "side": "buy",
                    "price": "50000",
                    "qty": "0.01",
                    "fee": "0.25",
                    "liquidity": "taker",
                    "realized_pnl": "0",
                    "ts_ns": 1764745200000000000,
                }
            ]
        }
    )

    trade_id: int | None = Field(description="null for liquidation and ADL closes")
    order_id: int | None = Field(description="null for liquidation and ADL closes")
    symbol: str
    side: Literal["buy", "sell"]
    price: Dec
    qty: Dec
    fee: Dec
    liquidity: Literal["maker", "taker", "liquidation", "adl"] = Field(
        description="maker/taker: a book trade; liquidation: the position taken over by the "
        "insurance fund at its bankruptcy price; adl: closed by auto-deleveraging"
    )
    realized_pnl: Dec = Field(description="PnL this fill realized, fee excluded")
    ts_ns: int


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
                    "funding": "12.5",
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
    funding: Dec = Field(
        description="funding received (+) or paid (-) since the position was opened, exact USD"
    )
    margin_mode: str = Field(description="cross or isolated (SPEC §12)")
    isolated_margin: Dec = Field(description="the isolated position's own margin; 0 when cross")


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
    cross_equity: Dec = Field(description="wallet + upnl of the cross positions (isolated ones left out)")
    cross_maintenance_margin: Dec = Field(description="maintenance margin of the cross positions")
    positions: list[PositionOut]


class EventOut(BaseModel):
    type: str
    seq: int
    ts_ns: int
    data: dict[str, Any]


class EventsOut(BaseModel):
    """GET /v1/events: oldest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {
                            "type": "liquidation",
                            "seq": 812,
                            "ts_ns": 1764745200000000000,
                            "data": {"account_id": 3, "symbol": "BTC-PERP", "qty": "1.2", "bad_debt": "0"},
                        }
                    ],
                    "next_from_seq": 813,
                    "first_available_seq": 1,
                }
            ]
        }
    )

    events: list[EventOut]
    next_from_seq: int | None = Field(description="read on from here; null once the last delivered event was searched")
    first_available_seq: int = Field(description="> from_seq when older events were pruned and cannot be rebuilt")


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
    price_band_ppm: int = Field(description="limit orders on the aggressive side (SPEC §3); 0 = off")
    max_order_qty: Dec
    max_order_notional: Dec
    liquidation_band_ppm: int
    tiers: list[TierOut]
    mark_price: Dec | None
    adl_policy: Literal["queue", "pro_rata", "capped_pro_rata"]
    mark_source: Literal["admin", "index"] = Field(
        description="admin: the mark is set by POST /v1/admin/mark-price; index: "
        "median(index, index + basis, last trade) at every index update (SPEC §12)"
    )
    index_price: Dec | None = Field(description="null until an index price was set")
    basis_weight_ppm: int = Field(description="EMA weight of (mid - index) per index update")
    funding_interval_s: int = Field(description="seconds between funding rounds (epoch-aligned)")
    interest_rate: Dec = Field(description="interest per funding interval, e.g. \"0.0001\"")
    funding_cap: Dec = Field(description="|funding rate| at most this per interval")


class InsuranceFundOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"balance": "100000", "bad_debt": "0"}]}
    )

    balance: Dec
    bad_debt: Dec = Field(
        description="what the fund could not pay, accumulated: a system deficit (SPEC §5 step 5)"
    )


class BalanceOut(BaseModel):
    account_id: int
    amount: Dec
    wallet_balance: Dec

class MarginModeOut(BaseModel):
    symbol: str
    mode: str

class PositionMarginOut(BaseModel):
    symbol: str
    amount: Dec
    isolated_margin: Dec
    wallet_balance: Dec


class LeverageOut(BaseModel):
    symbol: str
    leverage: int


class AdlPolicyOut(BaseModel):
    symbol: str
    policy: Literal["queue", "pro_rata", "capped_pro_rata"]


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
        json_schema_extra={
            "examples": [{"account_id": 3, "api_key": "q2p0Yg...shown once", "api_secret": "9f86d081884c7d65..."}]
        }
    )

    account_id: int
    api_key: str = Field(description="shown once; only its sha256 is kept")
    api_secret: str = Field(
        description="HMAC-SHA256 secret for signing /fapi requests (docs/binance.md); derived from "
        "the key, so an operator can get it again: GET /v1/admin/accounts/{id}/api-secret"
    )


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


class IndexPriceOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "symbol": "BTC-PERP",
                    "index_price": "50000",
                    "basis": "2",
                    "mark_price": "50002",
                    "liquidations": [],
                    "adl_fills": [],
                }
            ]
        }
    )

    symbol: str
    index_price: Dec
    basis: Dec = Field(description="EMA of (mid - index) after this update, in USD (signed)")
    mark_price: Dec | None = Field(description="the mark after the update (null: none yet)")
    liquidations: list[LiquidationOut]
    adl_fills: list[AdlFillOut]


class FundingOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "symbol": "BTC-PERP",
                    "rate": "0.0001",
                    "premium": None,
                    "samples": 0,
                    "mark_price": "50000",
                    "payments": 2,
                    "insurance_fund_delta": "0",
                    "liquidations": [],
                    "adl_fills": [],
                }
            ]
        }
    )

    symbol: str
    rate: Dec = Field(description="the rate applied (per interval; positive: longs pay shorts)")
    premium: Dec | None = Field(
        description="mean premium of the samples, rounded half-even to 8 decimals; null when "
        "the rate was given"
    )
    samples: int = Field(description="premium samples since the previous round (now cleared)")
    mark_price: Dec = Field(description="the mark the payments were computed at")
    payments: int = Field(description="positions that paid or received (funding_paid events)")
    insurance_fund_delta: Dec = Field(
        description="the rounding residue the round put in the insurance fund (payers round "
        "up, receivers down); liquidations after the round report their own"
    )
    liquidations: list[LiquidationOut]
    adl_fills: list[AdlFillOut]


class FundingRoundOut(BaseModel):
    time: int = Field(description="epoch milliseconds of the round")
    rate: Dec


class FundingStateOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "symbol": "BTC-PERP",
                    "mark_source": "index",
                    "index_price": "50000",
                    "mark_price": "50002",
                    "basis": "2",
                    "premium": "0.0001",
                    "samples": 12,
                    "predicted_rate": "0.0001",
                    "interest_rate": "0.0001",
                    "funding_cap": "0.00375",
                    "funding_interval_s": 28800,
                    "next_funding_time": 1764748800000,
                    "recent": [{"time": 1764720000000, "rate": "0.0001"}],
                }
            ]
        }
    )

    symbol: str
    mark_source: Literal["admin", "index"]
    index_price: Dec | None = Field(description="null until an index price was set")
    mark_price: Dec | None
    basis: Dec
    premium: Dec | None = Field(
        description="mean of the premium samples since the last round, rounded half-even to 8 "
        "decimals; null without samples"
    )
    samples: int
    predicted_rate: Dec = Field(
        description="what a computed round would charge now (the premium mean, 0 without samples)"
    )
    interest_rate: Dec
    funding_cap: Dec
    funding_interval_s: int
    next_funding_time: int = Field(description="epoch milliseconds of the next scheduled round")
    recent: list[FundingRoundOut] = Field(description="recent rounds, newest first (up to 100)")


class StatusOut(BaseModel):
    status: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "validation or business rejection; nothing changed"},
    401: {"model": ErrorBody, "description": "missing or unknown X-API-Key"},
    413: {"model": ErrorBody, "description": "body too large"},
    429: {"model": ErrorBody, "description": "rate limited (see Retry-After)"},
    503: {"model": ErrorBody, "description": "engine halted"},
}
