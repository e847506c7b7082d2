"""Funding (SPEC §12, Binance's formula): the rate of a round, and its payments.

At each round (the service stamps the funding time into an `ApplyFunding` command; an admin
may apply a round at once, with or without a given rate) the rate is

    P    = mean of the premium samples since the last round (pricing.py), exact; 0 if none
    rate = clamp(P + clamp(r - P, -500 ppm, +500 ppm), -funding_cap, +funding_cap)

with r = `interest_ppm` per interval, computed exactly and rounded half-even once, to parts
per 1e8 (`rate_e8`). Every open position then pays `size * mark * rate` (positive: longs pay
shorts): a payer's amount rounds up to the atom, a receiver's rounds down, and the difference
goes to the insurance fund, so funding creates no money and conservation holds to the atom.
Payments are made in account-id order; each is a `funding_paid` event, and the position's
cumulative `funding_atoms` records it. Payers may fall below maintenance: the liquidation
check runs after the round, like after any balance change.
"""

from __future__ import annotations

from fractions import Fraction

from engine import commands as c
from engine import events as ev
from engine.errors import Reject, Rejected
from engine.state import ExchangeState
from engine.units import E8, PPM, div_ceil, div_floor, div_half_even

PREMIUM_CLAMP = Fraction(500, PPM)  # |interest - premium| counts up to 0.05% per interval


def funding_rate(premium: Fraction, interest_ppm: int, cap_ppm: int) -> Fraction:
    """clamp(P + clamp(r - P, -0.05%, +0.05%), -cap, +cap), exact."""
    inner = min(max(Fraction(interest_ppm, PPM) - premium, -PREMIUM_CLAMP), PREMIUM_CLAMP)
    cap = Fraction(cap_ppm, PPM)
    return min(max(premium + inner, -cap), cap)


def to_e8(value: Fraction) -> int:
    """A fraction in parts per 1e8, rounded half-even."""
    return div_half_even(value.numerator * E8, value.denominator)


def apply_funding(st: ExchangeState, cmd: c.ApplyFunding) -> None:
    """One funding round of `cmd.symbol` at its mark."""
    inst = st.instrument(cmd.symbol)
    symbol = cmd.symbol
    mark = st.mark(symbol)
    samples = st.premium_samples.get(symbol, 0)
    if cmd.rate_e8 is None:
        premium = st.premium_sum[symbol] / samples if samples else Fraction(0)
        rate_e8 = to_e8(funding_rate(premium, inst.interest_ppm, inst.funding_cap_ppm))
        premium_e8: int | None = to_e8(premium)
    else:
        rate_e8 = cmd.rate_e8
        if type(rate_e8) is not int or not -E8 < rate_e8 < E8:
            raise Rejected(Reject.INVALID_FUNDING_RATE, "funding rate must be an integer rate_e8 within (-1, 1)")
        premium_e8 = None
    st.premium_sum.pop(symbol, None)
    st.premium_samples.pop(symbol, None)
    st.funding_history[symbol].append((st.ts, rate_e8))
    st.emit(ev.FundingRateChanged, symbol, rate_e8, premium_e8, samples, mark)
    if rate_e8 == 0:
        return
    k = inst.atoms_per_lot_tick
    residue = 0
    for aid in sorted(st.holders[symbol]):
        acct = st.accounts[aid]
        pos = acct.positions[symbol]
        owed = pos.size_lots * mark * k * rate_e8  # in atoms * 1e8; > 0: this position pays
        if owed > 0:
            amount = -div_ceil(owed, E8)
            st.dirty.add(aid)  # a payer may fall below maintenance
        else:
            amount = div_floor(-owed, E8)
        iso = acct.isolated
        if iso and symbol in iso:  # an isolated position pays and receives from its own margin (§12)
            iso[symbol] += amount
        else:
            acct.wallet_atoms += amount
        pos.funding_atoms += amount
        residue -= amount
        st.rank_touched.add(aid)  # equity changed: its ADL rank may have
        st.emit(ev.FundingPaid, aid, symbol, pos.size_lots, rate_e8, amount, acct.wallet_atoms)
        if iso and symbol in iso:
            st.emit(ev.PositionMarginChanged, aid, symbol, amount, iso[symbol], acct.wallet_atoms, "funding")
    if residue:
        fund = st.insurance_fund
        fund.wallet_atoms += residue
        st.emit(ev.InsuranceFundChanged, fund.wallet_atoms, residue, "funding", None, symbol)
