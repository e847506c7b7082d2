"""The engine compiled with mypyc: an optional build, the pure-Python engine the fallback.

`engine/` is `mypy --strict` clean, so mypyc can compile its modules to C extensions that
apply commands about twice as fast (docs/benchmarks.md). `python -m native.build` (or
`make compiled`) writes them to `native/_build/`, stamped with a digest of the engine's
sources. Nothing in `engine/` changes: `use()`, called by every entry point before the
first engine module is imported, puts the compiled modules in front of the sources in the
`engine` package's search path when the environment asks for them:

    EXCHANGE_ENGINE=auto      (default) the compiled engine if a build matches the sources,
                              else the Python one (a stale build is ignored with a warning)
    EXCHANGE_ENGINE=compiled  the compiled engine, or fail at start (missing or stale build)
    EXCHANGE_ENGINE=python    the Python engine, whatever is built

The two builds behave identically (the same events, digests and state hashes: the test
suite's engine tests run against both) and read each other's snapshots.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE_SOURCES = ROOT / "engine"
BUILD_DIR = Path(__file__).resolve().parent / "_build"
STAMP = "STAMP"
# compiled: every engine module but the package itself and errors.py (IntEnum and
# exception subclasses stay Python classes; nothing hot is in there)
NOT_COMPILED = frozenset({"__init__.py", "errors.py"})
MODES = ("auto", "compiled", "python")
BUILD_CODE = ("build.py", "fast_init.py")  # part of the stamp: a change makes a build stale

log = logging.getLogger("exchange.native")

_chosen: str | None = None


class BuildUnavailable(RuntimeError):
    """EXCHANGE_ENGINE=compiled, and no build matching the engine's sources exists."""


def compiled_modules(sources: Path = ENGINE_SOURCES) -> list[Path]:
    return sorted(p for p in sources.glob("*.py") if p.name not in NOT_COMPILED)


def source_digest(sources: Path = ENGINE_SOURCES) -> str:
    """What a build must have been made from: every engine source, this Python, this mypyc,
    and the build's own code (it rewrites some sources: native/fast_init.py)."""
    h = hashlib.sha256()
    h.update(sys.version.encode())
    h.update(_mypy_version().encode())
    for name in BUILD_CODE:
        h.update((Path(__file__).parent / name).read_bytes())
    for path in sorted(sources.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _mypy_version() -> str:
    try:
        return importlib.metadata.version("mypy")
    except importlib.metadata.PackageNotFoundError:
        return "no mypy"


def build_state(build_dir: Path | None = None) -> str:
    """"fresh", "stale" or "missing"."""
    stamp = (build_dir or BUILD_DIR) / STAMP
    if not stamp.exists():
        return "missing"
    return "fresh" if stamp.read_text().strip() == source_digest() else "stale"


def use(mode: str | None = None) -> str:
    """Choose the engine build (see the module docstring) before the first engine module is
    imported; returns "compiled" or "python". Idempotent: later calls return the first choice."""
    global _chosen
    if _chosen is not None:
        return _chosen
    mode = (mode or os.environ.get("EXCHANGE_ENGINE") or "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(f"EXCHANGE_ENGINE must be one of {', '.join(MODES)}, not {mode!r}")
    chosen = "python"
    loaded = sorted(name for name in sys.modules if name.startswith("engine."))
    if mode != "python":
        state = build_state()
        if state == "fresh" and loaded:  # imported before anyone chose: it stays as it is
            if mode == "compiled":
                raise BuildUnavailable(f"native.use() must run before the engine is imported; already loaded: {loaded}")
        elif state == "fresh":
            _activate()
            chosen = "compiled"
        elif mode == "compiled":
            raise BuildUnavailable(
                f"EXCHANGE_ENGINE=compiled but the compiled engine in {BUILD_DIR} is {state}: "
                "run `make compiled` (python -m native.build)"
            )
        elif state == "stale":
            log.warning("the compiled engine in %s was built from other sources: using the Python "
                        "engine (`make compiled` rebuilds it)", BUILD_DIR)
    _chosen = chosen
    return chosen


def _activate() -> None:
    import engine

    engine.__path__.insert(0, str(BUILD_DIR / "engine"))  # the compiled modules first
    if str(BUILD_DIR) not in sys.path:
        sys.path.append(str(BUILD_DIR))  # mypyc's shared library, imported by the modules


def active() -> str:
    """The build in use: "compiled" when the engine's modules come from the compiled build."""
    import engine.engine

    return "compiled" if not engine.engine.__file__ or engine.engine.__file__.endswith(".so") else "python"
