"""What the benches that compare this tree with another revision share: the revision's
files extracted with `git archive`, and a worker run in a fresh process over either tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def short_rev(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def extract(rev: str, into: Path, paths: tuple[str, ...], worker: str | None = None) -> Path:
    """`paths` of `rev` in `into`; `worker` (e.g. "bench/recovery_bench.py") is then replaced
    by this tree's file, and this module added beside it, so the baseline runs the same
    measuring code."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev, *paths], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    if worker is not None:
        for name in (worker, "bench/baseline.py"):
            (into / name).write_text((REPO / name).read_text())
    return into


def worker_env(root: Path, **extra: str) -> dict[str, str]:
    """`root`'s packages first, then this tree's (for the bench modules a baseline lacks)."""
    return dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{REPO}", **extra)


def run_worker(root: Path, code: str, what: str, **env: str) -> dict[str, Any]:
    """`python -c code` in `root` (its packages first on the path); the last line it prints,
    as JSON."""
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=worker_env(root, **env),
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{what} worker failed ({root}):\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))
