"""Instrument specifications: tick, lot, fees, maintenance tiers, bands (SPEC §2).

All values are integers. Tick and lot sizes are `_e8` fixed-point (1e-8 USD per tick,
1e-8 base units per lot); the value of one lot at one tick, in quote atoms, must be a
whole number (`atoms_per_lot_tick`), so that every notional is an exact integer.

Invariant: tiers are sorted by `max_notional_atoms` and maintenance margin is continuous
across tier boundaries (the defaults are); the last tier also covers larger notionals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.pickling import constructor_args
from engine.units import E8, PPM


@dataclass(frozen=True, slots=True)
class Tier:
    """One maintenance tier: applies to notionals up to and including `max_notional_atoms`."""

    max_notional_atoms: int
    maintenance_ppm: int
    maintenance_amount_atoms: int
    max_leverage: int

    def __reduce__(self) -> tuple[Any, ...]:
        return Tier, constructor_args(self)  # engine/pickling.py


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier(100_000 * E8, 5_000, 0, 50),
    Tier(1_000_000 * E8, 10_000, 500 * E8, 25),
    Tier(10_000_000 * E8, 25_000, 15_500 * E8, 10),
)


@dataclass(frozen=True, slots=True)
class Instrument:
    """A linear perpetual settled in USD."""

    symbol: str
    tick_size_e8: int
    lot_size_e8: int
    max_leverage: int = 50
    maker_fee_ppm: int = 200
    taker_fee_ppm: int = 500
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    market_band_ppm: int = 50_000
    liquidation_band_ppm: int = 100_000
    price_band_ppm: int = 50_000  # limit orders on the aggressive side: 0 turns the band off
    max_order_lots: int = 1_000_000  # per order (SPEC §3: 1,000 BTC at the default lot)
    max_order_notional_atoms: int = 50_000_000 * E8  # per order, at the mark
    default_leverage: int = 10
    initial_mark_ticks: int | None = None
    # SPEC §12: where the mark comes from, the basis EMA weight, and funding
    mark_source: str = "admin"  # "admin": POST /v1/admin/mark-price; "index": median(index, index+basis, last)
    basis_weight_ppm: int = 100_000
    funding_interval_s: int = 28_800
    interest_ppm: int = 100  # per funding interval
    funding_cap_ppm: int = 3_750
    atoms_per_lot_tick: int = field(init=False)

    def __post_init__(self) -> None:
        product = self.tick_size_e8 * self.lot_size_e8
        if self.tick_size_e8 <= 0 or self.lot_size_e8 <= 0 or product % E8:
            raise ValueError(f"{self.symbol}: tick*lot must be a whole number of atoms")
        if not self.tiers or list(self.tiers) != sorted(self.tiers, key=lambda t: t.max_notional_atoms):
            raise ValueError(f"{self.symbol}: tiers must be sorted by notional")
        if not 1 <= self.default_leverage <= self.max_leverage:
            raise ValueError(f"{self.symbol}: default leverage out of range")
        if not 0 <= self.price_band_ppm < 1_000_000 or self.max_order_lots <= 0 or self.max_order_notional_atoms <= 0:
            raise ValueError(f"{self.symbol}: price band must be 0..999999 ppm, order size limits positive")
        if self.mark_source not in ("admin", "index"):
            raise ValueError(f"{self.symbol}: mark_source must be admin or index")
        if not 0 < self.basis_weight_ppm <= 1_000_000 or self.funding_interval_s <= 0:
            raise ValueError(f"{self.symbol}: basis weight must be 1..1000000 ppm, funding interval positive")
        if not 0 <= self.funding_cap_ppm < 1_000_000 or abs(self.interest_ppm) >= 1_000_000:
            raise ValueError(f"{self.symbol}: funding cap must be 0..999999 ppm, interest within +-999999 ppm")
        object.__setattr__(self, "atoms_per_lot_tick", product // E8)

    def __reduce__(self) -> tuple[Any, ...]:
        return Instrument, constructor_args(self)  # engine/pickling.py

    def notional_atoms(self, qty_lots: int, price_ticks: int) -> int:
        """Exact notional of `qty_lots` at `price_ticks` (signed like qty)."""
        return qty_lots * price_ticks * self.atoms_per_lot_tick

    def tier_for(self, notional_atoms: int) -> Tier:
        """The tier whose range holds `|notional|` (the last tier beyond the table)."""
        n = abs(notional_atoms)
        for tier in self.tiers:
            if n <= tier.max_notional_atoms:
                return tier
        return self.tiers[-1]

    def maintenance_atoms(self, notional_atoms: int) -> int:
        """`MM = |N| * rate - amount`, rounded up (owed by the trader)."""
        n = notional_atoms if notional_atoms >= 0 else -notional_atoms
        if n == 0:
            return 0
        for tier in self.tiers:  # tier_for and ppm_of_ceil, inline: this runs per margin check
            if n <= tier.max_notional_atoms:
                break
        return -((-n * tier.maintenance_ppm) // PPM) - tier.maintenance_amount_atoms  # ppm_of_ceil

    def max_leverage_for(self, notional_atoms: int) -> int:
        """Highest leverage allowed for a position of this notional."""
        return min(self.max_leverage, self.tier_for(notional_atoms).max_leverage)

    def price_e8(self, price_ticks: int) -> int:
        """Ticks to an `_e8` price."""
        return price_ticks * self.tick_size_e8

    def qty_e8(self, qty_lots: int) -> int:
        """Lots to `_e8` base units."""
        return qty_lots * self.lot_size_e8

    def ticks_from_e8(self, price_e8: int) -> int | None:
        """An `_e8` price to ticks; None when it is not on the tick grid."""
        if price_e8 % self.tick_size_e8:
            return None
        return price_e8 // self.tick_size_e8

    def lots_from_e8(self, qty_e8: int) -> int | None:
        """An `_e8` quantity to lots; None when it is not on the lot grid."""
        if qty_e8 % self.lot_size_e8:
            return None
        return qty_e8 // self.lot_size_e8

    def value_price_e8(self, value_atoms: int, qty_lots: int) -> tuple[int, int]:
        """The price of `value_atoms` for `qty_lots` as an exact fraction (num, den) in e8 units.

        price (USD per base unit) = value / qty = (value_atoms / 1e8) / (qty_lots * lot_e8 / 1e8).
        In e8 units: value_atoms * 1e8 / (qty_lots * lot_e8).
        """
        return value_atoms * E8, qty_lots * self.lot_size_e8


def default_instruments() -> dict[str, Instrument]:
    """The SPEC §2 instruments."""
    return {
        # max_order_lots: 1,000 BTC of 0.001 and 10,000 ETH of 0.01 (SPEC §3)
        "BTC-PERP": Instrument(
            "BTC-PERP", tick_size_e8=10_000_000, lot_size_e8=100_000, max_order_lots=1_000_000
        ),
        "ETH-PERP": Instrument(
            "ETH-PERP", tick_size_e8=1_000_000, lot_size_e8=1_000_000, max_order_lots=1_000_000
        ),
    }


