"""A small driver for hand-computed scenarios, in human units (USD, BTC, ETH).

Every command goes through `Engine.apply` and is followed by `check_invariants()`.
Conversions use Decimal here in the tests only; the engine sees integers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine import commands as c
from engine.engine import Engine
from engine.events import REJECTION_TYPES

E8 = 10**8


def atoms(usd: str | int) -> int:
    """USD to quote atoms (exact)."""
    value = Decimal(str(usd)) * E8
    assert value == value.to_integral_value(), usd
    return int(value)


def e8(price: str | int) -> int:
    """A decimal price to an `_e8` integer (exact)."""
    return atoms(price)


class Sim:
    """An engine plus helpers that speak in decimals."""

    def __init__(self, **engine_kwargs: Any) -> None:
        self.engine = Engine(**engine_kwargs)
        self.events: list[Any] = []

    def do(self, command: Any) -> list[Any]:
        evs = self.engine.apply(command)
        self.engine.check_invariants()
        self.events.extend(evs)
        return evs

    def ok(self, command: Any) -> list[Any]:
        evs = self.do(command)
        rejected = [e for e in evs if isinstance(e, REJECTION_TYPES)]
        assert not rejected, rejected
        return evs

    # -- units -----------------------------------------------------------------------
    def ticks(self, symbol: str, price: str | int) -> int:
        t = self.engine.instruments[symbol].ticks_from_e8(e8(price))
        assert t is not None, price
        return t

    def lots(self, symbol: str, qty: str | int) -> int:
        n = self.engine.instruments[symbol].lots_from_e8(e8(qty))
        assert n is not None, qty
        return n

    # -- commands ----------------------------------------------------------------------
    def account(self, deposit: str | int, leverage: dict[str, int] | None = None) -> int:
        evs = self.ok(c.CreateAccount())
        aid = evs[0].account_id
        if Decimal(str(deposit)) > 0:
            self.ok(c.Deposit(aid, atoms(deposit)))
        for sym, lev in (leverage or {}).items():
            self.ok(c.SetLeverage(aid, sym, lev))
        return aid

    def mark(self, symbol: str, price: str | int) -> list[Any]:
        return self.ok(c.SetMarkPrice(symbol, self.ticks(symbol, price)))

    def index(self, symbol: str, price: str | int) -> list[Any]:
        return self.ok(c.SetIndexPrice(symbol, self.ticks(symbol, price)))

    def funding(self, symbol: str, rate_e8: int | None = None) -> list[Any]:
        return self.ok(c.ApplyFunding(symbol, rate_e8))

    def limit(self, aid: int, symbol: str, side: str, qty: str, price: str | int, **kw: Any) -> list[Any]:
        return self.ok(
            c.PlaceOrder(aid, symbol, side, self.lots(symbol, qty), self.ticks(symbol, price), **kw)
        )

    def fund_top_up(self, usd: str | int) -> None:
        self.ok(c.TopUpInsuranceFund(atoms(usd)))

    # -- reads ---------------------------------------------------------------------------
    def wallet(self, aid: int) -> int:
        return self.engine.accounts[aid].wallet_atoms

    def size(self, aid: int, symbol: str) -> int:
        return self.engine.accounts[aid].size(symbol)

    def entry_value(self, aid: int, symbol: str) -> int:
        pos = self.engine.accounts[aid].positions.get(symbol)
        return pos.entry_value_atoms if pos else 0

    @property
    def fund(self) -> int:
        return self.engine.insurance_fund.wallet_atoms

    def of_type(self, evs: list[Any], type_name: str) -> list[Any]:
        return [e for e in evs if type_name == e.TYPE]
