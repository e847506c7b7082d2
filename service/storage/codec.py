"""Byte encodings of commands for the journal: `[type name, field values...]` in JSON.

Commands are frozen dataclasses of ints, strs, bools and None, so a JSON array of the
field values in declaration order is exact and stable across versions that only append
fields with defaults.
"""

from __future__ import annotations

import dataclasses
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
    """Serialize a command."""
    name = type(command).__name__
    return orjson.dumps([name, *(getattr(command, f) for f in _FIELDS[name])])


def decode_command(data: bytes) -> Any:
    """Rebuild a command from `encode_command` output."""
    name, *values = orjson.loads(data)
    cls = COMMAND_TYPES[name]
    return cls(**dict(zip(_FIELDS[name], values, strict=False)))
