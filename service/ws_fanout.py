"""WebSocket fan-out (SPEC §10), the engine side of the `/v1/ws` hub: what each channel
carries, the state read right after each batch (`capture`), the messages built from
delivered events and that state (`on_delivered`), channel membership, the snapshots owed
to new subscribers, and `adl_quantile` pushes. The client protocol (connections, ops,
queues, heartbeats, caps) is service/ws_hub.py, whose `WsHub` extends `WsFanout`.

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

Known limit: once the engine halts mid-batch nothing more is captured, and what is owed
then is read from the halted engine after the last delivery, as the GET routes read it
(the service answers 503 to every command from then on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine import events as ev
from engine.engine import Engine
from service.format import EventFormatter, funding_state, money_str, price_str

if TYPE_CHECKING:
    from service.ws_hub import WsClient

log = logging.getLogger("service.ws")

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


class WsFanout:
    """Routes delivered engine events, and state captured with them, to subscribed connections."""

    def __init__(
        self,
        engine: Engine,
        formatter: EventFormatter,
        book_depth: int = 20,
        quantile_interval_s: float = 0.25,
    ) -> None:
        self.engine = engine
        self.formatter = formatter
        self.book_depth = book_depth
        self.quantile_interval_s = quantile_interval_s
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
        """Queue one message for `targets` (the client side, service/ws_hub.py)."""
        raise NotImplementedError

    # -- channel membership --------------------------------------------------------------

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
