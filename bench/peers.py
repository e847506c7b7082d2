"""Adapters that drive third-party Python order books with a :mod:`bench.workload` op list.

Every adapter has the same shape::

    peer = SomePeer()          # fresh, empty one-symbol book
    peer.prepare(ops)          # untimed: convert ops to the peer's native objects
    peer.run(ops)              # timed: apply every op, as fast as the peer's API allows
    SomePeer().fills(ops)      # [(taker_id, maker_id, price_ticks, qty_lots), ...]

``run`` uses each peer's public API only, with bound methods hoisted out of the loop.
Peers are optional (``pip install -e '.[bench]'``); :func:`available_peers` skips any
whose package does not import. :func:`verify` checks a peer's fills against the
price-time reference in :mod:`bench.workload`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from typing import Any, ClassVar

from bench.workload import W1_SPEC, Fill, Op, ReferenceBook, make_workload

__all__ = [
    "PEERS",
    "LiquibookPeer",
    "OrderlyChaosPeer",
    "Peer",
    "PyOrderbookPeer",
    "available_peers",
    "verify",
]


class Peer:
    """Base adapter: lazy import of the peer package plus the prepare/run protocol."""

    #: human-readable peer name
    name: ClassVar[str] = ""
    #: installed distribution version ("" until the package has been imported)
    version: ClassVar[str] = ""
    #: import name and PyPI distribution name
    module_name: ClassVar[str] = ""
    dist_name: ClassVar[str] = ""
    _mod: ClassVar[Any] = None

    def __init__(self) -> None:
        self.load()
        self._prepared_for: list[Op] | None = None
        self._prepared: list[tuple[Any, ...]] = []

    @classmethod
    def load(cls) -> Any:
        """Import the peer package (once) and record its version; raises ImportError."""
        if cls._mod is None:
            cls._mod = importlib.import_module(cls.module_name)
            cls.version = importlib.metadata.version(cls.dist_name)
        return cls._mod

    def prepare(self, ops: list[Op]) -> None:
        """Convert ``ops`` to native order objects for :meth:`run` (not timed)."""
        self._prepared = self._convert(ops)
        self._prepared_for = ops

    def run(self, ops: list[Op]) -> None:
        """Apply ``ops`` to this adapter's book (call once per instance)."""
        if self._prepared_for is not ops:
            self.prepare(ops)
        self._run(self._prepared)

    def fills(self, ops: list[Op]) -> list[Fill]:
        """Run ``ops`` on a fresh book and return its fills in execution order."""
        raise NotImplementedError

    def resting_count(self) -> int:
        """Return the number of orders resting in this adapter's book (after :meth:`run`)."""
        raise NotImplementedError

    def _convert(self, ops: list[Op]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _run(self, prepared: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError


class OrderlyChaosPeer(Peer):
    """``orderly-chaos``: C++ book behind ctypes; cancels and reports fills by our ids.

    Ops map 1:1 onto ``LimitOrderBook.limit(side, order_id, quantity, price)`` and
    ``LimitOrderBook.cancel(order_id)``; trades come from the ``on_trade`` callback
    with taker and maker ids. Each public call re-validates its arguments in Python
    before the ctypes call, which is most of the per-op cost.
    """

    name = "orderly-chaos"
    module_name = "orderly_chaos"
    dist_name = "orderly-chaos"

    def __init__(self) -> None:
        super().__init__()
        self._book = self._mod.LimitOrderBook()

    def _convert(self, ops: list[Op]) -> list[tuple[Any, ...]]:
        buy, sell = self._mod.Side.BUY, self._mod.Side.SELL
        return [
            (
                op.kind == "limit",
                buy if op.side == "buy" else sell,
                op.order_id,
                op.qty_lots,
                op.price_ticks,
            )
            for op in ops
        ]

    def _run(self, prepared: list[tuple[Any, ...]]) -> None:
        limit, cancel = self._book.limit, self._book.cancel
        for is_limit, side, order_id, qty, price in prepared:
            if is_limit:
                limit(side, order_id, qty, price)
            else:
                cancel(order_id)

    def resting_count(self) -> int:
        return int(self._book.count())

    def fills(self, ops: list[Op]) -> list[Fill]:
        out: list[Fill] = []

        def on_trade(t: Any) -> None:
            out.append((t.taker_id, t.maker_id, t.price, t.quantity))

        book = self._mod.LimitOrderBook(on_trade=on_trade)
        for op in ops:
            if op.kind == "limit":
                book.limit(op.side, op.order_id, op.qty_lots, op.price_ticks)
            else:
                book.cancel(op.order_id)
        book.close()
        return out


class LiquibookPeer(Peer):
    """``liquibook``: SWIG wrapper of the C++ Liquibook engine.

    Orders are ``SimpleOrder(is_buy, price, qty)`` objects whose ids come from a
    process-wide counter, so the adapter keeps a liquibook-id -> workload-id map.
    ``book.cancel`` takes the order *object*, not an id. ``run`` uses the plain
    ``OrderBook`` template (no depth/BBO tracking, no listeners, so no Python
    callbacks); fills use the same book with an ``OrderListener`` director whose
    ``on_fill(inbound, resting, qty, price)`` gives taker, maker and the trade price.
    """

    name = "liquibook"
    module_name = "liquibook"
    dist_name = "liquibook"

    def __init__(self) -> None:
        super().__init__()
        self._book = self._mod.liquibook_book_OrderBook()

    def _convert(self, ops: list[Op]) -> list[tuple[Any, ...]]:
        return [(is_limit, order) for is_limit, order, _ in self._native(ops)]

    def _native(self, ops: list[Op]) -> list[tuple[bool, Any, int]]:
        """Return ``(is_limit, SimpleOrder, workload_id)`` per op (cancels share the object)."""
        simple_order = self._mod.SimpleOrder
        by_id: dict[int, Any] = {}
        out: list[tuple[bool, Any, int]] = []
        for op in ops:
            if op.kind == "limit":
                order = simple_order(op.side == "buy", op.price_ticks, op.qty_lots)
                by_id[op.order_id] = order
                out.append((True, order, op.order_id))
            else:
                out.append((False, by_id[op.order_id], op.order_id))
        return out

    def _run(self, prepared: list[tuple[Any, ...]]) -> None:
        add, cancel = self._book.add, self._book.cancel
        for is_limit, order in prepared:
            if is_limit:
                add(order)
            else:
                cancel(order)

    def resting_count(self) -> int:
        return int(self._book.bids().size() + self._book.asks().size())

    def fills(self, ops: list[Op]) -> list[Fill]:
        mod = self._mod
        native = self._native(ops)
        to_workload = {order.order_id_: oid for is_limit, order, oid in native if is_limit}
        out: list[Fill] = []

        class Listener(mod.OrderListener):  # type: ignore[misc, name-defined]
            """Collects fills; every other (pure virtual) notification is ignored."""

            def on_fill(self, inbound: Any, resting: Any, qty: int, price: int) -> None:
                out.append(
                    (to_workload[inbound.order_id_], to_workload[resting.order_id_], price, qty)
                )

            def on_accept(self, *args: Any) -> None: ...
            def on_reject(self, *args: Any) -> None: ...
            def on_cancel(self, *args: Any) -> None: ...
            def on_cancel_reject(self, *args: Any) -> None: ...
            def on_replace(self, *args: Any) -> None: ...
            def on_replace_reject(self, *args: Any) -> None: ...
            def on_trigger_stop(self, *args: Any) -> None: ...

        listener = Listener()
        book = mod.liquibook_book_OrderBook()
        book.set_order_listener(listener)
        for is_limit, order, _ in native:
            if is_limit:
                book.add(order)
            else:
                book.cancel(order)
        return out


class PyOrderbookPeer(Peer):
    """``pyorderbook``: pure-Python book (heap of levels, dict FIFO per level, Decimal prices).

    Orders are ``Order(side, symbol, price, qty)`` with a random ``uuid4`` id, so the
    adapter maps UUIDs back to workload ids. ``Book.match(order)`` returns a
    ``TradeBlotter`` listing ``Trade(incoming_order_id, standing_order_id,
    fill_quantity, fill_price)``; ``Book.cancel`` takes the order object. Orders are
    mutated by matching, so a prepared list is good for one run only.
    """

    name = "pyorderbook"
    module_name = "pyorderbook"
    dist_name = "pyorderbook"
    symbol: ClassVar[str] = "BTC-PERP"

    def __init__(self) -> None:
        super().__init__()
        self._book = self._mod.Book()

    def _convert(self, ops: list[Op]) -> list[tuple[Any, ...]]:
        return [(is_limit, order) for is_limit, order, _ in self._native(ops)]

    def _native(self, ops: list[Op]) -> list[tuple[bool, Any, int]]:
        """Return ``(is_limit, Order, workload_id)`` per op (cancels share the object)."""
        order_cls, bid, ask, symbol = (
            self._mod.Order,
            self._mod.Side.BID,
            self._mod.Side.ASK,
            self.symbol,
        )
        by_id: dict[int, Any] = {}
        out: list[tuple[bool, Any, int]] = []
        for op in ops:
            if op.kind == "limit":
                order = order_cls(
                    bid if op.side == "buy" else ask, symbol, op.price_ticks, op.qty_lots
                )
                by_id[op.order_id] = order
                out.append((True, order, op.order_id))
            else:
                out.append((False, by_id[op.order_id], op.order_id))
        return out

    def _run(self, prepared: list[tuple[Any, ...]]) -> None:
        match, cancel = self._book.match, self._book.cancel
        for is_limit, order in prepared:
            if is_limit:
                match(order)
            else:
                cancel(order)

    def resting_count(self) -> int:
        return len(self._book.order_map)

    def fills(self, ops: list[Op]) -> list[Fill]:
        native = self._native(ops)
        to_workload = {order.id: oid for is_limit, order, oid in native if is_limit}
        book = self._mod.Book()
        out: list[Fill] = []
        for is_limit, order, _ in native:
            if not is_limit:
                book.cancel(order)
                continue
            for t in book.match(order).trades:
                out.append(
                    (
                        to_workload[t.incoming_order_id],
                        to_workload[t.standing_order_id],
                        int(t.fill_price),
                        t.fill_quantity,
                    )
                )
        return out


PEERS: tuple[type[Peer], ...] = (OrderlyChaosPeer, LiquibookPeer, PyOrderbookPeer)


def available_peers(report: Callable[[str], None] = print) -> list[type[Peer]]:
    """Return the adapters whose package imports; report why the others are skipped."""
    found: list[type[Peer]] = []
    for cls in PEERS:
        try:
            cls.load()
        except Exception as exc:  # ImportError, or a native library that fails to load
            report(f"peer {cls.name}: skipped ({type(exc).__name__}: {exc})")
        else:
            found.append(cls)
    return found


def verify(peer_cls: type[Peer], n: int = 2000, report: Callable[[str], None] = print) -> bool:
    """Check a peer's fills on the first ``n`` ops of W1 against the reference book.

    Compares the full ``(taker_id, maker_id, price_ticks, qty_lots)`` sequence from
    :meth:`Peer.fills` (reporting the first divergence), then checks that the timed
    :meth:`Peer.run` path leaves as many resting orders as the reference. Returns True
    when both agree.
    """
    ops = make_workload(n, W1_SPEC[1], W1_SPEC[2])
    ref = ReferenceBook()
    want: list[Fill] = []
    for op in ops:
        if op.kind == "limit":
            ref.limit(op.order_id, op.side == "buy", op.price_ticks, op.qty_lots, want)
        else:
            ref.cancel(op.order_id)
    got = peer_cls().fills(ops)
    if got == want:
        timed = peer_cls()
        timed.run(ops)  # the timed path may differ from fills(): check where it ends up
        if timed.resting_count() != len(ref.orders):
            report(
                f"peer {peer_cls.name} {peer_cls.version}: MISMATCH after run() on the "
                f"first {n} ops of W1: {timed.resting_count()} resting orders vs "
                f"{len(ref.orders)} in the reference"
            )
            return False
        report(
            f"peer {peer_cls.name} {peer_cls.version}: OK, {len(got)} fills and "
            f"{len(ref.orders)} resting orders match the reference on the first {n} ops of W1"
        )
        return True
    i = next(
        (k for k, (g, w) in enumerate(zip(got, want, strict=False)) if g != w),
        min(len(got), len(want)),
    )
    report(
        f"peer {peer_cls.name} {peer_cls.version}: MISMATCH on the first {n} ops of W1: "
        f"{len(got)} fills vs {len(want)} in the reference; first difference at fill #{i} "
        "(taker, maker, price, qty):"
    )
    report(f"  peer:      {got[max(0, i - 1) : i + 3]}")
    report(f"  reference: {want[max(0, i - 1) : i + 3]}")
    return False
