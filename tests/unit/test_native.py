"""Which engine build loads (native/): EXCHANGE_ENGINE, the build's stamp, a stale build.

Each case runs in a fresh interpreter (the choice is made once per process, before the
engine loads), with native.BUILD_DIR pointed at a build of the test's own where it needs one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import native

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
import native
if sys.argv[1] != "-":
    native.BUILD_DIR = Path(sys.argv[1])
try:
    chosen = native.use()
except Exception as exc:
    print("error", type(exc).__name__, exc)
    raise SystemExit(0)
import engine.engine
print("chose", chosen, "loaded", native.active())
"""


def _choose(mode: str | None, build_dir: Path | str = "-") -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EXCHANGE_ENGINE"}
    if mode is not None:
        env["EXCHANGE_ENGINE"] = mode
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(build_dir)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip(), out.stderr


def test_build_state_when_stamp_missing_wrong_or_right_says_so(tmp_path: Path) -> None:
    assert native.build_state(tmp_path) == "missing"
    (tmp_path / native.STAMP).write_text("0" * 64 + "\n")
    assert native.build_state(tmp_path) == "stale"
    (tmp_path / native.STAMP).write_text(native.source_digest() + "\n")
    assert native.build_state(tmp_path) == "fresh"


def test_source_digest_when_an_engine_source_changes_changes(tmp_path: Path) -> None:
    for src in native.ENGINE_SOURCES.glob("*.py"):
        (tmp_path / src.name).write_bytes(src.read_bytes())
    same = native.source_digest(tmp_path)
    assert same == native.source_digest()
    with (tmp_path / "book.py").open("a") as f:
        f.write("\n# an edit\n")
    assert native.source_digest(tmp_path) != same


@pytest.mark.parametrize("mode", ["auto", None, "python"])
def test_use_when_no_build_exists_loads_the_python_engine(tmp_path: Path, mode: str | None) -> None:
    out, err = _choose(mode, tmp_path)
    assert out == "chose python loaded python", err


def test_use_when_compiled_is_demanded_and_missing_refuses_to_start(tmp_path: Path) -> None:
    out, _ = _choose("compiled", tmp_path)
    assert out.startswith("error BuildUnavailable") and "missing" in out and "make compiled" in out


def test_use_when_the_build_is_stale_warns_and_loads_python_or_refuses_under_compiled(tmp_path: Path) -> None:
    (tmp_path / native.STAMP).write_text("0" * 64 + "\n")
    out, err = _choose("auto", tmp_path)
    assert out == "chose python loaded python"
    assert "WARNING" in err and "built from other sources" in err
    out, _ = _choose("compiled", tmp_path)
    assert out.startswith("error BuildUnavailable") and "stale" in out


def test_use_when_mode_is_unknown_says_which_are_known() -> None:
    out, _ = _choose("fast")
    assert out.startswith("error ValueError") and "auto, compiled, python" in out


@pytest.mark.skipif(native.build_state() != "fresh", reason="no compiled engine built (`make compiled`)")
@pytest.mark.parametrize(("mode", "loaded"), [("auto", "compiled"), ("compiled", "compiled"), ("python", "python")])
def test_use_when_a_fresh_build_exists_loads_what_the_mode_asks(mode: str, loaded: str) -> None:
    out, err = _choose(mode)
    assert out == f"chose {loaded} loaded {loaded}", err
