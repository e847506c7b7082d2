"""Margin arithmetic and fill settlement (SPEC §3), all in integer atoms.

Formulas, with K = atoms per lot-tick of the instrument and M the mark in ticks:
- notional N_p = q_p * M * K (signed), upnl_p = N_p - entry_value_p
- equity = wallet + sum(upnl_p); maintenance = sum(MM_p) with MM from the tier of |N_p|
- IM_s = ceil(max(|q + B|, |q - S|) * M * K / leverage_s)   (owed by the trader: rounds up)
- open loss of an open order: what it loses at once if filled at its own price P:
  buys q * max(0, P - M) * K, sells q * max(0, M - P) * K (an integer: nothing to round)
- available = equity - sum(IM_s) - sum(open loss)

Settlement of a fill: realized PnL only on the reducing part; the closed part's entry value is
`ceil(entry_value * closed / |q|)`, which rounds the realized PnL down (against the trader)
for longs and shorts alike; what it takes off stays in the remaining entry value, so no atom
is created or lost (conservation, §7).
"""

from __future__ import annotations

from engine.accounts import Account, Position
from engine.instruments import Instrument
from engine.units import div_ceil, div_floor


def upnl_atoms(inst: Instrument, pos: Position, mark_ticks: int) -> int:
    """Unrealized PnL of a position at the mark."""
    return pos.size_lots * mark_ticks * inst.atoms_per_lot_tick - pos.entry_value_atoms


def equity_atoms(acct: Account, instruments: dict[str, Instrument], marks: dict[str, int]) -> int:
    """Cross equity: wallet balance plus the unrealized PnL of every cross position (an
    isolated position has its own equity, `isolated_equity_atoms`; SPEC §12)."""
    eq = acct.wallet_atoms
    iso = acct.isolated
    for sym, pos in acct.positions.items():
        if iso and sym in iso:
            continue
        eq += pos.size_lots * marks[sym] * instruments[sym].atoms_per_lot_tick - pos.entry_value_atoms
    return eq


def maintenance_atoms(acct: Account, instruments: dict[str, Instrument], marks: dict[str, int]) -> int:
    """Sum of the tiered maintenance margins of every cross position."""
    mm = 0
    iso = acct.isolated
    for sym, pos in acct.positions.items():
        if iso and sym in iso:
            continue
        inst = instruments[sym]
        mm += inst.maintenance_atoms(pos.size_lots * marks[sym] * inst.atoms_per_lot_tick)
    return mm


def isolated_equity_atoms(acct: Account, symbol: str, inst: Instrument, mark_ticks: int) -> int:
    """Equity of the isolated position in `symbol`: its margin plus its unrealized PnL."""
    pos = acct.positions.get(symbol)
    margin = acct.isolated[symbol]
    if pos is None:
        return margin
    return margin + pos.size_lots * mark_ticks * inst.atoms_per_lot_tick - pos.entry_value_atoms


def position_equity_atoms(acct: Account, symbol: str, instruments: dict[str, Instrument], marks: dict[str, int]) -> int:
    """The equity that backs the position in `symbol`: its own when isolated, else the
    account's cross equity (ADL ranking and the bad-debt guard use this, SPEC §6, §5)."""
    if symbol in acct.isolated:
        return isolated_equity_atoms(acct, symbol, instruments[symbol], marks[symbol])
    return equity_atoms(acct, instruments, marks)


def total_equity_atoms(acct: Account, instruments: dict[str, Instrument], marks: dict[str, int]) -> int:
    """Everything the account owns at the marks: wallet, isolated margins, every upnl."""
    eq = acct.wallet_atoms + sum(acct.isolated.values())
    for sym, pos in acct.positions.items():
        eq += pos.size_lots * marks[sym] * instruments[sym].atoms_per_lot_tick - pos.entry_value_atoms
    return eq


def total_maintenance_atoms(acct: Account, instruments: dict[str, Instrument], marks: dict[str, int]) -> int:
    """Maintenance margin of every position, cross and isolated."""
    mm = 0
    for sym, pos in acct.positions.items():
        inst = instruments[sym]
        mm += inst.maintenance_atoms(pos.size_lots * marks[sym] * inst.atoms_per_lot_tick)
    return mm


def leverage_of(acct: Account, inst: Instrument) -> int:
    """The account's leverage in the instrument (its default until set)."""
    return acct.leverage.get(inst.symbol, inst.default_leverage)


