"""Fixtures for the unit tests (helpers live in tests/unit/helpers.py)."""

from __future__ import annotations

import pytest

from tests.unit.helpers import ETH, MARK, Ex


@pytest.fixture
def ex() -> Ex:
    """A fresh engine with both marks set (BTC 10,000 USD, ETH 3,000 USD)."""
    x = Ex()
    x.mark(MARK)
    x.mark(300_000, ETH)
    return x
