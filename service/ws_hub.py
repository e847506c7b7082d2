"""WebSocket fan-out (SPEC §10): public channels and the private `account` channel.

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

Channels: `trades:<symbol>` (public trade: no account or order ids), `book:<symbol>` (top-N
snapshot after every engine batch that changed that book, so coalesced per batch; one
snapshot right after subscribing), `mark:<symbol>` (the current mark right after
subscribing, then every change, whether set by an admin or from the index),
`funding:<symbol>` (a `funding` snapshot of the symbol's funding state right after
subscribing, service/format.py `funding_state`, then its `index_price_changed` and
`funding_rate_changed` events), `insurance_fund` (an `insurance_fund` snapshot {balance,
bad_debt} right after subscribing, then `insurance_fund_changed` events and a `bad_debt`
message {amount, account_id, symbol} for every liquidation or covered deficit that left
bad debt), `liquidations`, `adl` (the §8 event data), `account` (that
account's order events, fills, positions, deposits/withdrawals, leverage, funding payments,
rejections, its liquidation and the ADL fills where it is the counterparty, and
`adl_quantile` updates).

Ordering and durability. The engine loop applies a batch at once but hands its events over
only once the journal is durable (`on_delivered`, service/engine_loop.py), and with
EXCHANGE_FSYNC=batch later batches are applied meanwhile: the live engine runs ahead of
what may be told. So nothing here reads live engine state for a message, except when
nothing is in flight (`engine.seq == self.seq`). Instead `capture(events)` runs right after
each batch is applied and reads what that batch's delivery needs (top-N of the books it
changed that someone watches, snapshots owed to new subscribers, `adl_quantile` values when
due); `on_delivered(events, captured)` sends it with the events. Invariants:
- on one connection `seq` never decreases: events carry their own seq, a book or quantile
  message the seq of the batch it was read after, control / heartbeat / subscribe
  snapshots the last seq delivered (`self.seq`) or the seq of the batch they were read after;
- a message reflects only delivered (journaled) events: a state message with seq s never
  precedes an event with seq <= s;
- subscribers are resolved at delivery, so a subscription made while batches are in flight
  gets their events; a snapshot owed to it (`book`, `mark`, `funding`, the account's
  quantiles) is read at the next capture (or from the live engine once nothing is in
  flight) and is sent only if no message of that channel made it redundant: nothing is
  missed, nothing doubled (an event on `funding:` never makes its snapshot redundant: it
  does not carry the premium or the schedule);
- a book message goes to a connection only when its top N differs from the last one that
  connection got (a batch that touched the book without changing the top N sends nothing).
Cost with no subscriber that needs state (no `book:` channel, no `account`, nothing owed):
`capture` returns at once.

`adl_quantile` is throttled: a batch that moves a mark (every symbol: cross margin, equity
depends on every mark) or an account's equity (fills and fees, deposits, withdrawals,
liquidations, ADL, covered negative balances: every symbol that account holds) marks
symbols dirty; at most every `adl_quantile_interval_s` (default 0.25 s) the dirty symbols'
quantiles (engine.adl_quantiles) are read at the next capture, or at once when nothing is
in flight, and each authenticated connection gets those that differ from what it was last
sent (0 once when a position is gone).

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

Known limit: once the engine halts mid-batch nothing more is captured, and what is owed
then is read from the halted engine after the last delivery, as the GET routes read it
(the service answers 503 to every command from then on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine import events as ev
from engine.engine import Engine
from service.format import EventFormatter, funding_state, money_str, price_str
from service.keys import KeyRegistry
from service.limits import WS_CONNECT_WEIGHT, AbuseLimits, client_key
from service.metrics import Metrics

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
    ev.FundingPaid,
    ev.OrderTriggered,  # SPEC §12: the owner's stop fired (order_accepted / order_rejected follow)
    ev.MarginModeChanged,
    ev.PositionMarginChanged,
    ev.PositionReduced,
)
_FUNDING_EVENTS = (ev.IndexPriceChanged, ev.FundingRateChanged)  # -> `funding:<symbol>`
_BOOK_EVENTS = frozenset((ev.OrderAccepted, ev.OrderCanceled, ev.OrderAmended, ev.TradeExecuted))
# events that move an account's wallet or positions, hence its equity, hence its ADL rank in
# every symbol it holds (cross margin), -> the fields naming those accounts (trades and
# position changes, the common ones, are handled inline in `capture`)
_EQUITY_EVENTS: dict[type, tuple[str, ...]] = {
    ev.DepositMade: ("account_id",),
    ev.WithdrawalMade: ("account_id",),
    ev.AccountLiquidated: ("account_id",),
    ev.PositionDeleveraged: ("liquidated_account_id", "counterparty_account_id"),
    ev.NegativeBalanceCovered: ("account_id",),
    ev.FundingPaid: ("account_id",),
    ev.PositionMarginChanged: ("account_id",),
    ev.PositionReduced: ("account_id",),
}

Depth = tuple[list[tuple[int, int]], list[tuple[int, int]]]


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


class Captured:
    """Engine state read right after one batch was applied, sent when the batch is delivered."""

    __slots__ = ("books", "changed", "full_quantiles", "fund", "fundings", "marks", "quantiles")

    def __init__(self, changed: set[str]) -> None:
        self.changed = changed  # symbols whose book the batch touched
        self.books: dict[str, Depth] = {}  # top-N of watched changed books and owed snapshots
        self.marks: dict[str, int | None] = {}  # owed mark snapshots
        self.fundings: dict[str, dict[str, Any]] = {}  # owed funding snapshots, rendered
        self.quantiles: dict[str, dict[int, int]] = {}  # symbol -> account_id -> adl_quantile
        self.full_quantiles = False  # every symbol (owed to a newly subscribed account)
        self.fund: tuple[int, int] | None = None  # owed insurance-fund snapshot: (balance, bad debt)

    def __bool__(self) -> bool:
        return bool(self.books or self.marks or self.fundings or self.quantiles or self.fund is not None)


class WsHub:
    """Routes delivered engine events, and state captured with them, to subscribed connections."""

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
        self.engine = engine
        self.formatter = formatter
        self.keys = keys
        self.metrics = metrics
        self.queue_size = queue_size
        self.book_depth = book_depth
        self.heartbeat_s = heartbeat_s
        self.quantile_interval_s = quantile_interval_s
        self.close_grace_s = close_grace_s
        self.limits = limits
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.auth_deadline_s = auth_deadline_s
        self.connections = 0  # accepted and not yet ended (may be dropped and closing)
        self.refusing = 0  # refused connections whose sockets linger (REFUSED_LINGER_S)
        self.per_address: dict[str, int] = {}  # the same, by client address
        # whether the engine loop halted (set by the runtime): then no capture comes any more
        self.halted: Callable[[], bool] = lambda: False
        self.seq = engine.seq  # the last seq delivered here (nothing is in flight at start)
        self.clients: set[WsClient] = set()
        self.channels: dict[str, set[WsClient]] = {}
        self.accounts: dict[int, set[WsClient]] = {}
        self.symbols = set(engine.instruments)
        self._book_watched: set[str] = set()  # symbols with a `book:` subscriber
        self._owing: set[WsClient] = set()  # clients with a snapshot owed
        self._owed_books: set[str] = set()  # read at the next capture
        self._owed_marks: set[str] = set()
        self._owed_fundings: set[str] = set()
        self._owed_fund = False
        self._owed_quantiles = False
        self._quantile_dirty: set[str] = set()
        self._quantile_due = False  # the throttle allows a push: read at the next capture
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

    def capture(self, events: list[Any]) -> Captured | None:
        """Read what this batch's delivery needs; called right after the batch was applied."""
        track = bool(self.accounts)  # quantiles matter only to authenticated connections
        if not (track or self._book_watched or self._owing):
            return None
        changed: set[str] = set()  # books the batch touched
        moved: set[str] = set()  # symbols where a position opened, closed or changed
        aids: set[int] = set()  # accounts whose equity moved
        marked = False
        for event in events:
            cls = type(event)
            if cls is ev.TradeExecuted:
                changed.add(event.symbol)
                if track:
                    moved.add(event.symbol)
                    aids.add(event.taker_account_id)  # fees
                    aids.add(event.maker_account_id)
            elif cls in _BOOK_EVENTS:
                changed.add(event.symbol)
            elif not track:
                continue
            elif cls is ev.PositionChanged:
                moved.add(event.symbol)
                aids.add(event.account_id)
            elif cls is ev.MarkPriceChanged:
                marked = True
            elif cls in _EQUITY_EVENTS:
                symbol = getattr(event, "symbol", None)
                if symbol is not None:
                    moved.add(symbol)
                for field in _EQUITY_EVENTS[cls]:
                    aids.add(getattr(event, field))
        if track:
            self._mark_dirty(marked, moved, aids)
        cap = self._gather(changed)
        if self._quantile_dirty and track:
            self._quantile_wake.set()
        return cap if cap else None

    def _mark_dirty(self, marked: bool, moved: set[str], aids: set[int]) -> None:
        """Symbols whose ADL ranking may have changed: a mark moves every account's equity;
        an account whose equity moved changes rank in every symbol it holds (cross margin)."""
        dirty = self._quantile_dirty
        everything = self.symbols
        if marked:
            dirty.update(everything)
            return
        dirty.update(moved)
        accounts = self.engine.accounts
        for aid in aids:
            if len(dirty) == len(everything):
                return
            acct = accounts.get(aid)
            if acct is not None:
                dirty.update(acct.positions)

    def _gather(self, changed: set[str]) -> Captured:
        """Read owed snapshots, watched changed books and due quantiles from the engine now."""
        engine = self.engine
        cap = Captured(changed)
        depth = self.book_depth
        for symbol in (changed & self._book_watched) | self._owed_books:
            cap.books[symbol] = engine.books[symbol].depth(depth)
        self._owed_books = set()
        for symbol in self._owed_marks:
            cap.marks[symbol] = engine.marks.get(symbol)
        self._owed_marks = set()
        if self._owed_fundings:
            now_ns = time.time_ns()
            for symbol in self._owed_fundings:
                cap.fundings[symbol] = funding_state(engine, symbol, now_ns)
            self._owed_fundings = set()
        if self._owed_fund:
            cap.fund = (engine.insurance_fund.wallet_atoms, engine.bad_debt_atoms)
            self._owed_fund = False
        if self.accounts and (self._owed_quantiles or self._quantile_due):
            full = self._owed_quantiles
            symbols = self.symbols if full else self._quantile_dirty
            cap.quantiles = {s: engine.adl_quantiles(s) for s in sorted(symbols)}
            cap.full_quantiles = full
            self._owed_quantiles = self._quantile_due = False
            self._quantile_dirty = set()
        return cap

    def on_delivered(self, events: list[Any], captured: Captured | None) -> None:
        """Fan one delivered (journaled) batch out, with the state captured after it."""
        seq = events[-1].seq
        self.seq = seq
        if not self.clients:
            return
        self._route(events)
        if captured is not None:
            self._emit(captured, seq)
        self._settle()

    def _route(self, events: list[Any]) -> None:
        channels = self.channels
        accounts = self.accounts
        fmt = self.formatter
        for event in events:
            cls = type(event)
            if cls is ev.TradeExecuted:
                ch = "trades:" + event.symbol
                if ch in channels:
                    self._send(channels[ch], ch, event.seq, {"type": "trade", **fmt.public_trade(event)})
                for aid in (event.taker_account_id, event.maker_account_id):
                    if aid in accounts:
                        self._send(accounts[aid], "account", event.seq, fmt.fill_for(event, aid))
            elif cls in _ACCOUNT_EVENTS:
                if event.account_id in accounts:
                    self._send(accounts[event.account_id], "account", event.seq, self._typed(event))
                if cls is ev.NegativeBalanceCovered and event.bad_debt_atoms and "insurance_fund" in channels:
                    self._send_bad_debt(event, None)
            elif cls is ev.InsuranceFundChanged:
                if "insurance_fund" in channels:
                    self._send(channels["insurance_fund"], "insurance_fund", event.seq, self._typed(event))
            elif cls is ev.MarkPriceChanged:
                ch = "mark:" + event.symbol
                if ch in channels:
                    targets = channels[ch]
                    for client in list(targets):  # the newest mark: no snapshot is owed any more
                        self._settled(client, ch)
                    self._send(targets, ch, event.seq, self._typed(event))
            elif cls in _FUNDING_EVENTS:
                ch = "funding:" + event.symbol
                if ch in channels:
                    self._send(channels[ch], ch, event.seq, self._typed(event))
            elif cls is ev.AccountLiquidated:
                if event.bad_debt_atoms and "insurance_fund" in channels:
                    self._send_bad_debt(event, event.symbol)
                data = None
                if "liquidations" in channels:
                    data = self._typed(event)
                    self._send(channels["liquidations"], "liquidations", event.seq, data)
                if event.account_id in accounts:
                    self._send(
                        accounts[event.account_id], "account", event.seq, data or self._typed(event)
                    )
            elif cls is ev.PositionDeleveraged:
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

    def _emit(self, cap: Captured, seq: int) -> None:
        """Send state read after the batch ending at `seq` (or live, when nothing was in flight)."""
        channels = self.channels
        for symbol, book in cap.books.items():
            ch = "book:" + symbol
            subs = channels.get(ch)
            if not subs:
                continue
            # everyone whose last top-N differs gets this one (most share the last object)
            differs: dict[int, bool] = {}
            targets = set()
            for client in subs:
                if client.owed:
                    self._settled(client, ch, seq)
                last = client.books.get(symbol)
                d = differs.get(id(last))
                if d is None:
                    d = differs[id(last)] = last != book
                if d:
                    targets.add(client)
                    client.books[symbol] = book
            if targets:
                self._send(targets, ch, seq, {"type": "book", **self.formatter.book(symbol, *book)})
        for symbol, ticks in cap.marks.items():
            ch = "mark:" + symbol
            targets = {c for c in channels.get(ch, ()) if self._settled(c, ch, seq)}
            if targets and ticks is not None:
                price = price_str(self.engine.instruments[symbol], ticks)
                data = {"type": "mark_price_changed", "symbol": symbol, "price": price}
                self._send(targets, ch, seq, data)
        for symbol, state in cap.fundings.items():
            ch = "funding:" + symbol
            targets = {c for c in channels.get(ch, ()) if self._settled(c, ch, seq)}
            if targets:
                self._send(targets, ch, seq, {"type": "funding", **state})
        if cap.fund is not None:
            targets = {c for c in channels.get("insurance_fund", ()) if self._settled(c, "insurance_fund", seq)}
            if targets:
                balance, bad_debt = cap.fund
                data = {"type": "insurance_fund", "balance": money_str(balance), "bad_debt": money_str(bad_debt)}
                self._send(targets, "insurance_fund", seq, data)
        if cap.quantiles:
            self._emit_quantiles(cap, seq)

    def _send_bad_debt(self, event: Any, symbol: str | None) -> None:
        """`insurance_fund`: bad debt a liquidation or a covered flat deficit left (SPEC §5 step 5)."""
        data = {
            "type": "bad_debt",
            "amount": money_str(event.bad_debt_atoms),
            "account_id": event.account_id,
            "symbol": symbol,
        }
        self._send(self.channels["insurance_fund"], "insurance_fund", event.seq, data)

    def _emit_quantiles(self, cap: Captured, seq: int) -> None:
        symbols = sorted(cap.quantiles)
        for aid, subs in list(self.accounts.items()):
            for client in list(subs):
                if cap.full_quantiles:
                    self._settled(client, "account", seq)
                sent = client.quantiles
                for symbol in symbols:
                    if client.closed:  # cut off as a slow consumer by the last send
                        break
                    q = cap.quantiles[symbol].get(aid)
                    if q is None:  # no position: its light goes out once
                        if symbol not in sent:
                            continue
                        del sent[symbol]
                        q = 0
                    elif sent.get(symbol) == q:
                        continue
                    else:
                        sent[symbol] = q
                    self._send(
                        {client},
                        "account",
                        seq,
                        {"type": "adl_quantile", "symbol": symbol, "adl_quantile": q},
                    )

    def _settle(self) -> None:
        """When nothing is in flight, send owed snapshots and due quantiles from live state."""
        if self.engine.seq != self.seq and not self.halted():
            return  # the next capture reads them (after a halt none comes: read what GET shows)
        if self._owing or (self._quantile_due and self.accounts):
            self._emit(self._gather(set()), self.seq)

    def _owe(self, client: WsClient, ch: str) -> None:
        client.owed[ch] = self.engine.seq
        self._owing.add(client)
        kind, _, symbol = ch.partition(":")
        if kind == "book":
            self._owed_books.add(symbol)
        elif kind == "mark":
            self._owed_marks.add(symbol)
        elif kind == "funding":
            self._owed_fundings.add(symbol)
        elif ch == "insurance_fund":
            self._owed_fund = True
        else:
            self._owed_quantiles = True

    def _settled(self, client: WsClient, ch: str, seq: int | None = None) -> bool:
        """Mark `ch`'s snapshot as sent to `client` by state read at `seq` (None: any news);
        whether it was owed and is settled by it."""
        asked = client.owed.get(ch)
        if asked is None or (seq is not None and seq < asked and not self.halted()):
            return False  # (after a halt the live state is final: any read settles it)
        del client.owed[ch]
        if not client.owed:
            self._owing.discard(client)
        return True

    def _typed(self, event: Any) -> dict[str, Any]:
        data = {"type": event.TYPE}
        data.update(self.formatter.data(event))
        return data

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

    def _join(self, client: WsClient, ch: str) -> None:
        client.channels.add(ch)
        if ch == "account":
            assert client.account_id is not None
            self.accounts.setdefault(client.account_id, set()).add(client)
            client.quantiles = {}  # a fresh subscription gets every quantile again
        else:
            self.channels.setdefault(ch, set()).add(client)
            if ch.startswith("book:"):
                self._book_watched.add(ch[5:])
                client.books.pop(ch[5:], None)  # a fresh subscription gets a snapshot again

    def _leave(self, client: WsClient, ch: str) -> None:
        client.channels.discard(ch)
        if client.owed.pop(ch, None) is not None and not client.owed:
            self._owing.discard(client)
        if ch == "account":
            client.quantiles = {}
            aid = client.account_id
            if aid is not None and aid in self.accounts:
                self.accounts[aid].discard(client)
                if not self.accounts[aid]:
                    del self.accounts[aid]
            return
        if ch.startswith("book:"):
            client.books.pop(ch[5:], None)
        subs = self.channels.get(ch)
        if subs is not None:
            subs.discard(client)
            if not subs:
                del self.channels[ch]
                if ch.startswith("book:"):
                    self._book_watched.discard(ch[5:])

    def _forget(self, client: WsClient) -> None:
        """Stop routing to `client` (its place under the caps is freed when it has closed)."""
        self.clients.discard(client)
        for ch in list(client.channels):
            self._leave(client, ch)
        self._owing.discard(client)

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

    # -- adl_quantile pushes -------------------------------------------------------------

    async def _quantile_loop(self) -> None:
        while True:
            await self._quantile_wake.wait()
            self._quantile_wake.clear()
            if not self.accounts:
                self._quantile_dirty = set()
            elif self._quantile_dirty:
                self._quantile_due = True
                try:
                    self._settle()
                except Exception:
                    log.exception("adl_quantile push failed")
            await asyncio.sleep(self.quantile_interval_s)
