"""Integer units and the only division helpers the engine uses.

Units (SPEC §1):
- prices are integer ticks (`*_ticks`), quantities integer lots (`*_lots`);
- money is integer quote atoms (`*_atoms`, 1 atom = 1e-8 USD);
- ratios are parts per million (`*_ppm`).

Every division in the engine goes through one of the helpers below, whose name says the
rounding direction. Rule of thumb: money owed *to* a trader rounds down, money owed *by* a
trader (fees, margin) rounds up; no rounding may create or destroy an atom.

Fixed-point decimals (`*_e8`) are integers scaled by 1e8; they carry decimal values across
the API edge without floats (the API turns a `Decimal` into an `_e8` integer and back).
"""

from __future__ import annotations

ATOMS_PER_USD = 100_000_000
E8 = 100_000_000
PPM = 1_000_000


def div_floor(num: int, den: int) -> int:
    """Divide, rounding toward minus infinity."""
    return num // den


def div_ceil(num: int, den: int) -> int:
    """Divide, rounding toward plus infinity."""
    return -((-num) // den)


def div_trunc(num: int, den: int) -> int:
    """Divide, rounding toward zero."""
    q = abs(num) // abs(den)
    return q if (num >= 0) == (den > 0) else -q


def div_half_even(num: int, den: int) -> int:
    """Divide, rounding to nearest with ties to even (banker's rounding)."""
    if den < 0:
        num, den = -num, -den
    q, r = divmod(num, den)
    twice = 2 * r
    if twice > den or (twice == den and q % 2 == 1):
        q += 1
    return q


def ppm_of_ceil(amount: int, rate_ppm: int) -> int:
    """`amount * rate_ppm / 1e6`, rounded up (what a trader owes: fees, margin)."""
    return div_ceil(amount * rate_ppm, PPM)


def ppm_of_floor(amount: int, rate_ppm: int) -> int:
    """`amount * rate_ppm / 1e6`, rounded down (what a trader is owed)."""
    return div_floor(amount * rate_ppm, PPM)


def e8_to_str(value_e8: int) -> str:
    """Format an `_e8` fixed-point integer as a plain decimal string, no trailing zeros."""
    sign = "-" if value_e8 < 0 else ""
    whole, frac = divmod(abs(value_e8), E8)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:08d}".rstrip("0")


def decimal_str_to_e8(text: str) -> int | None:
    """Parse a plain decimal string into an `_e8` integer; None if it has > 8 decimals or is malformed.

    Exact: no floats. Accepts an optional sign, digits, an optional fraction and an optional
    exponent (`1e3`, `2.5E-2`), as JSON numbers can have.
    """
    s = text.strip()
    if not s or len(s) > 64 or not s.isascii():  # str.isdigit() also admits "²", "١"
        return None
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    exp = 0
    for marker in ("e", "E"):
        if marker in s:
            s, _, exp_text = s.partition(marker)
            if not exp_text or not (exp_text[1:] if exp_text[0] in "+-" else exp_text).isdigit() or len(exp_text) > 4:
                return None
            exp = int(exp_text)
            break
    whole, dot, frac = s.partition(".")
    if (not whole and not frac) or (whole and not whole.isdigit()) or (frac and not frac.isdigit()):
        return None
    if dot and not frac and not whole:
        return None
    digits = int((whole or "0") + frac) if (whole or frac) else 0
    scale = len(frac) - exp  # value = digits * 10^-scale
    if scale <= 8:
        if 8 - scale > 40:
            return None
        factor: int = 10 ** (8 - scale)
        return sign * digits * factor
    div: int = 10 ** (scale - 8)
    if digits % div:
        return None
    return sign * (digits // div)
