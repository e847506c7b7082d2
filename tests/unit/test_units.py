"""Integer units, rounding helpers, decimal parsing and instrument grids/tiers (SPEC §1, §2)."""

from __future__ import annotations

import math
import random
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction

import pytest

from engine.instruments import DEFAULT_TIERS, Instrument, Tier, default_instruments
from engine.units import (
    E8,
    decimal_str_to_e8,
    div_ceil,
    div_floor,
    div_half_even,
    div_trunc,
    e8_to_str,
    ppm_of_ceil,
    ppm_of_floor,
)

USD = E8
BTC_INST = default_instruments()["BTC-PERP"]
ETH_INST = default_instruments()["ETH-PERP"]

# -- division helpers --------------------------------------------------------------------

DIV_CASES = [
    # num, den, floor, ceil, trunc, half_even
    (7, 2, 3, 4, 3, 4),  # 3.5 -> 4 (even)
    (5, 2, 2, 3, 2, 2),  # 2.5 -> 2 (even)
    (-5, 2, -3, -2, -2, -2),  # -2.5 -> -2
    (-7, 2, -4, -3, -3, -4),  # -3.5 -> -4
    (5, -2, -3, -2, -2, -2),  # negative divisor
    (-5, -2, 2, 3, 2, 2),  # both negative: 2.5
    (1, 2, 0, 1, 0, 0),  # 0.5 -> 0
    (-1, 2, -1, 0, 0, 0),  # -0.5 -> 0
    (3, 2, 1, 2, 1, 2),  # 1.5 -> 2
    (-3, 2, -2, -1, -1, -2),  # -1.5 -> -2
    (8, 3, 2, 3, 2, 3),  # 2.67
    (-8, 3, -3, -2, -2, -3),
    (7, 3, 2, 3, 2, 2),  # 2.33
    (-7, 3, -3, -2, -2, -2),
    (6, 3, 2, 2, 2, 2),  # exact
    (-6, 3, -2, -2, -2, -2),
    (0, 5, 0, 0, 0, 0),
    (0, -5, 0, 0, 0, 0),
]
DIV_IDS = [f"{n}/{d}" for n, d, *_ in DIV_CASES]


@pytest.mark.parametrize(("num", "den", "floor", "ceil", "trunc", "even"), DIV_CASES, ids=DIV_IDS)
def test_divide_when_signs_and_ties_vary_rounds_in_named_direction(
    num: int, den: int, floor: int, ceil: int, trunc: int, even: int
) -> None:
    assert div_floor(num, den) == floor
    assert div_ceil(num, den) == ceil
    assert div_trunc(num, den) == trunc
    assert div_half_even(num, den) == even


def test_divide_when_compared_to_exact_fractions_agrees_on_seeded_sample() -> None:
    rng = random.Random(11)
    for _ in range(5_000):
        num = rng.randint(-10**20, 10**20)
        den = rng.choice([-1, 1]) * rng.randint(1, 10**9)
        exact = Fraction(num, den)
        assert div_floor(num, den) == math.floor(exact)
        assert div_ceil(num, den) == math.ceil(exact)
        assert div_trunc(num, den) == math.trunc(exact)
        assert div_half_even(num, den) == round(exact)  # Fraction.__round__ is half-even
    for num in range(-50, 51):  # dense ties
        for den in (2, -2, 4, -4, 10):
            assert div_half_even(num, den) == round(Fraction(num, den)), (num, den)


@pytest.mark.parametrize(
    ("amount", "ppm", "ceil", "floor"),
    [
        (1, 1, 1, 0),
        (1_000_000, 200, 200, 200),
        (1_234_500, 200, 247, 246),  # 246.9
        (1_234_500, 500, 618, 617),  # 617.25
        (-1, 500_000, 0, -1),  # -0.5
        (0, 500, 0, 0),
    ],
    ids=["tiny", "exact", "maker_fraction", "taker_fraction", "negative_half", "zero"],
)
def test_ppm_of_when_fractional_rounds_ceil_up_and_floor_down(amount: int, ppm: int, ceil: int, floor: int) -> None:
    assert ppm_of_ceil(amount, ppm) == ceil
    assert ppm_of_floor(amount, ppm) == floor


