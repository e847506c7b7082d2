"""Compile the engine with mypyc into native/_build (python -m native.build; `make compiled`).

The sources are copied to a temporary directory and compiled there (mypyc writes its
extensions next to the sources it compiles), so the source tree never holds a `.so` that
would shadow a `.py` someone is editing. Needs mypy (a dev dependency: mypyc ships with it)
and a C compiler with the Python headers. Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from native import BUILD_DIR, ENGINE_SOURCES, STAMP, build_state, compiled_modules, source_digest
from native.fast_init import MODULES as FAST_INIT_MODULES
from native.fast_init import rewrite

# mypyc type-checks what it compiles; the one import without type information
MYPY_INI = "[mypy]\n\n[mypy-sortedcontainers.*]\nignore_missing_imports = True\n"

SETUP_PY = """\
from setuptools import setup
from mypyc.build import mypycify

setup(name="engine-native", ext_modules=mypycify({modules!r}, opt_level="3", multi_file=True))
"""


def build(out: Path = BUILD_DIR, jobs: int | None = None, quiet: bool = False) -> float:
    """Compile; returns the seconds it took. Raises CalledProcessError if mypyc or the C
    compiler fails (the previous build, if any, is left as it was)."""
    t0 = time.perf_counter()
    digest = source_digest()
    jobs = jobs or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="engine-native-") as tmp:
        work = Path(tmp)
        (work / "engine").mkdir()
        for src in ENGINE_SOURCES.glob("*.py"):
            shutil.copy2(src, work / "engine" / src.name)
            if src.name in FAST_INIT_MODULES:  # frozen dataclasses with compiled __init__s
                (work / "engine" / src.name).write_text(rewrite(src.read_text(), str(src)))
        # the package's __init__ (not compiled) chooses the build: an empty one here
        (work / "engine" / "__init__.py").write_text("")
        (work / "mypy.ini").write_text(MYPY_INI)
        modules = [f"engine/{p.name}" for p in compiled_modules()]
        (work / "setup.py").write_text(SETUP_PY.format(modules=modules))
        done = subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace", f"--parallel={jobs}"],
            cwd=work, env={**os.environ, "MYPY_CONFIG_FILE_DIR": str(work)},
            stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None, text=True,
        )
        if done.returncode != 0:
            if quiet:
                sys.stderr.write(done.stdout[-20_000:])
            done.check_returncode()
        staged = Path(tempfile.mkdtemp(prefix="_build.", dir=out.parent))
        try:
            (staged / "engine").mkdir()
            for so in work.glob("*.so"):  # mypyc's shared library of all the modules
                shutil.copy2(so, staged / so.name)
            for so in (work / "engine").glob("*.so"):
                shutil.copy2(so, staged / "engine" / so.name)
            (staged / STAMP).write_text(digest + "\n")
            shutil.rmtree(out, ignore_errors=True)
            staged.rename(out)  # the whole build appears at once
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m native.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--if-needed", action="store_true", help="do nothing when a fresh build exists")
    p.add_argument("--jobs", type=int, default=None, help="parallel C compiles (default: CPU count)")
    args = p.parse_args(argv)
    if args.if_needed and build_state() == "fresh":
        print(f"compiled engine in {BUILD_DIR} is up to date")
        return 0
    seconds = build(jobs=args.jobs, quiet=True)
    print(f"compiled engine written to {BUILD_DIR} in {seconds:.0f} s "
          "(used by default; EXCHANGE_ENGINE=python for the Python engine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
