"""Commands: immutable, imperative requests to the engine.

Every command carries `ts_ns`, stamped by the service at the boundary (the engine never
reads a clock). Values are already in engine units (ticks, lots, atoms); the API edge
converts decimals. Stateless validation lives in the engine's `validate_*` helpers, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

BUY = "buy"
SELL = "sell"
LIMIT = "limit"
MARKET = "market"
GTC = "GTC"
IOC = "IOC"
FOK = "FOK"
STP_CANCEL_TAKER = "cancel_taker"
STP_CANCEL_MAKER = "cancel_maker"
STP_CANCEL_BOTH = "cancel_both"
ADL_QUEUE = "queue"
ADL_PRO_RATA = "pro_rata"
ADL_CAPPED_PRO_RATA = "capped_pro_rata"
MARK_FROM_ADMIN = "admin"
MARK_FROM_INDEX = "index"
MARK_SOURCES = (MARK_FROM_ADMIN, MARK_FROM_INDEX)
# SPEC §12: conditional orders rest outside the book until their trigger price is reached
STOP_MARKET = "stop_market"
STOP_LIMIT = "stop_limit"
TAKE_PROFIT_MARKET = "take_profit_market"
TAKE_PROFIT_LIMIT = "take_profit_limit"
TRIGGER_TYPES = (STOP_MARKET, STOP_LIMIT, TAKE_PROFIT_MARKET, TAKE_PROFIT_LIMIT)
TRIGGER_BY_MARK = "mark"
TRIGGER_BY_LAST = "last"
TRIGGER_BY = (TRIGGER_BY_MARK, TRIGGER_BY_LAST)
MARGIN_CROSS = "cross"
MARGIN_ISOLATED = "isolated"
MARGIN_MODES = (MARGIN_CROSS, MARGIN_ISOLATED)

SIDES = (BUY, SELL)
ORDER_TYPES = (LIMIT, MARKET, *TRIGGER_TYPES)
TIMES_IN_FORCE = (GTC, IOC, FOK)
STP_MODES = (STP_CANCEL_TAKER, STP_CANCEL_MAKER, STP_CANCEL_BOTH)
ADL_POLICIES = (ADL_QUEUE, ADL_PRO_RATA, ADL_CAPPED_PRO_RATA)


@dataclass(frozen=True, slots=True)
class CreateAccount:
    """Open a new trading account. `api_key_hash` is opaque to the engine (kept for replay)."""

    api_key_hash: str = ""
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class Deposit:
    """Credit `amount_atoms` to an account's wallet."""

    account_id: int
    amount_atoms: int
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Debit `amount_atoms` from an account's wallet, up to `available`."""

    account_id: int
    amount_atoms: int
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class TopUpInsuranceFund:
    """Add `amount_atoms` to the insurance fund."""

    amount_atoms: int
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class SetMarkPrice:
    """Move the mark price of `symbol`; liquidations and ADL run before the command ends."""

    symbol: str
    price_ticks: int
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class SetIndexPrice:
    """A new index price of `symbol` (SPEC §12): basis, premium sample, and, for a symbol whose
    mark follows the index, the mark `median(index, index + basis, last)` and liquidations."""

    symbol: str
    price_ticks: int
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class ApplyFunding:
    """A funding round of `symbol` at `ts_ns` (SPEC §12): the rate from the premium samples
    since the last round, or `rate_e8` (parts per 1e8, signed) when given; every position
    pays or receives `size * mark * rate`, the rounding residue goes to the insurance fund."""

    symbol: str
    rate_e8: int | None = None
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class SetLeverage:
    """Set an account's leverage in one symbol."""

    account_id: int
    symbol: str
    leverage: int
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class SetAdlPolicy:
    """Switch the ADL policy of a symbol (`queue` or `pro_rata`)."""

    symbol: str
    policy: str
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Submit an order. `price_ticks` is required for limit orders and absent for market ones."""

    account_id: int
    symbol: str
    side: str
    qty_lots: int
    price_ticks: int | None = None
    order_type: str = LIMIT
    time_in_force: str = GTC
    post_only: bool = False
    reduce_only: bool = False
    stp: str = STP_CANCEL_TAKER
    client_order_id: str | None = None
    ts_ns: int = 0
    # SPEC §12 conditional orders (last: journal records are positional): the trigger price
    # of a stop / take-profit type, what it watches (`mark` or `last`), and close_position
    # (no qty of its own: closes the whole position when it triggers)
    trigger_price_ticks: int | None = None
    trigger_by: str = TRIGGER_BY_MARK
    close_position: bool = False


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel one open order of the account."""

    account_id: int
    order_id: int = 0  # 0: by client_order_id
    ts_ns: int = 0
    # set: the order is named by its client order id (last: journal records are positional)
    client_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class CancelAllOrders:
    """Cancel every open order of the account, optionally only in `symbol`."""

    account_id: int
    symbol: str | None = None
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class AmendOrder:
    """Change an open order's price and/or total quantity (`qty_lots` = new total)."""

    account_id: int
    order_id: int = 0  # 0: by client_order_id
    price_ticks: int | None = None
    qty_lots: int | None = None
    ts_ns: int = 0
    # set: the order is named by its client order id (last: journal records are positional)
    client_order_id: str | None = None
    trigger_price_ticks: int | None = None  # a new trigger price (untriggered stop orders only)


@dataclass(frozen=True, slots=True)
class SetMarginMode:
    """Switch an account's margin mode in one symbol (`cross` / `isolated`, SPEC §12); only
    with no position and no open orders there."""

    account_id: int
    symbol: str
    mode: str
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class AdjustPositionMargin:
    """Add (> 0) or remove (< 0, down to the initial margin) margin of an isolated position."""

    account_id: int
    symbol: str
    amount_atoms: int
    ts_ns: int = 0


Command = (
    CreateAccount
    | Deposit
    | Withdraw
    | TopUpInsuranceFund
    | SetMarkPrice
    | SetIndexPrice
    | ApplyFunding
    | SetLeverage
    | SetAdlPolicy
    | PlaceOrder
    | CancelOrder
    | CancelAllOrders
    | AmendOrder
    | SetMarginMode
    | AdjustPositionMargin
)
