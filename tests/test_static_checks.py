"""The linters CI would otherwise skip: `make lint` as a test (ruff, and mypy with
`strict` for the engine per pyproject.toml), so a type error fails the build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "engine", "service", "api", "tests", "bench", "native"],
        ["mypy", "engine", "service", "api", "native"],
    ],
    ids=["ruff", "mypy"],
)
def test_static_check_is_clean(command: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
