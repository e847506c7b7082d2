"""Which engine build the tests run against (tests/conftest.py chooses it; native/)."""

from __future__ import annotations

import pytest

import native

COMPILED = native.use() == "compiled"

# for tests that replace an engine function or method: compiled modules call each other
# directly and compiled instances take no new attributes, so the patch would not apply
python_engine_only = pytest.mark.skipif(COMPILED, reason="patches the engine, which compiled code does not see")