# -- decimal strings <-> e8 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("1", E8),
        ("-1", -E8),
        ("+2", 2 * E8),
        ("10000.5", 1_000_050_000_000),
        ("0.00000001", 1),
        ("-0.00000001", -1),
        ("1.23456789", 123_456_789),
        ("0.10000000", 10_000_000),  # trailing zeros beyond 8 digits of value are fine
        ("1.000000000", E8),  # a 9th decimal that is zero is still exact
        (".5", 50_000_000),
        ("5.", 5 * E8),
        (" 7 ", 7 * E8),
        ("007", 7 * E8),
        ("1e3", 1_000 * E8),  # JSON numbers can carry exponents (SPEC §1)
        ("2.5E-2", 2_500_000),
        ("1E+2", 100 * E8),
        ("10e-9", 1),
    ],
    ids=[
        "zero", "one", "neg_one", "plus_sign", "half_tick", "one_atom", "neg_one_atom", "eight_decimals",
        "padded", "ninth_zero", "leading_dot", "trailing_dot", "spaces", "leading_zeros",
        "exp", "exp_neg", "exp_plus", "exp_back_to_grid",
    ],
)
def test_parse_decimal_when_valid_returns_exact_e8(text: str, value: int) -> None:
    assert decimal_str_to_e8(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "0.000000001",  # 9 decimals
        "1.123456789",
        "1e-9",
        "",
        " ",
        ".",
        "-",
        "+",
        "abc",
        "1.2.3",
        "1,5",
        "1_000",
        "0x10",
        "nan",
        "NaN",
        "inf",
        "-Infinity",
        "--1",
        "+-1",
        "1e",
        "e5",
        "1e+",
        "1e+-3",
        "1e--3",
        "1e3e4",
        "1e1.5",
        "1e99999",  # exponent too long
        "1e40",  # would be astronomically large
        "9" * 65,  # too long
        "²",  # a digit to str.isdigit, not to int()
        "١٢",  # Arabic-Indic digits: not an ASCII decimal
        "1\x00",
    ],
    ids=[
        "nine_decimals", "nine_decimals_2", "exp_below_atom", "empty", "blank", "dot", "minus", "plus",
        "letters", "two_dots", "comma", "underscore", "hex", "nan", "NaN", "inf", "neg_infinity",
        "double_minus", "plus_minus", "exp_empty", "exp_no_mantissa", "exp_sign_only", "exp_two_signs",
        "exp_double_minus", "exp_twice", "exp_fraction", "exp_huge", "exp_overflow", "too_long",
        "superscript_two", "arabic_indic", "nul",
    ],
)
def test_parse_decimal_when_malformed_or_off_grid_returns_none(text: str) -> None:
    assert decimal_str_to_e8(text) is None


def test_parse_decimal_when_fuzzed_never_raises_and_agrees_with_decimal() -> None:
    rng = random.Random(5)
    alphabet = "0123456789+-.eE _x\u00b2\u0661"
    accepted = 0
    for _ in range(30_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9)))
        got = decimal_str_to_e8(text)  # must never raise
        s = text.strip()
        try:
            d = Decimal(s) if s.isascii() and "_" not in s else None
        except InvalidOperation:
            d = None
        if got is not None:
            accepted += 1
            assert d is not None and d.is_finite(), text
            with localcontext() as ctx:
                ctx.prec = 200
                assert d * E8 == got, text
            continue
        if d is None or not d.is_finite():
            continue
        exp_text = s.lower().partition("e")[2]
        if len(exp_text) > 4 or (exp_text and abs(int(exp_text)) > 30):
            continue
        with localcontext() as ctx:
            ctx.prec = 200
            scaled = d * E8
        assert scaled != scaled.to_integral_value(), f"{text!r} is on the e8 grid but was rejected"
    assert accepted > 1_000  # the fuzzer really exercised the accepting path


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (1, "0.00000001"),
        (-1, "-0.00000001"),
        (E8, "1"),
        (-E8, "-1"),
        (50_000_000, "0.5"),
        (-50_000_000, "-0.5"),
        (123_456_789, "1.23456789"),
        (1_000_050_000_000, "10000.5"),
        (10**30 * E8, "1" + "0" * 30),
    ],
    ids=["zero", "atom", "neg_atom", "one", "neg_one", "half", "neg_half", "eight", "price", "huge"],
)
def test_format_e8_when_formatted_is_canonical_and_round_trips(value: int, text: str) -> None:
    assert e8_to_str(value) == text
    assert decimal_str_to_e8(text) == value


