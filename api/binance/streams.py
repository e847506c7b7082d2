"""Binance-style WebSocket streams: market streams and the user-data stream (listenKey).

Paths (what ccxt's binanceusdm connects to once `urls.api.ws.linear` ends in `/ws`):
`/public/ws[/...]`, `/market/ws[/...]` (market streams), `/private/ws?listenKey=K` (user
data), and Binance's own forms `/ws`, `/ws/<streamName>`, `/ws/<listenKey>` and
`/stream?streams=a/b` (combined: each message wrapped as `{"stream", "data"}`).
Client requests: `{"method": "SUBSCRIBE" | "UNSUBSCRIBE" | "LIST_SUBSCRIPTIONS", "params":
[...], "id": N}` -> `{"result": null | [...], "id": N}`; a bad request gets
`{"error": {"code": 2, "msg": ...}, "id": N}` and the connection stays.

Market streams (symbol lower case): `<s>@depth[@100ms|@250ms|@500ms]` (diff depth),
`<s>@depth5|10|20[@...]` (partial depth), `<s>@aggTrade`, `<s>@trade`,
`<s>@markPrice[@1s]`, `!markPrice@arr[@1s]`, `<s>@forceOrder`, `!forceOrder@arr`,
`<s>@bookTicker`, `!bookTicker`. They are sent per engine batch (not on Binance's
100 ms / 1 s timers): depth and book tickers when the batch changed them, mark prices on
every mark change (and once on subscribing), trades and liquidations as they happen.

Diff depth follows Binance's futures rules, with engine seqs as update ids: a message
covers one engine batch, `u` is the batch's last seq, `pu` the `u` of the previous depth
message of that symbol and `U = pu + 1`; `GET /fapi/v1/depth` answers `lastUpdateId` =
the engine's seq, so a client that buffers, snapshots and applies the messages with
`u >= lastUpdateId` (the first one has `U <= lastUpdateId <= u`) holds the book exactly;
levels are absolute quantities (0 = gone), so applying a message twice is harmless. The
levels a batch touched (its orders' and trades' prices) are read from the book right after
the batch (`capture`), compared with what was last sent, and only the differences go out;
an amend (whose old price no event names) compares the whole book.

User data (one listenKey per account, 60 minutes, extended by `PUT /fapi/v1/listenKey`;
`listenKeyExpired` then a close when it lapses): `ORDER_TRADE_UPDATE` for the account's
orders (NEW, TRADE, CANCELED / EXPIRED, AMENDMENT), its liquidation (`o` LIQUIDATION,
`x` TRADE, `c` "autoclose-<seq>") and its ADL closes (`o` LIQUIDATION, `x` CALCULATED,
`c` "adl_autoclose"); `ACCOUNT_UPDATE` for every wallet or position change (`m`: ORDER,
ADL, FUNDING_FEE, DEPOSIT, WITHDRAW, INSURANCE_CLEAR; MARGIN_TYPE_CHANGE for a margin type
change, MARGIN_TRANSFER for a `positionMargin` add / reduce, SPEC §12), positions with `mt`
cross / isolated and `iw` the isolated margin, the balance with `wb` = cross wallet plus
isolated margins and `cw` = the cross wallet (margins as of the delivered batch, like the
marks of `up`); and `ADL_QUANTILE` (not a Binance
event: `{"e", "E", "symbol", "adlQuantile": {"LONG", "SHORT", "BOTH"}}` like
`GET /fapi/v1/adlQuantile`) whenever a position's quantile changes, at most every
`EXCHANGE_ADL_QUANTILE_INTERVAL_S`. Liquidation and ADL fills have no engine order or trade
id: the event's seq is both.

Ordering and durability: the same source as the /v1 hub (service/ws_hub.py). The engine
loop's `capture` (right after a batch is applied) and `on_delivered` (once the batch is
journaled) are chained with the hub's: depth levels and quantiles are read at capture, and
everything is sent at delivery, so nothing leaves before it is durable and each
connection sees events in engine order. Neither callback awaits; each connection has a
bounded queue (EXCHANGE_WS_QUEUE_SIZE) drained by its own task, and a connection whose
queue is full is closed ("slow consumer"): it never slows the engine.

Abuse limits (SPEC §10): connections are capped in total and per address
(EXCHANGE_WS_MAX_CONNECTIONS, EXCHANGE_WS_MAX_PER_IP, counted apart from /v1/ws), a
connection attempt costs the address's request weight, a market connection that has
subscribed to nothing within EXCHANGE_WS_AUTH_DEADLINE_S is closed, and an unknown
listenKey counts as a failed authentication (while the address is throttled, user-data
connections are refused).

Known limits: the mark stream's funding rate `r` is read from the live engine when sent;
listen keys live in memory (a restart forgets them: ccxt then makes a new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.binance.market import mark_index, next_funding_ms, predicted_funding_e8
from api.binance.views import STP_OUT, Venue, ms, now_ms
from engine import events as ev
from engine.commands import MARGIN_ISOLATED
from engine.orders import TRIGGER_COMMAND
from engine.units import E8, div_half_even, e8_to_str
from service.limits import WS_CONNECT_WEIGHT, client_key

if TYPE_CHECKING:
    from service.runtime import Services

log = logging.getLogger("api.binance.streams")

LISTEN_KEY_VALID_MS = 60 * 60 * 1000
SWEEP_S = 1.0
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
_DEPTH_SPEEDS = ("", "@100ms", "@250ms", "@500ms")
_PARTIAL = (5, 10, 20)
_BOOK_EVENTS = (ev.OrderAccepted, ev.OrderCanceled, ev.OrderAmended, ev.TradeExecuted)
_ALL_STREAMS: dict[str, tuple[Any, ...]] = {
    "!forceorder@arr": ("force", None),
    "!markprice@arr": ("mark", None),
    "!markprice@arr@1s": ("mark", None),
    "!bookticker": ("book", None),
}
_REASONS = {"trade": "ORDER", "liquidation": "ORDER", "adl": "ADL"}


class ListenKeys:
    """listenKey -> account, in memory; one active key per account (Binance's behaviour:
    asking again returns the same key and extends it)."""

    def __init__(self, clock: Callable[[], int] = now_ms) -> None:
        self.clock = clock
        self._account: dict[str, int] = {}
        self._expires: dict[str, int] = {}
        self._key_of: dict[int, str] = {}

    def open(self, account_id: int) -> str:
        key = self._key_of.get(account_id)
        if key is None or self._expires[key] < self.clock():
            if key is not None:
                self.close(account_id, key)
            key = secrets.token_hex(32)
            self._account[key] = account_id
            self._key_of[account_id] = key
        self._expires[key] = self.clock() + LISTEN_KEY_VALID_MS
        return key

    def keepalive(self, account_id: int, key: str | None) -> str | None:
        """Extend the account's key (or `key`, if it is the account's); None if none is active."""
        key = key or self._key_of.get(account_id)
        if key is None or self._account.get(key) != account_id or self._expires[key] < self.clock():
            return None
        self._expires[key] = self.clock() + LISTEN_KEY_VALID_MS
        return key

    def close(self, account_id: int, key: str | None) -> str | None:
        key = key or self._key_of.get(account_id)
        if key is None or self._account.get(key) != account_id:
            return None
        del self._account[key]
        del self._expires[key]
        self._key_of.pop(account_id, None)
        return key

    def account_of(self, key: str) -> int | None:
        aid = self._account.get(key)
        if aid is None or self._expires[key] < self.clock():
            return None
        return aid

    def lapsed(self) -> list[tuple[str, int]]:
        """Forget and return the keys that expired."""
        now = self.clock()
        gone = [(k, a) for k, a in self._account.items() if self._expires[k] < now]
        for key, aid in gone:
            self.close(aid, key)
        return gone


class Conn:
    """One stream connection."""

    __slots__ = (
        "account_id", "address", "closed", "combined", "deadline", "listen_key", "names",
        "quantiles", "queue", "raw_send", "sender", "ws",
    )

    def __init__(self, ws: WebSocket, queue_size: int, raw_send: Send) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.names: dict[str, tuple[Any, ...]] = {}  # stream name as subscribed -> topic
        self.account_id: int | None = None
        self.listen_key: str | None = None
        self.combined = False
        self.closed = False
        self.sender: asyncio.Task[None] | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.address = client_key(ws.scope)
        self.quantiles: dict[str, int] = {}  # symbol -> ADL quantile last sent
        self.raw_send = raw_send


class Captured:
    """What `capture` read right after one batch: depth and ticker messages, quantiles, and
    the positions whose isolated margin a watched account changed."""

    __slots__ = ("messages", "positions", "quantiles")

    def __init__(self) -> None:
        self.messages: list[tuple[tuple[Any, ...], dict[str, Any]]] = []  # (topic, payload)
        self.quantiles: dict[str, dict[int, int]] | None = None
        # seq of a watched account's margin mode or margin change -> (size, entry value, wallet)
        self.positions: dict[int, tuple[int, int, int]] | None = None


class Streams:
    """Market and user-data streams of one service; see the module docstring."""

    def __init__(self, services: Services, venue: Venue) -> None:
        self.services = services
        self.venue = venue
        self.engine = services.engine
        s = services.settings
        self.queue_size = s.ws_queue_size
        self.max_connections = s.ws_max_connections
        self.max_per_ip = s.ws_max_per_ip
        self.deadline_s = s.ws_auth_deadline_s
        self.quantile_interval_s = s.adl_quantile_interval_s
        self.close_grace_s = 5.0
        self.listen_keys = ListenKeys()
        self.conns: set[Conn] = set()
        self.per_address: dict[str, int] = {}
        self.topics: dict[tuple[Any, ...], set[Conn]] = {}
        self.accounts: dict[int, set[Conn]] = {}
        self.seq = self.engine.seq  # last seq delivered
        # diff depth, per symbol: the book as last sent ({price ticks: lots} per side), `u`
        self._mirror: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
        self._last_u: dict[str, int] = {}
        self._partial_sent: dict[tuple[str, int], Any] = {}  # (symbol, N) -> top N last sent
        self._ticker_sent: dict[str, Any] = {}
        self._progress: dict[tuple[int, int], list[int]] = {}  # (account, order) -> [lots, value ticks]
        self._q_dirty: set[str] = set()
        self._q_due = False
        self._task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self._marks: dict[str, int] = dict(self.engine.marks)  # as of the last delivered event
        # SPEC §12: account -> {isolated symbol: its margin}, as of the last delivered event
        self._isolated: dict[int, dict[str, int]] = {
            aid: dict(acct.isolated) for aid, acct in self.engine.accounts.items() if acct.isolated
        }

    # -- lifecycle -----------------------------------------------------------------------------

    def attach(self) -> None:
        """Chain `capture` / `on_delivered` behind the engine loop's (the /v1 hub's), start
        the background task. Call on the running event loop, after the services started."""
        loop = self.services.loop
        first_capture, first_delivered = loop.capture, loop.on_delivered

        def capture(events: list[Any]) -> Any:
            a = b = None
            if first_capture is not None:
                try:
                    a = first_capture(events)
                except Exception:
                    log.exception("capture %r failed", first_capture)
            try:
                b = self.capture(events)
            except Exception:
                log.exception("binance stream capture failed")
            return None if a is None and b is None else (a, b)

        def delivered(events: list[Any], captured: Any) -> None:
            a, b = captured if captured is not None else (None, None)
            if first_delivered is not None:
                try:
                    first_delivered(events, a)
                except Exception:
                    log.exception("delivery to %r failed", first_delivered)
            self.on_delivered(events, b)

        loop.capture = capture
        loop.on_delivered = delivered
        self._task = asyncio.get_running_loop().create_task(self._background(), name="binance-streams")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for conn in list(self.conns):
            self._drop(conn, 1001, "server shutting down")
        if self._bg:
            await asyncio.wait(self._bg, timeout=2.0)

    def close_listen_key(self, account_id: int, key: str | None) -> None:
        """DELETE /fapi/v1/listenKey: forget the key and close its streams."""
        key = self.listen_keys.close(account_id, key)
        if key is None:
            return
        for conn in list(self.accounts.get(account_id, ())):
            if conn.listen_key == key:
                self._drop(conn, 1000, "listenKey closed")

    # -- engine side (never awaits) --------------------------------------------------------------

    def capture(self, events: list[Any]) -> Captured | None:
        """Read depth levels, partial books, book tickers, due quantiles and the positions of
        watched accounts' margin changes after a batch."""
        watched = bool(self._mirror or self._partial_sent or self._ticker_sent)
        positions = self._margin_positions(events) if self.accounts else None
        if not watched and not (self._q_due and self.accounts) and positions is None:
            return None
        cap = Captured()
        cap.positions = positions
        if watched:
            touched: dict[str, list[tuple[bool, int | None]]] = {}
            amended: set[str] = set()
            for event in events:
                cls = type(event)
                if cls is ev.TradeExecuted:
                    touched.setdefault(event.symbol, []).append((event.taker_side == "sell", event.price_ticks))
                elif cls in _BOOK_EVENTS:
                    touched.setdefault(event.symbol, []).append((event.side == "buy", event.price_ticks))
                    if cls is ev.OrderAmended:
                        amended.add(event.symbol)
            u = events[-1].seq
            t = ms(events[-1].ts_ns)
            for symbol, prices in touched.items():
                if symbol in self._mirror:
                    self._depth_diff(cap, symbol, prices, symbol in amended, u, t)
                for n in _PARTIAL:
                    if (symbol, n) in self._partial_sent:
                        self._partial(cap, symbol, n, u, t)
                if symbol in self._ticker_sent:
                    self._ticker(cap, symbol, u, t)
        if self._q_due and self.accounts:
            cap.quantiles = self._read_quantiles()
            self._q_due = False
        return cap

    def _margin_positions(self, events: list[Any]) -> dict[int, tuple[int, int, int]] | None:
        """(size, entry value, cross wallet) of the positions whose margin mode or margin a
        watched account changed in this batch (`margin_mode_changed`, `position_margin_changed`
        reason user: their events carry neither), for their ACCOUNT_UPDATE."""
        out: dict[int, tuple[int, int, int]] | None = None
        accounts = self.accounts
        for event in events:
            cls = type(event)
            if (
                (cls is ev.MarginModeChanged or (cls is ev.PositionMarginChanged and event.reason == "user"))
                and event.account_id in accounts
            ):
                acct = self.engine.accounts[event.account_id]
                pos = acct.positions.get(event.symbol)
                if out is None:
                    out = {}
                out[event.seq] = (
                    (pos.size_lots, pos.entry_value_atoms, acct.wallet_atoms) if pos is not None
                    else (0, 0, acct.wallet_atoms)
                )
        return out

    def _depth_diff(
        self, cap: Captured, symbol: str, prices: list[tuple[bool, int | None]], full: bool, u: int, t: int
    ) -> None:
        book = self.engine.books[symbol]
        bids_sent, asks_sent = self._mirror[symbol]
        changes: tuple[dict[int, int], dict[int, int]] = ({}, {})
        if full:
            now_bids = {lv.price_ticks: lv.total_lots for lv in book.bids.values()}
            now_asks = {lv.price_ticks: lv.total_lots for lv in book.asks.values()}
            for i, (sent, now) in enumerate(((bids_sent, now_bids), (asks_sent, now_asks))):
                for p in set(sent) | set(now):
                    if sent.get(p, 0) != now.get(p, 0):
                        changes[i][p] = now.get(p, 0)
        else:
            for is_bid, p in prices:
                if p is None:
                    continue
                level = book.bids.get(-p) if is_bid else book.asks.get(p)
                lots = level.total_lots if level is not None else 0
                sent = bids_sent if is_bid else asks_sent
                if sent.get(p, 0) != lots:
                    changes[0 if is_bid else 1][p] = lots
        if not changes[0] and not changes[1]:
            return
        for sent, changed in ((bids_sent, changes[0]), (asks_sent, changes[1])):
            for p, lots in changed.items():
                if lots:
                    sent[p] = lots
                else:
                    sent.pop(p, None)
        inst = self.engine.instruments[symbol]
        tick, lot = inst.tick_size_e8, inst.lot_size_e8
        pu = self._last_u.get(symbol, 0)
        self._last_u[symbol] = u
        payload = {
            "e": "depthUpdate",
            "E": t,
            "T": t,
            "s": self.venue.to_binance[symbol],
            "U": pu + 1,
            "u": u,
            "pu": pu,
            "b": [[e8_to_str(p * tick), e8_to_str(q * lot)] for p, q in sorted(changes[0].items(), reverse=True)],
            "a": [[e8_to_str(p * tick), e8_to_str(q * lot)] for p, q in sorted(changes[1].items())],
        }
        cap.messages.append((("depth", symbol), payload))

    def _partial(self, cap: Captured, symbol: str, n: int, u: int, t: int) -> None:
        top = self.engine.books[symbol].depth(n)
        if self._partial_sent.get((symbol, n)) == top:
            return
        self._partial_sent[(symbol, n)] = top
        cap.messages.append((("partial", symbol, n), self._partial_payload(symbol, top, u, t)))

    def _partial_payload(self, symbol: str, top: Any, u: int, t: int) -> dict[str, Any]:
        inst = self.engine.instruments[symbol]
        tick, lot = inst.tick_size_e8, inst.lot_size_e8
        bids, asks = top
        return {
            "e": "depthUpdate", "E": t, "T": t, "s": self.venue.to_binance[symbol], "U": u, "u": u, "pu": u,
            "b": [[e8_to_str(p * tick), e8_to_str(q * lot)] for p, q in bids],
            "a": [[e8_to_str(p * tick), e8_to_str(q * lot)] for p, q in asks],
        }

    def _ticker(self, cap: Captured, symbol: str, u: int, t: int) -> None:
        top = self.engine.books[symbol].depth(1)
        if self._ticker_sent.get(symbol) == top:
            return
        self._ticker_sent[symbol] = top
        cap.messages.append((("book", symbol), self._ticker_payload(symbol, top, u, t)))

    def _ticker_payload(self, symbol: str, top: Any, u: int, t: int) -> dict[str, Any]:
        inst = self.engine.instruments[symbol]
        bids, asks = top
        bid = bids[0] if bids else (None, 0)
        ask = asks[0] if asks else (None, 0)
        v = self.venue
        return {
            "e": "bookTicker", "u": u, "s": v.to_binance[symbol],
            "b": v.price(inst, bid[0]), "B": v.qty(inst, bid[1]),
            "a": v.price(inst, ask[0]), "A": v.qty(inst, ask[1]), "T": t, "E": t,
        }

    def _read_quantiles(self) -> dict[str, dict[int, int]]:
        symbols = sorted(self._q_dirty)
        self._q_dirty = set()
        return {s: self.engine.adl_quantiles(s) for s in symbols}

    def on_delivered(self, events: list[Any], captured: Captured | None) -> None:
        """Send one delivered (journaled) batch, with what was captured after it."""
        self.seq = events[-1].seq
        marks, isolated = self._marks, self._isolated
        for event in events:  # keep the delivered marks and margins even without listeners
            cls = type(event)
            if cls is ev.MarkPriceChanged:
                marks[event.symbol] = event.price_ticks
            elif cls is ev.PositionMarginChanged:
                isolated.setdefault(event.account_id, {})[event.symbol] = event.isolated_margin_atoms
            elif cls is ev.MarginModeChanged:
                held = isolated.setdefault(event.account_id, {})
                if event.mode == MARGIN_ISOLATED:
                    held.setdefault(event.symbol, 0)
                else:
                    held.pop(event.symbol, None)
                    if not held:
                        del isolated[event.account_id]
        if not self.conns:
            return
        try:
            self._route(events, captured.positions if captured is not None else None)
            if captured is not None:
                for topic, payload in captured.messages:
                    self._publish(topic, payload)
                    if topic[0] == "book" and ("book", None) in self.topics:
                        self._send(self.topics[("book", None)], "!bookTicker", payload)
                if captured.quantiles is not None:
                    self._send_quantiles(captured.quantiles)
        except Exception:  # a bug here must never stop the engine
            log.exception("binance stream delivery failed")

    def _route(self, events: list[Any], positions: dict[int, tuple[int, int, int]] | None = None) -> None:
        topics = self.topics
        accounts = self.accounts
        realized: dict[tuple[int, str], int] = {}  # liquidated account -> PnL of its takeover
        for event in events:
            cls = type(event)
            if cls is ev.TradeExecuted:
                symbol = event.symbol
                if ("agg", symbol) in topics or ("trade", symbol) in topics:
                    self._public_trade(event)
                for aid, taker in ((event.taker_account_id, True), (event.maker_account_id, False)):
                    if aid in accounts:
                        self._user_trade(aid, event, taker)
            elif cls is ev.OrderAccepted:
                if event.account_id in accounts:
                    self._order_new(event)
            elif cls is ev.OrderCanceled:
                if event.account_id in accounts:
                    self._order_canceled(event)
            elif cls is ev.OrderAmended:
                if event.account_id in accounts:
                    self._order_amended(event)
            elif cls is ev.OrderRejected and event.command == TRIGGER_COMMAND:  # a stop refused at trigger
                if event.account_id in accounts:
                    self._order_expired(event)
            elif cls is ev.PositionChanged:
                if event.reason == "liquidation":
                    realized[(event.account_id, event.symbol)] = event.realized_pnl_atoms
                if event.account_id in accounts:
                    self._position_update(event)
            elif cls is ev.MarkPriceChanged:
                if ("mark", event.symbol) in topics or ("mark", None) in topics:
                    self._mark(event.symbol)
                if accounts:
                    self._q_dirty.update(self.engine.symbols)
            elif cls is ev.AccountLiquidated:
                if ("force", event.symbol) in topics or ("force", None) in topics:
                    self._force_order(event)
                if event.account_id in accounts:
                    self._liquidated(event, realized.get((event.account_id, event.symbol), 0))
            elif cls is ev.PositionDeleveraged:
                if event.counterparty_account_id in accounts:
                    self._deleveraged(event)
            elif cls is ev.DepositMade or cls is ev.WithdrawalMade or cls is ev.NegativeBalanceCovered:
                if event.account_id in accounts:
                    self._balance(event)
            elif cls is ev.FundingPaid and event.account_id in accounts:
                self._funding(event)
            elif cls is ev.MarginModeChanged and event.account_id in accounts:
                self._margin_type(event, positions)
            elif cls is ev.PositionMarginChanged and event.reason == "user" and event.account_id in accounts:
                self._position_margin(event, positions)
            if accounts and cls in (ev.PositionChanged, ev.TradeExecuted, ev.PositionDeleveraged, ev.FundingPaid):
                self._q_dirty.add(event.symbol)
            elif accounts and cls in (ev.DepositMade, ev.WithdrawalMade, ev.AccountLiquidated, ev.NegativeBalanceCovered):
                self._q_dirty.update(self.engine.symbols)

    # -- market payloads -------------------------------------------------------------------------

    def _public_trade(self, trade: Any) -> None:
        inst = self.engine.instruments[trade.symbol]
        price = e8_to_str(trade.price_ticks * inst.tick_size_e8)
        qty = e8_to_str(trade.qty_lots * inst.lot_size_e8)
        t = ms(trade.ts_ns)
        name = self.venue.to_binance[trade.symbol]
        maker_buys = trade.taker_side == "sell"
        self._publish(
            ("agg", trade.symbol),
            {"e": "aggTrade", "E": now_ms(), "a": trade.trade_id, "s": name, "p": price, "q": qty,
             "f": trade.trade_id, "l": trade.trade_id, "T": t, "m": maker_buys},
        )
        self._publish(
            ("trade", trade.symbol),
            {"e": "trade", "E": now_ms(), "T": t, "s": name, "t": trade.trade_id, "p": price, "q": qty,
             "X": "MARKET", "m": maker_buys},
        )

    def _mark_payload(self, symbol: str) -> dict[str, Any]:
        engine = self.engine
        inst = engine.instruments[symbol]
        mark_ticks = self._marks.get(symbol)
        _, index = mark_index(engine, symbol)
        return {
            "e": "markPriceUpdate",
            "E": now_ms(),
            "s": self.venue.to_binance[symbol],
            "p": self.venue.price(inst, mark_ticks),
            "i": index,
            "P": index,
            "r": e8_to_str(predicted_funding_e8(engine, symbol)),
            "T": next_funding_ms(inst),
        }

    def _mark(self, symbol: str) -> None:
        payload = self._mark_payload(symbol)
        self._publish(("mark", symbol), payload)
        subs = self.topics.get(("mark", None))
        if subs:
            self._send(subs, "!markPrice@arr", [payload])

    def _force_order(self, e: Any) -> None:
        inst = self.engine.instruments[e.symbol]
        qty = self.venue.qty(inst, abs(e.qty_lots))
        price = e8_to_str(e.bankruptcy_price_e8)
        avg = price if e.book_fill_avg_price_e8 is None else e8_to_str(e.book_fill_avg_price_e8)
        payload = {
            "e": "forceOrder",
            "E": now_ms(),
            "o": {
                "s": self.venue.to_binance[e.symbol], "S": "SELL" if e.qty_lots > 0 else "BUY",
                "o": "LIMIT", "f": "IOC", "q": qty, "p": price, "ap": avg, "X": "FILLED",
                "l": qty, "z": qty, "T": ms(e.ts_ns),
            },
        }
        self._publish(("force", e.symbol), payload)
        subs = self.topics.get(("force", None))
        if subs:
            self._send(subs, "!forceOrder@arr", payload)

    # -- user-data payloads ----------------------------------------------------------------------

    def _order_base(self, order: Any, symbol: str) -> dict[str, Any]:
        inst = self.engine.instruments[symbol]
        orig, stop_price, working, close = self.venue.stop_fields(order)
        kind = orig
        if order.trigger_price_ticks is not None and order.status != "untriggered":
            kind = "MARKET" if order.price_ticks is None else "LIMIT"  # triggered: works as its underlying kind
        return {
            "s": self.venue.to_binance[symbol],
            "c": order.client_order_id or "",
            "S": order.side.upper(),
            "o": kind,
            "f": "GTX" if order.post_only else order.time_in_force,
            "q": self.venue.qty(inst, order.qty_lots),
            "p": self.venue.price(inst, order.price_ticks),
            "sp": stop_price,
            "b": "0",
            "a": "0",
            "R": order.reduce_only,
            "wt": working,
            "ot": orig,
            "ps": "BOTH",
            "cp": close,
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": STP_OUT.get(order.stp, "NONE"),
            "pm": "NONE",
            "gtd": 0,
        }

    def _send_order(self, account_id: int, ts_ns: int, o: dict[str, Any]) -> None:
        t = ms(ts_ns)
        self._send(self.accounts[account_id], None, {"e": "ORDER_TRADE_UPDATE", "E": now_ms(), "T": t, "o": o})

    def _avg(self, symbol: str, lots: int, value_ticks: int) -> str:
        if not lots:
            return "0"
        return e8_to_str(div_half_even(value_ticks * self.engine.instruments[symbol].tick_size_e8, lots))

    def _order_new(self, e: Any) -> None:
        order = self.engine.find_order(e.account_id, e.order_id)
        if order is None:
            return
        self._progress[(e.account_id, e.order_id)] = [0, 0]
        o = self._order_base(order, e.symbol)
        o.update({"x": "NEW", "X": "NEW", "i": e.order_id, "l": "0", "z": "0", "L": "0", "ap": "0",
                  "T": ms(e.ts_ns), "t": 0, "m": False, "rp": "0"})
        self._send_order(e.account_id, e.ts_ns, o)

    def _user_trade(self, aid: int, trade: Any, taker: bool) -> None:
        order_id = trade.taker_order_id if taker else trade.maker_order_id
        order = self.engine.find_order(aid, order_id)
        if order is None:
            return
        inst = self.engine.instruments[trade.symbol]
        remaining = trade.taker_remaining_lots if taker else trade.maker_remaining_lots
        key = (aid, order_id)
        progress = self._progress.get(key)
        if progress is None:  # placed before this stream: what the order shows, less this fill
            progress = [
                order.qty_lots - remaining - trade.qty_lots,
                order.filled_value_ticks - trade.price_ticks * trade.qty_lots,
            ]
        progress[0] += trade.qty_lots
        progress[1] += trade.price_ticks * trade.qty_lots
        done = remaining == 0
        if done:
            self._progress.pop(key, None)
        else:
            self._progress[key] = progress
        fee = trade.taker_fee_atoms if taker else trade.maker_fee_atoms
        o = self._order_base(order, trade.symbol)
        o.update(
            {
                "x": "TRADE",
                "X": "FILLED" if done else "PARTIALLY_FILLED",
                "i": order_id,
                "l": self.venue.qty(inst, trade.qty_lots),
                "z": self.venue.qty(inst, progress[0]),
                "L": self.venue.price(inst, trade.price_ticks),
                "ap": self._avg(trade.symbol, progress[0], progress[1]),
                "N": "USD",
                "n": e8_to_str(fee),
                "T": ms(trade.ts_ns),
                "t": trade.trade_id,
                "m": not taker,
                "rp": "0",
            }
        )
        self._send_order(aid, trade.ts_ns, o)

    def _order_canceled(self, e: Any) -> None:
        order = self.engine.find_order(e.account_id, e.order_id)
        if order is None:
            return
        progress = self._progress.pop((e.account_id, e.order_id), None)
        value = progress[1] if progress is not None else order.filled_value_ticks
        if e.reason in ("ioc", "fok", "market"):
            x, status = "EXPIRED", "EXPIRED"
        elif e.reason == "stp":
            x, status = "EXPIRED", "EXPIRED_IN_MATCH"
        else:
            x, status = "CANCELED", "CANCELED"
        inst = self.engine.instruments[e.symbol]
        o = self._order_base(order, e.symbol)
        o.update({"x": x, "X": status, "i": e.order_id, "l": "0", "z": self.venue.qty(inst, e.filled_lots),
                  "L": "0", "ap": self._avg(e.symbol, e.filled_lots, value), "T": ms(e.ts_ns), "t": 0,
                  "m": False, "rp": "0"})
        self._send_order(e.account_id, e.ts_ns, o)

    def _order_expired(self, e: Any) -> None:
        """A stop refused when it triggered (SPEC §12): EXPIRED, as Binance reports it."""
        order = self.engine.find_order(e.account_id, e.order_id)
        if order is None:
            return
        o = self._order_base(order, order.symbol)
        o.update({"x": "EXPIRED", "X": "EXPIRED", "i": e.order_id, "l": "0", "z": "0", "L": "0", "ap": "0",
                  "T": ms(e.ts_ns), "t": 0, "m": False, "rp": "0"})
        self._send_order(e.account_id, e.ts_ns, o)

    def _order_amended(self, e: Any) -> None:
        order = self.engine.find_order(e.account_id, e.order_id)
        if order is None:
            return
        inst = self.engine.instruments[e.symbol]
        filled = e.qty_lots - e.remaining_lots
        o = self._order_base(order, e.symbol)
        o.update({"q": self.venue.qty(inst, e.qty_lots), "p": self.venue.price(inst, e.price_ticks),
                  "x": "AMENDMENT", "X": "PARTIALLY_FILLED" if filled else "NEW", "i": e.order_id, "l": "0",
                  "z": self.venue.qty(inst, filled), "L": "0",
                  "ap": self._avg(e.symbol, order.filled_lots, order.filled_value_ticks),
                  "T": ms(e.ts_ns), "t": 0, "m": False, "rp": "0"})
        self._send_order(e.account_id, e.ts_ns, o)

    def _autoclose(self, aid: int, seq: int, ts_ns: int, symbol: str, sell: bool, lots: int, price_e8: int,
                   realized: int, client_id: str, execution: str) -> None:
        inst = self.engine.instruments[symbol]
        qty = self.venue.qty(inst, lots)
        price = e8_to_str(price_e8)
        o = {
            "s": self.venue.to_binance[symbol], "c": client_id, "S": "SELL" if sell else "BUY",
            "o": "LIQUIDATION", "f": "IOC", "q": qty, "p": price, "ap": price, "sp": "0",
            "x": execution, "X": "FILLED", "i": seq, "l": qty, "z": qty, "L": price, "N": "USD", "n": "0",
            "T": ms(ts_ns), "t": seq, "b": "0", "a": "0", "m": False, "R": True, "wt": "CONTRACT_PRICE",
            "ot": "LIQUIDATION", "ps": "BOTH", "cp": False, "rp": e8_to_str(realized), "pP": False,
            "si": 0, "ss": 0, "V": "NONE", "pm": "NONE", "gtd": 0,
        }
        self._send_order(aid, ts_ns, o)

    def _liquidated(self, e: Any, realized: int) -> None:
        self._autoclose(e.account_id, e.seq, e.ts_ns, e.symbol, e.qty_lots > 0, abs(e.qty_lots),
                        e.bankruptcy_price_e8, realized, f"autoclose-{e.seq}", "TRADE")

    def _deleveraged(self, e: Any) -> None:
        self._autoclose(e.counterparty_account_id, e.seq, e.ts_ns, e.symbol, e.side == "long", e.qty_lots,
                        e.price_e8, e.realized_pnl_atoms, "adl_autoclose", "CALCULATED")

    def _position_row(self, aid: int, symbol: str, size: int, entry_value: int) -> dict[str, Any]:
        inst = self.engine.instruments[symbol]
        mark = self._marks.get(symbol, 0)
        entry = div_half_even(entry_value * E8, size * inst.lot_size_e8) if size else 0
        upnl = size * mark * inst.atoms_per_lot_tick - entry_value if size else 0
        held = self._isolated.get(aid)
        isolated = held is not None and symbol in held
        return {
            "s": self.venue.to_binance[symbol], "pa": self.venue.qty(inst, size), "ep": e8_to_str(entry),
            "bep": e8_to_str(entry), "cr": "0", "up": e8_to_str(upnl),
            "mt": "isolated" if isolated else "cross", "iw": e8_to_str(held[symbol]) if held and isolated else "0",
            "ps": "BOTH",
        }

    def _account_update(self, aid: int, ts_ns: int, reason: str, wallet: int, change: int,
                        positions: list[dict[str, Any]]) -> None:
        held = self._isolated.get(aid)
        total = wallet + sum(held.values()) if held else wallet  # wb: the isolated margins too (SPEC §12)
        balance = {"a": "USD", "wb": e8_to_str(total), "cw": e8_to_str(wallet), "bc": e8_to_str(change)}
        payload = {"e": "ACCOUNT_UPDATE", "E": now_ms(), "T": ms(ts_ns),
                   "a": {"m": reason, "B": [balance], "P": positions}}
        self._send(self.accounts[aid], None, payload)

    def _position_update(self, e: Any) -> None:
        row = self._position_row(e.account_id, e.symbol, e.size_lots, e.entry_value_atoms)
        self._account_update(e.account_id, e.ts_ns, _REASONS.get(e.reason, "ORDER"), e.wallet_balance_atoms, 0, [row])

    def _balance(self, e: Any) -> None:
        cls = type(e)
        if cls is ev.DepositMade:
            reason, change = "DEPOSIT", e.amount_atoms
        elif cls is ev.WithdrawalMade:
            reason, change = "WITHDRAW", -e.amount_atoms
        else:
            reason, change = "INSURANCE_CLEAR", e.amount_atoms
        self._account_update(e.account_id, e.ts_ns, reason, e.wallet_balance_atoms, change, [])

    def _funding(self, e: Any) -> None:
        self._account_update(e.account_id, e.ts_ns, "FUNDING_FEE", e.wallet_balance_atoms, e.amount_atoms, [])

    def _margin_type(self, e: Any, positions: dict[int, tuple[int, int, int]] | None) -> None:
        """MarginModeChanged (SPEC §12): the symbol's (flat) position row with its new `mt`."""
        wallet = (positions or {}).get(e.seq, (0, 0, self.engine.accounts[e.account_id].wallet_atoms))[2]
        row = self._position_row(e.account_id, e.symbol, 0, 0)
        row["mt"] = e.mode
        self._account_update(e.account_id, e.ts_ns, "MARGIN_TYPE_CHANGE", wallet, 0, [row])

    def _position_margin(self, e: Any, positions: dict[int, tuple[int, int, int]] | None) -> None:
        """PositionMarginChanged by the user (`POST /fapi/v1/positionMargin`): the position row
        with its new `iw`; the money moved between the cross wallet (`cw`) and the position's
        margin, so the wallet balance `wb` (which holds both) did not change (`bc` 0)."""
        size, entry_value, _ = (positions or {}).get(e.seq, (0, 0, 0))
        row = self._position_row(e.account_id, e.symbol, size, entry_value)
        row["mt"], row["iw"] = "isolated", e8_to_str(e.isolated_margin_atoms)
        self._account_update(e.account_id, e.ts_ns, "MARGIN_TRANSFER", e.wallet_balance_atoms, 0, [row])

    def _send_quantiles(self, quantiles: dict[str, dict[int, int]]) -> None:
        t = now_ms()
        for aid, conns in list(self.accounts.items()):
            for conn in list(conns):
                for symbol, by_account in quantiles.items():
                    if conn.closed:
                        break
                    q = by_account.get(aid)
                    if q is None:
                        if symbol not in conn.quantiles:
                            continue
                        del conn.quantiles[symbol]
                        q = 0
                        size = 0
                    elif conn.quantiles.get(symbol) == q:
                        continue
                    else:
                        conn.quantiles[symbol] = q
                        size = self.engine.accounts[aid].size(symbol)
                    payload = {
                        "e": "ADL_QUANTILE", "E": t, "symbol": self.venue.to_binance[symbol],
                        "adlQuantile": {"LONG": q if size > 0 else 0, "SHORT": q if size < 0 else 0, "BOTH": q},
                    }
                    self._send({conn}, None, payload)

    # -- fan-out ---------------------------------------------------------------------------------

    def _publish(self, topic: tuple[Any, ...], payload: Any) -> None:
        subs = self.topics.get(topic)
        if subs:
            self._send(subs, _stream_name(self.venue, topic), payload)

    def _send(self, targets: set[Conn], stream: str | None, payload: Any) -> None:
        raw = orjson.dumps(payload).decode()
        wrapped: str | None = None
        slow = []
        for conn in targets:
            text = raw
            if conn.combined and stream is not None:
                if wrapped is None:
                    wrapped = '{"stream":' + orjson.dumps(stream).decode() + ',"data":' + raw + "}"
                text = wrapped
            try:
                conn.queue.put_nowait(text)
            except asyncio.QueueFull:
                slow.append(conn)
        for conn in slow:
            log.warning("binance stream %s cut off: slow consumer", conn.address)
            self._drop(conn, CLOSE_POLICY, "slow consumer")

    # -- connections -----------------------------------------------------------------------------

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one stream connection (ASGI websocket scope) until it closes."""
        ws = WebSocket(scope, receive, send)
        conn = Conn(ws, self.queue_size, send)
        services = self.services
        path: str = scope["path"]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        key = (query.get("listenKey") or [None])[0]
        names: list[str] = []
        parts = [p for p in path.split("/") if p]
        for part in parts[2:] if parts[:2] in (["public", "ws"], ["market", "ws"], ["private", "ws"]) else parts[1:]:
            if self.listen_keys.account_of(part) is not None:
                key = part
            elif _parse_name(self.venue, part) is not None:
                names.append(part)
        if parts and parts[0] == "stream":
            conn.combined = True
            names.extend(n for n in (query.get("streams") or [""])[0].split("/") if n)
        refusal = self._refusal(conn.address)
        if refusal is not None:
            await ws.close(CLOSE_TRY_AGAIN, refusal)
            return
        if key is not None or parts[:2] == ["private", "ws"]:
            if services.limits.auth_throttled(conn.address) is not None:
                await ws.close(CLOSE_POLICY, "too many failed authentications")
                return
            aid = self.listen_keys.account_of(key) if key else None
            if aid is None:
                services.limits.auth_failed(conn.address)
                await ws.close(CLOSE_POLICY, "invalid listenKey")
                return
            conn.account_id, conn.listen_key = aid, key
        self.conns.add(conn)
        self.per_address[conn.address] = self.per_address.get(conn.address, 0) + 1
        try:
            await ws.accept()
        except Exception:
            self._release(conn)
            raise
        loop = asyncio.get_running_loop()
        conn.sender = loop.create_task(self._sender(conn))
        if conn.account_id is not None:
            self.accounts.setdefault(conn.account_id, set()).add(conn)
            self._q_dirty.update(self.engine.symbols)
            self._q_due = True
        for name in names:
            self._subscribe(conn, name)
        if conn.account_id is None and not conn.names:
            conn.deadline = loop.call_later(self.deadline_s, self._deadline, conn)
        try:
            while not conn.closed:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode("utf-8", "replace")
                self._request(conn, text or "")
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if not conn.closed:
                conn.closed = True
                self._forget(conn)
                if conn.sender is not None:
                    conn.sender.cancel()
            self._release(conn)

    def _refusal(self, address: str) -> str | None:
        if len(self.conns) >= self.max_connections:
            return f"at most {self.max_connections} stream connections"
        if self.per_address.get(address, 0) >= self.max_per_ip:
            return f"at most {self.max_per_ip} stream connections per address"
        refused = self.services.limits.charge(address, WS_CONNECT_WEIGHT)
        if refused is not None:
            return f"{refused.message}; retry after {refused.retry_after} s"
        return None

    def _release(self, conn: Conn) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            n = self.per_address.pop(conn.address, 0) - 1
            if n > 0:
                self.per_address[conn.address] = n
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None

    def _deadline(self, conn: Conn) -> None:
        conn.deadline = None
        if not conn.names and not conn.closed:
            self._drop(conn, CLOSE_POLICY, f"no subscription within {self.deadline_s:g} s")

    async def _sender(self, conn: Conn) -> None:
        ws, queue = conn.ws, conn.queue
        try:
            while True:
                await ws.send_text(await queue.get())
        except asyncio.CancelledError:
            raise
        except Exception:
            return

    def _request(self, conn: Conn, text: str) -> None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._reply(conn, {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
            return
        if not isinstance(msg, dict):
            self._reply(conn, {"error": {"code": 2, "msg": "Invalid request: expected an object"}, "id": None})
            return
        rid = msg.get("id")
        if rid is not None and not (isinstance(rid, int | str) and not isinstance(rid, bool)):
            rid = None
        method = msg.get("method")
        params = msg.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params) or len(params) > 200:
                self._reply(conn, {"error": {"code": 2, "msg": "Invalid request: params must be a list of stream names"}, "id": rid})
                return
            bad = [p for p in params if _parse_name(self.venue, p) is None]
            if bad:
                self._reply(conn, {"error": {"code": 2, "msg": f"Invalid request: unknown stream {bad[0]!r}"}, "id": rid})
                return
            self._reply(conn, {"result": None, "id": rid})  # before any snapshot it brings
            for name in params:
                if method == "SUBSCRIBE":
                    self._subscribe(conn, name)
                else:
                    self._unsubscribe(conn, name)
        elif method == "LIST_SUBSCRIPTIONS":
            self._reply(conn, {"result": sorted(conn.names), "id": rid})
        elif method == "SET_PROPERTY":
            self._reply(conn, {"result": None, "id": rid})
        elif method == "GET_PROPERTY":
            self._reply(conn, {"result": conn.combined, "id": rid})
        else:
            self._reply(conn, {"error": {"code": 2, "msg": "Invalid request: unknown method"}, "id": rid})

    def _reply(self, conn: Conn, payload: Any) -> None:
        self._send({conn}, None, payload)

    def _subscribe(self, conn: Conn, name: str) -> None:
        topic = _parse_name(self.venue, name)
        if topic is None or name in conn.names:
            return
        conn.names[name] = topic
        self.topics.setdefault(topic, set()).add(conn)
        symbol: str = topic[1] if len(topic) > 1 else None  # type: ignore[assignment]
        kind = topic[0]
        engine = self.engine
        if kind == "depth" and symbol not in self._mirror:
            book = engine.books[symbol]
            self._mirror[symbol] = (
                {lv.price_ticks: lv.total_lots for lv in book.bids.values()},
                {lv.price_ticks: lv.total_lots for lv in book.asks.values()},
            )
        elif kind == "partial":
            key = (symbol, topic[2])
            if key not in self._partial_sent:
                self._partial_sent[key] = engine.books[symbol].depth(topic[2])
            self._send({conn}, name, self._partial_payload(symbol, self._partial_sent[key], self.seq, now_ms()))
        elif kind == "book":
            targets = [symbol] if symbol is not None else list(engine.symbols)
            for s in targets:
                if s not in self._ticker_sent:
                    self._ticker_sent[s] = engine.books[s].depth(1)
        elif kind == "mark" and symbol is not None:
            self._send({conn}, name, self._mark_payload(symbol))
        elif kind == "mark":
            self._send({conn}, name, [self._mark_payload(s) for s in engine.symbols])

    def _unsubscribe(self, conn: Conn, name: str) -> None:
        topic = conn.names.pop(name, None)
        if topic is None or topic in conn.names.values():
            return
        subs = self.topics.get(topic)
        if subs is None:
            return
        subs.discard(conn)
        if not subs:
            del self.topics[topic]
            self._unwatch(topic)

    def _unwatch(self, topic: tuple[Any, ...]) -> None:
        kind = topic[0]
        symbol = topic[1] if len(topic) > 1 else None
        if kind == "depth":
            self._mirror.pop(symbol, None)  # type: ignore[arg-type]
        elif kind == "partial":
            self._partial_sent.pop((symbol, topic[2]), None)  # type: ignore[arg-type]
        elif kind == "book":
            watched = {t[1] for t in self.topics if t[0] == "book"}
            for s in list(self._ticker_sent):
                if s not in watched and None not in watched:
                    del self._ticker_sent[s]

    def _forget(self, conn: Conn) -> None:
        for name in list(conn.names):
            self._unsubscribe(conn, name)
        if conn.account_id is not None:
            conns = self.accounts.get(conn.account_id)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self.accounts[conn.account_id]
                    for key in [k for k in self._progress if k[0] == conn.account_id]:
                        del self._progress[key]

    def _drop(self, conn: Conn, code: int, reason: str) -> None:
        """Stop sending to `conn` now and close it in the background."""
        if conn.closed:
            return
        conn.closed = True
        self._forget(conn)
        if conn.sender is not None:
            conn.sender.cancel()
        task = asyncio.get_running_loop().create_task(self._close(conn, code, reason))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _close(self, conn: Conn, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(conn.ws.close(code, reason[:120]), self.close_grace_s)
            return
        except Exception:
            pass
        protocol = getattr(conn.raw_send, "__self__", None)  # uvicorn's protocol (best effort)
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abort()

    # -- background: quantiles, listen keys --------------------------------------------------------

    async def _background(self) -> None:
        last_sweep = 0.0
        while True:
            await asyncio.sleep(self.quantile_interval_s)
            try:
                if self.accounts and self._q_dirty:
                    if self.engine.seq == self.seq:  # nothing in flight: read the live engine
                        self._send_quantiles(self._read_quantiles())
                    else:
                        self._q_due = True  # read at the next capture, sent with its batch
                now = time.monotonic()
                if now - last_sweep >= SWEEP_S:
                    last_sweep = now
                    for key, aid in self.listen_keys.lapsed():
                        for conn in list(self.accounts.get(aid, ())):
                            if conn.listen_key == key:
                                self._send({conn}, None, {"e": "listenKeyExpired", "E": now_ms(), "listenKey": key})
                                self._drop(conn, 1000, "listenKey expired")
            except Exception:
                log.exception("binance stream background step failed")


def _parse_name(venue: Venue, name: str) -> tuple[Any, ...] | None:
    """The topic of a stream name, or None when it is not one we serve."""
    if len(name) > 64:
        return None
    low = name.lower()
    head, _, kind = low.partition("@")
    if head.startswith("!"):
        return _ALL_STREAMS.get(low)
    symbol = venue.to_engine.get(head.upper())
    if symbol is None:
        return None
    if kind in ("aggtrade",):
        return ("agg", symbol)
    if kind == "trade":
        return ("trade", symbol)
    if kind in ("markprice", "markprice@1s"):
        return ("mark", symbol)
    if kind == "forceorder":
        return ("force", symbol)
    if kind == "bookticker":
        return ("book", symbol)
    for speed in _DEPTH_SPEEDS:
        if kind == "depth" + speed:
            return ("depth", symbol)
        for n in _PARTIAL:
            if kind == f"depth{n}{speed}":
                return ("partial", symbol, n)
    return None


def _stream_name(venue: Venue, topic: tuple[Any, ...]) -> str:
    kind = topic[0]
    symbol = topic[1] if len(topic) > 1 else None
    low = venue.to_binance[symbol].lower() if symbol is not None else ""
    names = {"agg": "aggTrade", "trade": "trade", "mark": "markPrice", "force": "forceOrder",
             "book": "bookTicker", "depth": "depth"}
    if kind == "partial":
        return f"{low}@depth{topic[2]}"
    return f"{low}@{names[kind]}"
