"""WebSocket fan-out (SPEC §10): public channels and the private `account` channel.

Client -> server ops (JSON text frames):
    {"op": "subscribe",   "channels": ["trades:BTC-PERP", "book:BTC-PERP", "mark:BTC-PERP", "adl", "liquidations"]}
    {"op": "unsubscribe", "channels": [...]}
    {"op": "auth", "api_key": "..."}      -> also subscribes the private channel "account"
    {"op": "ping"}
Server -> client: {"channel": ..., "seq": ..., "data": {...}}; control answers and errors
come on channel "control" (`data.type` = subscribed / unsubscribed / authenticated / pong /
error), idle connections get a "heartbeat" message every `ws_heartbeat_s` (uvicorn also
sends protocol pings). A bad op gets an error message, never a disconnect.

Channels: `trades:<symbol>` (public trade: no account or order ids), `book:<symbol>` (top-N
snapshot after every engine batch that changed that book, so coalesced per batch; one
snapshot right after subscribing), `mark:<symbol>`, `liquidations`, `adl` (the §8 event
data), `account` (that account's order events, fills, positions, deposits/withdrawals,
leverage, rejections, its liquidation and the ADL fills where it is the counterparty, and
`adl_quantile` updates).

`adl_quantile` is throttled: after a batch that moved a mark or changed positions, the
quantiles of the symbols concerned are recomputed (engine.adl_quantiles) at most every
`adl_quantile_interval_s` (default 0.25 s), for authenticated accounts only, and pushed
when they differ from what that account was last sent.

Back-pressure: `on_events` runs in the engine task and never awaits. Every connection has a
bounded queue drained by its own sender task; when the queue is full the client is dropped
from every channel at once and closed with 1008 "slow consumer". The close frame is sent as
soon as the socket is writable again; if it is not within `close_grace_s`, the transport is
aborted (best effort: this reaches into uvicorn's protocol object).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine import events as ev
from engine.engine import Engine
from service.format import EventFormatter, price_str
from service.keys import KeyRegistry
from service.metrics import Metrics

log = logging.getLogger("service.ws")

# WebSocket-edge error codes (5xxx range, see api/errors.py)
WS_BAD_MESSAGE = (5101, "BAD_MESSAGE")
WS_UNKNOWN_OP = (5102, "UNKNOWN_OP")
WS_UNKNOWN_CHANNEL = (5103, "UNKNOWN_CHANNEL")
WS_AUTH_REQUIRED = (5104, "AUTH_REQUIRED")
WS_AUTH_FAILED = (5105, "AUTH_FAILED")

_ACCOUNT_EVENTS = (
    ev.OrderAccepted,
    ev.OrderCanceled,
    ev.OrderAmended,
    ev.OrderRejected,
    ev.CommandRejected,
    ev.PositionChanged,
    ev.DepositMade,
    ev.WithdrawalMade,
    ev.LeverageChanged,
    ev.NegativeBalanceCovered,
)
_BOOK_EVENTS = (ev.OrderAccepted, ev.OrderCanceled, ev.OrderAmended, ev.TradeExecuted)


class WsClient:
    """One connection: its subscriptions, account and outbound queue."""

    __slots__ = ("account_id", "channels", "closed", "queue", "raw_send", "sender", "ws")

    def __init__(self, ws: WebSocket, queue_size: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.channels: set[str] = set()
        self.account_id: int | None = None
        self.closed = False
        self.sender: asyncio.Task[None] | None = None
        self.raw_send: Any = ws.scope.get("exchange.raw_send")


class WsHub:
    """Routes engine events to subscribed connections."""

    def __init__(
        self,
        engine: Engine,
        formatter: EventFormatter,
        keys: KeyRegistry,
        metrics: Metrics,
        queue_size: int = 1_000,
        book_depth: int = 20,
        heartbeat_s: float = 15.0,
        quantile_interval_s: float = 0.25,
        close_grace_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.formatter = formatter
        self.keys = keys
        self.metrics = metrics
        self.queue_size = queue_size
        self.book_depth = book_depth
        self.heartbeat_s = heartbeat_s
        self.quantile_interval_s = quantile_interval_s
        self.close_grace_s = close_grace_s
        self.clients: set[WsClient] = set()
        self.channels: dict[str, set[WsClient]] = {}
        self.accounts: dict[int, set[WsClient]] = {}
        self.symbols = set(engine.instruments)
        self._quantile_dirty: set[str] = set()
        self._quantile_sent: dict[tuple[int, str], int] = {}
        self._quantile_wake = asyncio.Event()
        self._quantile_task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._quantile_task = asyncio.get_running_loop().create_task(
            self._quantile_loop(), name="adl-quantiles"
        )

    async def stop(self) -> None:
        if self._quantile_task is not None:
            self._quantile_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._quantile_task
        for client in list(self.clients):
            self._drop(client, 1001, "server shutting down", count=False)
        if self._bg:
            await asyncio.wait(self._bg, timeout=2.0)

    # -- engine side (never awaits) ------------------------------------------------------

    def on_events(self, events: list[Any]) -> None:
        """Fan one engine batch out to the subscribed connections."""
        if not self.clients:
            return
        channels = self.channels
        accounts = self.accounts
        fmt = self.formatter
        books: set[str] = set()
        quantiles = self._quantile_dirty
        for event in events:
            cls = type(event)
            if cls is ev.TradeExecuted:
                books.add(event.symbol)
                ch = "trades:" + event.symbol
                if ch in channels:
                    self._send(channels[ch], ch, event.seq, {"type": "trade", **fmt.public_trade(event)})
                for aid in (event.taker_account_id, event.maker_account_id):
                    if aid in accounts:
                        self._send(accounts[aid], "account", event.seq, fmt.fill_for(event, aid))
                continue
            if cls in _BOOK_EVENTS:
                books.add(event.symbol)
            if cls is ev.PositionChanged:
                quantiles.add(event.symbol)
            elif cls is ev.DepositMade or cls is ev.WithdrawalMade:
                # equity moves the account's effective leverage, hence its ADL rank
                acct = self.engine.accounts.get(event.account_id)
                if acct is not None:
                    quantiles.update(acct.positions)
            if cls in _ACCOUNT_EVENTS:
                if event.account_id in accounts:
                    self._send(accounts[event.account_id], "account", event.seq, self._typed(event))
            elif cls is ev.MarkPriceChanged:
                quantiles.add(event.symbol)
                ch = "mark:" + event.symbol
                if ch in channels:
                    self._send(channels[ch], ch, event.seq, self._typed(event))
            elif cls is ev.AccountLiquidated:
                data = None
                if "liquidations" in channels:
                    data = self._typed(event)
                    self._send(channels["liquidations"], "liquidations", event.seq, data)
                if event.account_id in accounts:
                    self._send(
                        accounts[event.account_id], "account", event.seq, data or self._typed(event)
                    )
            elif cls is ev.PositionDeleveraged:
                quantiles.add(event.symbol)
                data = None
                if "adl" in channels:
                    data = self._typed(event)
                    self._send(channels["adl"], "adl", event.seq, data)
                if event.counterparty_account_id in accounts:
                    self._send(
                        accounts[event.counterparty_account_id],
                        "account",
                        event.seq,
                        data or self._typed(event),
                    )
        for symbol in books:
            ch = "book:" + symbol
            if ch in channels:
                self._send(channels[ch], ch, self.engine.seq, self._book(symbol))
        if quantiles and accounts:
            self._quantile_wake.set()

    def _typed(self, event: Any) -> dict[str, Any]:
        data = {"type": event.TYPE}
        data.update(self.formatter.data(event))
        return data

    def _book(self, symbol: str) -> dict[str, Any]:
        bids, asks = self.engine.books[symbol].depth(self.book_depth)
        return {"type": "book", **self.formatter.book(symbol, bids, asks)}

    def _send(self, targets: set[WsClient], channel: str, seq: int, data: dict[str, Any]) -> None:
        text = orjson.dumps({"channel": channel, "seq": seq, "data": data}).decode()
        slow: list[WsClient] = []
        for client in targets:
            try:
                client.queue.put_nowait(text)
            except asyncio.QueueFull:
                slow.append(client)  # dropped after the loop: _drop changes `targets`
        self.metrics.ws_messages.inc(len(targets))
        for client in slow:
            self._drop(client, 1008, "slow consumer")

    def _send_one(self, client: WsClient, channel: str, data: dict[str, Any]) -> None:
        self._send({client}, channel, self.engine.seq, data)

    # -- connections ---------------------------------------------------------------------

    async def serve(self, ws: WebSocket) -> None:
        """Run one connection until it closes (the route handler)."""
        await ws.accept()
        client = WsClient(ws, self.queue_size)
        self.clients.add(client)
        client.sender = asyncio.get_running_loop().create_task(self._sender(client))
        try:
            while not client.closed:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode("utf-8", "replace")
                self._handle_op(client, text or "")
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if not client.closed:
                self._forget(client)
                client.closed = True
                if client.sender is not None:
                    client.sender.cancel()

    async def _sender(self, client: WsClient) -> None:
        ws, queue = client.ws, client.queue
        try:
            while True:
                if queue.empty():
                    try:
                        text = await asyncio.wait_for(queue.get(), self.heartbeat_s)
                    except TimeoutError:
                        text = orjson.dumps(
                            {
                                "channel": "heartbeat",
                                "seq": self.engine.seq,
                                "data": {"ts_ns": time.time_ns()},
                            }
                        ).decode()
                else:
                    text = queue.get_nowait()
                await ws.send_text(text)
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away; the receive side cleans up
            return

    def _forget(self, client: WsClient) -> None:
        self.clients.discard(client)
        for ch in client.channels:
            subs = self.channels.get(ch)
            if subs is not None:
                subs.discard(client)
                if not subs:
                    del self.channels[ch]
        if client.account_id is not None:
            subs = self.accounts.get(client.account_id)
            if subs is not None:
                subs.discard(client)
                if not subs:
                    del self.accounts[client.account_id]
                    for key in [k for k in self._quantile_sent if k[0] == client.account_id]:
                        del self._quantile_sent[key]

    def _drop(self, client: WsClient, code: int, reason: str, count: bool = True) -> None:
        """Stop sending to `client` now and close it in the background."""
        if client.closed:
            return
        client.closed = True
        self._forget(client)
        if count:
            self.metrics.ws_slow_disconnects.inc()
            log.warning("websocket %s cut off: %s", client.ws.client, reason)
        if client.sender is not None:
            client.sender.cancel()
        task = asyncio.get_running_loop().create_task(self._close(client, code, reason))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _close(self, client: WsClient, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(client.ws.close(code, reason), self.close_grace_s)
            return
        except Exception:
            pass
        # The peer does not read: the close frame cannot even be written. Abort the socket.
        protocol = getattr(client.raw_send, "__self__", None)
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abort()

    # -- ops -----------------------------------------------------------------------------

    def _error(self, client: WsClient, err: tuple[int, str], message: str) -> None:
        self._send_one(
            client,
            "control",
            {"type": "error", "code": err[0], "error": err[1], "message": message},
        )

    def _handle_op(self, client: WsClient, text: str) -> None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._error(client, WS_BAD_MESSAGE, "messages must be JSON objects")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
            self._error(client, WS_BAD_MESSAGE, 'messages must be JSON objects with an "op"')
            return
        op = msg["op"]
        if op in ("subscribe", "unsubscribe"):
            chans = msg.get("channels")
            if (
                not isinstance(chans, list)
                or not chans
                or not all(isinstance(c, str) for c in chans)
            ):
                self._error(
                    client, WS_BAD_MESSAGE, '"channels" must be a non-empty list of strings'
                )
                return
            if op == "subscribe":
                self._subscribe(client, chans)
            else:
                self._unsubscribe(client, chans)
        elif op == "auth":
            key = msg.get("api_key")
            self._auth(client, key if isinstance(key, str) else "")
        elif op == "ping":
            self._send_one(client, "control", {"type": "pong"})
        else:
            self._error(
                client,
                WS_UNKNOWN_OP,
                f"unknown op {op!r}; use subscribe, unsubscribe, auth or ping",
            )

    def _valid_channel(self, ch: str) -> bool:
        if ch in ("adl", "liquidations"):
            return True
        kind, _, symbol = ch.partition(":")
        return kind in ("trades", "book", "mark") and symbol in self.symbols

    def _subscribe(self, client: WsClient, chans: list[str]) -> None:
        ok: list[str] = []
        for ch in chans:
            if ch == "account":
                if client.account_id is None:
                    self._error(
                        client,
                        WS_AUTH_REQUIRED,
                        'send {"op": "auth", "api_key": ...} before subscribing to "account"',
                    )
                else:
                    ok.append(ch)
                continue
            if not self._valid_channel(ch):
                self._error(client, WS_UNKNOWN_CHANNEL, f"unknown channel {ch!r}")
                continue
            client.channels.add(ch)
            self.channels.setdefault(ch, set()).add(client)
            ok.append(ch)
        if ok:
            self._send_one(client, "control", {"type": "subscribed", "channels": ok})
        for ch in ok:  # an initial snapshot, so a client never starts from nothing
            kind, _, symbol = ch.partition(":")
            if kind == "book":
                self._send_one(client, ch, self._book(symbol))
            elif kind == "mark" and symbol in self.engine.marks:
                price = price_str(self.engine.instruments[symbol], self.engine.marks[symbol])
                self._send_one(
                    client, ch, {"type": "mark_price_changed", "symbol": symbol, "price": price}
                )

    def _unsubscribe(self, client: WsClient, chans: list[str]) -> None:
        done = []
        for ch in chans:
            if ch in client.channels:
                client.channels.discard(ch)
                subs = self.channels.get(ch)
                if subs is not None:
                    subs.discard(client)
                    if not subs:
                        del self.channels[ch]
                done.append(ch)
            elif ch == "account" and client.account_id is not None:
                subs = self.accounts.get(client.account_id)
                if subs is not None:
                    subs.discard(client)
                    if not subs:
                        del self.accounts[client.account_id]
                done.append(ch)
        self._send_one(client, "control", {"type": "unsubscribed", "channels": done})

    def _auth(self, client: WsClient, api_key: str) -> None:
        account_id = self.keys.lookup(api_key)
        if account_id is None:
            self._error(client, WS_AUTH_FAILED, "unknown api_key")
            return
        if client.account_id is not None and client.account_id != account_id:
            self._error(
                client,
                WS_AUTH_FAILED,
                "this connection is already authenticated as another account",
            )
            return
        client.account_id = account_id
        self.accounts.setdefault(account_id, set()).add(client)
        self._send_one(
            client,
            "control",
            {"type": "authenticated", "account_id": account_id, "channels": ["account"]},
        )
        acct = self.engine.accounts.get(account_id)
        for symbol in sorted(acct.positions) if acct is not None else ():
            q = self.engine.adl_quantiles(symbol).get(account_id, 0)
            self._quantile_sent[(account_id, symbol)] = q
            self._send_one(
                client, "account", {"type": "adl_quantile", "symbol": symbol, "adl_quantile": q}
            )

    # -- adl_quantile pushes -------------------------------------------------------------

    async def _quantile_loop(self) -> None:
        while True:
            await self._quantile_wake.wait()
            self._quantile_wake.clear()
            try:
                self._push_quantiles()
            except Exception:
                log.exception("adl_quantile push failed")
            await asyncio.sleep(self.quantile_interval_s)

    def _push_quantiles(self) -> None:
        """Recompute quantiles of the dirty symbols; push the ones that changed."""
        symbols, self._quantile_dirty = self._quantile_dirty, set()
        if not self.accounts:
            return
        engine = self.engine
        sent = self._quantile_sent
        for symbol in sorted(symbols):
            quantiles = engine.adl_quantiles(symbol)
            for aid, subs in list(self.accounts.items()):
                acct = engine.accounts.get(aid)
                if acct is None:
                    continue
                key = (aid, symbol)
                if symbol in acct.positions:
                    q = quantiles.get(aid, 0)
                elif key in sent:
                    q = 0  # the position is gone: its light goes out once
                else:
                    continue
                if sent.get(key) == q:
                    continue
                if symbol in acct.positions:
                    sent[key] = q
                else:
                    del sent[key]
                self._send(
                    subs,
                    "account",
                    engine.seq,
                    {"type": "adl_quantile", "symbol": symbol, "adl_quantile": q},
                )
