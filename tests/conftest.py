"""The engine build under test: `EXCHANGE_ENGINE=compiled pytest ...` runs the suite against
the mypyc-compiled engine (native/, `make compiled`), the default is the Python engine. Set
here, before any test module imports the engine, and exported so that the services and
scripts the tests start in subprocesses use the same build."""

from __future__ import annotations

import os

import native

BUILD = native.use(os.environ.get("EXCHANGE_ENGINE") or "python")
os.environ["EXCHANGE_ENGINE"] = BUILD


def pytest_report_header() -> str:
    return f"engine build: {BUILD}"
