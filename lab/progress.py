"""A one-line progress bar on stderr, drawn only when stderr is a terminal.

A run is a fixed number of phases (the build, then one per policy run, and again for the
sybil population); each phase counts its own units (positions traded, path steps run) and
fills its equal part of the bar. `phase(label, size)` starts the next one and returns the
callback its worker calls with the units it finished. At most ~10 redraws a second;
`close()` clears the line. Off (every call a no-op) when the stream is not a TTY, so logs,
pipes and tests see nothing of it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 28
PER_PHASE = 1000


class Progress:
    def __init__(self, phases: int, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(1, phases) * PER_PHASE
        self.done = 0
        self.phases_started = 0
        self.label = ""
        self.started = time.perf_counter()
        self._drawn = 0.0

    def phase(self, label: str, size: int) -> Callable[[int], None]:
        """Start the next phase of `size` units; returns its `tick(units_done)` callback."""
        base = min(self.total, self.phases_started * PER_PHASE)
        self.phases_started += 1
        self.done, self.label = base, label
        seen = 0

        def tick(n: int) -> None:
            nonlocal seen
            seen += n
            self.done = base + min(PER_PHASE, PER_PHASE * seen // max(1, size))
            self._draw()

        self._draw(force=True)
        return tick

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        filled = WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (WIDTH - filled)
        pct = 100 * self.done // self.total
        self.stream.write(f"\r[{bar}] {pct:3d}% {now - self.started:6.1f}s {self.label[:44]:<44}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * (WIDTH + 64) + "\r")
            self.stream.flush()
