"""Price paths: the marks a run walks through, one `Step` per price.

Two sources:

- `crash(marks, move_ppm, steps)`: every symbol moves by the same fraction from its starting
  mark (`--crash 25%` is -250,000 ppm; a negative crash, `--crash=-20%`, is a rally), in
  `steps` equal moves one second apart (rounded to the tick, the last one exactly on target).
- `load_csv(path)`: a feed file `offset_s,symbol,price` (feeds/*.csv), one row per step, in
  file order; offsets must not go back. Prices must be on the symbol's tick grid.

A step sets the mark of its symbol: `SetMarkPrice` for instruments whose mark the operator
sets, `SetIndexPrice` for those whose mark follows the index (SPEC §12; run.py chooses).
`stress_marks` is the price of each symbol farthest from its start (the first one on ties):
the lab calls the accounts in profit there the winners (metrics.py).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from engine.instruments import Instrument
from engine.units import PPM, decimal_str_to_e8, div_half_even, e8_to_str

NS_PER_S = 1_000_000_000


class PathError(ValueError):
    """A price path that cannot be used, with the reason and the line."""


@dataclass(frozen=True, slots=True)
class Step:
    ts_ns: int  # offset from the start of the path
    symbol: str
    price_ticks: int


@dataclass(frozen=True, slots=True)
class PricePath:
    steps: tuple[Step, ...]
    description: str

    def start_marks(self) -> dict[str, int]:
        """The first price of every symbol in the path."""
        out: dict[str, int] = {}
        for s in self.steps:
            out.setdefault(s.symbol, s.price_ticks)
        return out

    def stress_marks(self, start: dict[str, int]) -> dict[str, int]:
        """Per symbol of `start`, the path's price farthest from it (itself when never moved)."""
        out = dict(start)
        for s in self.steps:
            if s.symbol in out and abs(s.price_ticks - start[s.symbol]) > abs(out[s.symbol] - start[s.symbol]):
                out[s.symbol] = s.price_ticks
        return out


def parse_move_ppm(text: str) -> int:
    """"25%" -> 250000 (a fall); "-20%" -> -200000 (a rally); "0.25" -> 250000."""
    t = text.strip()
    pct = t.endswith("%")
    e8 = decimal_str_to_e8(t[:-1] if pct else t)
    if e8 is None:
        raise PathError(f"not a move: {text!r} (e.g. 25% or 0.25)")
    ppm = div_half_even(e8 * (10_000 if pct else PPM), 10**8)
    if not -10 * PPM < ppm < PPM or ppm == 0:
        raise PathError(f"a crash is between -1000% and 100%, not 0: {text!r}")
    return ppm


def crash(start: dict[str, int], move_ppm: int, steps: int = 1) -> PricePath:
    """Every symbol of `start` falls by `move_ppm` (rises when negative) in `steps` moves."""
    if steps < 1:
        raise PathError("a crash has at least one step")
    out = []
    for i in range(1, steps + 1):
        for sym in sorted(start):
            m = start[sym]
            target = max(1, div_half_even(m * (PPM - move_ppm), PPM))
            out.append(Step(i * NS_PER_S, sym, m + div_half_even((target - m) * i, steps)))
    pct = e8_to_str(abs(move_ppm) * 10_000)  # ppm -> percent, as an exact decimal
    what = f"crash {pct}%" if move_ppm > 0 else f"rally {pct}%"
    return PricePath(tuple(out), what + (f" in {steps} steps" if steps > 1 else " in one step"))


def load_csv(path: Path, instruments: dict[str, Instrument]) -> PricePath:
    """A feed CSV `offset_s,symbol,price`, one step per row."""
    text = path.read_text()
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames[:3]] != ["offset_s", "symbol", "price"]:
        raise PathError(f"{path}: the header must be offset_s,symbol,price")
    steps = []
    last = 0
    for line, row in enumerate(reader, 2):
        sym = (row["symbol"] or "").strip()
        inst = instruments.get(sym)
        if inst is None:
            raise PathError(f"{path}:{line}: unknown symbol {sym!r}")
        offset_e8 = decimal_str_to_e8((row["offset_s"] or "").strip())
        if offset_e8 is None or offset_e8 < 0:
            raise PathError(f"{path}:{line}: offset_s {row['offset_s']!r} is not a non-negative number")
        ts = offset_e8 * 10  # 1e-8 s -> ns
        if ts < last:
            raise PathError(f"{path}:{line}: offset_s goes back in time")
        last = ts
        price_e8 = decimal_str_to_e8((row["price"] or "").strip())
        ticks = None if price_e8 is None else inst.ticks_from_e8(price_e8)
        if ticks is None or ticks <= 0:
            raise PathError(f"{path}:{line}: price {row['price']!r} is not a positive price on the {sym} tick grid")
        steps.append(Step(ts, sym, ticks))
    if not steps:
        raise PathError(f"{path}: no prices")
    return PricePath(tuple(steps), f"{path.name} ({len(steps)} prices)")
