"""Exact numbers in, decimal strings out: how the lab writes money and ratios.

Money is integer atoms (1e-8 USD) everywhere in the lab; ratios are `Fraction`s. They become
text only here: `usd` (exact, for JSON and CSV), `usd_short` (whole dollars with thousands
separators, for tables a person reads), `ratio` (a fixed number of decimals, rounded half
to even: the same digits on every machine). No float is ever formatted into the JSON.
"""

from __future__ import annotations

from fractions import Fraction

from engine.units import E8, div_half_even, e8_to_str

RATIO_DIGITS = 6


def usd(atoms: int) -> str:
    """Atoms as an exact USD decimal string: 150000000 -> "1.5"."""
    return e8_to_str(atoms)


def usd_short(atoms: int) -> str:
    """Atoms as whole USD with separators, rounded half to even: "-1,234,568"."""
    return f"{div_half_even(atoms, E8):,}"


def ratio(value: Fraction | None, digits: int = RATIO_DIGITS) -> str | None:
    """A fraction as a decimal string with `digits` decimals (half to even); None stays None."""
    if value is None:
        return None
    scaled = div_half_even(value.numerator * 10**digits, value.denominator)
    sign = "-" if scaled < 0 else ""
    whole, frac = divmod(abs(scaled), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}" if digits else f"{sign}{whole}"


def percent(value: Fraction | None, digits: int = 1) -> str:
    """A fraction as a percentage for tables: Fraction(1, 8) -> "12.5%"; None -> "n/a"."""
    if value is None:
        return "n/a"
    text = ratio(value * 100, digits)
    return f"{text}%"


def short_ratio(value: Fraction | None, digits: int = 3) -> str:
    """A fraction for tables with a few decimals; None -> "n/a"."""
    text = ratio(value, digits)
    return "n/a" if text is None else text
