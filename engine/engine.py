"""The engine: one entry point, `Engine.apply(command) -> list[Event]`.

Pipeline per command (exchange-core style): validate (stateless) → risk pre-check →
matching → settlement → liquidation/ADL until nobody is below maintenance. Each stage has
its own module; this one owns the state and the order of the stages.

Pure and deterministic: no I/O, no clock, no randomness. The same commands (with their
`ts_ns`) give the same events and the same `state_hash()`. A rejection is returned as an
`OrderRejected` / `CommandRejected` event (it consumes a `seq`, so the event log is a full
audit of what the engine saw) and changes nothing else.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from engine import commands as c
from engine import events as ev
from engine.accounts import FILLS_KEPT, INSURANCE_FUND_ID, Account, Fill, Position
from engine.adl import (
    AdlRanking,
    adl_quantile,
    allocate_pro_rata,
    allocate_queue,
    split_value,
)
from engine.book import Order, OrderBook
from engine.errors import InvariantViolation, Reject
from engine.instruments import Instrument, default_instruments
from engine.liq_index import LiquidationIndex
from engine.risk import (
    available_atoms,
    equity_atoms,
    initial_margin_atoms,
    liquidation_price_frac,
    maintenance_atoms,
    open_loss_atoms,
    order_open_loss_atoms,
    settle_fill,
)
from engine.units import PPM, div_ceil, div_floor, div_half_even, div_trunc, e8_to_str

MAX_CLIENT_ORDER_ID_LEN = 64
_tuple_new = tuple.__new__


class Rejected(Exception):
    """Internal control flow: a validation step refused the command (never escapes apply)."""

    def __init__(self, reason: Reject, message: str = "", order_id: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message or reason.name.replace("_", " ").lower()
        self.order_id = order_id


class Engine:
    """All exchange state and the rules that change it."""

    # (lots, bankruptcy value) of the position the insurance fund is closing right now, only
    # while its IOC order matches (risk.settle_fill). A class default: engines restored from
    # snapshots written before it existed have no instance attribute.
    _takeover: tuple[int, int] | None = None
    # System deficit (§5 step 5): what the insurance fund could not pay. A class default for
    # engines restored from snapshots written before it existed.
    bad_debt_atoms: int = 0

    def __init__(
        self,
        instruments: dict[str, Instrument] | None = None,
        max_open_orders: int = 200,
        closed_orders_kept: int = 10_000,
        recent_trades_kept: int = 1_000,
        fills_kept: int = FILLS_KEPT,
    ) -> None:
        self.instruments = instruments if instruments is not None else default_instruments()
        self.symbols = sorted(self.instruments)
        self.books = {s: OrderBook(s) for s in self.symbols}
        self.marks: dict[str, int] = {
            s: i.initial_mark_ticks for s, i in self.instruments.items() if i.initial_mark_ticks
        }
        self.adl_policy = {s: c.ADL_QUEUE for s in self.symbols}
        self.accounts: dict[int, Account] = {INSURANCE_FUND_ID: Account(INSURANCE_FUND_ID, "", fills_kept)}
        self.holders: dict[str, set[int]] = {s: set() for s in self.symbols}
        self.max_open_orders = max_open_orders
        self.closed_orders_kept = closed_orders_kept
        self.fills_kept = fills_kept
        self.recent_trades: dict[str, deque[ev.TradeExecuted]] = {
            s: deque(maxlen=recent_trades_kept) for s in self.symbols
        }
        self.seq = 0
        self.next_account_id = 1
        self.next_order_id = 1
        self.next_trade_id = 1
        self.fees_collected_atoms = 0
        self.deposits_atoms = 0
        self.withdrawals_atoms = 0
        self.top_ups_atoms = 0
        self.bad_debt_atoms = 0
        self.liq_index = LiquidationIndex(self.symbols)
        # derived caches (not part of the state hash)
        self._rankings: dict[tuple[str, int], AdlRanking] = {}
        self._rank_touched: set[int] = set()
        # per-command scratch
        self._events: list[Any] = []
        self._ts = 0
        self._dirty: set[int] = set()
        self._moved: list[str] = []
        self._index_stale: set[int] = set()
        self._handlers: dict[type, Callable[[Any], None]] = {
            c.CreateAccount: self._create_account,
            c.Deposit: self._deposit,
            c.Withdraw: self._withdraw,
            c.TopUpInsuranceFund: self._top_up,
            c.SetMarkPrice: self._set_mark,
            c.SetLeverage: self._set_leverage,
            c.SetAdlPolicy: self._set_adl_policy,
            c.PlaceOrder: self._place,
            c.CancelOrder: self._cancel,
            c.CancelAllOrders: self._cancel_all,
            c.AmendOrder: self._amend,
        }

    # == entry point ========================================================================

    def apply(self, command: c.Command) -> list[Any]:
        """Apply one command; return the events it caused (a rejection is one event)."""
        self._events = []
        self._ts = command.ts_ns
        handler = self._handlers.get(type(command))
        if handler is None:
            raise TypeError(f"not a command: {command!r}")
        try:
            handler(command)
        except Rejected as r:
            self._emit_rejection(command, r)
            return self._events
        if self._dirty or self._moved:
            self._run_liquidations()
        return self._events

    def _emit(self, cls: Any, *fields: Any) -> Any:
        self.seq = seq = self.seq + 1
        event = _tuple_new(cls, (seq, self._ts, *fields))
        self._events.append(event)
        return event

    def _emit_rejection(self, command: Any, r: Rejected) -> None:
        is_order = isinstance(command, c.PlaceOrder | c.CancelOrder | c.CancelAllOrders | c.AmendOrder)
        cls = ev.OrderRejected if is_order else ev.CommandRejected
        self._emit(
            cls,
            getattr(command, "account_id", None),
            type(command).__name__,
            int(r.reason),
            r.reason.name,
            r.message,
            r.order_id if r.order_id is not None else getattr(command, "order_id", None),
            getattr(command, "client_order_id", None),
        )

    # == lookups ============================================================================

    def _account(self, account_id: int) -> Account:
        acct = self.accounts.get(account_id)
        if acct is None or account_id == INSURANCE_FUND_ID:
            raise Rejected(Reject.ACCOUNT_NOT_FOUND, f"account {account_id} does not exist")
        return acct

    def _instrument(self, symbol: str) -> Instrument:
        inst = self.instruments.get(symbol)
        if inst is None:
            raise Rejected(Reject.INVALID_SYMBOL, f"unknown symbol {symbol!r}")
        return inst

    def _mark(self, symbol: str) -> int:
        mark = self.marks.get(symbol)
        if mark is None:
            raise Rejected(Reject.NO_MARK_PRICE, f"no mark price for {symbol} yet")
        return mark

    @property
    def insurance_fund(self) -> Account:
        """The insurance fund account (id 0)."""
        return self.accounts[INSURANCE_FUND_ID]

    def find_order(self, account_id: int, order_id: int) -> Order | None:
        """An open or recently closed order of the account."""
        acct = self.accounts.get(account_id)
        if acct is None:
            return None
        return acct.open_orders.get(order_id) or acct.closed_orders.get(order_id)

    # == accounts and funds ================================================================

    def _create_account(self, cmd: c.CreateAccount) -> None:
        aid = self.next_account_id
        self.next_account_id += 1
        self.accounts[aid] = Account(aid, cmd.api_key_hash, self.fills_kept)
        self._emit(ev.AccountCreated, aid)

    def _deposit(self, cmd: c.Deposit) -> None:
        acct = self._account(cmd.account_id)
        if type(cmd.amount_atoms) is not int or cmd.amount_atoms <= 0:
            raise Rejected(Reject.INVALID_AMOUNT, "amount must be positive")
        acct.wallet_atoms += cmd.amount_atoms
        self.deposits_atoms += cmd.amount_atoms
        self._touch(acct.account_id)
        self._emit(ev.DepositMade, acct.account_id, cmd.amount_atoms, acct.wallet_atoms)

    def _withdraw(self, cmd: c.Withdraw) -> None:
        acct = self._account(cmd.account_id)
        if type(cmd.amount_atoms) is not int or cmd.amount_atoms <= 0:
            raise Rejected(Reject.INVALID_AMOUNT, "amount must be positive")
        avail = min(available_atoms(acct, self.instruments, self.marks), acct.wallet_atoms)
        if cmd.amount_atoms > avail:
            raise Rejected(Reject.INSUFFICIENT_BALANCE, "amount exceeds available balance")
        acct.wallet_atoms -= cmd.amount_atoms
        self.withdrawals_atoms += cmd.amount_atoms
        self._touch(acct.account_id)
        self._emit(ev.WithdrawalMade, acct.account_id, cmd.amount_atoms, acct.wallet_atoms)

    def _top_up(self, cmd: c.TopUpInsuranceFund) -> None:
        if type(cmd.amount_atoms) is not int or cmd.amount_atoms <= 0:
            raise Rejected(Reject.INVALID_AMOUNT, "amount must be positive")
        fund = self.insurance_fund
        fund.wallet_atoms += cmd.amount_atoms
        self.top_ups_atoms += cmd.amount_atoms
        self._emit(ev.InsuranceFundChanged, fund.wallet_atoms, cmd.amount_atoms, "top_up", None, None)

    def _set_mark(self, cmd: c.SetMarkPrice) -> None:
        self._instrument(cmd.symbol)
        if type(cmd.price_ticks) is not int or cmd.price_ticks <= 0:
            raise Rejected(Reject.INVALID_PRICE, "mark price must be positive")
        self.marks[cmd.symbol] = cmd.price_ticks
        self._moved.append(cmd.symbol)
        for side in (1, -1):
            self._rankings.pop((cmd.symbol, side), None)
        self._emit(ev.MarkPriceChanged, cmd.symbol, cmd.price_ticks)

    def _set_leverage(self, cmd: c.SetLeverage) -> None:
        acct = self._account(cmd.account_id)
        inst = self._instrument(cmd.symbol)
        if type(cmd.leverage) is not int or not 1 <= cmd.leverage <= inst.max_leverage:
            raise Rejected(Reject.INVALID_LEVERAGE, f"leverage must be 1..{inst.max_leverage}")
        size = acct.size(cmd.symbol)
        if size:
            notional = inst.notional_atoms(size, self.marks[cmd.symbol])
            allowed = inst.max_leverage_for(notional)
            if cmd.leverage > allowed:
                raise Rejected(
                    Reject.LEVERAGE_TOO_HIGH_FOR_POSITION,
                    f"position tier allows at most {allowed}x",
                )
        previous = acct.leverage.get(cmd.symbol)
        acct.leverage[cmd.symbol] = cmd.leverage
        lowered = cmd.leverage < (previous or inst.default_leverage)
        if lowered and available_atoms(acct, self.instruments, self.marks) < 0:
            if previous is None:
                del acct.leverage[cmd.symbol]
            else:
                acct.leverage[cmd.symbol] = previous
            raise Rejected(Reject.INSUFFICIENT_MARGIN, "not enough margin for that leverage")
        self._emit(ev.LeverageChanged, acct.account_id, cmd.symbol, cmd.leverage)

    def _set_adl_policy(self, cmd: c.SetAdlPolicy) -> None:
        self._instrument(cmd.symbol)
        if cmd.policy not in c.ADL_POLICIES:
            raise Rejected(Reject.INVALID_ADL_POLICY, f"policy must be one of {c.ADL_POLICIES}")
        self.adl_policy[cmd.symbol] = cmd.policy
        self._emit(ev.AdlPolicyChanged, cmd.symbol, cmd.policy)

    def _touch(self, account_id: int) -> None:
        self._dirty.add(account_id)
        self._rank_touched.add(account_id)

    # == orders: validation and pre-trade risk ============================================

    def _validate_place(self, cmd: c.PlaceOrder) -> tuple[Account, Instrument, int, int]:
        """Stateless and stateful checks; returns (account, instrument, mark, qty_lots)."""
        acct = self._account(cmd.account_id)
        inst = self._instrument(cmd.symbol)
        if cmd.side not in c.SIDES:
            raise Rejected(Reject.INVALID_SIDE, "side must be buy or sell")
        if cmd.order_type not in c.ORDER_TYPES:
            raise Rejected(Reject.INVALID_ORDER_TYPE, "type must be limit or market")
        if cmd.time_in_force not in c.TIMES_IN_FORCE:
            raise Rejected(Reject.INVALID_TIME_IN_FORCE, "time_in_force must be GTC, IOC or FOK")
        if cmd.stp not in c.STP_MODES:
            raise Rejected(Reject.INVALID_STP, f"stp must be one of {c.STP_MODES}")
        if type(cmd.qty_lots) is not int or cmd.qty_lots <= 0:
            raise Rejected(Reject.INVALID_QUANTITY, "qty must be positive")
        if cmd.order_type == c.LIMIT:
            if cmd.price_ticks is None:
                raise Rejected(Reject.PRICE_REQUIRED, "limit orders need a price")
            if type(cmd.price_ticks) is not int or cmd.price_ticks <= 0:
                raise Rejected(Reject.INVALID_PRICE, "price must be positive")
        else:
            if cmd.price_ticks is not None:
                raise Rejected(Reject.PRICE_NOT_ALLOWED, "market orders take no price")
            if cmd.post_only:
                raise Rejected(Reject.POST_ONLY_NOT_ALLOWED, "market orders cannot be post-only")
        if cmd.post_only and cmd.time_in_force != c.GTC:
            raise Rejected(Reject.POST_ONLY_NOT_ALLOWED, "post-only orders must be GTC")
        coid = cmd.client_order_id
        if coid is not None and (not coid or len(coid) > MAX_CLIENT_ORDER_ID_LEN or not coid.isprintable()):
            raise Rejected(Reject.INVALID_CLIENT_ORDER_ID, "client_order_id must be 1..64 printable chars")
        mark = self._mark(cmd.symbol)
        if coid is not None and coid in acct.client_order_ids:
            original = acct.client_order_ids[coid]
            raise Rejected(
                Reject.DUPLICATE_CLIENT_ORDER_ID,
                f"client_order_id already used by order {original}",
                order_id=original,
            )
        # §3 order size and price band: inline comparisons, the helpers only build the refusal
        if cmd.qty_lots > inst.max_order_lots or cmd.qty_lots * mark * inst.atoms_per_lot_tick > inst.max_order_notional_atoms:
            self._check_size(inst, cmd.qty_lots, mark)
        band = inst.price_band_ppm
        if band and cmd.order_type == c.LIMIT:
            scaled = cmd.price_ticks * PPM  # type: ignore[operator]
            if scaled > mark * (PPM + band) if cmd.side == c.BUY else scaled < mark * (PPM - band):
                self._check_band(inst, cmd.side == c.BUY, cmd.price_ticks, mark)  # type: ignore[arg-type]
        rests = cmd.order_type == c.LIMIT and cmd.time_in_force == c.GTC
        if rests and len(acct.open_orders) >= self.max_open_orders:
            raise Rejected(Reject.TOO_MANY_OPEN_ORDERS, f"at most {self.max_open_orders} open orders")
        qty = cmd.qty_lots
        if cmd.reduce_only:
            size = acct.size(cmd.symbol)
            reducing = (size > 0 and cmd.side == c.SELL) or (size < 0 and cmd.side == c.BUY)
            if not reducing:
                raise Rejected(Reject.NOTHING_TO_REDUCE, "no position to reduce on that side")
            qty = min(qty, abs(size))
        if cmd.post_only and self.books[cmd.symbol].crosses(cmd.side == c.BUY, cmd.price_ticks or 0):
            raise Rejected(Reject.WOULD_TAKE, "post-only order would take liquidity")
        return acct, inst, mark, qty

    def _check_size(self, inst: Instrument, qty_lots: int, mark: int) -> None:
        """§3 order size: at most `max_order_lots` and `max_order_notional` at the mark per order."""
        if qty_lots > inst.max_order_lots:
            raise Rejected(
                Reject.ORDER_TOO_LARGE,
                f"qty {e8_to_str(inst.qty_e8(qty_lots))} exceeds the maximum order size "
                f"{e8_to_str(inst.qty_e8(inst.max_order_lots))}",
            )
        notional = inst.notional_atoms(qty_lots, mark)
        if notional > inst.max_order_notional_atoms:
            raise Rejected(
                Reject.ORDER_TOO_LARGE,
                f"order notional {e8_to_str(notional)} USD at the mark exceeds the maximum "
                f"{e8_to_str(inst.max_order_notional_atoms)} USD",
            )

    def _check_band(self, inst: Instrument, is_buy: bool, price_ticks: int, mark: int) -> None:
        """§3 price band (Binance PERCENT_PRICE on the aggressive side): buys at most
        M * (1 + band), sells at least M * (1 - band), compared exactly (no rounding)."""
        band = inst.price_band_ppm
        if not band:
            return
        if is_buy and price_ticks * PPM > mark * (PPM + band):
            limit = div_floor(mark * (PPM + band), PPM)
            raise Rejected(
                Reject.PRICE_OUT_OF_BAND,
                f"buy price {e8_to_str(inst.price_e8(price_ticks))} is above the band limit "
                f"{e8_to_str(inst.price_e8(limit))} (mark {e8_to_str(inst.price_e8(mark))} + {band / 10_000:g}%)",
            )
        if not is_buy and price_ticks * PPM < mark * (PPM - band):
            limit = div_ceil(mark * (PPM - band), PPM)
            raise Rejected(
                Reject.PRICE_OUT_OF_BAND,
                f"sell price {e8_to_str(inst.price_e8(price_ticks))} is below the band limit "
                f"{e8_to_str(inst.price_e8(limit))} (mark {e8_to_str(inst.price_e8(mark))} - {band / 10_000:g}%)",
            )

    def _check_margin(self, acct: Account, symbol: str, add_buy: int, add_sell: int, add_loss: int) -> None:
        """Pre-trade check (§3): pass if the worst-case position does not grow and no open loss
        is added (`add_loss` <= 0), else need available >= 0 after the order.

        available = equity - sum(IM_s) - sum(open loss); the order's own open loss `add_loss`
        is what it would lose at once against the mark if filled at its price (a market order
        at its market-band limit). A position that could grow past the last maintenance tier's
        notional is refused first (RISK_LIMIT_EXCEEDED).
        """
        pos = acct.positions.get(symbol)
        size = pos.size_lots if pos is not None else 0
        b = acct.open_buy_lots.get(symbol, 0)
        s = acct.open_sell_lots.get(symbol, 0)
        lo, hi = size - s, size + b
        before = hi if hi >= -lo else -lo
        lo -= add_sell
        hi += add_buy
        after = hi if hi >= -lo else -lo
        if after <= before and add_loss <= 0:
            return
        inst = self.instruments[symbol]
        mark = self.marks[symbol]
        k = inst.atoms_per_lot_tick
        if after > before and after * mark * k > inst.tiers[-1].max_notional_atoms:
            raise Rejected(
                Reject.RISK_LIMIT_EXCEEDED,
                f"the order could take the position to {e8_to_str(after * mark * k)} USD notional, "
                f"past the last maintenance tier ({e8_to_str(inst.tiers[-1].max_notional_atoms)} USD)",
            )
        single = _only_in(acct, symbol)
        if single:  # the common one-symbol account: no dict walks
            equity = acct.wallet_atoms
            if pos is not None:
                equity += size * mark * k - pos.entry_value_atoms
            lev = acct.leverage.get(symbol, inst.default_leverage)
            im_after = -((-(after * mark * k)) // lev)
        else:
            equity = equity_atoms(acct, self.instruments, self.marks)
            im_after = initial_margin_atoms(acct, self.instruments, self.marks, override=(symbol, after))
        loss = open_loss_atoms(acct, self.instruments, self.marks) if acct.open_orders else 0
        if equity - im_after - loss - add_loss >= 0:
            return
        if single:
            im_before = div_ceil(before * mark * k, lev)
        else:
            im_before = initial_margin_atoms(acct, self.instruments, self.marks)
        required = im_after - im_before + add_loss
        available = equity - im_before - loss
        if available < required:
            raise Rejected(
                Reject.INSUFFICIENT_MARGIN,
                f"order requires {e8_to_str(required)} USD of margin (initial margin "
                f"{e8_to_str(im_after - im_before)} + open loss {e8_to_str(add_loss)}), "
                f"available {e8_to_str(available)} USD",
            )

    # == orders: commands ===================================================================

    def _place(self, cmd: c.PlaceOrder) -> None:
        acct, inst, mark, qty = self._validate_place(cmd)
        is_buy = cmd.side == c.BUY
        if cmd.order_type == c.MARKET:
            band = inst.market_band_ppm
            limit = div_floor(mark * (PPM + band), PPM) if is_buy else div_ceil(mark * (PPM - band), PPM)
        else:
            limit = cmd.price_ticks  # type: ignore[assignment]
        gap = limit - mark if is_buy else mark - limit
        loss = qty * gap * inst.atoms_per_lot_tick if gap > 0 else 0  # risk.order_open_loss_atoms
        self._check_margin(acct, cmd.symbol, qty if is_buy else 0, 0 if is_buy else qty, loss)
        order = Order(
            self.next_order_id,
            acct.account_id,
            cmd.symbol,
            cmd.side,
            cmd.price_ticks,
            qty,
            cmd.order_type,
            c.IOC if cmd.order_type == c.MARKET and cmd.time_in_force == c.GTC else cmd.time_in_force,
            cmd.post_only,
            cmd.reduce_only,
            cmd.stp,
            cmd.client_order_id,
            cmd.ts_ns,
        )
        self.next_order_id += 1
        if cmd.client_order_id is not None:
            acct.client_order_ids[cmd.client_order_id] = order.order_id
        self._emit(
            ev.OrderAccepted,
            acct.account_id,
            order.order_id,
            order.client_order_id,
            order.symbol,
            order.side,
            order.order_type,
            order.price_ticks,
            order.qty_lots,
            order.time_in_force,
            order.post_only,
            order.reduce_only,
            order.stp,
        )
        self._execute(order, acct, limit)

    def _execute(self, order: Order, acct: Account, limit_ticks: int) -> None:
        """Match a taker order, then rest it (GTC limit) or cancel its rest."""
        book = self.books[order.symbol]
        if order.time_in_force == c.FOK and self._fok_fillable(order, book, limit_ticks) < order.remaining_lots:
            self._cancel_remaining(order, acct, "fok")
            return
        stopped = self._match(order, acct, book, limit_ticks)
        if order.remaining_lots == 0:
            order.status = "filled"
            self._close_order(acct, order)
        elif stopped is not None:
            self._cancel_remaining(order, acct, stopped)
        elif order.time_in_force == c.GTC and order.order_type == c.LIMIT:
            order.status = "partially_filled" if order.filled_lots else "new"
            book.add(order)
            acct.open_orders[order.order_id] = order
            acct.track_open(order, order.remaining_lots)
        else:
            self._cancel_remaining(order, acct, "market" if order.order_type == c.MARKET else "ioc")

    def _cancel_remaining(self, order: Order, acct: Account, reason: str) -> None:
        """Cancel what is left of an order that is not (or no longer) in the book."""
        canceled = order.remaining_lots
        order.remaining_lots = 0
        order.status = "canceled"
        self._close_order(acct, order)
        self._emit(
            ev.OrderCanceled,
            order.account_id,
            order.order_id,
            order.client_order_id,
            order.symbol,
            order.side,
            order.price_ticks,
            canceled,
            order.filled_lots,
            reason,
        )

    def _reduce_capacity(self, account_id: int, symbol: str, is_buy: bool) -> int:
        """How many lots a reduce-only order on this side may still fill."""
        size = self.accounts[account_id].size(symbol)
        if (size < 0 and is_buy) or (size > 0 and not is_buy):
            return abs(size)
        return 0

    def _fok_fillable(self, order: Order, book: OrderBook, limit_ticks: int) -> int:
        """Lots a FOK order would fill, with self-trade prevention and reduce-only caps applied."""
        need = order.remaining_lots
        got = 0
        caps: dict[int, int] = {}  # reduce-only makers: what each account may still reduce
        for maker in book.walk(order.is_buy, limit_ticks):
            if maker.account_id == order.account_id:
                if order.stp == c.STP_CANCEL_MAKER:
                    continue
                break
            lots = maker.remaining_lots
            if maker.reduce_only:
                cap = caps.get(maker.account_id)
                if cap is None:
                    cap = self._reduce_capacity(maker.account_id, maker.symbol, maker.is_buy)
                lots = min(lots, cap)
                caps[maker.account_id] = cap - lots
            got += lots
            if got >= need:
                break
        return got

    def _match(self, taker: Order, acct: Account, book: OrderBook, limit_ticks: int) -> str | None:
        """Fill `taker` against the book up to `limit_ticks`; return a stop reason or None."""
        is_buy = taker.is_buy
        opposite = book.asks if is_buy else book.bids
        while taker.remaining_lots > 0 and opposite:
            _key, level = opposite.peekitem(0)
            price = level.price_ticks
            if (is_buy and price > limit_ticks) or (not is_buy and price < limit_ticks):
                return None
            maker = next(iter(level.orders.values()))
            if maker.account_id == taker.account_id:
                mode = taker.stp
                if mode == c.STP_CANCEL_TAKER:
                    return "stp"
                self._cancel_resting(maker, "stp")
                if mode == c.STP_CANCEL_BOTH:
                    return "stp"
                continue
            qty = min(taker.remaining_lots, maker.remaining_lots)
            if maker.reduce_only:
                cap = self._reduce_capacity(maker.account_id, maker.symbol, maker.is_buy)
                if cap == 0:
                    self._cancel_resting(maker, "reduce_only")
                    continue
                qty = min(qty, cap)
            if taker.reduce_only:
                cap = self._reduce_capacity(taker.account_id, taker.symbol, is_buy)
                if cap == 0:
                    return "reduce_only"
                qty = min(qty, cap)
            self._fill(taker, acct, maker, book, qty, price)
        return None

    def _fill(self, taker: Order, tacct: Account, maker: Order, book: OrderBook, qty: int, price: int) -> None:
        # the hot path: lookups hoisted, maker/taker unrolled, events built in place (seq+1..3)
        symbol = taker.symbol
        inst = self.instruments[symbol]
        notional = qty * price * inst.atoms_per_lot_tick
        maker_aid = maker.account_id
        taker_aid = taker.account_id
        macct = self.accounts[maker_aid]
        maker_fee = -((-notional * inst.maker_fee_ppm) // PPM)
        taker_fee = 0 if taker_aid == INSURANCE_FUND_ID else -((-notional * inst.taker_fee_ppm) // PPM)
        if qty == maker.remaining_lots:
            book.remove(maker)
            maker.remaining_lots = 0
            maker.status = "filled"
            del macct.open_orders[maker.order_id]
            self._close_order(macct, maker)
        else:
            book.reduce(maker, qty)
            maker.status = "partially_filled"
        macct.track_open(maker, -qty)
        taker.remaining_lots -= qty
        trade_id = self.next_trade_id
        self.next_trade_id = trade_id + 1
        value_ticks = qty * price
        maker.filled_lots += qty
        maker.filled_value_ticks += value_ticks
        maker.fills.append((trade_id, price, qty, maker_fee, "maker"))
        taker.filled_lots += qty
        taker.filled_value_ticks += value_ticks
        taker.fills.append((trade_id, price, qty, taker_fee, "taker"))
        mpos = macct.positions.get(symbol)
        tpos = tacct.positions.get(symbol)
        m_before = mpos.size_lots if mpos is not None else 0
        t_before = tpos.size_lots if tpos is not None else 0
        m_real = settle_fill(macct, symbol, qty if maker.is_buy else -qty, notional)
        t_real = settle_fill(
            tacct, symbol, qty if taker.is_buy else -qty, notional,
            self._takeover if taker_aid == INSURANCE_FUND_ID else None,
        )
        macct.wallet_atoms -= maker_fee
        tacct.wallet_atoms -= taker_fee
        macct.fills.append(_tuple_new(Fill, (trade_id, self._ts, symbol, maker.order_id, maker.side, price, qty,
                                             maker_fee, "maker", m_real)))
        tacct.fills.append(_tuple_new(Fill, (trade_id, self._ts, symbol, taker.order_id, taker.side, price, qty,
                                             taker_fee, "taker", t_real)))
        self.fees_collected_atoms += maker_fee + taker_fee
        mpos = macct.positions.get(symbol)
        tpos = tacct.positions.get(symbol)
        m_after = mpos.size_lots if mpos is not None else 0
        t_after = tpos.size_lots if tpos is not None else 0
        if (m_before == 0) != (m_after == 0):
            self._holders_update(macct, symbol)
        if (t_before == 0) != (t_after == 0):
            self._holders_update(tacct, symbol)
        dirty, touched = self._dirty, self._rank_touched
        dirty.add(maker_aid)
        dirty.add(taker_aid)
        touched.add(maker_aid)
        touched.add(taker_aid)
        seq = self.seq
        ts = self._ts
        events = self._events
        trade = _tuple_new(ev.TradeExecuted, (seq + 1, ts, trade_id, symbol, price, qty, taker.side, taker.order_id,
                                              taker_aid, taker_fee, taker.remaining_lots, maker.order_id,
                                              maker_aid, maker_fee, maker.remaining_lots))
        events.append(trade)
        self.recent_trades[symbol].append(trade)
        events.append(_tuple_new(ev.PositionChanged, (seq + 2, ts, maker_aid, symbol, m_after,
                                                      mpos.entry_value_atoms if mpos else 0, m_real - maker_fee,
                                                      macct.wallet_atoms, "trade")))
        events.append(_tuple_new(ev.PositionChanged, (seq + 3, ts, taker_aid, symbol, t_after,
                                                      tpos.entry_value_atoms if tpos else 0, t_real - taker_fee,
                                                      tacct.wallet_atoms, "trade")))
        self.seq = seq + 3
        if m_before and (m_after == 0 or (m_after > 0) != (m_before > 0)):
            self._cancel_stale_reduce_only(macct, symbol)
        if t_before and (t_after == 0 or (t_after > 0) != (t_before > 0)):
            self._cancel_stale_reduce_only(tacct, symbol)

    def _cancel_stale_reduce_only(self, acct: Account, symbol: str) -> None:
        """After a position closed or flipped, cancel reduce-only orders that can no longer reduce it."""
        for order in [o for o in acct.open_orders.values() if o.reduce_only and o.symbol == symbol]:
            if self._reduce_capacity(acct.account_id, symbol, order.is_buy) == 0:
                self._cancel_resting(order, "reduce_only")

    def _emit_position(self, acct: Account, symbol: str, realized: int, reason: str) -> None:
        pos = acct.positions.get(symbol)
        self._emit(
            ev.PositionChanged,
            acct.account_id,
            symbol,
            pos.size_lots if pos else 0,
            pos.entry_value_atoms if pos else 0,
            realized,
            acct.wallet_atoms,
            reason,
        )

    def _holders_update(self, acct: Account, symbol: str) -> None:
        if acct.account_id == INSURANCE_FUND_ID:
            return
        if symbol in acct.positions:
            self.holders[symbol].add(acct.account_id)
        else:
            self.holders[symbol].discard(acct.account_id)

    def _close_order(self, acct: Account, order: Order) -> None:
        """Move a finished order into the account's bounded history."""
        if acct.account_id == INSURANCE_FUND_ID:
            return
        acct.closed_orders[order.order_id] = order
        while len(acct.closed_orders) > self.closed_orders_kept:
            _, old = acct.closed_orders.popitem(last=False)
            if old.client_order_id is not None and acct.client_order_ids.get(old.client_order_id) == old.order_id:
                del acct.client_order_ids[old.client_order_id]

    def _cancel_resting(self, order: Order, reason: str) -> None:
        acct = self.accounts[order.account_id]
        self.books[order.symbol].remove(order)
        del acct.open_orders[order.order_id]
        acct.track_open(order, -order.remaining_lots)
        self._cancel_remaining(order, acct, reason)

    def _open_order(self, cmd: c.CancelOrder | c.AmendOrder) -> tuple[Account, Order]:
        """The open order a cancel or amend names, by order id or else by client order id."""
        acct = self._account(cmd.account_id)
        cid = cmd.client_order_id
        if cid is not None:
            order_id = acct.client_order_ids.get(cid) if type(cid) is str else None
            order = acct.open_orders.get(order_id) if order_id is not None else None
            if order is None:
                raise Rejected(Reject.ORDER_NOT_FOUND, f"no open order with client_order_id {cid!r}", order_id)
            return acct, order
        order = acct.open_orders.get(cmd.order_id)
        if order is None:
            raise Rejected(Reject.ORDER_NOT_FOUND, f"no open order {cmd.order_id}")
        return acct, order

    def _cancel(self, cmd: c.CancelOrder) -> None:
        _, order = self._open_order(cmd)
        self._cancel_resting(order, "user")

    def _cancel_all(self, cmd: c.CancelAllOrders) -> None:
        acct = self._account(cmd.account_id)
        if cmd.symbol is not None:
            self._instrument(cmd.symbol)
        for order in list(acct.open_orders.values()):
            if cmd.symbol is None or order.symbol == cmd.symbol:
                self._cancel_resting(order, "user")

    def _amend(self, cmd: c.AmendOrder) -> None:
        acct, order = self._open_order(cmd)
        price = order.price_ticks if cmd.price_ticks is None else cmd.price_ticks
        assert price is not None
        if cmd.price_ticks is not None and (type(cmd.price_ticks) is not int or cmd.price_ticks <= 0):
            raise Rejected(Reject.INVALID_PRICE, "price must be positive")
        new_total = order.qty_lots if cmd.qty_lots is None else cmd.qty_lots
        if type(new_total) is not int or new_total <= order.filled_lots:
            raise Rejected(Reject.INVALID_QUANTITY, "new qty must exceed the filled quantity")
        new_remaining = new_total - order.filled_lots
        if order.reduce_only:
            new_remaining = min(new_remaining, self._reduce_capacity(acct.account_id, order.symbol, order.is_buy))
            if new_remaining <= 0:
                raise Rejected(Reject.NOTHING_TO_REDUCE, "no position left to reduce")
        if price == order.price_ticks and new_remaining == order.remaining_lots:
            raise Rejected(Reject.NOTHING_TO_AMEND, "price and qty unchanged")
        book = self.books[order.symbol]
        # the order rests on its own side, so `crosses` looks only at the other side
        if order.post_only and book.crosses(order.is_buy, price):
            raise Rejected(Reject.WOULD_TAKE, "post-only order would take liquidity")
        mark = self._mark(order.symbol)
        inst = self.instruments[order.symbol]
        delta = new_remaining - order.remaining_lots
        if new_total > order.qty_lots:
            self._check_size(inst, new_total, mark)
        if price != order.price_ticks or delta > 0:  # only lowering the qty needs no band check
            self._check_band(inst, order.is_buy, price, mark)
        loss_delta = order_open_loss_atoms(inst, order.is_buy, price, new_remaining, mark) - order_open_loss_atoms(
            inst, order.is_buy, order.price_ticks, order.remaining_lots, mark  # type: ignore[arg-type]
        )
        self._check_margin(
            acct, order.symbol, delta if order.is_buy else 0, 0 if order.is_buy else delta, loss_delta
        )
        keep = price == order.price_ticks and delta < 0
        if keep:
            book.reduce(order, -delta)
            acct.track_open(order, delta)
            order.qty_lots = order.filled_lots + new_remaining
            self._emit_amended(order, True)
            return
        book.remove(order)
        acct.track_open(order, -order.remaining_lots)
        del acct.open_orders[order.order_id]
        order.price_ticks = price
        order.remaining_lots = new_remaining
        order.qty_lots = order.filled_lots + new_remaining
        self._emit_amended(order, False)
        self._execute(order, acct, price)

    def _emit_amended(self, order: Order, kept: bool) -> None:
        self._emit(
            ev.OrderAmended,
            order.account_id,
            order.order_id,
            order.symbol,
            order.side,
            order.price_ticks,
            order.qty_lots,
            order.remaining_lots,
            kept,
            order.client_order_id,
        )

    # == liquidation (§5) ==================================================================

    def _run_liquidations(self) -> None:
        """Liquidate every account below maintenance, lowest equity/MM first, until none is."""
        candidates = self._dirty
        self._dirty = set()
        if self._moved and self._index_stale:
            for aid in self._index_stale:
                self.liq_index.update(self.accounts[aid], self.instruments, self.marks)
            self._index_stale.clear()
        for sym in self._moved:
            for aid in self.liq_index.multi[sym]:
                self._rank_touched.add(aid)
            candidates |= self.liq_index.candidates(sym, self.marks[sym])
        self._moved.clear()
        while candidates:
            below: list[tuple[Fraction, int]] = []
            for aid in sorted(candidates):  # by id: flat debts are covered in that order
                if aid == INSURANCE_FUND_ID:
                    continue
                acct = self.accounts[aid]
                self._index_stale.add(aid)
                if not acct.positions:
                    if acct.wallet_atoms < 0:
                        self._cover_negative_balance(acct)
                    continue
                eq = equity_atoms(acct, self.instruments, self.marks)
                mm = maintenance_atoms(acct, self.instruments, self.marks)
                if eq < mm:
                    below.append((Fraction(eq, mm), aid))
            if not below:
                break
            below.sort()
            for _, aid in below:
                self._maybe_liquidate(self.accounts[aid])
            candidates = self._dirty
            self._dirty = set()
        self._dirty.clear()

    def _cover_negative_balance(self, acct: Account) -> None:
        """A flat account left below zero (an account with equity <= 0 closed at the mark by
        ADL before its own liquidation came, or a fee on a nearly empty account): the
        insurance fund pays the deficit as far as its balance goes, as for any bankruptcy
        loss; the rest is bad debt (§5 step 5), and the account is left at exactly 0."""
        deficit = -acct.wallet_atoms
        paid, bad_debt = self._fund_pays(deficit, "negative_balance", acct.account_id, None)
        acct.wallet_atoms = 0
        self._touch(acct.account_id)
        self._emit(ev.NegativeBalanceCovered, acct.account_id, -paid, acct.wallet_atoms, bad_debt)

    def _maybe_liquidate(self, acct: Account) -> None:
        """Liquidate `acct` if it is (still) below maintenance."""
        eq = equity_atoms(acct, self.instruments, self.marks)
        mm = maintenance_atoms(acct, self.instruments, self.marks)
        if not acct.positions or eq >= mm:
            return
        for order in list(acct.open_orders.values()):
            self._cancel_resting(order, "liquidation")
        eq = equity_atoms(acct, self.instruments, self.marks)
        if eq >= maintenance_atoms(acct, self.instruments, self.marks):
            return
        fund = self.insurance_fund
        # Take over every position at its bankruptcy value: the shares of E follow MM_p.
        symbols = sorted(acct.positions)
        mm_p = {
            s: self.instruments[s].maintenance_atoms(
                self.instruments[s].notional_atoms(acct.positions[s].size_lots, self.marks[s])
            )
            for s in symbols
        }
        total_mm = sum(mm_p.values())
        shares = {s: div_trunc(eq * mm_p[s], total_mm) for s in symbols[:-1]}
        shares[symbols[-1]] = eq - sum(shares.values())
        taken: list[tuple[str, int, int, int]] = []  # symbol, size, bankruptcy value, MM_p
        for s in symbols:
            pos = acct.positions.pop(s)
            inst = self.instruments[s]
            bv = inst.notional_atoms(pos.size_lots, self.marks[s]) - shares[s]
            realized = bv - pos.entry_value_atoms
            acct.wallet_atoms += realized
            acct.fills.append(Fill(
                None, self._ts, s, None, c.SELL if pos.size_lots > 0 else c.BUY,
                div_half_even(bv * 100_000_000, pos.size_lots * inst.lot_size_e8), abs(pos.size_lots), 0,
                "liquidation", realized,
            ))
            self._holders_update(acct, s)
            if s in fund.positions:
                raise InvariantViolation("insurance fund already holds a position")
            fund_pos = Position(s)
            fund_pos.size_lots, fund_pos.entry_value_atoms = pos.size_lots, bv
            fund.positions[s] = fund_pos
            taken.append((s, pos.size_lots, bv, mm_p[s]))
            self._emit_position(acct, s, realized, "liquidation")
            self._emit_position(fund, s, 0, "liquidation")
        if acct.wallet_atoms != 0:
            raise InvariantViolation(f"liquidated account {acct.account_id} wallet {acct.wallet_atoms} != 0")
        self._touch(acct.account_id)
        self.liq_index.update(acct, self.instruments, self.marks)
        for s, size, bv, mmp in taken:
            self._close_taken_over(acct.account_id, s, size, bv, eq, mmp)

    def _close_taken_over(self, liquidated_id: int, symbol: str, size: int, bv: int, equity_before: int, mm: int) -> None:
        """Insurance fund: one IOC inside its budget and the band, then ADL for the rest."""
        inst = self.instruments[symbol]
        fund = self.insurance_fund
        mark = self.marks[symbol]
        k = inst.atoms_per_lot_tick
        balance_before = fund.wallet_atoms
        aq = abs(size)
        band = inst.liquidation_band_ppm
        if size > 0:  # the fund sells: lowest price it can afford, not below the band
            limit = max(div_ceil(bv - balance_before, aq * k), div_ceil(mark * (PPM - band), PPM), 1)
        else:  # the fund buys back: highest price it can afford, not above the band
            limit = min(div_floor(-bv + balance_before, aq * k), div_floor(mark * (PPM + band), PPM))
        book = self.books[symbol]
        book_filled = 0
        book_avg_e8: int | None = None
        if limit > 0:  # §5.3: one IOC order, placed even when nothing in the book can fill it
            order = Order(self.next_order_id, INSURANCE_FUND_ID, symbol, c.SELL if size > 0 else c.BUY, limit, aq, c.LIMIT, c.IOC, ts_ns=self._ts)
            self.next_order_id += 1
            self._emit(ev.OrderAccepted, INSURANCE_FUND_ID, order.order_id, None, symbol, order.side, c.LIMIT, limit, aq, c.IOC, False, False, c.STP_CANCEL_TAKER)
            self._takeover = (aq, bv)  # the fund's entry value of the taken-over position
            try:
                self._match(order, fund, book, limit)
            finally:
                self._takeover = None
            book_filled = order.filled_lots
            if book_filled:
                book_avg_e8 = div_half_even(order.filled_value_ticks * inst.tick_size_e8, book_filled)
            order.status = "filled" if order.remaining_lots == 0 else "canceled"
            if order.remaining_lots:
                self._cancel_remaining(order, fund, "ioc")
        delta = fund.wallet_atoms - balance_before
        if fund.wallet_atoms < 0:
            raise InvariantViolation("insurance fund below zero")
        if delta:
            self._emit(ev.InsuranceFundChanged, fund.wallet_atoms, delta, "liquidation_fill", liquidated_id, symbol)
        pos = fund.positions.get(symbol)
        adl_lots = bad_debt = 0
        if pos is not None:
            adl_lots = abs(pos.size_lots)
            guard_delta, bad_debt = self._deleverage(liquidated_id, symbol, bv, size)
            delta += guard_delta
        if symbol in fund.positions:
            raise InvariantViolation("insurance fund kept a position")
        bp = div_half_even(bv * 100_000_000, size * inst.lot_size_e8)
        self._emit(
            ev.AccountLiquidated,
            liquidated_id,
            symbol,
            size,
            bv,
            bp,
            mark,
            equity_before,
            mm,
            delta,
            book_filled,
            adl_lots,
            book_avg_e8,
            bad_debt,
        )

    # == ADL (§6) ==========================================================================

    def ranking(self, symbol: str, side: int) -> list[int]:
        """Account ids holding positions of sign `side` in `symbol`, first in the ADL line first."""
        return self._ranking(symbol, side).ordered_ids()

    def _ranking(self, symbol: str, side: int) -> AdlRanking:
        if self._rank_touched:
            for each in self._rankings.values():
                each.pending |= self._rank_touched
            self._rank_touched.clear()
        r = self._rankings.get((symbol, side))
        if r is None:
            r = AdlRanking(symbol, side)
            r.pending = set(self.holders[symbol])
            self._rankings[(symbol, side)] = r
        r.refresh(self.accounts, self.instruments, self.marks)
        return r

    def adl_quantiles(self, symbol: str) -> dict[int, int]:
        """account_id -> adl_quantile (0..4) for every position in `symbol`."""
        out: dict[int, int] = {}
        for side in (1, -1):
            ids = self.ranking(symbol, side)
            for r, aid in enumerate(ids):
                out[aid] = adl_quantile(r, len(ids))
        return out

    def _deleverage(self, liquidated_id: int, symbol: str, bv: int, original_size: int) -> tuple[int, int]:
        """Close what the fund holds of `symbol` against counterparties (§6) at the bankruptcy
        price, with the bad-debt guard (§5 step 5). Returns (fund delta, bad debt) of the guard."""
        fund = self.insurance_fund
        pos = fund.positions[symbol]
        q_r, ev_r = pos.size_lots, pos.entry_value_atoms
        inst = self.instruments[symbol]
        mark = self.marks[symbol]
        ranking = self._ranking(symbol, -1 if q_r > 0 else 1)
        accounts = self.accounts
        if self.adl_policy[symbol] == c.ADL_PRO_RATA:
            ranked_ids = ranking.ordered_ids()
            rank_of = {aid: i + 1 for i, aid in enumerate(ranked_ids)}
            rows = []
            for aid in ranked_ids:
                p = accounts[aid].positions[symbol]
                profitable = p.size_lots * mark * inst.atoms_per_lot_tick - p.entry_value_atoms > 0
                rows.append((aid, abs(p.size_lots), profitable))
            alloc = allocate_pro_rata(rows, abs(q_r))
        else:
            # lazily: the walk stops as soon as the remainder is covered (a crash liquidates
            # many accounts against the same long line)
            line = ((key[-1], abs(accounts[key[-1]].positions[symbol].size_lots)) for key in ranking.entries)
            alloc = allocate_queue(line, abs(q_r))
            rank_of = {aid: i + 1 for i, (aid, _) in enumerate(alloc)}  # the queue takes a prefix
        if sum(lots for _, lots in alloc) != abs(q_r):
            raise InvariantViolation(f"ADL could not cover {q_r} lots in {symbol}")
        # Value per side, signed like a price: negative when a short was taken over at a negative
        # bankruptcy price (its deficit exceeded its notional); abs() would flip that sign.
        shares = split_value(ev_r if q_r > 0 else -ev_r, abs(q_r), [lots for _, lots in alloc])
        price_e8 = div_half_even(bv * 100_000_000, original_size * inst.lot_size_e8)
        k = inst.atoms_per_lot_tick
        guard_cost = 0  # what the bad-debt guard (§5 step 5) costs the fund, net
        for (aid, lots), share in zip(alloc, shares, strict=True):
            cp = self.accounts[aid]
            for order in [o for o in cp.open_orders.values() if o.symbol == symbol]:
                self._cancel_resting(order, "adl")
            cp_side = "long" if cp.positions[symbol].size_lots > 0 else "short"
            value, fill_price_e8 = self._adl_fill_value(cp, symbol, q_r > 0, lots, share, mark * k * lots)
            if value == share:
                fill_price_e8 = price_e8
            # The counterparty closes at `value`: a short buys back (pays it), a long sells
            # (receives it). Its haircut is what that costs it against closing at the mark.
            haircut = value - lots * mark * k if q_r > 0 else lots * mark * k - value
            # the fund receives (q_r > 0) or pays (q_r < 0) `value` for lots it holds at `share`
            guard_cost += share - value if q_r > 0 else value - share
            realized = settle_fill(cp, symbol, lots if q_r > 0 else -lots, value)
            cp.fills.append(Fill(None, self._ts, symbol, None, c.BUY if q_r > 0 else c.SELL, fill_price_e8, lots, 0,
                                 "adl", realized))
            self._holders_update(cp, symbol)
            self._touch(aid)
            # the fund hands over exactly `share` of entry: it closes flat
            pos.size_lots -= lots if q_r > 0 else -lots
            pos.entry_value_atoms -= share if q_r > 0 else -share
            self._emit(
                ev.PositionDeleveraged,
                symbol,
                liquidated_id,
                aid,
                cp_side,
                lots,
                fill_price_e8,
                value,
                realized,
                cp.size(symbol),
                rank_of[aid],
                self.adl_policy[symbol],
                haircut,
            )
            self._emit_position(cp, symbol, realized, "adl")
        if pos.size_lots != 0 or pos.entry_value_atoms != 0:
            raise InvariantViolation("fund position not closed flat by ADL")
        del fund.positions[symbol]
        self._emit_position(fund, symbol, 0, "adl")
        return self._fund_pays(guard_cost, "adl", liquidated_id, symbol)

    def _adl_fill_value(
        self, cp: Account, symbol: str, cp_buys: bool, lots: int, share: int, at_mark: int
    ) -> tuple[int, int]:
        """§5 step 5: the value a counterparty's ADL fill settles at, and its price in e8.

        Normally its `share` of the bankruptcy value. If closing there would leave it below zero
        equity, the fill is valued so that its equity becomes exactly 0; if its equity is
        already <= 0, at the mark (ADL never lowers it further). Closing at the mark leaves
        equity unchanged, so the equity after closing at value V is `equity - haircut(V)`.
        """
        equity = equity_atoms(cp, self.instruments, self.marks)
        if equity <= 0:
            value = at_mark
        else:
            haircut = share - at_mark if cp_buys else at_mark - share
            if haircut <= equity:
                return share, 0
            value = at_mark + equity if cp_buys else at_mark - equity
        inst = self.instruments[symbol]
        return value, div_half_even(value * 100_000_000, lots * inst.lot_size_e8)

    def _fund_pays(self, cost: int, reason: str, account_id: int, symbol: str | None) -> tuple[int, int]:
        """The insurance fund pays `cost` (or gains it when negative) as far as its balance
        goes; the rest is bad debt, a system deficit (§5 step 5). Returns (fund delta, bad debt)."""
        if cost == 0:
            return 0, 0
        fund = self.insurance_fund
        paid = min(cost, fund.wallet_atoms)
        fund.wallet_atoms -= paid
        bad_debt = cost - paid
        self.bad_debt_atoms += bad_debt
        if paid:
            self._emit(ev.InsuranceFundChanged, fund.wallet_atoms, -paid, reason, account_id, symbol)
        return -paid, bad_debt

    # == invariants and hashing ===========================================================

    def check_invariants(self) -> None:
        """Raise InvariantViolation if any §7 invariant is broken."""
        for book in self.books.values():
            book.check_invariants()
        total = self.fees_collected_atoms
        sizes = dict.fromkeys(self.symbols, 0)
        for acct in self.accounts.values():
            total += acct.wallet_atoms
            for sym, pos in acct.positions.items():
                if pos.size_lots == 0:
                    raise InvariantViolation(f"account {acct.account_id}: zero position kept")
                total -= pos.entry_value_atoms
                sizes[sym] += pos.size_lots
            for oid, order in acct.open_orders.items():
                if self.books[order.symbol].orders.get(oid) is not order:
                    raise InvariantViolation(f"order {oid} open but not in the book")
            for sym in self.symbols:
                b = sum(o.remaining_lots for o in acct.open_orders.values() if o.symbol == sym and o.is_buy)
                s = sum(o.remaining_lots for o in acct.open_orders.values() if o.symbol == sym and not o.is_buy)
                if acct.open_lots(sym) != (b, s):
                    raise InvariantViolation(f"account {acct.account_id}: open lots out of sync in {sym}")
            for o in acct.open_orders.values():
                price = o.price_ticks or 0
                bad = (
                    acct.buy_price_max.get(o.symbol, 0) < price
                    if o.is_buy
                    else acct.sell_price_min.get(o.symbol, price + 1) > price
                )
                if bad:
                    raise InvariantViolation(f"account {acct.account_id}: order {o.order_id} beyond its price bound")
            if set(acct.buy_price_max) != set(acct.open_buy_lots) or set(acct.sell_price_min) != set(acct.open_sell_lots):
                raise InvariantViolation(f"account {acct.account_id}: price bounds out of sync")
        expected = self.deposits_atoms + self.top_ups_atoms - self.withdrawals_atoms + self.bad_debt_atoms
        if total != expected:
            raise InvariantViolation(f"conservation broken: {total} != {expected}")
        for acct in self.accounts.values():
            if equity_atoms(acct, self.instruments, self.marks) < 0:
                raise InvariantViolation(f"account {acct.account_id} ends the command with negative equity")
        for sym, total_size in sizes.items():
            if total_size != 0:
                raise InvariantViolation(f"{sym}: positions sum to {total_size}")
        fund = self.insurance_fund
        if fund.positions or fund.wallet_atoms < 0:
            raise InvariantViolation("insurance fund holds a position or a negative balance")
        in_books = sum(len(b.orders) for b in self.books.values())
        if in_books != sum(len(a.open_orders) for a in self.accounts.values()):
            raise InvariantViolation("book orders and account open orders disagree")
        for sym, ids in self.holders.items():
            actual = {a.account_id for a in self.accounts.values() if sym in a.positions and a.account_id}
            if ids != actual:
                raise InvariantViolation(f"{sym}: holders index out of sync")

    def config_fingerprint(self) -> str:
        """SHA-256 of the rules: instruments (fees, tiers, bands, ADL defaults) and limits.

        Not part of the state hash: it does not change with commands. The journal records it,
        so a data dir is never replayed under other rules than it was written with.
        """
        rules = (
            sorted(self.instruments.items()),
            self.max_open_orders,
            self.closed_orders_kept,
            self.fills_kept,
            [self.recent_trades[s].maxlen for s in self.symbols],
        )
        return hashlib.sha256(repr(rules).encode()).hexdigest()

    def state_hash(self) -> str:
        """SHA-256 of a canonical rendering of the whole state (stable across processes)."""
        h = hashlib.sha256()
        put = h.update
        put(repr((self.seq, self.next_account_id, self.next_order_id, self.next_trade_id)).encode())
        put(repr((self.fees_collected_atoms, self.deposits_atoms, self.withdrawals_atoms, self.top_ups_atoms,
                  self.bad_debt_atoms)).encode())
        put(repr(sorted(self.marks.items())).encode())
        put(repr(sorted(self.adl_policy.items())).encode())
        for aid in sorted(self.accounts):
            a = self.accounts[aid]
            put(repr((aid, a.api_key_hash, a.wallet_atoms, sorted(a.leverage.items()))).encode())
            put(repr(sorted((s, p.size_lots, p.entry_value_atoms) for s, p in a.positions.items())).encode())
            put(repr(sorted(a.client_order_ids.items())).encode())
            put(repr([_order_state(o) for o in a.closed_orders.values()]).encode())
            put(repr(list(a.fills)).encode())
        for sym in self.symbols:
            book = self.books[sym]
            for side in (book.bids, book.asks):
                for level in side.values():
                    put(repr([_order_state(o) for o in level.orders.values()]).encode())
        return h.hexdigest()


def _only_in(acct: Account, symbol: str) -> bool:
    """Whether the account has positions or open orders in no symbol other than `symbol`."""
    for held in (acct.positions, acct.open_buy_lots, acct.open_sell_lots):
        if len(held) > 1 or (held and symbol not in held):
            return False
    return True


def _order_state(o: Order) -> tuple[Any, ...]:
    return (
        o.order_id, o.account_id, o.symbol, o.side, o.price_ticks, o.qty_lots, o.remaining_lots,
        o.filled_lots, o.filled_value_ticks, o.order_type, o.time_in_force, o.post_only,
        o.reduce_only, o.stp, o.client_order_id, o.status, o.ts_ns, tuple(o.fills),
    )


__all__ = ["Engine", "liquidation_price_frac"]
