"""Binance-style WebSocket streams: the connections and the engine side shared by the market
streams (api/binance/market_streams.py) and the user-data stream (api/binance/user_stream.py);
`Streams` combines the two.

Paths (what ccxt's binanceusdm connects to once `urls.api.ws.linear` ends in `/ws`):
`/public/ws[/...]`, `/market/ws[/...]` (market streams), `/private/ws?listenKey=K` (user
data), and Binance's own forms `/ws`, `/ws/<streamName>`, `/ws/<listenKey>` and
`/stream?streams=a/b` (combined: each message wrapped as `{"stream", "data"}`).
Client requests: `{"method": "SUBSCRIBE" | "UNSUBSCRIBE" | "LIST_SUBSCRIPTIONS", "params":
[...], "id": N}` -> `{"result": null | [...], "id": N}`; a bad request gets
`{"error": {"code": 2, "msg": ...}, "id": N}` and the connection stays.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.binance.market_streams import _PARTIAL, MarketStreams, _parse_name
from api.binance.user_stream import ListenKeys, UserStream
from api.binance.views import Venue, ms
from engine import events as ev
from engine.commands import MARGIN_ISOLATED
from engine.orders import TRIGGER_COMMAND
from service.limits import WS_CONNECT_WEIGHT, client_key

if TYPE_CHECKING:
    from service.runtime import Services

log = logging.getLogger("api.binance.streams")

CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
_BOOK_EVENTS = (ev.OrderAccepted, ev.OrderCanceled, ev.OrderAmended, ev.TradeExecuted)


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


class Streams(MarketStreams, UserStream):
    """Market and user-data streams of one service; see the module docstrings."""

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

    # -- fan-out ---------------------------------------------------------------------------------

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
