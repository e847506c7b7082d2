"""Commands that are not orders: accounts, money in and out, marks, leverage, ADL policy.

Each checks its input and raises `Rejected` before changing anything. Money moves keep the
books of conservation (`deposits_atoms`, `withdrawals_atoms`, `top_ups_atoms`); a mark move
records the symbol in `moved` so that liquidation checks who it crossed.
"""

from __future__ import annotations

from engine import commands as c
from engine import events as ev
from engine.accounts import Account
from engine.errors import Reject, Rejected
from engine.risk import available_atoms
from engine.state import ExchangeState


def create_account(st: ExchangeState, cmd: c.CreateAccount) -> None:
    aid = st.next_account_id
    st.next_account_id += 1
    st.accounts[aid] = Account(aid, cmd.api_key_hash, st.fills_kept)
    st.emit(ev.AccountCreated, aid)


def deposit(st: ExchangeState, cmd: c.Deposit) -> None:
    acct = st.account(cmd.account_id)
    if type(cmd.amount_atoms) is not int or cmd.amount_atoms <= 0:
        raise Rejected(Reject.INVALID_AMOUNT, "amount must be positive")
    acct.wallet_atoms += cmd.amount_atoms
    st.deposits_atoms += cmd.amount_atoms
    st.touch(acct.account_id)
    st.emit(ev.DepositMade, acct.account_id, cmd.amount_atoms, acct.wallet_atoms)


def withdraw(st: ExchangeState, cmd: c.Withdraw) -> None:
    acct = st.account(cmd.account_id)
    if type(cmd.amount_atoms) is not int or cmd.amount_atoms <= 0:
        raise Rejected(Reject.INVALID_AMOUNT, "amount must be positive")
    avail = min(available_atoms(acct, st.instruments, st.marks), acct.wallet_atoms)
    if cmd.amount_atoms > avail:
        raise Rejected(Reject.INSUFFICIENT_BALANCE, "amount exceeds available balance")
    acct.wallet_atoms -= cmd.amount_atoms
    st.withdrawals_atoms += cmd.amount_atoms
    st.touch(acct.account_id)
    st.emit(ev.WithdrawalMade, acct.account_id, cmd.amount_atoms, acct.wallet_atoms)


def top_up(st: ExchangeState, cmd: c.TopUpInsuranceFund) -> None:
    if type(cmd.amount_atoms) is not int or cmd.amount_atoms <= 0:
        raise Rejected(Reject.INVALID_AMOUNT, "amount must be positive")
    fund = st.insurance_fund
    fund.wallet_atoms += cmd.amount_atoms
    st.top_ups_atoms += cmd.amount_atoms
    st.emit(ev.InsuranceFundChanged, fund.wallet_atoms, cmd.amount_atoms, "top_up", None, None)


def set_mark(st: ExchangeState, cmd: c.SetMarkPrice) -> None:
    st.instrument(cmd.symbol)
    if type(cmd.price_ticks) is not int or cmd.price_ticks <= 0:
        raise Rejected(Reject.INVALID_PRICE, "mark price must be positive")
    if st.instruments[cmd.symbol].mark_source == c.MARK_FROM_INDEX:
        raise Rejected(Reject.MARK_SOURCE_IS_INDEX, f"the mark of {cmd.symbol} follows its index; set the index instead")
    st.move_mark(cmd.symbol, cmd.price_ticks)


def set_leverage(st: ExchangeState, cmd: c.SetLeverage) -> None:
    acct = st.account(cmd.account_id)
    inst = st.instrument(cmd.symbol)
    if type(cmd.leverage) is not int or not 1 <= cmd.leverage <= inst.max_leverage:
        raise Rejected(Reject.INVALID_LEVERAGE, f"leverage must be 1..{inst.max_leverage}")
    size = acct.size(cmd.symbol)
    if size:
        notional = inst.notional_atoms(size, st.marks[cmd.symbol])
        allowed = inst.max_leverage_for(notional)
        if cmd.leverage > allowed:
            raise Rejected(
                Reject.LEVERAGE_TOO_HIGH_FOR_POSITION,
                f"position tier allows at most {allowed}x",
            )
    previous = acct.leverage.get(cmd.symbol)
    acct.leverage[cmd.symbol] = cmd.leverage
    lowered = cmd.leverage < (previous or inst.default_leverage)
    if lowered and available_atoms(acct, st.instruments, st.marks) < 0:
        if previous is None:
            del acct.leverage[cmd.symbol]
        else:
            acct.leverage[cmd.symbol] = previous
        raise Rejected(Reject.INSUFFICIENT_MARGIN, "not enough margin for that leverage")
    st.emit(ev.LeverageChanged, acct.account_id, cmd.symbol, cmd.leverage)


def set_adl_policy(st: ExchangeState, cmd: c.SetAdlPolicy) -> None:
    st.instrument(cmd.symbol)
    if cmd.policy not in c.ADL_POLICIES:
        raise Rejected(Reject.INVALID_ADL_POLICY, f"policy must be one of {c.ADL_POLICIES}")
    st.adl_policy[cmd.symbol] = cmd.policy
    st.emit(ev.AdlPolicyChanged, cmd.symbol, cmd.policy)
