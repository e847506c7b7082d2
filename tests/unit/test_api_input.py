"""The strict input parsers of the API edge (api/schemas.py, SPEC §1), table-driven, and the
agreement of the OpenAPI document with them (what it documents is what is enforced)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic_core import PydanticCustomError

from api.app import create_app
from api.schemas import (
    DECIMAL_PATTERN,
    ID_MAX,
    SIGNED_DECIMAL_PATTERN,
    body_id,
    decimal_e8,
    path_id,
)
from service.settings import Settings

E8 = 10**8

ACCEPTED: list[tuple[Any, int]] = [
    ("1", E8),
    ("49000", 49_000 * E8),
    ("0.5", E8 // 2),
    ("007.25", 725 * E8 // 100),
    ("1.00000001", E8 + 1),
    ("1.50000000000", 3 * E8 // 2),  # trailing zeros past the 8th decimal are fine
    ("999999999999999.99999999", 10**23 - 1),
    (30000, 30_000 * E8),
    (28000.1, 2_800_010_000_000),
    (3e4, 30_000 * E8),  # a JSON number with an exponent, read as "30000"
    (1.5e-05, 1_500),  # shortest form "1.5e-05", written without an exponent: "0.000015"
    (0.1, E8 // 10),
]


@pytest.mark.parametrize(("value", "e8"), ACCEPTED, ids=[repr(v) for v, _ in ACCEPTED])
def test_decimal_e8_when_plain_decimal_parses_exactly(value: Any, e8: int) -> None:
    assert decimal_e8(value) == e8
    assert decimal_e8(value, signed=True) == e8


REFUSED: list[tuple[Any, str]] = [
    ("1e3", "decimal_parsing"),
    (" 49000", "decimal_parsing"),
    ("49000 ", "decimal_parsing"),
    ("49000\n", "decimal_parsing"),
    ("+49000", "decimal_parsing"),
    (".5", "decimal_parsing"),
    ("5.", "decimal_parsing"),
    ("1_000", "decimal_parsing"),
    ("٣", "decimal_parsing"),
    ("NaN", "decimal_parsing"),
    ("", "decimal_parsing"),
    ("1.000000001", "decimal_parsing"),
    ("9" * 65, "decimal_parsing"),
    ("1000000000000000", "decimal_too_large"),
    ("-1", "decimal_positive"),
    ("0", "decimal_positive"),
    ("0.000", "decimal_positive"),
    (-5, "decimal_positive"),
    (-0.0, "decimal_positive"),
    (1e-9, "decimal_parsing"),
    (1e16, "decimal_too_large"),
    (1e300, "decimal_too_large"),
    (5e-324, "decimal_parsing"),
    (10**40, "decimal_too_large"),
    (float("nan"), "decimal_parsing"),
    (float("inf"), "decimal_parsing"),
    (True, "decimal_type"),
    (None, "decimal_type"),
    (["1"], "decimal_type"),
]


@pytest.mark.parametrize(("value", "kind"), REFUSED, ids=[repr(v)[:20] for v, _ in REFUSED])
def test_decimal_e8_when_not_strict_positive_decimal_refuses(value: Any, kind: str) -> None:
    with pytest.raises(PydanticCustomError) as err:
        decimal_e8(value)
    assert err.value.type == kind


SIGNED: list[tuple[Any, int]] = [("-1", -E8), ("-0.5", -E8 // 2), ("0", 0), ("-0", 0), (-2.5, -5 * E8 // 2)]


@pytest.mark.parametrize(("value", "e8"), SIGNED, ids=[repr(v) for v, _ in SIGNED])
def test_decimal_e8_when_signed_field_negative_or_zero_parses(value: Any, e8: int) -> None:
    assert decimal_e8(value, signed=True) == e8


@pytest.mark.parametrize("value", ["+1", "--1", "- 1", "−1", "-.5", "-1e3"])
def test_decimal_e8_when_signed_field_malformed_refuses(value: str) -> None:
    with pytest.raises(PydanticCustomError):
        decimal_e8(value, signed=True)


@pytest.mark.parametrize("value", [1, 42, ID_MAX])
def test_body_id_when_json_integer_in_range_parses(value: int) -> None:
    assert body_id(value) == value


@pytest.mark.parametrize(
    "value", [0, -1, ID_MAX + 1, 2**64, "1", 1.0, True, None, [1]], ids=repr
)
def test_body_id_when_not_integer_in_range_refuses(value: Any) -> None:
    with pytest.raises(PydanticCustomError) as err:
        body_id(value)
    assert err.value.type == "invalid_id"


@pytest.mark.parametrize("text", ["1", "42", str(ID_MAX)])
def test_path_id_when_canonical_digits_in_range_parses(text: str) -> None:
    assert path_id(text) == int(text)


@pytest.mark.parametrize(
    "text",
    ["0", "-1", "01", "1.0", "+1", "1e3", " 1", "1 ", "1\n", "١", "", str(ID_MAX + 1), "9" * 400],
    ids=repr,
)
def test_path_id_when_not_canonical_id_refuses(text: str) -> None:
    with pytest.raises(PydanticCustomError) as err:
        path_id(text)
    assert err.value.type == "invalid_id"


# -- the OpenAPI document says what is enforced --------------------------------------------

OPENAPI = create_app(Settings(admin_token="unused-but-long-enough")).openapi()


def _decimal_string_schemas(node: Any) -> list[dict[str, Any]]:
    """Every string schema with a decimal pattern in the document."""
    out = []
    if isinstance(node, dict):
        if node.get("type") == "string" and "pattern" in node and "[0-9]" in node["pattern"]:
            out.append(node)
        for v in node.values():
            out += _decimal_string_schemas(v)
    elif isinstance(node, list):
        for v in node:
            out += _decimal_string_schemas(v)
    return out


def test_openapi_when_built_documents_every_decimal_with_the_spec_pattern() -> None:
    schemas = _decimal_string_schemas(OPENAPI)
    assert len(schemas) >= 6  # price, qty, amount in several requests
    assert {s["pattern"] for s in schemas} <= {DECIMAL_PATTERN, SIGNED_DECIMAL_PATTERN}
    assert DECIMAL_PATTERN == r"^[0-9]+(\.[0-9]+)?$"  # SPEC §1, verbatim


def test_openapi_when_built_documents_every_id_as_positive_int64() -> None:
    ids = [
        p["schema"]
        for path in OPENAPI["paths"].values()
        for op in path.values()
        for p in op.get("parameters", [])
        if p["in"] == "path" and p["name"].endswith("_id") and p["name"] != "client_order_id"
    ]
    deposit = OPENAPI["components"]["schemas"]["DepositRequest"]["properties"]["account_id"]
    assert len(ids) >= 4
    for schema in [*ids, deposit]:
        assert (schema["type"], schema["format"], schema["minimum"]) == ("integer", "int64", 1)
        assert "maximum" not in schema  # FastAPI would write it as a float: 2^63, not 2^63-1
    (by_client_id,) = OPENAPI["paths"]["/v1/orders/by-client-id/{client_order_id}"]["patch"]["parameters"][:1]
    assert (by_client_id["schema"]["type"], by_client_id["schema"]["maxLength"]) == ("string", 64)


@pytest.mark.parametrize(
    "text", ["1e3", " 49000", "+49000", ".5", "5.", "49000\n", "1_0", "٣", "-1", "1.2.3", "1.5", "7"]
)
def test_decimal_pattern_when_it_refuses_a_string_the_parser_refuses_it_too(text: str) -> None:
    # ECMA-262 `$` (JSON Schema) does not match before a final newline; Python's does.
    documented = re.search(DECIMAL_PATTERN.replace("$", r"\Z"), text) is not None
    try:
        decimal_e8(text)
        accepted = True
    except PydanticCustomError:
        accepted = False
    assert accepted <= documented, text  # anything accepted matches the documented pattern
