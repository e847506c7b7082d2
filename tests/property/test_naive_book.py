"""The oracle checked by hand: small hand-computed cases for `NaiveBook` (tests/property/naive_book.py).

If the reference were wrong in the same way as the engine, the book property test could not
see it; these cases pin the reference to SPEC §4 directly.
"""

from __future__ import annotations

import pytest
from naive_book import NaiveBook

ALICE, BOB = 1, 2


def _book_with_asks() -> NaiveBook:
    """Asks: 101 x 2 (order 1, Alice), 101 x 3 (order 2, Bob), 102 x 5 (order 3, Bob)."""
    book = NaiveBook()
    book.place(1, ALICE, "sell", 2, 101)
    book.place(2, BOB, "sell", 3, 101)
    book.place(3, BOB, "sell", 5, 102)
    return book


def test_place_when_crossing_fills_in_price_time_order_at_maker_prices() -> None:
    book = _book_with_asks()
    result = book.place(4, 3, "buy", 6, 102)
    assert result.fills == [(4, 1, 101, 2), (4, 2, 101, 3), (4, 3, 102, 1)]
    assert book.depth() == ([], [(102, 4)])


@pytest.mark.parametrize(
    ("stp", "fills", "canceled", "asks_after"),
    [
        ("cancel_taker", [], [(4, 4, "stp")], [(101, 5), (102, 5)]),
        ("cancel_maker", [(4, 2, 101, 3), (4, 3, 102, 1)], [(1, 2, "stp")], [(102, 4)]),
        ("cancel_both", [], [(1, 2, "stp"), (4, 4, "stp")], [(101, 3), (102, 5)]),
    ],
    ids=["cancel_taker", "cancel_maker", "cancel_both"],
)
def test_place_when_meeting_own_order_applies_stp(stp: str, fills: list, canceled: list, asks_after: list) -> None:
    book = _book_with_asks()
    result = book.place(4, ALICE, "buy", 4, 102, stp=stp)
    assert result.fills == fills
    assert result.canceled == canceled
    assert book.depth()[1] == asks_after


def test_fok_when_not_fully_fillable_leaves_no_trace() -> None:
    book = _book_with_asks()
    result = book.place(4, ALICE, "buy", 9, 102, time_in_force="FOK", stp="cancel_maker")
    assert result.fills == [] and result.canceled == [(4, 9, "fok")]
    assert book.queues()[1] == [(101, [(1, 2), (2, 3)]), (102, [(3, 5)])]


@pytest.mark.parametrize(
    ("price", "qty", "queue_at_101"),
    [(None, 1, [(1, 1), (2, 3)]), (None, 3, [(2, 3), (1, 3)])],
    ids=["lower_keeps_priority", "raise_loses_priority"],
)
def test_amend_when_changing_qty_keeps_or_loses_priority(price: int | None, qty: int, queue_at_101: list) -> None:
    book = _book_with_asks()
    assert book.amend(ALICE, 1, price, qty).rejected is None
    assert book.queues()[1][0] == (101, queue_at_101)


def test_amend_when_new_price_crosses_trades_at_resting_prices() -> None:
    book = _book_with_asks()
    book.place(4, 3, "buy", 4, 99)
    result = book.amend(3, 4, 101, None)
    assert result.fills == [(4, 1, 101, 2), (4, 2, 101, 2)]
    assert book.depth() == ([], [(101, 1), (102, 5)])


def test_market_when_band_ends_between_ticks_rounds_inside_the_band() -> None:
    book = _book_with_asks()
    # mark 97: 97 * 1.05 = 101.85 -> a market buy reaches 101, not 102
    result = book.place(4, 3, "buy", 10, None, order_type="market", mark_ticks=97)
    assert result.fills == [(4, 1, 101, 2), (4, 2, 101, 3)]
    assert result.canceled == [(4, 5, "market")]
