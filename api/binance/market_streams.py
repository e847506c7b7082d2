"""Binance-style market streams, the market side of `Streams` (api/binance/streams.py, which
holds the connections and the state named in `MarketStreams`): stream names and their
topics, subscriptions, the book levels read at capture and the market payloads.

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

Known limit: the mark stream's funding rate `r` is read from the live engine when sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from api.binance.market import mark_index, next_funding_ms, predicted_funding_e8
from api.binance.views import Venue, ms, now_ms
from engine.units import e8_to_str

if TYPE_CHECKING:
    from api.binance.streams import Captured, Conn
    from engine.engine import Engine

_DEPTH_SPEEDS = ("", "@100ms", "@250ms", "@500ms")
_PARTIAL = (5, 10, 20)
_ALL_STREAMS: dict[str, tuple[Any, ...]] = {
    "!forceorder@arr": ("force", None),
    "!markprice@arr": ("mark", None),
    "!markprice@arr@1s": ("mark", None),
    "!bookticker": ("book", None),
}


class MarketStreams:
    """The market streams of `Streams`, mixed into it; the attributes below are set by
    `Streams.__init__` and `_send` is its fan-out."""

    engine: Engine
    venue: Venue
    seq: int
    topics: dict[tuple[Any, ...], set[Conn]]
    _marks: dict[str, int]
    _mirror: dict[str, tuple[dict[int, int], dict[int, int]]]
    _last_u: dict[str, int]
    _partial_sent: dict[tuple[str, int], Any]
    _ticker_sent: dict[str, Any]
    _send: Callable[[set[Conn], str | None, Any], None]

    # -- engine side: depth and book tickers read at capture -------------------------------------

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

    # -- fan-out and subscriptions ---------------------------------------------------------------

    def _publish(self, topic: tuple[Any, ...], payload: Any) -> None:
        subs = self.topics.get(topic)
        if subs:
            self._send(subs, _stream_name(self.venue, topic), payload)

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
