"""What the demo market prints (service/demo.py): pure functions of the API's JSON shapes,
so tests can read them; and the running totals of a run (`Report`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

SYMBOL = "BTC-PERP"  # the demo's market


@dataclass(frozen=True)
class FundingTotals:
    """The service's funding scheduler so far, per symbol (its /metrics `exchange_funding_*`)."""

    rounds: int = 0
    paid: Decimal = Decimal(0)  # by the payers
    received: Decimal = Decimal(0)  # by the receivers; the difference went to the insurance fund
    rate: Decimal | None = None  # the last round's rate, a fraction per interval

    def since(self, start: FundingTotals) -> FundingTotals:
        return FundingTotals(
            self.rounds - start.rounds, self.paid - start.paid, self.received - start.received, self.rate
        )


@dataclass
class Report:
    liquidations: list[dict[str, Any]] = field(default_factory=list)
    adl_fills: list[dict[str, Any]] = field(default_factory=list)
    ws_notices: dict[str, int] = field(default_factory=lambda: {"liquidations": 0, "adl": 0})
    fund_start: Decimal | None = None  # the insurance fund after the demo's own top-up
    funding: FundingTotals | None = None  # during the run (None: the service did not say)
    failure: str | None = None  # why the run stopped early (the service stopped answering)
    summary: list[str] = field(default_factory=list)



