"""Pickling of engine objects (snapshots, what-if copies), the same in both builds.

The engine runs as Python classes or compiled by mypyc (native/). Compiled classes have no
`__dict__`, and creating a blank instance runs `__init__`, so CPython's default pickling of
a class does not work for them. Every engine class that is part of the state therefore
states what it pickles: `__getstate__` returns a dict of its attributes (`state_of`),
`__setstate__` sets them (`restore`), and every `__init__` argument has a default (the
blank instance that unpickling fills). Frozen dataclasses pickle as a call of their
constructor (`constructor_args`). A snapshot written by either build loads in the other.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def state_of(obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    """The named attributes of `obj`, for `__getstate__`."""
    return {name: getattr(obj, name) for name in names}


def as_dict(state: Any) -> dict[str, Any]:
    """A pickled state as a dict: ours is one; CPython's default for a `__slots__` class (in
    snapshots of earlier versions) is `(dict or None, slots dict)`."""
    if isinstance(state, tuple):
        merged: dict[str, Any] = dict(state[0] or {})
        merged.update(state[1] or {})
        return merged
    return dict(state)


def restore(obj: object, state: Any) -> None:
    """Set the attributes of a pickled state on a blank instance, for `__setstate__`."""
    for name, value in as_dict(state).items():
        setattr(obj, name, value)


def constructor_args(obj: Any) -> tuple[Any, ...]:
    """The `__init__` arguments that rebuild a dataclass instance, for `__reduce__`."""
    return tuple(getattr(obj, f.name) for f in fields(obj) if f.init)
