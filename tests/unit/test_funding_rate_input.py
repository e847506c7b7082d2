"""The funding `rate` parser of the API edge (api/schemas.py `funding_rate_e8`, SPEC §1/§12),
the rendering of the SPEC §12 events (service/format.py) and a symbol's funding state."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from api.errors import validation_error
from api.schemas import FundingRequest, funding_rate_e8
from engine import commands as c
from engine import events as ev
from engine.engine import Engine
from engine.instruments import default_instruments
from service.format import EventFormatter, funding_state

E8 = 10**8
BTC = "BTC-PERP"

ACCEPTED: list[tuple[Any, int | None]] = [
    ("0.0001", 10_000),
    ("-0.0001", -10_000),
    ("0", 0),
    ("-0", 0),
    ("-0.0", 0),
    ("0.00375", 375_000),
    ("0.99999999", E8 - 1),
    ("-0.99999999", -(E8 - 1)),
    ("0.000000015", 2),  # 1.5 parts per 1e8: half-even up to 2
    ("0.000000025", 2),  # 2.5: half-even down to 2
    ("0.000000035", 4),
    ("-0.000000025", -2),  # symmetric: the magnitude is rounded
    ("0.000000005", 0),
    ("0.0000000051", 1),
    ("0.00000000499999999999", 0),
    ("0.999999994999", E8 - 1),
    ("00.5", E8 // 2),
    ("0.10000000000000000000", E8 // 10),
    (0, 0),
    (-0.0, 0),
    (0.0001, 10_000),
    (-0.00025, -25_000),
    (1e-05, 1_000),  # shortest form "1e-05", read as "0.00001"
    (2.5e-08, 2),
    (1e-12, 0),
    (None, None),
]


@pytest.mark.parametrize(("value", "rate_e8"), ACCEPTED, ids=[repr(v) for v, _ in ACCEPTED])
def test_funding_rate_when_signed_decimal_within_one_converts_half_even(
    value: Any, rate_e8: int | None
) -> None:
    assert funding_rate_e8(value) == rate_e8


REFUSED: list[tuple[Any, str]] = [
    ("1", "funding_rate_range"),
    ("-1", "funding_rate_range"),
    ("1.0", "funding_rate_range"),
    ("0.999999995", "funding_rate_range"),  # rounds to 1.00000000
    ("-0.999999995", "funding_rate_range"),
    ("9" * 64, "funding_rate_range"),
    (1, "funding_rate_range"),
    (-1, "funding_rate_range"),
    (10**40, "funding_rate_range"),
    (1.5, "funding_rate_range"),
    (1e5, "funding_rate_range"),
    (1e300, "funding_rate_range"),
    (-1e16, "funding_rate_range"),
    ("1e5", "decimal_parsing"),
    ("1e-5", "decimal_parsing"),
    ("+0.1", "decimal_parsing"),
    ("--0.1", "decimal_parsing"),
    ("- 0.1", "decimal_parsing"),
    ("-", "decimal_parsing"),
    ("\u22120.1", "decimal_parsing"),  # unicode minus
    (".5", "decimal_parsing"),
    ("-.5", "decimal_parsing"),
    ("5.", "decimal_parsing"),
    (" 0.1", "decimal_parsing"),
    ("0.1 ", "decimal_parsing"),
    ("0,1", "decimal_parsing"),
    ("", "decimal_parsing"),
    ("NaN", "decimal_parsing"),
    ("0." + "0" * 63, "decimal_parsing"),  # 65 characters
    ("\u0660.1", "decimal_parsing"),  # Arabic-Indic zero
    (5e-324, "decimal_parsing"),  # only short with an exponent: 300+ digits written out
    (float("nan"), "decimal_parsing"),
    (float("-inf"), "decimal_parsing"),
    (True, "decimal_type"),
    (False, "decimal_type"),
    (["0.1"], "decimal_type"),
    ({"v": "0.1"}, "decimal_type"),
]


@pytest.mark.parametrize(("value", "kind"), REFUSED, ids=[repr(v)[:24] for v, _ in REFUSED])
def test_funding_rate_when_not_a_signed_decimal_within_one_refuses(value: Any, kind: str) -> None:
    with pytest.raises(PydanticCustomError) as info:
        funding_rate_e8(value)
    assert info.value.type == kind


@pytest.mark.parametrize("body", [{"symbol": BTC, "rate": "1"}, {"symbol": BTC, "rate": "x"}], ids=["range", "syntax"])
def test_funding_request_when_rate_refused_answers_invalid_funding_rate(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        FundingRequest.model_validate(body)
    errors = [{**e, "loc": ("body", *e["loc"])} for e in info.value.errors()]
    err = validation_error(errors)
    assert (err.status, err.code, err.error) == (400, 1015, "INVALID_FUNDING_RATE")


def test_funding_request_when_rate_absent_or_null_asks_for_the_computed_rate() -> None:
    assert FundingRequest.model_validate({"symbol": BTC}).rate is None
    assert FundingRequest.model_validate({"symbol": BTC, "rate": None}).rate is None


# -- rendering ------------------------------------------------------------------------------------

FMT = EventFormatter(default_instruments())
EVENTS: list[tuple[Any, dict[str, Any]]] = [
    (
        ev.IndexPriceChanged(1, 0, BTC, 500_000, -15),
        {"symbol": BTC, "price": "50000", "basis": "-1.5"},
    ),
    (
        ev.FundingRateChanged(2, 0, BTC, 39_992, 89_992, 2, 500_185),
        {"symbol": BTC, "rate": "0.00039992", "premium": "0.00089992", "samples": 2, "mark_price": "50018.5"},
    ),
    (
        ev.FundingRateChanged(3, 0, BTC, -10_000, None, 0, 500_000),
        {"symbol": BTC, "rate": "-0.0001", "premium": None, "samples": 0, "mark_price": "50000"},
    ),
    (
        ev.FundingPaid(4, 0, 7, BTC, -10, 10_000, 5_000_000, 1_000_005_000_000),
        {"account_id": 7, "symbol": BTC, "size": "-0.01", "rate": "0.0001", "amount": "0.05", "wallet_balance": "10000.05"},
    ),
]


@pytest.mark.parametrize(("event", "data"), EVENTS, ids=[f"{e.TYPE}-{e.seq}" for e, _ in EVENTS])
def test_format_when_spec12_event_renders_decimal_strings(event: Any, data: dict[str, Any]) -> None:
    assert FMT.data(event) == data
    assert FMT.envelope(event) == {"type": event.TYPE, "seq": event.seq, "ts_ns": 0, "data": data}


def test_funding_state_when_samples_recorded_reports_mean_prediction_and_schedule() -> None:
    instruments = default_instruments()
    instruments[BTC] = dataclasses.replace(instruments[BTC], mark_source="index", funding_interval_s=3_600)
    engine = Engine(instruments)
    engine.apply(c.SetIndexPrice(BTC, 500_000, ts_ns=1))
    engine.premium_sum[BTC] = Fraction(3, 1000) + Fraction(1, 3000)  # two samples, set directly
    engine.premium_samples[BTC] = 2
    engine.funding_history[BTC].extend([(3_600_000_000_000, 10_000), (7_200_000_000_000, -20_000)])
    state = funding_state(engine, BTC, now_ns=7_200_000_000_001)
    # P = (0.003 + 0.000333...) / 2 = 0.0016666... -> "0.00166667"; rate = P - 0.0005 = 0.00116667
    assert state == {
        "symbol": BTC, "mark_source": "index", "index_price": "50000", "mark_price": "50000",
        "basis": "0", "premium": "0.00166667", "samples": 2, "predicted_rate": "0.00116667",
        "interest_rate": "0.0001", "funding_cap": "0.00375", "funding_interval_s": 3_600,
        "next_funding_time": 10_800_000,
        "recent": [{"time": 7_200_000, "rate": "-0.0002"}, {"time": 3_600_000, "rate": "0.0001"}],
    }
    # far from the interest: the cap binds (P = 0.01 -> 0.0095 -> 0.00375)
    engine.premium_sum[BTC] = Fraction(2, 100)
    assert funding_state(engine, BTC, 0)["predicted_rate"] == "0.00375"
    fresh = funding_state(Engine(), "ETH-PERP", 0)
    assert (fresh["index_price"], fresh["mark_price"], fresh["premium"], fresh["predicted_rate"]) == (None, None, None, "0.0001")
    assert fresh["next_funding_time"] == 28_800_000
