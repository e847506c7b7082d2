"""Accounts and positions (cross margin, one-way mode, SPEC §3).

A position is a signed size in lots and a signed `entry_value_atoms` (what was paid to open
it: positive for a long, negative for a short); the entry price is entry_value / size.
Account 0 is the insurance fund: its wallet balance is the fund balance; it only ever holds
a position inside one command (the take-over during a liquidation).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, NamedTuple

from engine.book import Order
from engine.pickling import restore, state_of

INSURANCE_FUND_ID = 0
FILLS_KEPT = 1_000


class Fill(NamedTuple):
    """One line of an account's trade history (`GET /v1/fills`).

    `liquidity` is `maker` or `taker` for a book trade (then `price` is in ticks and
    `trade_id`/`order_id` are set), `liquidation` for the takeover of the position by the
    insurance fund at its bankruptcy price, or `adl` for a close by auto-deleveraging at the
    bankruptcy price (then `price` is in 1e-8 USD, `trade_id`/`order_id` are None, no fee).
    `realized_atoms` is the PnL realized by this fill, fee excluded.
    """

    trade_id: int | None
    ts_ns: int
    symbol: str
    order_id: int | None
    side: str
    price: int
    qty_lots: int
    fee_atoms: int
    liquidity: str
    realized_atoms: int


class Position:
    """One signed position in one symbol."""

    __slots__ = ("entry_value_atoms", "funding_atoms", "size_lots", "symbol")

    def __init__(self, symbol: str = "") -> None:
        self.symbol = symbol
        self.size_lots = 0
        self.entry_value_atoms = 0
        self.funding_atoms = 0  # funding received (+) or paid (-) since the position was opened

    def __getstate__(self) -> dict[str, Any]:
        return state_of(self, ("entry_value_atoms", "funding_atoms", "size_lots", "symbol"))

    def __setstate__(self, state: Any) -> None:
        restore(self, state)


_ACCOUNT_ATTRS = (
    "account_id",
    "api_key_hash",
    "buy_price_max",
    "client_order_ids",
    "closed_orders",
    "fills",
    "isolated",
    "leverage",
    "open_buy_lots",
    "open_orders",
    "open_sell_lots",
    "positions",
    "sell_price_min",
    "stop_orders",
    "wallet_atoms",
)


class Account:
    """Wallet, positions, leverage settings and open orders of one account."""

    __slots__ = _ACCOUNT_ATTRS

    def __init__(self, account_id: int = 0, api_key_hash: str = "", fills_kept: int = FILLS_KEPT) -> None:
        self.account_id = account_id
        self.api_key_hash = api_key_hash
        self.wallet_atoms = 0
        self.positions: dict[str, Position] = {}  # only non-zero positions
        self.leverage: dict[str, int] = {}  # only symbols where it was set
        self.open_orders: dict[int, Order] = {}
        self.open_buy_lots: dict[str, int] = {}
        self.open_sell_lots: dict[str, int] = {}
        # symbol -> a price no open buy is above / no open sell is below (kept while the side
        # has open orders; tightened by risk.open_loss_atoms): while the mark is at or above
        # it (below it for sells) that side has no open loss (SPEC §3) and no order is walked
        self.buy_price_max: dict[str, int] = {}
        self.sell_price_min: dict[str, int] = {}
        self.client_order_ids: dict[str, int] = {}
        self.closed_orders: OrderedDict[int, Order] = OrderedDict()
        self.fills: deque[tuple[Any, ...]] = deque(maxlen=fills_kept)  # Fill tuples, newest last
        # SPEC §12: untriggered stop / take-profit orders (outside the book, engine/stops.py)
        self.stop_orders: dict[int, Order] = {}
        # SPEC §12: the symbols in isolated margin mode -> the isolated margin of the position
        # there (0 while flat); a symbol not in it is cross (engine/isolated.py)
        self.isolated: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return state_of(self, _ACCOUNT_ATTRS)

    def __setstate__(self, state: Any) -> None:
        """Unpickle (snapshots), also one written before stop orders and isolated margin."""
        self.stop_orders = {}
        self.isolated = {}
        restore(self, state)

    def size(self, symbol: str) -> int:
        """Signed position size in lots (0 when flat)."""
        pos = self.positions.get(symbol)
        return pos.size_lots if pos is not None else 0

    def open_lots(self, symbol: str) -> tuple[int, int]:
        """(open buy lots, open sell lots) resting in `symbol`."""
        return self.open_buy_lots.get(symbol, 0), self.open_sell_lots.get(symbol, 0)

    def track_open(self, order: Order, delta_lots: int) -> None:
        """Add `delta_lots` (may be negative) to the open quantity on the order's side, and
        widen that side's price bound to the order's price."""
        symbol = order.symbol
        price = order.price_ticks
        assert price is not None  # only limit orders rest
        if order.is_buy:
            book, bound = self.open_buy_lots, self.buy_price_max
            if delta_lots > 0 and price > bound.get(symbol, 0):
                bound[symbol] = price
        else:
            book, bound = self.open_sell_lots, self.sell_price_min
            if delta_lots > 0 and price < bound.get(symbol, price + 1):
                bound[symbol] = price
        total = book.get(symbol, 0) + delta_lots
        if total:
            book[symbol] = total
        else:
            book.pop(symbol, None)
            bound.pop(symbol, None)