def test_format_e8_when_seeded_values_round_trip_exactly() -> None:
    rng = random.Random(3)
    for _ in range(5_000):
        v = rng.randint(-(10**18), 10**18) // rng.choice([1, 10, 1_000, 10**7, 10**8])
        s = e8_to_str(v)
        assert decimal_str_to_e8(s) == v
        assert "e" not in s.lower()
        if "." in s:
            assert not s.endswith(("0", "."))


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("10000.50", "10000.5"), ("007", "7"), ("-0.0", "0"), ("1e3", "1000"), ("+.25", "0.25")],
    ids=["trailing_zero", "leading_zeros", "negative_zero", "exponent", "plus_dot"],
)
def test_parse_then_format_when_not_canonical_normalises(text: str, canonical: str) -> None:
    v = decimal_str_to_e8(text)
    assert v is not None
    assert e8_to_str(v) == canonical


# -- instrument grids ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inst", "price", "ticks"),
    [
        (BTC_INST, "10000.5", 100_005),
        (BTC_INST, "10000", 100_000),
        (BTC_INST, "0.1", 1),
        (BTC_INST, "10000.55", None),
        (BTC_INST, "0.00000001", None),
        (BTC_INST, "-0.1", -1),  # grid only; the sign is checked elsewhere
        (ETH_INST, "3000.01", 300_001),
        (ETH_INST, "3000.015", None),
    ],
    ids=["btc_half", "btc_whole", "btc_one_tick", "btc_off", "btc_atom_off", "btc_negative", "eth_on", "eth_off"],
)
def test_ticks_from_e8_when_on_or_off_grid_returns_ticks_or_none(inst: Instrument, price: str, ticks: int | None) -> None:
    e8 = decimal_str_to_e8(price)
    assert e8 is not None
    assert inst.ticks_from_e8(e8) == ticks
    if ticks is not None:
        assert inst.price_e8(ticks) == e8


@pytest.mark.parametrize(
    ("inst", "qty", "lots"),
    [
        (BTC_INST, "0.001", 1),
        (BTC_INST, "1", 1_000),
        (BTC_INST, "1.234", 1_234),
        (BTC_INST, "0.0015", None),
        (BTC_INST, "0.0001", None),
        (ETH_INST, "0.01", 1),
        (ETH_INST, "2.5", 250),
        (ETH_INST, "0.005", None),
    ],
    ids=["btc_lot", "btc_one", "btc_many", "btc_half_lot", "btc_tenth_lot", "eth_lot", "eth_many", "eth_half_lot"],
)
def test_lots_from_e8_when_on_or_off_grid_returns_lots_or_none(inst: Instrument, qty: str, lots: int | None) -> None:
    e8 = decimal_str_to_e8(qty)
    assert e8 is not None
    assert inst.lots_from_e8(e8) == lots
    if lots is not None:
        assert inst.qty_e8(lots) == e8


@pytest.mark.parametrize("inst", [BTC_INST, ETH_INST], ids=["btc", "eth"])
def test_atoms_per_lot_tick_when_default_instrument_is_ten_thousand(inst: Instrument) -> None:
    assert inst.atoms_per_lot_tick == 10_000
    assert inst.notional_atoms(1, 1) == 10_000
    assert inst.notional_atoms(-3, 7) == -210_000


@pytest.mark.parametrize(
    ("tick_e8", "lot_e8"),
    [(1, 1), (0, E8), (E8, 0), (-1, E8)],
    ids=["sub_atom_product", "zero_tick", "zero_lot", "negative_tick"],
)
def test_instrument_when_grid_is_not_whole_atoms_raises(tick_e8: int, lot_e8: int) -> None:
    with pytest.raises(ValueError):
        Instrument("X-PERP", tick_size_e8=tick_e8, lot_size_e8=lot_e8)


