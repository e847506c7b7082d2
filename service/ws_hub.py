"""The `/v1/ws` WebSocket hub (SPEC §10): the client protocol, over the fan-out of
service/ws_fanout.py.

Client -> server ops (JSON text frames):
    {"op": "subscribe",   "channels": ["trades:BTC-PERP", "book:BTC-PERP", "mark:BTC-PERP",
                                        "funding:BTC-PERP", "adl", "liquidations"]}
    {"op": "unsubscribe", "channels": [...]}
    {"op": "auth", "api_key": "..."}      -> also subscribes the private channel "account"
    {"op": "ping"}
Server -> client: {"channel": ..., "seq": ..., "data": {...}}; control answers and errors
come on channel "control" (`data.type` = subscribed / unsubscribed / authenticated / pong /
error), idle connections get a "heartbeat" message every `ws_heartbeat_s` (uvicorn also
sends protocol pings). A bad op gets an error message and the connection stays; a frame
larger than the server's `ws_max_size` is refused by the protocol layer (close 1009).

Channels, what each carries and the snapshot sent on subscribing, and the ordering and
durability rules: service/ws_fanout.py (`WsFanout`, which `WsHub` extends).

Back-pressure: `on_delivered` runs in the engine task and never awaits. Every connection has a
bounded queue drained by its own sender task; when the queue is full the client is dropped
from every channel at once and closed with 1008 "slow consumer". The close frame is sent as
soon as the socket is writable again; if it is not within `close_grace_s`, the transport is
aborted (best effort: this reaches into uvicorn's protocol object).

Abuse limits (SPEC §10, service/limits.py): at most `max_connections` connections in total
and `max_per_ip` per client address; one more is accepted, told why (control error 5106
`TOO_MANY_CONNECTIONS`) and closed with 1013 "try again later"; its socket is shut
`REFUSED_LINGER_S` later whatever the peer does. A connection attempt costs
`WS_CONNECT_WEIGHT` of the address's request budget; over it, and for any refusal while
`REFUSING_MAX` refused sockets still linger (a connection flood), the handshake is answered
HTTP 429 with the error body (5109 `CONNECT_RATE_LIMITED` or 5106) and `Retry-After`, and the
socket is freed at once: a flood of refused connections holds few descriptors. A
connection that has not subscribed to a channel or authenticated within `auth_deadline_s`
of its accept gets 5107 `SUBSCRIBE_TIMEOUT` and is closed with 1008. A failed `auth` counts
against the address's failed-authentication budget (shared with HTTP 401/403); once that is
used up, `auth` answers 5108 `AUTH_THROTTLED` and closes the connection with 1008. Close
reasons start with the error name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine.engine import Engine
from service.format import EventFormatter
from service.keys import KeyRegistry
from service.limits import WS_CONNECT_WEIGHT, AbuseLimits, client_key
from service.metrics import Metrics
from service.ws_fanout import Depth, WsFanout

log = logging.getLogger("service.ws")

# WebSocket-edge error codes (5xxx range, see api/errors.py)
WS_BAD_MESSAGE = (5101, "BAD_MESSAGE")
WS_UNKNOWN_OP = (5102, "UNKNOWN_OP")
WS_UNKNOWN_CHANNEL = (5103, "UNKNOWN_CHANNEL")
WS_AUTH_REQUIRED = (5104, "AUTH_REQUIRED")
WS_AUTH_FAILED = (5105, "AUTH_FAILED")
WS_TOO_MANY_CONNECTIONS = (5106, "TOO_MANY_CONNECTIONS")
WS_SUBSCRIBE_TIMEOUT = (5107, "SUBSCRIBE_TIMEOUT")
WS_AUTH_THROTTLED = (5108, "AUTH_THROTTLED")
WS_CONNECT_RATE_LIMITED = (5109, "CONNECT_RATE_LIMITED")
CLOSE_POLICY = 1008  # policy violation: too slow, too late, too many failed auths
CLOSE_TRY_AGAIN = 1013  # try again later: over a connection cap or the request budget
REFUSED_LINGER_S = 0.25  # a refused connection's socket is shut this long after its close frame
REFUSING_MAX = 64  # refused connections lingering at once; beyond, refusals are HTTP answers


def _error_data(err: tuple[int, str], message: str) -> dict[str, Any]:
    return {"type": "error", "code": err[0], "error": err[1], "message": message}


def _transport(client: WsClient) -> Any:
    """The server's transport under `client` (best effort: uvicorn's protocol object)."""
    protocol = getattr(client.raw_send, "__self__", None)
    return getattr(protocol, "transport", None)


def _reason(err: tuple[int, str], message: str) -> str:
    """A close reason: the error name, then why (a close reason holds at most 123 bytes)."""
    return f"{err[1]}: {message}".encode()[:123].decode("utf-8", "ignore")


class WsClient:
    """One connection: its subscriptions, account, owed snapshots and outbound queue."""

    __slots__ = (
        "account_id",
        "address",
        "books",
        "channels",
        "closed",
        "closing",
        "deadline",
        "engaged",
        "owed",
        "quantiles",
        "queue",
        "raw_send",
        "sender",
        "ws",
    )

    def __init__(self, ws: WebSocket, queue_size: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.channels: set[str] = set()  # "account" included while subscribed to it
        self.account_id: int | None = None
        # channel -> engine.seq when its snapshot was asked for; settled by state read at or after it
        self.owed: dict[str, int] = {}
        self.quantiles: dict[str, int] = {}  # symbol -> adl_quantile last sent here
        self.books: dict[str, Depth] = {}  # symbol -> top-N last sent here
        self.closed = False
        self.sender: asyncio.Task[None] | None = None
        self.raw_send: Any = ws.scope.get("exchange.raw_send")
        self.address = client_key(ws.scope)
        self.engaged = False  # subscribed or authenticated once (the deadline no longer applies)
        self.deadline: asyncio.TimerHandle | None = None
        self.closing: asyncio.Task[None] | None = None  # our close, once dropped


class WsHub(WsFanout):
    """The `/v1/ws` endpoint: connections, their ops, queues and caps (fan-out: `WsFanout`)."""

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
        limits: AbuseLimits | None = None,
        max_connections: int = 500,
        max_per_ip: int = 50,
        auth_deadline_s: float = 5.0,
    ) -> None:
        super().__init__(engine, formatter, book_depth, quantile_interval_s)
        self.keys = keys
        self.metrics = metrics
        self.queue_size = queue_size
        self.heartbeat_s = heartbeat_s
        self.close_grace_s = close_grace_s
        self.limits = limits
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.auth_deadline_s = auth_deadline_s
        self.connections = 0  # accepted and not yet ended (may be dropped and closing)
        self.refusing = 0  # refused connections whose sockets linger (REFUSED_LINGER_S)
        self.per_address: dict[str, int] = {}  # the same, by client address
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

    # -- sending -------------------------------------------------------------------------

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
        self._send({client}, channel, self.seq, data)

    # -- connections ---------------------------------------------------------------------

    def _refusal(self, address: str) -> tuple[tuple[int, str], str, str] | None:
        """Why a new connection from `address` may not stay (error, message, Retry-After in
        seconds), or None."""
        if self.connections >= self.max_connections:
            message = f"at most {self.max_connections} connections in total"
            return WS_TOO_MANY_CONNECTIONS, message, "1"
        if self.per_address.get(address, 0) >= self.max_per_ip:
            message = f"at most {self.max_per_ip} connections per address"
            return WS_TOO_MANY_CONNECTIONS, message, "1"
        if self.limits is not None:
            refused = self.limits.charge(address, WS_CONNECT_WEIGHT)
            if refused is not None:
                message = f"{refused.message}; retry after {refused.retry_after} s"
                return WS_CONNECT_RATE_LIMITED, message, refused.retry_after
        return None

    async def _refuse(
        self, client: WsClient, err: tuple[int, str], message: str, retry_after: str
    ) -> None:
        """Accept, say why, close with 1013: the client learns why (a refused handshake would
        only show an HTTP status). The socket is shut `REFUSED_LINGER_S` later whether or not
        the peer answered the close. Connection attempts over the address's budget, and any
        refusal while `REFUSING_MAX` refused sockets still linger (a flood), get an HTTP 429
        with the same error body instead, which frees the socket at once."""
        self.metrics.ws_refused.labels(err[1]).inc()
        ws = client.ws
        if err is WS_CONNECT_RATE_LIMITED or self.refusing >= REFUSING_MAX:
            body = orjson.dumps({"code": err[0], "error": err[1], "message": message})
            denial = Response(body, 429, {"Retry-After": retry_after}, "application/json")
            with contextlib.suppress(Exception):
                if "websocket.http.response" in ws.scope.get("extensions", {}):
                    await ws.send_denial_response(denial)
                else:
                    await ws.close(CLOSE_TRY_AGAIN)  # before accept: a bare 403
            return
        text = orjson.dumps(
            {"channel": "control", "seq": self.seq, "data": _error_data(err, message)}
        ).decode()
        self.refusing += 1
        with contextlib.suppress(Exception):
            await ws.accept()
            await asyncio.wait_for(ws.send_text(text), self.close_grace_s)
            reason = _reason(err, message)
            await asyncio.wait_for(ws.close(CLOSE_TRY_AGAIN, reason), self.close_grace_s)
        transport = _transport(client)
        asyncio.get_running_loop().call_later(REFUSED_LINGER_S, self._lingered, transport)

    def _lingered(self, transport: Any) -> None:
        self.refusing -= 1
        if transport is not None:
            transport.close()

    async def serve(self, ws: WebSocket) -> None:
        """Run one connection until it closes (the route handler)."""
        client = WsClient(ws, self.queue_size)
        refusal = self._refusal(client.address)
        if refusal is not None:
            await self._refuse(client, *refusal)
            return
        # counted before the first await: the caps hold however many connect at once
        self.clients.add(client)
        self.connections += 1
        address = client.address
        self.per_address[address] = self.per_address.get(address, 0) + 1
        try:
            await ws.accept()
        except Exception:
            self._release(client)
            raise
        loop = asyncio.get_running_loop()
        client.deadline = loop.call_later(self.auth_deadline_s, self._deadline, client)
        client.sender = loop.create_task(self._sender(client))
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
            self._release(client)
            if client.closing is not None:  # dropped by an op: the close frame goes out first
                with contextlib.suppress(Exception):
                    await asyncio.shield(client.closing)

    def _release(self, client: WsClient) -> None:
        """Free the connection's place under the caps (once it has stopped)."""
        self.clients.discard(client)
        self.connections -= 1
        if client.deadline is not None:
            client.deadline.cancel()
            client.deadline = None
        n = self.per_address.pop(client.address, 0) - 1
        if n > 0:
            self.per_address[client.address] = n

    def _deadline(self, client: WsClient) -> None:
        client.deadline = None
        if client.engaged or client.closed:
            return
        self.metrics.ws_refused.labels(WS_SUBSCRIBE_TIMEOUT[1]).inc()
        message = f"no subscription or authentication within {self.auth_deadline_s:g} s"
        self._drop(client, CLOSE_POLICY, _reason(WS_SUBSCRIBE_TIMEOUT, message),
                   count=False, final=_error_data(WS_SUBSCRIBE_TIMEOUT, message))

    async def _sender(self, client: WsClient) -> None:
        ws, queue = client.ws, client.queue
        try:
            while True:
                if queue.empty():
                    try:
                        text = await asyncio.wait_for(queue.get(), self.heartbeat_s)
                    except TimeoutError:
                        if not queue.empty():  # a message came as the timer fired: it goes first,
                            # or the heartbeat (stamped with the last delivered seq) would pass it
                            await ws.send_text(queue.get_nowait())
                            continue
                        text = orjson.dumps(
                            {
                                "channel": "heartbeat",
                                "seq": self.seq,
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

    def _drop(
        self,
        client: WsClient,
        code: int,
        reason: str,
        count: bool = True,
        final: dict[str, Any] | None = None,
    ) -> None:
        """Stop sending to `client` now and close it in the background. With `final` (a last
        control message, sent first) the socket is also shut `REFUSED_LINGER_S` after the
        close frame, whether or not the peer answers it."""
        if client.closed:
            return
        client.closed = True
        self._forget(client)
        if count:
            self.metrics.ws_slow_disconnects.inc()
            log.warning("websocket %s cut off: %s", client.ws.client, reason)
        if client.sender is not None:
            client.sender.cancel()
        last = None
        if final is not None:
            last = orjson.dumps({"channel": "control", "seq": self.seq, "data": final}).decode()
        task = asyncio.get_running_loop().create_task(self._close(client, code, reason, last))
        client.closing = task
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _close(
        self, client: WsClient, code: int, reason: str, last: str | None = None
    ) -> None:
        try:
            if last is not None:
                await asyncio.wait_for(client.ws.send_text(last), self.close_grace_s)
            await asyncio.wait_for(client.ws.close(code, reason), self.close_grace_s)
            transport = _transport(client)
            if last is not None and transport is not None:
                asyncio.get_running_loop().call_later(REFUSED_LINGER_S, transport.close)
            return
        except Exception:
            pass
        # The peer does not read: the close frame cannot even be written. Abort the socket.
        transport = _transport(client)
        if transport is not None:
            transport.abort()

    # -- ops -----------------------------------------------------------------------------

    def _error(self, client: WsClient, err: tuple[int, str], message: str) -> None:
        self._send_one(client, "control", _error_data(err, message))

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
        if ch in ("adl", "liquidations", "insurance_fund"):
            return True
        kind, _, symbol = ch.partition(":")
        return kind in ("trades", "book", "mark", "funding") and symbol in self.symbols

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
                    continue
            elif not self._valid_channel(ch):
                self._error(client, WS_UNKNOWN_CHANNEL, f"unknown channel {ch!r}")
                continue
            self._join(client, ch)
            ok.append(ch)
        if ok:
            client.engaged = True
            self._send_one(client, "control", {"type": "subscribed", "channels": ok})
        for ch in ok:  # an initial snapshot, so a client never starts from nothing
            if ch in ("account", "insurance_fund") or ch.startswith(("book:", "mark:", "funding:")):
                self._owe(client, ch)
        self._settle()

    def _unsubscribe(self, client: WsClient, chans: list[str]) -> None:
        done = []
        for ch in chans:
            if ch in client.channels:
                self._leave(client, ch)
                done.append(ch)
        self._send_one(client, "control", {"type": "unsubscribed", "channels": done})

    def _auth(self, client: WsClient, api_key: str) -> None:
        throttled = self.limits.auth_throttled(client.address) if self.limits else None
        if throttled is not None:
            self.metrics.ws_refused.labels(WS_AUTH_THROTTLED[1]).inc()
            message = f"{throttled.message}; retry after {throttled.retry_after} s"
            self._drop(client, CLOSE_POLICY, _reason(WS_AUTH_THROTTLED, message), count=False,
                       final=_error_data(WS_AUTH_THROTTLED, message))
            return
        account_id = self.keys.lookup(api_key)
        if account_id is None:
            if self.limits is not None:
                self.limits.auth_failed(client.address)
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
        client.engaged = True
        self._join(client, "account")
        self._send_one(
            client,
            "control",
            {"type": "authenticated", "account_id": account_id, "channels": ["account"]},
        )
        self._owe(client, "account")
        self._settle()
