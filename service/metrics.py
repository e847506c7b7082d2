"""Prometheus metrics of one service instance (own registry, so several apps can live in one process).

Counters are bumped from the engine task once per command/event; labelled children are
cached so the hot path pays a dict lookup and an `inc()`, not a `labels()` call. Gauges
that mirror live state (queue depth, backlog, lag, WS clients) are read at scrape time.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class Metrics:
    """All series the service exports at /metrics."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.commands = Counter(
            "exchange_commands",
            "Commands applied by the engine, by type and result",
            ["type", "result"],
            registry=r,
        )
        self.trades = Counter("exchange_trades", "Trades executed", ["symbol"], registry=r)
        self.liquidations = Counter(
            "exchange_liquidations",
            "Accounts liquidated (per symbol taken over)",
            ["symbol"],
            registry=r,
        )
        self.adl_fills = Counter(
            "exchange_adl_fills", "ADL fills against counterparties", ["symbol"], registry=r
        )
        self.command_latency = Histogram(
            "exchange_command_latency_seconds",
            "From submit to result (queue wait + apply + fan-out hand-off)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "exchange_engine_batch_size",
            "Commands per engine-loop batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.journal_commit = Histogram(
            "exchange_journal_commit_seconds",
            "Pipelined group commit (EXCHANGE_FSYNC=batch): one fsync in the helper process, "
            "request to answer",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.journal_commit_batches = Histogram(
            "exchange_journal_commit_batches",
            "Engine batches made durable by one group-commit fsync",
            buckets=(1, 2, 3, 4, 6, 8, 16, 32, 64),
            registry=r,
        )
        self.publish_dropped = Counter(
            "exchange_publish_dropped_events",
            "Events dropped from the Redis backlog on overflow (a gap)",
            registry=r,
        )
        self.publish_errors = Counter(
            "exchange_publish_errors", "Failed Redis pipeline attempts", registry=r
        )
        self.published = Counter(
            "exchange_published_events", "Events written to exchange:events", registry=r
        )
        self.publish_stringified = Counter(
            "exchange_publish_values_stringified",
            "Event integers beyond 64 bits published as decimal strings (records of an old "
            "journal; the API edge refuses such ids now)",
            registry=r,
        )
        self.ws_slow_disconnects = Counter(
            "exchange_ws_slow_consumer_disconnects",
            "WebSocket clients cut off for falling behind",
            registry=r,
        )
        self.ws_messages = Counter(
            "exchange_ws_messages", "WebSocket messages queued to clients", registry=r
        )
        self.rate_limited = Counter(
            "exchange_rate_limited_requests", "Requests answered 429", registry=r
        )
        self.ws_refused = Counter(
            "exchange_ws_refused_connections",
            "WebSocket connections refused or closed by an abuse limit, by error "
            "(TOO_MANY_CONNECTIONS, CONNECT_RATE_LIMITED, SUBSCRIBE_TIMEOUT, AUTH_THROTTLED)",
            ["error"],
            registry=r,
        )
        self.engine_halted = Gauge(
            "exchange_engine_halted", "1 once the engine loop stopped on an error", registry=r
        )
        self.gc_pause = Histogram(
            "exchange_gc_pause_seconds",
            "Cyclic garbage-collector pauses of this process (they stall the engine and every request)",
            ["generation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self._gc_started = 0.0
        self._after_full: Callable[[], None] | None = None
        self._gauges: list[Gauge] = []
        self._children: dict[tuple[str, str], Counter] = {}
        self._symbol_children: dict[tuple[int, str], Counter] = {}

    def watch_gc(self, after_full: Callable[[], None] | None = None) -> None:
        """Time every collection (gc.callbacks) into `exchange_gc_pause_seconds`;
        call `after_full()` after every full (generation 2) collection."""
        self._after_full = after_full
        gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            generation = info.get("generation", -1)
            self.gc_pause.labels(str(generation)).observe(time.perf_counter() - self._gc_started)
            if generation == 2 and self._after_full is not None:
                self._after_full()

    def gauge(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        """A gauge whose value is `fn()` at scrape time."""
        g = Gauge(name, doc, registry=self.registry)
        g.set_function(fn)
        self._gauges.append(g)

    def gauge_by(
        self, name: str, doc: str, label: str, fn: Callable[[], dict[str, float]]
    ) -> None:
        """A labelled gauge whose samples are `fn()` (label value -> value) at scrape time,
        computed in one call for all label values."""
        self.registry.register(_GaugeFamily(name, doc, label, fn))

    def command(self, type_name: str, result: str) -> None:
        """Count one applied command."""
        child = self._children.get((type_name, result))
        if child is None:
            child = self._children[(type_name, result)] = self.commands.labels(type_name, result)
        child.inc()

    def per_symbol(self, counter: Counter, symbol: str, amount: int = 1) -> None:
        """Bump a per-symbol counter (children cached)."""
        key = (id(counter), symbol)
        child = self._symbol_children.get(key)
        if child is None:
            child = self._symbol_children[key] = counter.labels(symbol)
        child.inc(amount)


class _GaugeFamily(Collector):
    """One gauge family, one sample per label value, read from a function at scrape time."""

    def __init__(self, name: str, doc: str, label: str, fn: Callable[[], dict[str, float]]) -> None:
        self.name, self.doc, self.label, self.fn = name, doc, label, fn

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.doc, labels=[self.label])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.doc, labels=[self.label])
        for value_of_label, value in self.fn().items():
            family.add_metric([value_of_label], value)
        yield family