def worst_case_lots(size_lots: int, open_buy_lots: int, open_sell_lots: int) -> int:
    """`max(|q + B|, |q - S|)`: the largest position the open orders could lead to."""
    return max(abs(size_lots + open_buy_lots), abs(size_lots - open_sell_lots))


def initial_margin_symbol_atoms(inst: Instrument, worst_lots: int, mark_ticks: int, leverage: int) -> int:
    """IM of one symbol, rounded up."""
    return div_ceil(worst_lots * mark_ticks * inst.atoms_per_lot_tick, leverage)


def initial_margin_atoms(
    acct: Account,
    instruments: dict[str, Instrument],
    marks: dict[str, int],
    override: tuple[str, int] | None = None,
) -> int:
    """Sum of IM_s over symbols with a position or open orders: what the wallet must hold.

    An isolated symbol's position has its margin set aside already, so its IM_s is only what
    its open orders could add: `max(0, IM(worst case) - IM(|q|))` (SPEC §12).
    `override` = (symbol, worst_lots) replaces one symbol's worst case (pre-trade what-if).
    """
    symbols = set(acct.positions) | set(acct.open_buy_lots) | set(acct.open_sell_lots)
    if override is not None:
        symbols.add(override[0])
    iso = acct.isolated
    im = 0
    for sym in symbols:
        inst = instruments[sym]
        if override is not None and override[0] == sym:
            worst = override[1]
        else:
            b, s = acct.open_lots(sym)
            worst = worst_case_lots(acct.size(sym), b, s)
        if worst:
            lev = leverage_of(acct, inst)
            im += initial_margin_symbol_atoms(inst, worst, marks[sym], lev)
            if iso and sym in iso:
                im -= initial_margin_symbol_atoms(inst, abs(acct.size(sym)), marks[sym], lev)
    return im


def order_open_loss_atoms(inst: Instrument, is_buy: bool, price_ticks: int, qty_lots: int, mark_ticks: int) -> int:
    """What `qty_lots` at `price_ticks` would lose at once against the mark if filled (>= 0)."""
    gap = price_ticks - mark_ticks if is_buy else mark_ticks - price_ticks
    return qty_lots * gap * inst.atoms_per_lot_tick if gap > 0 else 0


def open_loss_atoms(acct: Account, instruments: dict[str, Instrument], marks: dict[str, int]) -> int:
    """Sum of the open loss of the account's resting orders (SPEC §3).

    Only the sides whose price bound (`Account.buy_price_max` / `sell_price_min`) is past the
    mark are walked, and the walk tightens their bound to the true extreme price: in a market
    where buys rest below the mark and sells above it, this walks no order at all.
    """
    walk: set[tuple[str, bool]] = set()
    for sym, highest in acct.buy_price_max.items():
        if highest > marks[sym]:
            walk.add((sym, True))
    for sym, lowest in acct.sell_price_min.items():
        if lowest < marks[sym]:
            walk.add((sym, False))
    if not walk:
        return 0
    total = 0
    extreme: dict[tuple[str, bool], int] = {}
    for o in acct.open_orders.values():
        key = (o.symbol, o.is_buy)
        if key not in walk:
            continue
        price = o.price_ticks
        assert price is not None  # only limit orders rest
        mark = marks[o.symbol]
        if o.is_buy:
            gap = price - mark
            extreme[key] = max(extreme.get(key, price), price)
        else:
            gap = mark - price
            extreme[key] = min(extreme.get(key, price), price)
        if gap > 0:
            total += o.remaining_lots * gap * instruments[o.symbol].atoms_per_lot_tick
    for (sym, is_buy), price in extreme.items():
        (acct.buy_price_max if is_buy else acct.sell_price_min)[sym] = price
    return total


def available_atoms(acct: Account, instruments: dict[str, Instrument], marks: dict[str, int]) -> int:
    """Equity minus initial margin minus open loss: what new orders and withdrawals may use."""
    return (
        equity_atoms(acct, instruments, marks)
        - initial_margin_atoms(acct, instruments, marks)
        - open_loss_atoms(acct, instruments, marks)
    )


