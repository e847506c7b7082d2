"""Byte encodings of commands for the journal: `[type name, field values...]` in JSON.

Commands are frozen dataclasses of ints, strs, bools and None, so a JSON array of the
field values in declaration order is exact and stable across versions that only append
fields with defaults.

Integers of any size round-trip exactly. The API edge refuses ids outside 1..2^63-1 and
decimals above 10^15 units (SPEC §1), but journals written before it did may hold
anything a path or body could carry (e.g. `CancelOrder` with a 400-digit order id, which
the engine rejected but journaled, as it journals every command that produced an event).
orjson writes only 64-bit integers and reads larger ones as floats (or fails: "number is
infinity"), so such records are written and read by the standard library's exact JSON,
whose integers are unbounded here (`_exact_int` lifts CPython's 4300-digit limit for them).
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
        c.SetIndexPrice,
        c.ApplyFunding,
        c.SetLeverage,
        c.SetAdlPolicy,
        c.PlaceOrder,
        c.CancelOrder,
        c.CancelAllOrders,
        c.AmendOrder,
        c.SetMarginMode,
        c.AdjustPositionMargin,
    )
}
_FIELDS = {name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in COMMAND_TYPES.items()}
_DECODE = {name: (cls, len(_FIELDS[name])) for name, cls in COMMAND_TYPES.items()}

_DIGITS_PER_CHUNK = 4000  # below CPython's default int/str conversion limit (4300 digits)


def _exact_int(text: str) -> int:
    """A JSON integer literal of any length, exactly."""
    if len(text) <= _DIGITS_PER_CHUNK:
        return int(text)
    sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text)
    value = 0
    for i in range(0, len(digits), _DIGITS_PER_CHUNK):
        chunk = digits[i : i + _DIGITS_PER_CHUNK]
        value = value * 10 ** len(chunk) + int(chunk)
    return sign * value


def loads_exact(data: bytes | str) -> Any:
    """JSON with integers of any size read exactly (floats as floats)."""
    try:
        return json.loads(data, parse_int=_exact_int)
    except RecursionError:  # nested deeper than the interpreter recurses: not a command either
        raise ValueError("JSON nested too deeply") from None


def dumps_exact(obj: Any) -> bytes:
    """Compact JSON with integers beyond 64 bits written exactly (orjson when it can)."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # an int beyond 64 bits
        return json.dumps(obj, separators=(",", ":")).encode()


def encode_command(command: Any, origin: tuple[str, str] | None = None) -> bytes:
    """Serialize a command (integers beyond 64 bits exactly). A command that came over the
    command bus (service/bus.py) carries its `origin` = (stream entry id, idempotency key):
    `{"c": [type name, field values...], "bus": entry id, "key": key}`."""
    name = type(command).__name__
    fields = [name, *(getattr(command, f) for f in _FIELDS[name])]
    if origin is None:
        return dumps_exact(fields)
    return dumps_exact({"c": fields, "bus": origin[0], "key": origin[1]})


def record_origin(item: bytes | Any) -> tuple[str, str] | None:
    """The bus origin of a journal record (its payload, or the payload parsed), else None."""
    if type(item) is bytes:
        if not item.startswith(b"{"):
            return None
        item = _loads(item)
    if type(item) is not dict:
        return None
    bus, key = item.get("bus"), item.get("key")
    if type(bus) is not str or type(key) is not str:
        raise ValueError("a bus record's origin is two strings")
    return bus, key


def _commands_refuse_floats() -> bool:
    """The compiled engine's commands check their field types when built (native/)."""
    try:
        c.Deposit(1, 1.5)  # type: ignore[arg-type]
    except TypeError:
        return True
    return False


# No command field is a float: a float from orjson is an integer beyond 64 bits, to be read
# exactly. Commands that refuse a float say so themselves (TypeError) at no cost; else look.
_FLOATS_REFUSED = _commands_refuse_floats()


def decode_command(data: bytes) -> Any:
    """Rebuild a command from `encode_command` output (of this or any earlier version)."""
    if not _FLOATS_REFUSED:
        return command_from_fields(parse_record(data))
    parsed = _loads(data)
    try:
        return command_from_fields(parsed)
    except TypeError:
        exact = _exact(parsed, data)  # re-read when a float was an integer orjson could not hold
        if exact is parsed:
            raise
        return command_from_fields(exact)


def parse_record(data: bytes) -> Any:
    """A record's JSON with every integer exact: what `command_from_fields` takes."""
    return _exact(_loads(data), data)


def _loads(data: bytes) -> Any:
    """orjson, or the exact reader where orjson refuses (e.g. "number is infinity": an
    integer of 310+ digits); integers beyond 64 bits may come back as floats."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return loads_exact(data)


def _exact(parsed: Any, data: bytes) -> Any:
    fields = parsed.get("c") if type(parsed) is dict else parsed
    return loads_exact(data) if type(fields) is list and float in map(type, fields) else parsed


def command_from_fields(parsed: Any) -> Any:
    """The command of a parsed record `[type name, field values...]` (or of a bus record,
    `{"c": [...], "bus": ..., "key": ...}`)."""
    if type(parsed) is dict:
        parsed = parsed.get("c")
    if type(parsed) is not list or not parsed:
        raise ValueError("a command record is a non-empty JSON array")
    cls, count = _DECODE[parsed[0]]
    # positional, in declaration order; a newer record's extra trailing fields are ignored
    return cls(*parsed[1 : 1 + count])
