"""Index price, basis and the mark that follows them (SPEC §12).

Every `SetIndexPrice` records the index. When both sides of the book are present it also
moves the basis, an EMA of how far the book's mid is from the index, and records a premium
sample for funding (funding.py):

    basis <- basis + trunc((mid - index - basis) * basis_weight_ppm / 1e6)   (in ticks)
    premium sample = (mid - index) / index                                   (exact fraction)

with `mid = (best bid + best ask) / 2`, which may be half a tick: the basis update is computed
in half ticks and truncated toward zero to a whole tick. With one side empty both stay as
they were. For a symbol whose `mark_source` is `index`, the mark then becomes

    M = median(index, index + basis, last trade price, or the index before any trade)

(a median of three whole ticks is a whole tick: no rounding) and moves exactly like an admin
mark: a `mark_price_changed` event, then the liquidation check of everyone it crossed.
"""

from __future__ import annotations

from fractions import Fraction

from engine import commands as c
from engine import events as ev
from engine.errors import Reject, Rejected
from engine.state import ExchangeState
from engine.units import PPM, div_trunc


def set_index(st: ExchangeState, cmd: c.SetIndexPrice) -> None:
    """Record a new index price; update basis, premium samples and (index symbols) the mark."""
    inst = st.instrument(cmd.symbol)
    index = cmd.price_ticks
    if type(index) is not int or index <= 0:
        raise Rejected(Reject.INVALID_PRICE, "index price must be positive")
    symbol = cmd.symbol
    st.index[symbol] = index
    book = st.books[symbol]
    bid, ask = book.best_bid(), book.best_ask()
    basis = st.basis.get(symbol, 0)
    if bid is not None and ask is not None:
        # (mid - index - basis) in half ticks is bid + ask - 2 index - 2 basis
        basis += div_trunc((bid + ask - 2 * index - 2 * basis) * inst.basis_weight_ppm, 2 * PPM)
        st.basis[symbol] = basis
        st.premium_sum[symbol] = st.premium_sum.get(symbol, Fraction(0)) + Fraction(bid + ask - 2 * index, 2 * index)
        st.premium_samples[symbol] = st.premium_samples.get(symbol, 0) + 1
    st.emit(ev.IndexPriceChanged, symbol, index, basis)
    if inst.mark_source == c.MARK_FROM_INDEX:
        st.move_mark(symbol, mark_from_index(index, basis, st.last_price.get(symbol, index)))


def mark_from_index(index: int, basis: int, last: int) -> int:
    """median(index, index + basis, last), all in ticks."""
    return sorted((index, index + basis, last))[1]
