"""Binance-style user-data stream, the account side of `Streams` (api/binance/streams.py,
which holds the connections and the state named in `UserStream`): listen keys, the
account's events and the background task (quantile pushes, listen-key expiry).

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

Known limit: listen keys live in memory (a restart forgets them: ccxt then makes a new one).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from api.binance.views import STP_OUT, Venue, ms, now_ms
from engine import events as ev
from engine.units import E8, div_half_even, e8_to_str

if TYPE_CHECKING:
    from api.binance.streams import Conn
    from engine.engine import Engine

log = logging.getLogger("api.binance.streams")

LISTEN_KEY_VALID_MS = 60 * 60 * 1000
SWEEP_S = 1.0
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


class UserStream:
    """The user-data stream of `Streams`, mixed into it; the attributes below are set by
    `Streams.__init__`, `_send` is its fan-out and `_drop` closes a connection."""

    engine: Engine
    venue: Venue
    seq: int
    accounts: dict[int, set[Conn]]
    listen_keys: ListenKeys
    quantile_interval_s: float
    _progress: dict[tuple[int, int], list[int]]
    _marks: dict[str, int]
    _isolated: dict[int, dict[str, int]]
    _q_dirty: set[str]
    _q_due: bool
    _send: Callable[[set[Conn], str | None, Any], None]
    _drop: Callable[[Conn, int, str], None]

    # -- listen keys -----------------------------------------------------------------------------

    def close_listen_key(self, account_id: int, key: str | None) -> None:
        """DELETE /fapi/v1/listenKey: forget the key and close its streams."""
        key = self.listen_keys.close(account_id, key)
        if key is None:
            return
        for conn in list(self.accounts.get(account_id, ())):
            if conn.listen_key == key:
                self._drop(conn, 1000, "listenKey closed")

    # -- engine side: margin changes and quantiles read at capture --------------------------------

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

    def _read_quantiles(self) -> dict[str, dict[int, int]]:
        symbols = sorted(self._q_dirty)
        self._q_dirty = set()
        return {s: self.engine.adl_quantiles(s) for s in symbols}

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
