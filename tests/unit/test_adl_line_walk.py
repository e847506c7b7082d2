"""An ADL allocation walks only the head of the line it takes from (engine/adl_line.py), in
both engine builds: the compiled build once walked the whole line for every liquidation (a
generator expression over the line, materialized), which no result test could see."""

from __future__ import annotations

from typing import Any

from sortedcontainers import SortedList

from engine import commands as c
from engine.engine import Engine

BTC = "BTC-PERP"
MARK = 100_000


class CountingLine(SortedList):  # type: ignore[misc]
    """The line's keys, counting how many an iteration hands out."""

    handed_out = 0

    def __iter__(self) -> Any:
        for key in super().__iter__():
            CountingLine.handed_out += 1
            yield key


def _market(pairs: int) -> Engine:
    """`pairs` longs and shorts at the mark; the mark then rises so every short is underwater
    and every long is in profit, in line by profit and leverage."""
    eng = Engine()
    eng.apply(c.SetMarkPrice(BTC, MARK))
    for i in range(pairs):
        ids = []
        for _ in range(2):
            (created,) = eng.apply(c.CreateAccount())
            eng.apply(c.Deposit(created.account_id, 10**12 * (1 + i % 7)))
            ids.append(created.account_id)
        eng.apply(c.PlaceOrder(ids[1], BTC, c.SELL, 1 + i % 5, MARK))
        eng.apply(c.PlaceOrder(ids[0], BTC, c.BUY, 1 + i % 5, MARK))
    eng.apply(c.SetMarkPrice(BTC, MARK + 500))
    return eng


def test_take_queue_when_few_lots_are_needed_visits_only_the_head_of_the_line() -> None:
    eng = _market(300)
    line = eng.adl_ranking(BTC, 1)  # the longs: who closes against a liquidated short
    assert len(line.entries) == 300
    line.entries = CountingLine(line.entries)
    CountingLine.handed_out = 0
    alloc, ranks = line.take_queue(3)
    assert sum(lots for _, lots in alloc) == 3 and len(alloc) <= 3
    assert CountingLine.handed_out == len(alloc)  # not one key past the last taker
    assert [aid for aid, _ in alloc] == line.ordered_ids()[: len(alloc)]
    assert sorted(ranks.values()) == list(range(1, len(alloc) + 1))