def settle_fill(
    acct: Account,
    symbol: str,
    delta_lots: int,
    value_atoms: int,
    takeover: tuple[int, int] | None = None,
) -> int:
    """Apply a fill of `delta_lots` (signed: + buys) worth `value_atoms` (>= 0); return realized PnL.

    The wallet is credited with the realized PnL (no fee here). Positions that reach zero are
    removed from the account. The closed part's entry value rounds against the holder
    (realized PnL down).

    `takeover = (lots, bankruptcy value)` marks the insurance fund closing a position it took
    over at that size and value. Its closed entry is then attributed cumulatively, once: after
    n of the lots are closed, exactly floor(value * n / lots) of entry is gone, whatever the
    number of fills. So the part left for ADL is worth the bankruptcy value of the remaining
    lots rounded once (§6: counterparties close at the bankruptcy price, exact to the atom),
    and rounding the fund's side down keeps its loss within the budget its order price was
    computed from.
    """
    pos = acct.positions.get(symbol)
    if pos is None:
        pos = Position(symbol)
        acct.positions[symbol] = pos
    q = pos.size_lots
    signed_value = value_atoms if delta_lots > 0 else -value_atoms
    realized = 0
    if q == 0 or (q > 0) == (delta_lots > 0):
        pos.size_lots = q + delta_lots
        pos.entry_value_atoms += signed_value
    else:
        closing = min(abs(delta_lots), abs(q))
        if closing == abs(q):
            closed_entry = pos.entry_value_atoms
        elif takeover is not None:
            lots, value = takeover
            done = lots - abs(q)  # lots of the taken-over position closed before this fill
            closed_entry = div_floor(value * (done + closing), lots) - div_floor(value * done, lots)
        else:
            closed_entry = div_ceil(pos.entry_value_atoms * closing, abs(q))
        if closing == abs(delta_lots):
            close_value = value_atoms
        else:
            close_value = div_floor(value_atoms * closing, abs(delta_lots))
        # A long that closes receives close_value; a short that closes pays it.
        realized = (close_value if q > 0 else -close_value) - closed_entry
        pos.entry_value_atoms -= closed_entry
        pos.size_lots = q + delta_lots
        if abs(delta_lots) > closing:  # flip: open the rest at the fill price
            rest = value_atoms - close_value
            pos.entry_value_atoms = rest if delta_lots > 0 else -rest
        acct.wallet_atoms += realized
    if pos.size_lots == 0:
        del acct.positions[symbol]
    return realized


def liquidation_price_frac(
    acct: Account, symbol: str, instruments: dict[str, Instrument], marks: dict[str, int]
) -> tuple[int, int] | None:
    """The mark of `symbol` (ticks, as an exact fraction num/den, den > 0) at which equity
    equals maintenance margin, every other mark unchanged; None when there is none. For a
    cross position: the cross equity and maintenance (isolated positions left out); for an
    isolated one: its own (C below is then margin - entry_value, and MMo = 0).

    With C = wallet + upnl of the other positions - entry_value and MMo their maintenance,
    in the tier (rate r ppm, amount a) that holds the answer:
        C + q*K*M = MMo + |q|*K*M*r/1e6 - a
        M = (MMo - a - C) * 1e6 / (K * (q*1e6 - |q|*r))
    The tier is the one whose notional range holds |q|*K*M (maintenance is continuous and
    equity - maintenance monotone in M, so at most one tier fits). The ceiling in MM is
    ignored here: the true boundary is less than one atom of equity away.
    """
    pos = acct.positions.get(symbol)
    if pos is None or pos.size_lots == 0:
        return None
    inst = instruments[symbol]
    k = inst.atoms_per_lot_tick
    q = pos.size_lots
    aq = abs(q)
    mm_other = 0
    iso = acct.isolated
    if iso and symbol in iso:  # isolated: its own margin, no other position (SPEC §12)
        c = iso[symbol] - pos.entry_value_atoms
        others: dict[str, Position] = {}
    else:
        c = acct.wallet_atoms - pos.entry_value_atoms
        others = acct.positions
    for sym, other in others.items():
        if sym == symbol or (iso and sym in iso):
            continue
        oi = instruments[sym]
        n = other.size_lots * marks[sym] * oi.atoms_per_lot_tick
        c += n - other.entry_value_atoms
        mm_other += oi.maintenance_atoms(n)
    lower = 0
    last = len(inst.tiers) - 1
    for i, tier in enumerate(inst.tiers):
        num = (mm_other - tier.maintenance_amount_atoms - c) * 1_000_000
        den = k * (q * 1_000_000 - aq * tier.maintenance_ppm)
        if den < 0:
            num, den = -num, -den
        if num <= 0:
            if q > 0:
                return None  # a long that stays above maintenance down to a zero mark
            # a short already below maintenance at any positive mark: liquidatable now
            return (0, 1)
        notional_scaled = aq * k * num  # |q|*K*M scaled by den
        upper_ok = i == last or notional_scaled <= tier.max_notional_atoms * den
        if notional_scaled > lower * den and upper_ok:
            return num, den
        lower = tier.max_notional_atoms
    return None