def _usd(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def _rate(rate: Decimal) -> str:
    """A funding rate (a fraction per interval) as a signed percentage: `+0.0100%`."""
    return f"{rate * 100:+.4f}%"


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """`name{symbol="X"} value` lines of a Prometheus exposition -> {name: {symbol: value}}."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("#") or '{symbol="' not in line:
            continue
        name, _, rest = line.partition('{symbol="')
        symbol, _, value = rest.partition('"} ')
        try:
            out.setdefault(name, {})[symbol] = float(value)
        except ValueError:
            continue
    return out


def funding_totals(metrics: dict[str, dict[str, float]], symbol: str) -> FundingTotals | None:
    """What the scheduler's funding rounds of `symbol` did so far (None: not reported)."""
    rounds = metrics.get("exchange_funding_rounds", {}).get(symbol)
    if rounds is None:
        return None
    rate = metrics.get("exchange_funding_rate", {}).get(symbol)

    def usd(name: str) -> Decimal:
        return Decimal(repr(metrics.get(name, {}).get(symbol, 0.0)))

    return FundingTotals(
        int(rounds),
        usd("exchange_funding_paid_usd"),
        usd("exchange_funding_received_usd"),
        None if rate is None else Decimal(repr(rate)),
    )


def funding_round_line(symbol: str, new: FundingTotals) -> str:
    """Funding rounds seen since the last look (`new` = the difference)."""
    rounds = "a funding round" if new.rounds == 1 else f"{new.rounds} funding rounds"
    who = ""
    if new.rate is not None and new.rate != 0:
        who = " (longs pay shorts)" if new.rate > 0 else " (shorts pay longs)"
    rate = f"rate {_rate(new.rate)}{who}: " if new.rate is not None else ""
    return f"{rounds} of {symbol}, {rate}paid {_usd(new.paid)} USD, received {_usd(new.received)} USD"


def funding_summary(funding: FundingTotals | None, interval_s: int | None) -> str:
    """The summary's funding line: the scheduler's rounds of BTC-PERP during the run."""
    if funding is None:
        return "funding: not reported by this service (no exchange_funding_* in its /metrics)"
    every = f"every {interval_s} s" if interval_s else ""
    if funding.rounds == 0:
        return f"funding: no round of {SYMBOL} during this run" + (f" (rounds {every})" if every else "")
    details = "; ".join(x for x in (every, f"last rate {_rate(funding.rate)}" if funding.rate is not None else "") if x)
    return (
        f"funding: {funding.rounds} round{'s' if funding.rounds > 1 else ''} of {SYMBOL}"
        f"{f' ({details})' if details else ''}: payers paid {_usd(funding.paid)} USD, receivers got "
        f"{_usd(funding.received)} USD ({_usd(funding.paid - funding.received)} USD of rounding to "
        f"the insurance fund)"
    )


def _signed(amount: str | Decimal) -> str:
    """`+12.5`, `-3`, `0`: a change of money, its sign always shown."""
    value = Decimal(amount)
    return f"+{amount}" if value > 0 else str(amount)


def _name(names: dict[int, str], account_id: int) -> str:
    name = names.get(account_id)
    return f"{name} #{account_id}" if name else f"#{account_id}"


# -- what the demo prints (pure functions of the API's JSON, so tests can read them) -------


def book_fill_text(liq: dict[str, Any]) -> str:
    """The fund's book fill of one liquidation, against the bankruptcy price."""
    fill_qty = Decimal(liq["book_fill_qty"])
    avg = liq.get("book_fill_avg_price")
    if fill_qty == 0 or avg is None:
        return "no book fill"
    price, bankruptcy = Decimal(avg), Decimal(liq["bankruptcy_price"])
    long = Decimal(liq["qty"]) > 0  # the fund sells a long into the book, buys back a short
    verb = "sold" if long else "bought"
    if price == bankruptcy:
        return f"book fill {fill_qty} BTC @ {avg} (at the bankruptcy price)"
    gain = (price - bankruptcy) * fill_qty * (1 if long else -1)
    where = "above" if price > bankruptcy else "below"
    approx = gain.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    return (
        f"book fill {fill_qty} BTC @ {avg} ({verb} {abs(price - bankruptcy)} {where} the "
        f"bankruptcy price: about {_signed(approx)} to the fund)"
    )


def liquidation_line(liq: dict[str, Any], names: dict[int, str]) -> str:
    """One liquidation: who, what, at which prices, the book fill, ADL, fund and bad debt."""
    qty = Decimal(liq["qty"])
    return (
        f"  LIQUIDATED {_name(names, liq['account_id'])}: {'long' if qty > 0 else 'short'} "
        f"{abs(qty)} BTC at mark {liq['mark_price']}, equity before {liq['equity_before']}, "
        f"bankruptcy price {liq['bankruptcy_price']} | {book_fill_text(liq)}, ADL "
        f"{liq['adl_qty']} BTC | insurance fund {_signed(liq['insurance_fund_delta'])}, "
        f"bad debt {liq['bad_debt']}"
    )


def adl_line(fill: dict[str, Any], names: dict[int, str]) -> str:
    """One ADL fill: rank, policy, counterparty, quantity, price, haircut."""
    return (
        f"  ADL rank {fill['rank']} ({fill['policy']}): "
        f"{_name(names, fill['counterparty_account_id'])} ({fill['side']}) closes {fill['qty']} "
        f"BTC at {fill['price']} against {_name(names, fill['liquidated_account_id'])}, "
        f"haircut {fill['haircut']} (what it gave up against the mark), realized "
        f"{fill['realized_pnl']}, left {fill['position_after']} BTC"
    )


def top_deleveraged(fills: list[dict[str, Any]], names: dict[int, str], n: int = 3) -> str:
    """The `n` counterparties that ADL closed the most of, with their fills and haircuts."""
    by_account: dict[int, tuple[Decimal, Decimal, int]] = {}
    for fill in fills:
        qty, haircut, count = by_account.get(fill["counterparty_account_id"], (Decimal(0), Decimal(0), 0))
        by_account[fill["counterparty_account_id"]] = (
            qty + Decimal(fill["qty"]),
            haircut + Decimal(fill["haircut"]),
            count + 1,
        )
    ranked = sorted(by_account.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
    if not ranked:
        return "none"
    return ", ".join(
        f"{_name(names, aid)} {qty} BTC in {count} fill{'s' if count > 1 else ''} (haircut {haircut})"
        for aid, (qty, haircut, count) in ranked
    )


def summary_lines(
    report: Report,
    names: dict[int, str],
    fund: dict[str, Any] | None,
    accounts: list[tuple[str, dict[str, Any] | None]],
    funding_interval_s: int | None = None,
) -> list[str]:
    """The summary printed at the end of a run; `fund` and `accounts` are what the service
    answered (None when it no longer did)."""
    liqs, fills = report.liquidations, report.adl_fills
    book_qty = sum((Decimal(x["book_fill_qty"]) for x in liqs), Decimal(0))
    adl_qty = sum((Decimal(x["adl_qty"]) for x in liqs), Decimal(0))
    bad_debt = sum((Decimal(x["bad_debt"]) for x in liqs), Decimal(0))
    fund_delta = sum((Decimal(x["insurance_fund_delta"]) for x in liqs), Decimal(0))
    lines = ["", "=== summary ==="]
    lines.append(
        f"liquidations: {len(liqs)} (book fills {book_qty} BTC, ADL {adl_qty} BTC); "
        f"ADL fills: {len(fills)}"
    )
    if fund is not None and report.fund_start is not None:
        now = Decimal(fund["balance"])
        lines.append(
            f"insurance fund: {report.fund_start} -> {fund['balance']} USD "
            f"({_signed(now - report.fund_start)}); bad debt {bad_debt} this run, "
            f"{fund.get('bad_debt', '?')} in total"
        )
    else:
        lines.append(
            f"insurance fund: {_signed(fund_delta)} USD from the liquidations; bad debt {bad_debt}"
        )
    if report.funding is not None or funding_interval_s is not None:
        lines.append(funding_summary(report.funding, funding_interval_s))
    lines.append(f"most deleveraged (ADL'd) accounts by qty: {top_deleveraged(fills, names)}")
    lines.append(
        f"seen on the WebSocket: {report.ws_notices['liquidations']} liquidation and "
        f"{report.ws_notices['adl']} ADL notices"
    )
    if accounts:
        lines.append('traders (ADL quantile 0..4 = the "ADL light": 4 = first in line for ADL):')
    for name, acct in accounts:
        if acct is None:
            lines.append(f"  {name:4} (the service did not answer)")
            continue
        pos = next((p for p in acct["positions"] if p["symbol"] == SYMBOL), None)
        held = f"{pos['size']} BTC, ADL quantile {pos['adl_quantile']}" if pos else "flat"
        if pos and "funding" in pos:  # funding of the open position, when the service shows it
            held += f", funding {pos['funding']}"
        lines.append(f"  {name:4} wallet {acct['wallet_balance']:>14} equity {acct['equity']:>14}  {held}")
    if report.failure:
        lines.append(f"stopped early: {report.failure}")
    return lines