def test_instrument_when_tiers_unsorted_raises() -> None:
    with pytest.raises(ValueError):
        Instrument("X-PERP", E8, E8, tiers=tuple(reversed(DEFAULT_TIERS)))


# -- maintenance tiers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notional_usd_atoms", "tier_index", "mm_atoms"),
    [
        (0, 0, 0),
        (1, 0, 1),  # 0.005 atom rounds up to 1 (owed by the trader)
        (50_000 * USD, 0, 250 * USD),
        (100_000 * USD, 0, 500 * USD),  # boundary belongs to the lower tier
        (100_000 * USD + 1, 1, 500 * USD + 1),
        (500_000 * USD, 1, 4_500 * USD),  # 1% - 500
        (1_000_000 * USD, 1, 9_500 * USD),
        (1_000_000 * USD + 1, 2, 9_500 * USD + 1),
        (5_000_000 * USD, 2, 109_500 * USD),  # 2.5% - 15,500
        (10_000_000 * USD, 2, 234_500 * USD),
        (20_000_000 * USD, 2, 484_500 * USD),  # beyond the table: last tier
        (-500_000 * USD, 1, 4_500 * USD),  # shorts: |N|
    ],
    ids=[
        "zero", "one_atom", "tier1_mid", "tier1_edge", "tier2_first_atom", "tier2_mid", "tier2_edge",
        "tier3_first_atom", "tier3_mid", "tier3_edge", "beyond_last", "short",
    ],
)
def test_maintenance_atoms_when_notional_in_tier_uses_rate_minus_amount(
    notional_usd_atoms: int, tier_index: int, mm_atoms: int
) -> None:
    assert BTC_INST.tier_for(notional_usd_atoms) is DEFAULT_TIERS[tier_index]
    assert BTC_INST.maintenance_atoms(notional_usd_atoms) == mm_atoms


@pytest.mark.parametrize("boundary", [100_000 * USD, 1_000_000 * USD], ids=["100k", "1M"])
def test_maintenance_atoms_when_crossing_tier_boundary_is_continuous(boundary: int) -> None:
    lower = BTC_INST.tier_for(boundary)
    upper = BTC_INST.tier_for(boundary + 1)
    assert lower is not upper
    # both tiers' formulas agree exactly at the boundary
    at_lower = ppm_of_ceil(boundary, lower.maintenance_ppm) - lower.maintenance_amount_atoms
    at_upper = ppm_of_ceil(boundary, upper.maintenance_ppm) - upper.maintenance_amount_atoms
    assert at_lower == at_upper
    # and one atom either side moves MM by at most one atom (the ceiling), never a jump
    for n in range(boundary - 5, boundary + 6):
        step = BTC_INST.maintenance_atoms(n + 1) - BTC_INST.maintenance_atoms(n)
        assert 0 <= step <= 1, n


def test_maintenance_atoms_when_notional_grows_never_decreases() -> None:
    prev = 0
    for usd in range(0, 12_000_001, 7_919):
        mm = BTC_INST.maintenance_atoms(usd * USD)
        assert mm >= prev
        prev = mm


@pytest.mark.parametrize(
    ("notional", "lev"),
    [(1, 50), (100_000 * USD, 50), (100_000 * USD + 1, 25), (1_000_000 * USD + 1, 10), (10**9 * USD, 10)],
    ids=["tiny", "tier1_edge", "tier2", "tier3", "beyond_last"],
)
def test_max_leverage_for_when_notional_in_tier_caps_at_tier_leverage(notional: int, lev: int) -> None:
    assert BTC_INST.max_leverage_for(notional) == lev
    assert BTC_INST.max_leverage_for(-notional) == lev


def test_tier_for_when_custom_table_exceeded_returns_last_tier() -> None:
    tiers = (Tier(10 * USD, 10_000, 0, 20), Tier(20 * USD, 20_000, 10 * 10**6, 5))
    inst = Instrument("X-PERP", E8, E8, max_leverage=20, tiers=tiers)
    assert inst.tier_for(10**12 * USD) is tiers[-1]
    assert inst.maintenance_atoms(100 * USD) == 2 * USD - 10 * 10**6
