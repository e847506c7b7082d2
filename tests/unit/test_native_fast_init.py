"""native/fast_init.py: the build's rewrite of frozen dataclasses into classes with an explicit
`__init__` must build exactly what the dataclass's generated `__init__` builds."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from engine import commands as c
from native.fast_init import Unsupported, rewrite
from tests.builds import COMPILED

ROOT = Path(__file__).resolve().parents[2]
COMMANDS_SOURCE = (ROOT / "engine" / "commands.py").read_text()
COMMAND_CLASSES = [
    obj for obj in vars(c).values()
    if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == c.__name__
]


def _signature(cls: type) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()]


def _load(source: str, name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`source` run as a module of its own (interpreted, whichever engine build is active)."""
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses looks its module up
    exec(compile(source, "engine/commands.py", "exec"), module.__dict__)
    return module.__dict__


def test_rewrite_when_given_the_commands_keeps_every_init_signature_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = _load(rewrite(COMMANDS_SOURCE), "rewritten_commands", monkeypatch)
    ref = _load(COMMANDS_SOURCE, "reference_commands", monkeypatch)  # the dataclasses' own __init__
    assert len(COMMAND_CLASSES) == 15
    for name in (cls.__name__ for cls in COMMAND_CLASSES):
        new, cls = ns[name], ref[name]
        assert _signature(new) == _signature(cls), cls.__name__
        assert [(f.name, f.default) for f in dataclasses.fields(new)] == [(f.name, f.default) for f in dataclasses.fields(cls)]
        assert new.__dataclass_params__.frozen and not new.__dataclass_params__.init  # type: ignore[attr-defined]
        assert "__init__" in new.__dict__


def test_rewrite_when_given_the_commands_changes_nothing_but_decorators_and_inits() -> None:
    out = rewrite(COMMANDS_SOURCE)
    removed = [line for line in COMMANDS_SOURCE.splitlines() if line not in out.splitlines()]
    assert set(removed) == {"@dataclass(frozen=True, slots=True)"}
    added = [line for line in out.splitlines() if line not in COMMANDS_SOURCE.splitlines()]
    assert all(line.startswith(("@dataclass(frozen=True, slots=True, init=False)", "    def __init__(self", "        self."))
               for line in added)


@pytest.mark.parametrize("source", [
    "from dataclasses import dataclass, field\n@dataclass(frozen=True)\nclass A:\n    x: list[int] = field(default_factory=list)\n",
    "from dataclasses import dataclass\nclass B:\n    y: int = 0\n@dataclass(frozen=True)\nclass A(B):\n    x: int = 0\n",
    "from dataclasses import dataclass\n@dataclass(frozen=True)\nclass A:\n    x: int = 0\n    def __post_init__(self) -> None:\n        pass\n",
    "from dataclasses import dataclass\nfrom typing import ClassVar\n@dataclass(frozen=True)\nclass A:\n    x: ClassVar[int] = 0\n",
    "from dataclasses import dataclass\n@dataclass(frozen=True, init=False)\nclass A:\n    x: int = 0\n",
    "from dataclasses import dataclass\n@dataclass(frozen=True, kw_only=True)\nclass A:\n    x: int = 0\n",
    "from dataclasses import dataclass, KW_ONLY\n@dataclass(frozen=True)\nclass A:\n    _: KW_ONLY\n    x: int = 0\n",
    "from dataclasses import dataclass\n@dataclass(frozen=True)\nclass A:\n    x: int = 0\n    x = 5\n",
    "from dataclasses import dataclass\n@dataclass(frozen=True)\nclass A:\n    f: object = lambda: 0\n",
    "from dataclasses import dataclass\n@dataclass(frozen=True)\nclass A:\n    x: int = 0\n    y: int = x\n",
], ids=["field_call", "inherits", "post_init", "classvar", "init_given", "kw_only", "kw_only_marker", "rebound",
        "lambda_default", "class_name_default"])
def test_rewrite_when_a_dataclass_cannot_be_reproduced_refuses(source: str) -> None:
    with pytest.raises(Unsupported):
        rewrite(source)


def test_rewrite_when_a_class_is_not_a_frozen_dataclass_leaves_it() -> None:
    source = "from dataclasses import dataclass\n@dataclass\nclass A:\n    x: int = 0\nclass B:\n    y: int = 0\n"
    assert rewrite(source) == source


@pytest.mark.skipif(not COMPILED, reason="the compiled engine's commands only")
def test_compiled_commands_when_built_have_native_inits_and_stay_frozen() -> None:
    for cls in COMMAND_CLASSES:
        assert not inspect.isfunction(cls.__init__), f"{cls.__name__}.__init__ is interpreted"
    order = c.PlaceOrder(1, "BTC-PERP", c.BUY, 2, price_ticks=3, ts_ns=4)
    assert order == c.PlaceOrder(account_id=1, symbol="BTC-PERP", side=c.BUY, qty_lots=2, price_ticks=3, ts_ns=4)
    assert (order.order_type, order.time_in_force, order.trigger_by, order.close_position) == (c.LIMIT, c.GTC, c.TRIGGER_BY_MARK, False)
    assert dataclasses.replace(order, ts_ns=9).ts_ns == 9
    with pytest.raises(dataclasses.FrozenInstanceError):
        order.qty_lots = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.PlaceOrder(1, "BTC-PERP")  # type: ignore[call-arg]
