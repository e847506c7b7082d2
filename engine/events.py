"""Events: immutable, past-tense records of what a command did.

Every event carries a global, gap-free `seq` and the command's `ts_ns`. Values are in engine
units (ticks, lots, atoms); prices that are not on the tick grid (bankruptcy prices) are
given as `_e8` fixed-point, already rounded half-even to 8 decimals. `TYPE` is the public
event name (SPEC §8). Events are NamedTuples: immutable and cheap to make on the hot path.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class AccountCreated(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int

    @property
    def TYPE(self) -> str:
        return "account_created"


class DepositMade(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int
    amount_atoms: int
    wallet_balance_atoms: int

    @property
    def TYPE(self) -> str:
        return "deposit"


class WithdrawalMade(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int
    amount_atoms: int
    wallet_balance_atoms: int

    @property
    def TYPE(self) -> str:
        return "withdrawal"


class InsuranceFundChanged(NamedTuple):
    seq: int
    ts_ns: int
    balance_atoms: int
    delta_atoms: int
    reason: str  # top_up | liquidation_fill | adl (bad-debt guard) | negative_balance | funding
    liquidated_account_id: int | None
    symbol: str | None

    @property
    def TYPE(self) -> str:
        return "insurance_fund_changed"


class NegativeBalanceCovered(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int
    amount_atoms: int  # paid by the insurance fund
    wallet_balance_atoms: int  # the account's wallet after it (0)
    bad_debt_atoms: int  # what the fund could not pay: a system deficit

    @property
    def TYPE(self) -> str:
        return "negative_balance_covered"


class MarkPriceChanged(NamedTuple):
    seq: int
    ts_ns: int
    symbol: str
    price_ticks: int

    @property
    def TYPE(self) -> str:
        return "mark_price_changed"


class IndexPriceChanged(NamedTuple):
    seq: int
    ts_ns: int
    symbol: str
    price_ticks: int
    basis_ticks: int  # the EMA of (mid - index) after this update (SPEC §12)

    @property
    def TYPE(self) -> str:
        return "index_price_changed"


class FundingRateChanged(NamedTuple):
    seq: int
    ts_ns: int
    symbol: str
    rate_e8: int  # applied this round: parts per 1e8 of the notional, + longs pay shorts
    premium_e8: int | None  # mean premium of the samples, rounded half-even (None: rate given)
    samples: int
    mark_price_ticks: int

    @property
    def TYPE(self) -> str:
        return "funding_rate_changed"


class FundingPaid(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int
    symbol: str
    size_lots: int
    rate_e8: int
    amount_atoms: int  # signed: negative paid, positive received
    wallet_balance_atoms: int

    @property
    def TYPE(self) -> str:
        return "funding_paid"


class LeverageChanged(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int
    symbol: str
    leverage: int

    @property
    def TYPE(self) -> str:
        return "leverage_changed"


class AdlPolicyChanged(NamedTuple):
    seq: int
    ts_ns: int
    symbol: str
    policy: str

    @property
    def TYPE(self) -> str:
        return "adl_policy_changed"


class OrderAccepted(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int
    order_id: int
    client_order_id: str | None
    symbol: str
    side: str
    order_type: str
    price_ticks: int | None
    qty_lots: int
    time_in_force: str
    post_only: bool
    reduce_only: bool
    stp: str

    @property
    def TYPE(self) -> str:
        return "order_accepted"


class OrderRejected(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int | None
    command: str
    code: int
    reason: str
    message: str
    order_id: int | None  # the original order for DUPLICATE_CLIENT_ORDER_ID, or the target
    client_order_id: str | None

    @property
    def TYPE(self) -> str:
        return "order_rejected"


class CommandRejected(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int | None
    command: str
    code: int
    reason: str
    message: str
    order_id: int | None
    client_order_id: str | None

    @property
    def TYPE(self) -> str:
        return "command_rejected"


class OrderCanceled(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int
    order_id: int
    client_order_id: str | None
    symbol: str
    side: str
    price_ticks: int | None
    canceled_lots: int
    filled_lots: int
    reason: str  # user | ioc | fok | market | stp | post_only | reduce_only | liquidation | adl

    @property
    def TYPE(self) -> str:
        return "order_canceled"


class OrderAmended(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int
    order_id: int
    symbol: str
    side: str
    price_ticks: int
    qty_lots: int
    remaining_lots: int
    priority_kept: bool
    client_order_id: str | None = None

    @property
    def TYPE(self) -> str:
        return "order_amended"


class TradeExecuted(NamedTuple):
    seq: int
    ts_ns: int
    trade_id: int
    symbol: str
    price_ticks: int
    qty_lots: int
    taker_side: str
    taker_order_id: int
    taker_account_id: int
    taker_fee_atoms: int
    taker_remaining_lots: int
    maker_order_id: int
    maker_account_id: int
    maker_fee_atoms: int
    maker_remaining_lots: int

    @property
    def TYPE(self) -> str:
        return "trade"


class PositionChanged(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int
    symbol: str
    size_lots: int
    entry_value_atoms: int
    realized_pnl_atoms: int
    wallet_balance_atoms: int
    reason: str  # trade | liquidation | adl

    @property
    def TYPE(self) -> str:
        return "position_changed"


class AccountLiquidated(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int
    symbol: str
    qty_lots: int  # signed size taken over
    bankruptcy_value_atoms: int
    bankruptcy_price_e8: int
    mark_price_ticks: int
    equity_before_atoms: int
    maintenance_margin_atoms: int
    insurance_fund_delta_atoms: int  # the book fill's and the bad-debt guard's, together
    book_fill_lots: int
    adl_lots: int
    book_fill_avg_price_e8: int | None  # None without a book fill
    bad_debt_atoms: int  # what the fund could not pay for this liquidation (§5 step 5)

    @property
    def TYPE(self) -> str:
        return "liquidation"


class PositionDeleveraged(NamedTuple):
    seq: int
    ts_ns: int
    symbol: str
    liquidated_account_id: int
    counterparty_account_id: int
    side: str  # side of the counterparty's position: long | short
    qty_lots: int
    price_e8: int
    value_atoms: int
    realized_pnl_atoms: int
    position_after_lots: int
    rank: int  # 1 = first in line
    policy: str
    haircut_atoms: int  # fill value against closing at the mark, signed (§6 haircut accounting)

    @property
    def TYPE(self) -> str:
        return "adl"


class OrderTriggered(NamedTuple):
    """A stop / take-profit order's trigger was reached (SPEC §12): it now enters as a market
    or limit order and is checked like a new one (accepted or rejected right after)."""

    seq: int
    ts_ns: int
    account_id: int
    order_id: int
    client_order_id: str | None
    symbol: str
    side: str
    order_type: str  # the conditional type: stop_market | stop_limit | take_profit_*
    trigger_price_ticks: int
    trigger_by: str  # mark | last
    reference_price_ticks: int  # the mark or last price that reached the trigger

    @property
    def TYPE(self) -> str:
        return "order_triggered"


class MarginModeChanged(NamedTuple):
    seq: int
    ts_ns: int
    account_id: int
    symbol: str
    mode: str  # cross | isolated

    @property
    def TYPE(self) -> str:
        return "margin_mode_changed"


class PositionMarginChanged(NamedTuple):
    """The margin of an isolated position changed (SPEC §12): by the user (`user`), by a
    fill that opened, reduced or closed it (`trade`, `adl`), by funding, or by liquidation."""

    seq: int
    ts_ns: int
    account_id: int
    symbol: str
    delta_atoms: int
    isolated_margin_atoms: int  # the position's margin after the change
    wallet_balance_atoms: int
    reason: str  # user | trade | adl | funding | liquidation

    @property
    def TYPE(self) -> str:
        return "position_margin_changed"


class PositionReduced(NamedTuple):
    """Partial liquidation (SPEC §12): one reduce-only IOC order of the account, at the
    liquidation band, for the lots above the first maintenance tier."""

    seq: int
    ts_ns: int
    account_id: int
    symbol: str
    order_id: int
    qty_lots: int  # lots the order asked for
    filled_lots: int
    avg_price_e8: int | None  # None without a fill
    fee_atoms: int
    size_after_lots: int  # signed position left
    mark_price_ticks: int
    reason: str  # partial_liquidation

    @property
    def TYPE(self) -> str:
        return "position_reduced"


Event = (
    AccountCreated
    | DepositMade
    | WithdrawalMade
    | InsuranceFundChanged
    | NegativeBalanceCovered
    | MarkPriceChanged
    | IndexPriceChanged
    | FundingRateChanged
    | FundingPaid
    | LeverageChanged
    | AdlPolicyChanged
    | OrderAccepted
    | OrderRejected
    | CommandRejected
    | OrderCanceled
    | OrderAmended
    | TradeExecuted
    | PositionChanged
    | AccountLiquidated
    | PositionDeleveraged
    | OrderTriggered
    | MarginModeChanged
    | PositionMarginChanged
    | PositionReduced
)

REJECTION_TYPES = (OrderRejected, CommandRejected)


def event_to_dict(event: Any) -> dict[str, Any]:
    """The event as a plain dict with its public `type` first."""
    out: dict[str, Any] = {"type": event.TYPE}
    out.update(event._asdict())
    return out
