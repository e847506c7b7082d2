"""Stop-order benchmark (issue 15, part 4 of ``python -m bench.risk_bench``).

    python -m bench.stops_bench                 # both parts, about a minute
    python -m bench.stops_bench --stops 100000 --rounds 5

Everything goes through ``Engine.apply``.

4a. A mark tick with untriggered stops of which none trigger. One engine with 1,000 open
    BTC-PERP positions (long/short pairs made by crossing orders, as in part 1) and
    ``--stops`` untriggered stops resting outside the book, spread over 500 accounts (200
    each, the open-order limit): stop sells / take-profit buys with triggers 5-20% under
    the mark and stop buys / take-profit sells 5-20% over it, half by mark and half by last.
    A second engine is built the same way without the stops. The same ``--marks`` mark moves
    (a random walk within +-1%: nothing triggers, checked) are timed on both, interleaved
    (A B A B ...), best of ``--rounds``. Goal: with / without <= 1.5 (the stops are kept
    sorted by trigger per side, so a move that reaches none of them peeks one head per list).
4b. One mark move that triggers ``--trigger`` stop-market sells (triggers spread over the
    last 2% above the new mark) of as many accounts, each 0.001 BTC into a maker's deep
    bid ladder: each fires (`order_triggered`), passes the pre-trade checks of a new order
    and fills. The whole ``apply`` is timed (best of ``--rounds`` fresh builds) and reported
    per triggered stop; the events must show every stop triggered and filled.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from typing import Any

from bench.engine_bench import SYMBOL, header
from bench.risk_bench import (
    MARK,
    SEED,
    _apply_ok,
    _new_account,
    grow_positions,
    mark_walk,
    new_engine,
)
from engine import commands as c
from engine import events as ev
from engine.engine import Engine

PER_ACCOUNT = 200  # the default open-order limit: stops count toward it


def add_stops(eng: Engine, n: int, rng: random.Random) -> None:
    """``n`` untriggered stops, 5-20% away from the mark, none of them reachable by +-1%."""
    for start in range(0, n, PER_ACCOUNT):
        aid = _new_account(eng, 10**14)
        for _ in range(min(PER_ACCOUNT, n - start)):
            below = rng.random() < 0.5
            away = rng.randint(500, 2000)  # basis points
            trigger = MARK * (10_000 - away) // 10_000 if below else MARK * (10_000 + away) // 10_000
            if below:  # fires on a fall: stop sell or take-profit buy
                kind, side = rng.choice(((c.STOP_MARKET, c.SELL), (c.TAKE_PROFIT_MARKET, c.BUY)))
            else:  # fires on a rise: stop buy or take-profit sell
                kind, side = rng.choice(((c.STOP_MARKET, c.BUY), (c.TAKE_PROFIT_MARKET, c.SELL)))
            by = c.TRIGGER_BY_MARK if rng.random() < 0.5 else c.TRIGGER_BY_LAST
            _apply_ok(eng, c.PlaceOrder(aid, SYMBOL, side, rng.randint(1, 100), None, kind,
                                        trigger_price_ticks=trigger, trigger_by=by))


def _time_once(eng: Engine, cmds: list[Any]) -> float:
    apply = eng.apply
    gc.collect()
    t0 = time.perf_counter()
    for cmd in cmds:
        for e in apply(cmd):
            if type(e) is ev.OrderTriggered or type(e) is ev.AccountLiquidated:
                raise AssertionError(f"the walk triggered or liquidated: {e}")
    return (time.perf_counter() - t0) / len(cmds) * 1e6


def bench_no_trigger(n_stops: int, n_marks: int, rounds: int) -> tuple[float, float, list[float], list[float]]:
    """(best with stops, best without, all with, all without), microseconds per mark update."""
    engines = []
    for stops in (n_stops, 0):
        rng = random.Random(SEED)
        eng = new_engine()
        grow_positions(eng, 1_000, rng)
        t0 = time.perf_counter()
        add_stops(eng, stops, random.Random(SEED + 2))
        if stops:
            print(f"  {stops:,} untriggered stops placed in {time.perf_counter() - t0:.1f} s", flush=True)
        eng.check_invariants()
        engines.append(eng)
    cmds = mark_walk(n_marks, random.Random(SEED + 1))
    with_stops: list[float] = []
    without: list[float] = []
    for _ in range(rounds):  # interleaved: A B A B
        with_stops.append(_time_once(engines[0], cmds))
        without.append(_time_once(engines[1], cmds))
    if engines[0].stops.count != n_stops:
        raise AssertionError("stops went missing")
    return min(with_stops), min(without), with_stops, without


def build_trigger(n: int) -> tuple[Engine, int]:
    """An engine where a move to 0.98 x MARK triggers ``n`` stop-market sells; the move's price."""
    eng = new_engine()
    maker = _new_account(eng, 10**15)
    lots_needed = n
    price = MARK * 98 // 100  # the new mark; bids from just under it
    level = 0
    while lots_needed > 0:  # a bid ladder that fills every triggered sell inside the band
        qty = min(500, lots_needed)
        _apply_ok(eng, c.PlaceOrder(maker, SYMBOL, c.BUY, qty, price - level))
        lots_needed -= qty
        level += 1
    rng = random.Random(SEED)
    for i in range(n):
        aid = _new_account(eng, 10**12)
        trigger = price + 1 + (i * (MARK * 2 // 100 - 2)) // max(1, n)  # over the last 2% above the new mark
        _apply_ok(eng, c.PlaceOrder(aid, SYMBOL, c.SELL, 1, None, c.STOP_MARKET,
                                    trigger_price_ticks=min(trigger, MARK - 1), trigger_by=rng.choice(
                                        (c.TRIGGER_BY_MARK,))))
    return eng, price


def bench_trigger(n: int, rounds: int) -> tuple[float, list[float]]:
    """(best, all) seconds of the one SetMarkPrice that triggers ``n`` stops."""
    times = []
    for _ in range(rounds):
        eng, price = build_trigger(n)
        gc.collect()
        t0 = time.perf_counter()
        events = eng.apply(c.SetMarkPrice(SYMBOL, price))
        times.append(time.perf_counter() - t0)
        fired = sum(1 for e in events if type(e) is ev.OrderTriggered)
        filled = sum(1 for e in events if type(e) is ev.TradeExecuted)
        if fired != n or filled != n:
            raise AssertionError(f"{fired} triggered and {filled} filled, expected {n}")
        eng.check_invariants()
    return min(times), times


def run(n_stops: int, n_marks: int, n_trigger: int, rounds: int) -> None:
    print(f"\n4a. a mark tick with {n_stops:,} untriggered stops, none reached ({n_marks} moves within +-1%, "
          f"1,000 positions, best of {rounds}, interleaved with the same engine without stops):")
    best_with, best_without, all_with, all_without = bench_no_trigger(n_stops, n_marks, rounds)
    ratio = best_with / best_without
    print(f"  with stops {best_with:.2f} us/update (median {statistics.median(all_with):.2f}), "
          f"without {best_without:.2f} (median {statistics.median(all_without):.2f})")
    print(f"\n4b. one mark move that triggers {n_trigger:,} stop-market sells, each filled (best of {rounds} fresh builds):")
    best, times = bench_trigger(n_trigger, rounds)
    print(f"  {best * 1000:.1f} ms ({', '.join(f'{t * 1000:.1f}' for t in times)}): "
          f"{best / n_trigger * 1e6:.1f} us per triggered stop")
    print("\n| what | result | goal |")
    print("|---|---:|---|")
    print(f"| mark tick, {n_stops:,} untriggered stops vs none | {best_with:.2f} / {best_without:.2f} us = "
          f"{ratio:.2f}x | <= 1.5x: {'MET' if ratio <= 1.5 else 'NOT MET'} |")
    print(f"| mark move triggering {n_trigger:,} stops | {best * 1000:.1f} ms, {best / n_trigger * 1e6:.1f} us per stop | "
          "time per triggered stop |")


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.stops_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--stops", type=int, default=100_000, help="untriggered stops in part 4a")
    p.add_argument("--marks", type=int, default=1000, help="mark updates per round in part 4a")
    p.add_argument("--trigger", type=int, default=1000, help="stops one move triggers in part 4b")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(args_in)
    for line in header(args_in):
        print(line)
    run(args.stops, args.marks, args.trigger, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
