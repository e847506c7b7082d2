"""Isolated margin (SPEC §12): a position with its own margin, liquidated alone.

Per account and symbol the margin mode is `cross` (default) or `isolated`; it changes only
with no position and no open orders in that symbol. `Account.isolated` maps the isolated
symbols to the margin of their position (0 while flat). An isolated position's equity is
`margin + upnl`; cross equity (risk.equity_atoms) leaves it out, and so do cross
maintenance and the cross liquidation. Its loss is capped at its margin: when it falls below
its own maintenance it is liquidated alone (liquidation.py, `BV = q * M - isolated equity`),
which leaves its margin at exactly 0 and the wallet untouched.

How money moves between the wallet and a position's margin, per fill (`after_fill`), with
`q0` the size before and `closing` / `opening` the lots that reduce / open it. The fill's
realized PnL and fee are settled in the wallet, as for a cross position (risk.settle_fill,
matching); then:
1. the reducing part releases its share of the margin to the wallet,
   `share = floor(margin * closing / |q0|)` (all of it when the position closes or flips),
   so what the closed part leaves in the wallet is its margin plus its realized PnL, less
   the fee, and the rest of the position keeps the rest of the margin: a partial close
   at the mark leaves the position's equity scaled by what is left;
2. when that net amount (share + realized - fee) is negative, i.e. the closed part lost
   more than its margin: a trader's own trade pays it from the wallet (the pre-trade check
   held that open loss in reserve); ADL and the engine's partial-liquidation orders never
   touch the wallet, so there the margin keeps the loss (a margin left short makes the
   position liquidatable; its loss stays capped at the margin);
3. the opening part moves its initial margin at the fill price, ceil(value / leverage), from
   the wallet into the margin, as far as the wallet holds it (an order that rested while
   the wallet shrank may find less: the position is then thinly margined, and liquidated if
   that is below its maintenance; the wallet never goes below zero for it).
`POST /v1/position-margin` adds margin (up to the cross `available`) or removes it (down to
the position's initial margin at the mark, ceil(|q| * M / leverage)).
"""

from __future__ import annotations

from engine import commands as c
from engine import events as ev
from engine.accounts import Account
from engine.errors import Reject, Rejected
from engine.instruments import Instrument
from engine.risk import available_atoms, initial_margin_symbol_atoms, leverage_of
from engine.state import ExchangeState
from engine.units import div_ceil, div_floor, e8_to_str


def set_margin_mode(st: ExchangeState, cmd: c.SetMarginMode) -> None:
    acct = st.account(cmd.account_id)
    st.instrument(cmd.symbol)
    if cmd.mode not in c.MARGIN_MODES:
        raise Rejected(Reject.INVALID_MARGIN_MODE, "mode must be cross or isolated")
    sym = cmd.symbol
    stops = getattr(acct, "stop_orders", {})
    if (
        sym in acct.positions
        or sym in acct.open_buy_lots
        or sym in acct.open_sell_lots
        or any(o.symbol == sym for o in stops.values())
    ):
        raise Rejected(
            Reject.POSITION_OR_ORDERS_OPEN,
            f"the margin mode of {sym} changes only with no position and no open orders in it",
        )
    if cmd.mode == c.MARGIN_ISOLATED:
        acct.isolated.setdefault(sym, 0)
    else:
        acct.isolated.pop(sym, None)  # flat: its margin is 0
    st.emit(ev.MarginModeChanged, acct.account_id, sym, cmd.mode)


def adjust_margin(st: ExchangeState, cmd: c.AdjustPositionMargin) -> None:
    acct = st.account(cmd.account_id)
    inst = st.instrument(cmd.symbol)
    sym = cmd.symbol
    amount = cmd.amount_atoms
    if type(amount) is not int or amount == 0:
        raise Rejected(Reject.INVALID_AMOUNT, "amount must be a non-zero number")
    if sym not in acct.isolated:
        raise Rejected(Reject.NOT_ISOLATED, f"{sym} is in cross margin mode: no position margin to change")
    pos = acct.positions.get(sym)
    if pos is None:
        raise Rejected(Reject.NO_POSITION, f"no {sym} position")
    mark = st.mark(sym)
    margin = acct.isolated[sym]
    if amount > 0:
        avail = min(available_atoms(acct, st.instruments, st.marks), acct.wallet_atoms)
        if amount > avail:
            raise Rejected(
                Reject.INSUFFICIENT_BALANCE,
                f"adding {e8_to_str(amount)} USD needs that much available, have {e8_to_str(max(avail, 0))} USD",
            )
    else:
        im = initial_margin_symbol_atoms(inst, abs(pos.size_lots), mark, leverage_of(acct, inst))
        if margin + amount < im:
            raise Rejected(
                Reject.INSUFFICIENT_MARGIN,
                f"at most {e8_to_str(max(margin - im, 0))} USD can be removed: the position keeps "
                f"its initial margin {e8_to_str(im)} USD",
            )
    acct.isolated[sym] = margin + amount
    acct.wallet_atoms -= amount
    st.touch(acct.account_id)
    st.emit(ev.PositionMarginChanged, acct.account_id, sym, amount, margin + amount, acct.wallet_atoms, "user")


def after_fill(
    acct: Account,
    inst: Instrument,
    size_before: int,
    delta_lots: int,
    value_atoms: int,
    realized: int,
    fee: int,
    voluntary: bool,
) -> int:
    """Move money between the wallet and the isolated margin of `inst.symbol` after a fill
    that `risk.settle_fill` (and the fee charge) already booked to the wallet; see the module
    docstring. Returns the margin's change (the caller emits `position_margin_changed`)."""
    sym = inst.symbol
    before = margin = acct.isolated[sym]
    q0 = size_before
    closing = min(abs(delta_lots), abs(q0)) if q0 and (q0 > 0) != (delta_lots > 0) else 0
    opening = abs(delta_lots) - closing
    if closing:
        share = margin if closing == abs(q0) else div_floor(margin * closing, abs(q0))
        acct.wallet_atoms += share
        margin -= share
        net = share + realized - fee  # what the closed part left in the wallet
        if net < 0 and not voluntary:  # ADL / partial liquidation: the margin keeps the loss
            acct.wallet_atoms -= net
            margin += net
    if opening:
        open_value = value_atoms if not closing else value_atoms - div_floor(value_atoms * closing, abs(delta_lots))
        need = div_ceil(open_value, leverage_of(acct, inst))
        moved = min(need, max(acct.wallet_atoms, 0))
        acct.wallet_atoms -= moved
        margin += moved
    elif margin and sym not in acct.positions:  # closed with a margin ADL left short: settle it
        acct.wallet_atoms += margin
        margin = 0
    acct.isolated[sym] = margin
    return margin - before
