"""The running service: engine, single-writer loop, fan-out, publisher, keys, metrics, and
the two sources of commands that are not requests: the price feed (service/feed.py, when
`EXCHANGE_PRICE_FEED` is set) and the funding scheduler (service/scheduler.py, unless
`EXCHANGE_FUNDING=off`).

`Services.start()` / `stop()` are called from the FastAPI lifespan (api/app.py). Stop order
matters for a clean SIGTERM: uvicorn has already stopped accepting requests and waited for
in-flight ones; then the feed and the scheduler stop (a command of theirs already queued is
still applied), the engine loop applies whatever is still queued, WebSocket clients
are closed, and the publisher flushes its backlog to Redis (bounded by a timeout).

Garbage collection: the engine keeps a large, long-lived, acyclic heap (orders, closed-order
history, recent trades, the event ring), and a full CPython collection walks all of it —
tens of milliseconds per 100k orders, stalling every request. With `gc_freeze` (default on)
the survivors of each full collection are moved to the permanent generation (`gc.freeze()`),
so the next full collection scans only what was allocated since. Known cost: reference
cycles among frozen objects are never reclaimed; engine state holds none (`exchange_gc_*`
metrics show the pauses; set EXCHANGE_GC_FREEZE=false to compare).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from dataclasses import dataclass

import native
from service.bus import BusConsumer, BusKeys
from service.config import build_engine, load_engine_config
from service.engine_loop import EngineLoop
from service.feed import Feed, PriceFeed, load_feed, schedule
from service.format import EventFormatter
from service.history import EventHistory
from service.keys import KeyRegistry, RateLimiter
from service.limits import AbuseLimits, ws_connection_cap
from service.memory_store import MemoryEventStore
from service.metrics import Metrics
from service.publisher import RedisPublisher
from service.replication import AppliedLog, ReplicationKeys
from service.scheduler import FundingScheduler
from service.settings import Settings
from service.storage.durable import DurableJournal
from service.storage.regen import EventRegenerator
from service.ws_hub import WsHub

log = logging.getLogger("service")


class Services:
    """Everything one service instance owns. Built in the lifespan, on the running loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_ns = time.time_ns()
        config = load_engine_config(settings.config)
        self.journal = DurableJournal(
            settings.data_dir,
            lambda: build_engine(config),
            fsync=settings.fsync,
            snapshot_every=settings.snapshot_every,
            snapshot_interval_s=settings.snapshot_interval_s,
            snapshot_mode=settings.snapshot_mode,
            freeze_gc=settings.gc_freeze,
            read_ahead={"auto": None, "on": True, "off": False}[settings.recovery_read_ahead],
            bus_window=settings.bus_dedupe_window,
        )
        # Recovery: newest valid snapshot + journal replay; refuses to start on corruption.
        self.recovered = self.journal.recover()
        self.engine = self.recovered.engine
        self.metrics = Metrics()
        self.formatter = EventFormatter(self.engine.instruments)
        self.keys = KeyRegistry()
        self.keys.rebuild(
            self.engine
        )  # keys live in the (recovered) engine state
        self.limiter = RateLimiter(
            settings.rate_limit_per_s, settings.rate_limit_burst, enabled=settings.rate_limits
        )
        self.limits = AbuseLimits(  # per client address: request weights, failed auths
            settings.rate_limits,
            settings.ip_weight_per_s,
            settings.ip_weight_burst,
            settings.auth_fail_per_s,
            settings.auth_fail_burst,
        )
        self.publisher: RedisPublisher | MemoryEventStore
        if settings.redis_url:
            self.publisher = RedisPublisher(
                settings.redis_url,
                self.formatter,
                self.metrics,
                maxlen=settings.stream_maxlen,
                backlog_max=settings.publish_backlog,
                batch=settings.publish_batch,
                regenerate=EventRegenerator(settings.data_dir, lambda: build_engine(config)),
                head_seq=lambda: self.loop.delivered_seq,  # not engine.seq: fsync may be pending
                origin=self.journal.id,
                stall_s=settings.publish_stall_s,
            )
        else:
            self.publisher = MemoryEventStore(self.formatter, settings.memory_events_kept)
        self.hub = WsHub(
            self.engine,
            self.formatter,
            self.keys,
            self.metrics,
            queue_size=settings.ws_queue_size,
            book_depth=settings.ws_book_depth,
            heartbeat_s=settings.ws_heartbeat_s,
            quantile_interval_s=settings.adl_quantile_interval_s,
            limits=self.limits,
            max_connections=ws_connection_cap(
                settings.ws_max_connections, "ws_max_connections" in settings.model_fields_set
            ),
            max_per_ip=settings.ws_max_per_ip,
            auth_deadline_s=settings.ws_auth_deadline_s,
        )
        # GET /v1/events: the last events in memory, older ones regenerated from the journal
        self.history = EventHistory(
            settings.memory_events_kept,
            EventRegenerator(settings.data_dir, lambda: build_engine(config)),
            head_seq=lambda: self.loop.delivered_seq,
        )
        self.loop = EngineLoop(
            self.engine,
            self.metrics,
            journal=self.journal,
            sinks=(self.publisher.enqueue, self.history.enqueue),
            max_batch=settings.engine_batch,
            capture=self.hub.capture,  # state for the hub, read right after each batch
            on_delivered=self.hub.on_delivered,
        )
        self.loop.published_seq = lambda: self.publisher.last_published_seq
        # the engine role: commands also arrive over the Redis command bus (service/bus.py)
        self.bus: BusConsumer | None = None
        self.applied_log: AppliedLog | None = None
        if settings.role == "engine":
            if not settings.redis_url:
                raise ValueError("the engine role consumes commands from Redis: set EXCHANGE_REDIS_URL")
            self.loop.bus = self.journal.bus
            self.bus = BusConsumer(
                settings.redis_url, BusKeys(settings.bus_prefix), self.loop, self.formatter,
                batch=settings.engine_batch, results_maxlen=settings.stream_maxlen,
            )
            # replicas (service/replication.py) replay what the journal delivered
            self.journal.recent = deque(maxlen=100_000)
            self.applied_log = AppliedLog(
                settings.redis_url, ReplicationKeys(settings.bus_prefix), settings.data_dir, self.journal.id,
                self.journal.recent, head=lambda: self.loop.delivered_seq,
            )
            self.loop.sinks.append(self.applied_log.delivered)
        self.hub.halted = lambda: self.loop.halted
        # index prices and funding (SPEC §12); the feed was checked before start (__main__)
        self.feed_source: Feed | None = None
        if settings.price_feed:
            self.feed_source = load_feed(settings.price_feed, self.engine.instruments)
        self.feed: PriceFeed | None = None
        self.scheduler: FundingScheduler | None = None
        if settings.funding:
            self.scheduler = FundingScheduler(
                self.engine, lambda command: self.loop.submit(command, stamp=False)
            )
        m = self.metrics
        m.gauge(
            "exchange_engine_queue_depth",
            "Commands waiting for the engine task",
            self.loop.queue_depth,
        )
        m.gauge("exchange_engine_seq", "Last event seq of the engine", lambda: self.engine.seq)
        m.gauge(
            "exchange_publish_backlog",
            "Events delivered by the engine and not yet in exchange:events (held in memory or to "
            "be regenerated from the journal)",
            self.publisher.backlog,
        )
        m.gauge(
            "exchange_publish_backlog_in_memory",
            "Events held in memory for Redis (bounded by EXCHANGE_PUBLISH_BACKLOG)",
            self.publisher.held,
        )
        m.gauge(
            "exchange_publish_lag_events",
            "Engine seq minus the last seq published",
            lambda: self.engine.seq - self.publisher.last_published_seq,
        )
        m.gauge(
            "exchange_publish_redis_connected",
            "1 while the publisher reaches Redis (always 1 without Redis)",
            lambda: int(self.publisher.connected),
        )
        m.gauge(
            "exchange_publish_redis_ahead",
            "1 while publication is stopped because Redis holds ids above the engine's seq",
            lambda: int(self.publisher.conflict is not None),
        )
        m.gauge(
            "exchange_publish_stuck",
            "1 while the publisher makes no progress although Redis answers (see /readyz)",
            lambda: int(self.publisher.stuck() is not None),
        )
        m.gauge("exchange_ws_clients", "Connected WebSocket clients", lambda: len(self.hub.clients))
        m.gauge("exchange_accounts", "Trading accounts", lambda: len(self.engine.accounts) - 1)
        # money as USD floats: Prometheus samples are floats (exact values: GET /v1/insurance-fund)
        m.gauge(
            "exchange_insurance_fund_usd",
            "Insurance fund balance",
            lambda: self.engine.insurance_fund.wallet_atoms / 1e8,
        )
        m.gauge(
            "exchange_bad_debt_usd",
            "Bad debt: what the insurance fund could not pay, accumulated (SPEC §5 step 5)",
            lambda: self.engine.bad_debt_atoms / 1e8,
        )
        m.gauge_by(
            "exchange_index_price",
            "Index price per symbol, once one was set (by the price feed or an admin)",
            "symbol",
            lambda: self._prices(self.engine.index),
        )
        m.gauge_by(
            "exchange_funding_rate",
            "The rate of the last funding round per symbol, a fraction per interval (+: longs pay)",
            "symbol",
            self._last_funding_rates,
        )
        m.gauge_by(
            "exchange_funding_rounds",
            "Funding rounds the scheduler applied since the service started",
            "symbol",
            lambda: {s: t.rounds for s, t in self.scheduler.tally.items()} if self.scheduler else {},
        )
        m.gauge_by(
            "exchange_funding_paid_usd",
            "Funding paid by payers in the scheduler's rounds since the service started",
            "symbol",
            lambda: {s: t.paid_atoms / 1e8 for s, t in self.scheduler.tally.items()}
            if self.scheduler
            else {},
        )
        m.gauge_by(
            "exchange_funding_received_usd",
            "Funding received in the scheduler's rounds since the service started (paid minus "
            "received, the rounding, went to the insurance fund)",
            "symbol",
            lambda: {s: t.received_atoms / 1e8 for s, t in self.scheduler.tally.items()}
            if self.scheduler
            else {},
        )
        m.gauge_by(
            "exchange_feed_prices_sent",
            "Index prices the price feed submitted (SetIndexPrice commands)",
            "symbol",
            lambda: dict(self.feed.sent) if self.feed else {},
        )
        m.gauge_by(
            "exchange_feed_prices_coalesced",
            "Feed prices replaced by a newer one while a feed command was in flight",
            "symbol",
            lambda: dict(self.feed.coalesced) if self.feed else {},
        )
        m.gauge_by(
            "exchange_open_interest",
            "Open interest in base units (e.g. BTC): the sum of long position sizes, equal to "
            "the sum of short ones",
            "symbol",
            self._open_interest,
        )

    def _open_interest(self) -> dict[str, float]:
        """Per symbol, the long sizes of the accounts holding a position, in base units (read
        on the event loop between commands, where the insurance fund holds none)."""
        engine = self.engine
        out = {}
        for symbol in engine.symbols:
            long_lots = sum(max(0, engine.accounts[a].size(symbol)) for a in engine.holders[symbol])
            out[symbol] = long_lots * engine.instruments[symbol].lot_size_e8 / 1e8
        return out

    def _prices(self, ticks: dict[str, int]) -> dict[str, float]:
        insts = self.engine.instruments
        return {s: t * insts[s].tick_size_e8 / 1e8 for s, t in ticks.items()}

    def _last_funding_rates(self) -> dict[str, float]:
        history = self.engine.funding_history
        return {s: h[-1][1] / 1e8 for s, h in history.items() if h}

    def _start_feed_and_funding(self) -> None:
        s = self.settings
        if self.feed_source is not None:
            self.feed = PriceFeed(
                schedule(self.feed_source, self.engine, s.feed_speed, s.feed_loop),
                self.loop.submit,
                label=self.feed_source.describe(),
            )
            self.feed.start()
            log.info(
                "price feed: %s at speed %g%s",
                self.feed_source.describe(),
                s.feed_speed,
                ", looped" if s.feed_loop else "",
            )
        else:
            log.info("no price feed (EXCHANGE_PRICE_FEED unset): index prices only by admin")
        if self.scheduler is None:
            log.info("funding scheduler off (EXCHANGE_FUNDING=off): funding rounds only by admin")
            return
        self.scheduler.start()
        intervals = self.scheduler.intervals_s
        log.info(
            "funding scheduler on: %s",
            ", ".join(f"{sym} every {intervals[sym]} s" for sym in self.engine.symbols),
        )

    async def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        if s.admin_token_generated:
            # printed once, on purpose: the operator needs it to create accounts
            print(
                f"EXCHANGE admin token (generated; set EXCHANGE_ADMIN_TOKEN to fix it): {s.admin_token}",
                flush=True,
            )
        if s.redis_url:
            log.info("events published to Redis Streams at %s", _redact(s.redis_url))
        else:
            log.warning(
                "EXCHANGE_REDIS_URL unset: events stay in process (last %d kept in memory)",
                s.memory_events_kept,
            )
        log.info(
            "engine ready at seq %d: %s; data dir %s, fsync=%s; %s engine",
            self.engine.seq,
            ", ".join(self.engine.symbols),
            s.data_dir,
            s.fsync,
            native.active(),
        )
        if s.gc_freeze:
            loop = asyncio.get_running_loop()

            def freeze_soon() -> None:  # not inside the collector's callback
                if not loop.is_closed():  # a service never stopped leaves its callback behind
                    loop.call_soon(gc.freeze)

            self.metrics.watch_gc(after_full=freeze_soon)
        else:
            self.metrics.watch_gc()
        await self.publisher.start()
        self.loop.start()
        if self.applied_log is not None:
            self.applied_log.start()
        if self.bus is not None:
            self.bus.start()
            log.info("command bus: consuming %s after entry %s", self.bus.keys.commands, self.bus.ledger.cursor)
        self.hub.start()
        self._start_feed_and_funding()

    async def stop(self) -> None:
        timeout = self.settings.shutdown_timeout_s
        if self.feed is not None:
            await self.feed.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.bus is not None:  # commands read but not applied are read again at the next start
            await self.bus.stop()
        await self.loop.stop(timeout)
        # a background snapshot still running: superseded by the final one below (killed, it
        # is a crash mid-snapshot, which leaves the previous one); after a halt, let it finish
        await self.journal.finish_snapshot(timeout, cancel=not self.loop.halted)
        if not self.loop.halted:  # a clean stop: the next start needs no replay
            try:
                self.journal.snapshot(self.engine, self.publisher.last_published_seq)
            except Exception:  # a full disk: the journal holds everything; the start replays it
                log.exception("snapshot at shutdown failed")
        if self.applied_log is not None:  # what was delivered (bounded by the timeout)
            await self.applied_log.stop(timeout)
        self.journal.close()
        await self.hub.stop()
        await self.publisher.stop(timeout)
        self.metrics.unwatch_gc()
        log.info("stopped at seq %d", self.engine.seq)

    async def ready(self) -> Readiness:
        """Readiness: trading works and publication can go on. Not ready when the engine loop
        stopped, the journal cannot be made durable, the engine role's bus consumer or applied
        log publisher stopped (a fault, logged), Redis is ahead of the engine (its
        streams hold another run's history), or the publisher is stuck (it makes no progress
        although Redis answers: `RedisPublisher.stuck`). A Redis that is only unreachable keeps
        the service ready (trading never waits for Redis); `redis` and the backlog say so."""
        p = self.publisher
        if not self.settings.redis_url:
            redis = "not configured"
        elif p.conflict is not None:
            redis = p.conflict_label
        else:
            redis = "ok" if await p.ping() else "unreachable"
        backlog = p.backlog()
        stuck = p.stuck()
        if not self.settings.redis_url:
            publisher = "in process"
        elif p.conflict is not None:
            publisher = "stopped"
        elif stuck is not None:
            publisher = "stuck"
        else:
            publisher = "ok" if p.last_error is None else "retrying"
        if not self.loop.alive:
            ok, message = False, self.loop.halt_reason or "engine loop not running"
        elif self.journal.failure is not None:  # the next command will halt the engine
            ok, message = False, f"journal cannot be made durable: {self.journal.failure}"
        elif self.bus is not None and not self.bus.alive:
            ok, message = False, f"the command bus consumer stopped (see the log): commands on {self.bus.keys.commands} wait"
        elif self.applied_log is not None and not self.applied_log.alive:
            ok, message = False, "the applied log publisher stopped (see the log): replicas fall behind"
        elif p.conflict is not None:
            ok, message = False, p.conflict
        elif stuck is not None:
            ok, message = False, f"publication to Redis is stuck: {stuck}"
        elif redis == "unreachable":
            ok, message = True, f"Redis unreachable: trading goes on, {backlog} events wait to be published"
        else:
            ok, message = True, "ok"
        return Readiness(
            ok=ok,
            message=message,
            redis=redis,
            publisher=publisher,
            engine_seq=self.engine.seq,
            last_published_seq=p.last_published_seq,
            publish_backlog=backlog,
            publish_lag_events=self.engine.seq - p.last_published_seq,
        )


@dataclass(frozen=True, slots=True)
class Readiness:
    """What /readyz reports: `ok` decides 200 or 503; the rest is shown either way."""

    ok: bool
    message: str
    redis: str  # ok | unreachable | ahead of the engine | not configured
    publisher: str  # ok | retrying | stuck | stopped | in process
    engine_seq: int
    last_published_seq: int
    publish_backlog: int  # delivered, not yet in exchange:events (in memory or to regenerate)
    publish_lag_events: int

    def details(self) -> dict[str, int | str]:
        return {
            "redis": self.redis,
            "publisher": self.publisher,
            "engine_seq": self.engine_seq,
            "last_published_seq": self.last_published_seq,
            "publish_backlog": self.publish_backlog,
            "publish_lag_events": self.publish_lag_events,
        }


def _redact(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url
