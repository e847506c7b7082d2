"""Write the shipped price paths: `python feeds/make_feeds.py [DIR]` (default: feeds/).

Each file is a CSV `offset_s,symbol,price` (service/feed.py) with one BTC-PERP and one
ETH-PERP price per second, on their tick grids (0.1 and 0.01), starting at 10,000 and
2,000 like the sandbox. Seeded (`SEED`): running this again writes the same bytes.

- `calm.csv`: twenty minutes of a gentle walk (0.02% per second) that ends where it
  started (a Brownian bridge), so `EXCHANGE_FEED_LOOP=1` plays it without a jump.
- `crash25.csv`: 30 s calm; then both fall 25% over three minutes (an eased fall with noise,
  the bottom exactly 25% under where the fall started, at 210 s); then a partial recovery
  over two minutes to 15% under that level; then calm until ten minutes.
- `flash10.csv`: 30 s calm; then a 10% flash crash over 4 s and back over the next 6 s to
  within 1% of where it started (bottom at 34 s); then calm until five minutes.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

SEED = 2024
HERE = Path(__file__).resolve().parent
SYMBOLS = {"BTC-PERP": (Decimal("0.1"), Decimal(10_000)), "ETH-PERP": (Decimal("0.01"), Decimal(2_000))}
CALM_SIGMA = 0.0002  # per second
CRASH_START_S, CRASH_BOTTOM_S, RECOVERED_S, CRASH_END_S = 30, 210, 330, 600
FLASH_START_S, FLASH_BOTTOM_S, FLASH_BACK_S, FLASH_END_S = 30, 34, 40, 300

Path_ = list[float]  # one price per second, in USD (rounded to the tick when written)


def walk(rng: random.Random, start: float, seconds: int, sigma: float = CALM_SIGMA) -> Path_:
    """`seconds` + 1 prices of a multiplicative random walk from `start`."""
    out = [start]
    for _ in range(seconds):
        out.append(out[-1] * math.exp(rng.gauss(0.0, sigma)))
    return out


def bridge(rng: random.Random, start: float, seconds: int, sigma: float = CALM_SIGMA) -> Path_:
    """A walk pinned back to `start` at its end (log-space Brownian bridge)."""
    raw = [math.log(p / start) for p in walk(rng, start, seconds, sigma)]
    end = raw[-1]
    return [start * math.exp(x - end * i / seconds) for i, x in enumerate(raw)]


def move(rng: random.Random, start: float, end: float, seconds: int, noise: float) -> Path_:
    """From `start` to `end` in `seconds` (eased), with noise that vanishes at both ends."""
    out = []
    for i in range(seconds + 1):
        x = i / seconds
        eased = (1 - math.cos(math.pi * x)) / 2
        level = start + (end - start) * eased
        out.append(level * (1 + rng.gauss(0.0, noise) * math.sin(math.pi * x)))
    return out


def joined(*parts: Path_) -> Path_:
    """Consecutive parts, each starting where the previous ended (its first price dropped)."""
    out = list(parts[0])
    for part in parts[1:]:
        out.extend(part[1:])
    return out


def calm(rng: random.Random, start: float) -> Path_:
    return bridge(rng, start, 1_200)


def crash25(rng: random.Random, start: float) -> Path_:
    before = walk(rng, start, CRASH_START_S)
    top = before[-1]
    bottom = top * 0.75
    fall = [max(bottom, p) for p in move(rng, top, bottom, CRASH_BOTTOM_S - CRASH_START_S, 0.004)]
    up = [max(bottom, p) for p in move(rng, bottom, top * 0.85, RECOVERED_S - CRASH_BOTTOM_S, 0.003)]
    after = walk(rng, top * 0.85, CRASH_END_S - RECOVERED_S)
    return joined(before, fall, up, after)


def flash10(rng: random.Random, start: float) -> Path_:
    before = walk(rng, start, FLASH_START_S)
    top = before[-1]
    bottom = top * 0.90
    fall = move(rng, top, bottom, FLASH_BOTTOM_S - FLASH_START_S, 0.0)
    back = move(rng, bottom, top * 0.995, FLASH_BACK_S - FLASH_BOTTOM_S, 0.0)
    after = walk(rng, top * 0.995, FLASH_END_S - FLASH_BACK_S)
    return joined(before, fall, back, after)


def on_tick(price: float, tick: Decimal) -> Decimal:
    """`price` rounded half-even to a multiple of `tick`, at least one tick."""
    return max(tick, (Decimal(repr(price)) / tick).quantize(Decimal(1)) * tick)


def write(name: str, shape: Callable[[random.Random, float], Path_], directory: Path = HERE) -> Path:
    """One file: every symbol's path of `shape`, interleaved by second."""
    paths = {}
    for i, (symbol, (tick, start)) in enumerate(SYMBOLS.items()):
        paths[symbol] = [on_tick(p, tick) for p in shape(random.Random(f"{SEED}:{name}:{i}"), float(start))]
    seconds = len(next(iter(paths.values())))
    lines = ["offset_s,symbol,price"]
    for t in range(seconds):
        for symbol, prices in paths.items():
            lines.append(f"{t},{symbol},{prices[t]}")
    out = directory / f"{name}.csv"
    out.write_text("\n".join(lines) + "\n")
    return out


SHAPES = {"calm": calm, "crash25": crash25, "flash10": flash10}


def main(directory: Path = HERE) -> None:
    for name, shape in SHAPES.items():
        path = write(name, shape, directory)
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
