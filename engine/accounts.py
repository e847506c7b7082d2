"""Accounts and positions (cross margin, one-way mode, SPEC §3).

A position is a signed size in lots and a signed `entry_value_atoms` (what was paid to open
it: positive for a long, negative for a short); the entry price is entry_value / size.
Account 0 is the insurance fund: its wallet balance is the fund balance; it only ever holds
a position inside one command (the take-over during a liquidation).
"""

from __future__ import annotations

from collections import OrderedDict

from engine.book import Order

INSURANCE_FUND_ID = 0


class Position:
    """One signed position in one symbol."""

    __slots__ = ("entry_value_atoms", "size_lots", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.size_lots = 0
        self.entry_value_atoms = 0


class Account:
    """Wallet, positions, leverage settings and open orders of one account."""

    __slots__ = (
        "account_id",
        "api_key_hash",
        "client_order_ids",
        "closed_orders",
        "leverage",
        "open_buy_lots",
        "open_orders",
        "open_sell_lots",
        "positions",
        "wallet_atoms",
    )

    def __init__(self, account_id: int, api_key_hash: str = "") -> None:
        self.account_id = account_id
        self.api_key_hash = api_key_hash
        self.wallet_atoms = 0
        self.positions: dict[str, Position] = {}  # only non-zero positions
        self.leverage: dict[str, int] = {}  # only symbols where it was set
        self.open_orders: dict[int, Order] = {}
        self.open_buy_lots: dict[str, int] = {}
        self.open_sell_lots: dict[str, int] = {}
        self.client_order_ids: dict[str, int] = {}
        self.closed_orders: OrderedDict[int, Order] = OrderedDict()

    def size(self, symbol: str) -> int:
        """Signed position size in lots (0 when flat)."""
        pos = self.positions.get(symbol)
        return pos.size_lots if pos is not None else 0

    def open_lots(self, symbol: str) -> tuple[int, int]:
        """(open buy lots, open sell lots) resting in `symbol`."""
        return self.open_buy_lots.get(symbol, 0), self.open_sell_lots.get(symbol, 0)

    def track_open(self, order: Order, delta_lots: int) -> None:
        """Add `delta_lots` (may be negative) to the open quantity on the order's side."""
        book = self.open_buy_lots if order.is_buy else self.open_sell_lots
        total = book.get(order.symbol, 0) + delta_lots
        if total:
            book[order.symbol] = total
        else:
            book.pop(order.symbol, None)
