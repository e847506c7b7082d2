"""Byte encodings of commands for the journal: `[type name, field values...]` in JSON.

Commands are frozen dataclasses of ints, strs, bools and None, so a JSON array of the
field values in declaration order is exact and stable across versions that only append
fields with defaults. Integers beyond 64 bits (hostile input that the engine rejects, but
still journals, as it journals every command that produced an event) go through the
standard library's exact JSON.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson

from engine import commands as c

COMMAND_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        c.CreateAccount,
        c.Deposit,
        c.Withdraw,
        c.TopUpInsuranceFund,
        c.SetMarkPrice,
        c.SetLeverage,
        c.SetAdlPolicy,
        c.PlaceOrder,
        c.CancelOrder,
        c.CancelAllOrders,
        c.AmendOrder,
    )
}
_FIELDS = {name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in COMMAND_TYPES.items()}


def encode_command(command: Any) -> bytes:
    """Serialize a command (integers of any size, exactly)."""
    name = type(command).__name__
    values = [name, *(getattr(command, f) for f in _FIELDS[name])]
    try:
        return orjson.dumps(values)
    except TypeError:  # an int beyond 64 bits (a hostile amount that the engine refused)
        return json.dumps(values, separators=(",", ":")).encode()


def decode_command(data: bytes) -> Any:
    """Rebuild a command from `encode_command` output."""
    parsed = orjson.loads(data)
    if any(type(v) is float for v in parsed):  # orjson reads big ints as floats: be exact
        parsed = json.loads(data)
    name, *values = parsed
    cls = COMMAND_TYPES[name]
    return cls(**dict(zip(_FIELDS[name], values, strict=False)))
