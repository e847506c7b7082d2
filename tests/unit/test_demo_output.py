"""What the demo market prints (service/demo.py), from the API's own JSON shapes: the
liquidation line explains the fund's change by its book fill, the ADL line names rank, price,
haircut and policy, and the summary ranks the deleveraged accounts and reports funding (read
from the service's /metrics). Plus the sandbox's admin token, busy-port message, `--crash`
choices and the environment of the service it starts."""

from __future__ import annotations

import socket
from decimal import Decimal
from typing import Any

import pytest

from service import demo, demo_process, demo_report
from service.demo_report import Report

NAMES = {0: "insurance fund", 3: "ben", 4: "cat", 5: "dan", 6: "eve"}


def _liq(**over: Any) -> dict[str, Any]:
    """ben's liquidation of a crash run: long 2.02 BTC, negative equity, a book fill above
    the bankruptcy price (fields as `POST /v1/admin/mark-price` and the WebSocket send them)."""
    base = {
        "account_id": 3,
        "account": 3,
        "symbol": "BTC-PERP",
        "qty": "2.02",
        "bankruptcy_price": "9029.91691015",
        "mark_price": "8990.8",
        "equity_before": "-79.0161585",
        "insurance_fund_delta": "18.7441545",
        "book_fill_qty": "0.05",
        "book_fill_avg_price": "9404.8",
        "adl_qty": "1.97",
        "bad_debt": "0",
    }
    return {**base, **over}


def _fill(**over: Any) -> dict[str, Any]:
    base = {
        "symbol": "BTC-PERP",
        "liquidated_account_id": 3,
        "counterparty_account_id": 5,
        "side": "short",
        "qty": "1.97",
        "price": "9029.91691015",
        "realized_pnl": "1881.513687",
        "position_after": "-0.03",
        "haircut": "77.060313",
        "policy": "queue",
        "rank": 1,
    }
    return {**base, **over}


def test_liquidation_line_when_negative_equity_account_fills_above_bankruptcy_explains_the_fund_gain() -> None:
    line = demo_report.liquidation_line(_liq(), NAMES)
    assert line.startswith("  LIQUIDATED ben #3: long 2.02 BTC at mark 8990.8")
    assert "equity before -79.0161585" in line and "bankruptcy price 9029.91691015" in line
    # (9404.8 - 9029.91691015) * 0.05 = 18.74415...: the fund's gain is the book fill's
    assert "book fill 0.05 BTC @ 9404.8 (sold 374.88308985 above the bankruptcy price: about +18.74 to the fund)" in line
    assert "ADL 1.97 BTC" in line and "insurance fund +18.7441545, bad debt 0" in line


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        (
            {"book_fill_qty": "0", "book_fill_avg_price": None, "adl_qty": "2.02", "insurance_fund_delta": "-30", "bad_debt": "5.5"},
            "no book fill, ADL 2.02 BTC | insurance fund -30, bad debt 5.5",
        ),
        (
            {"book_fill_avg_price": "9000", "insurance_fund_delta": "-1.4958455"},
            "book fill 0.05 BTC @ 9000 (sold 29.91691015 below the bankruptcy price: about -1.50 to the fund)",
        ),
        (  # a short: the fund buys it back, below the bankruptcy price is its gain
            {"qty": "-1", "bankruptcy_price": "10100", "book_fill_qty": "1", "book_fill_avg_price": "10050", "adl_qty": "0"},
            "short 1 BTC at mark 8990.8",
        ),
        (
            {"qty": "-1", "bankruptcy_price": "10100", "book_fill_qty": "1", "book_fill_avg_price": "10050", "adl_qty": "0"},
            "(bought 50 below the bankruptcy price: about +50.00 to the fund)",
        ),
        (
            {"book_fill_avg_price": "9029.91691015"},
            "book fill 0.05 BTC @ 9029.91691015 (at the bankruptcy price)",
        ),
    ],
    ids=["no-book-fill", "long-filled-below", "short-side", "short-filled-below", "at-bankruptcy"],
)
def test_liquidation_line_when_book_fill_varies_names_it_against_the_bankruptcy_price(
    over: dict[str, Any], expected: str
) -> None:
    assert expected in demo_report.liquidation_line(_liq(**over), NAMES)


def test_adl_line_when_printed_shows_rank_policy_price_and_haircut() -> None:
    line = demo_report.adl_line(_fill(policy="capped_pro_rata", rank=2), NAMES)
    assert line.startswith("  ADL rank 2 (capped_pro_rata): dan #5 (short) closes 1.97 BTC at 9029.91691015 against ben #3")
    assert "haircut 77.060313" in line and "left -0.03 BTC" in line


def test_summary_when_run_had_liquidations_counts_them_and_ranks_deleveraged_accounts_by_qty() -> None:
    report = Report(
        liquidations=[_liq(), _liq(account_id=4, qty="2", book_fill_qty="0.1", adl_qty="1.9", insurance_fund_delta="-7.255755")],
        adl_fills=[
            _fill(counterparty_account_id=6, qty="1", haircut="20"),
            _fill(),
            _fill(counterparty_account_id=6, qty="0.9", haircut="36.634345"),
        ],
        fund_start=Decimal("200"),
    )
    report.ws_notices.update(liquidations=2, adl=3)
    accounts = [("dan", {"wallet_balance": "6871.45", "equity": "6946.25", "positions": [{"symbol": "BTC-PERP", "size": "-0.05", "adl_quantile": 3}]}),
                ("ben", {"wallet_balance": "0", "equity": "0", "positions": []})]
    lines = demo_report.summary_lines(report, NAMES, {"balance": "211.4883995", "bad_debt": "0"}, accounts)
    text = "\n".join(lines)
    assert "liquidations: 2 (book fills 0.15 BTC, ADL 3.87 BTC); ADL fills: 3" in text
    assert "insurance fund: 200 -> 211.4883995 USD (+11.4883995); bad debt 0 this run, 0 in total" in text
    # by quantity, not by number of fills: dan's 1.97 BTC in one fill before eve's 1.9 in two
    assert "by qty: dan #5 1.97 BTC in 1 fill (haircut 77.060313), eve #6 1.9 BTC in 2 fills (haircut 56.634345)" in text
    assert "seen on the WebSocket: 2 liquidation and 3 ADL notices" in text
    assert 'ADL quantile 0..4 = the "ADL light"' in text
    assert "-0.05 BTC, ADL quantile 3" in text and "flat" in text


def test_summary_when_service_stopped_answering_still_reports_the_run_from_its_own_record() -> None:
    report = Report(liquidations=[_liq(bad_debt="2.5")], failure="the service stopped answering")
    text = "\n".join(demo_report.summary_lines(report, NAMES, None, [("ben", None)]))
    assert "insurance fund: +18.7441545 USD from the liquidations; bad debt 2.5" in text
    assert "ben  (the service did not answer)" in text
    assert "stopped early: the service stopped answering" in text
    assert "by qty: none" in text


@pytest.mark.parametrize(
    ("host", "given", "expected"),
    [
        ("127.0.0.1", None, "sandbox-admin-token"),
        ("localhost", None, "sandbox-admin-token"),
        ("::1", None, "sandbox-admin-token"),
        ("127.0.0.1", "my-own-admin-token-1234", "my-own-admin-token-1234"),
        ("0.0.0.0", "my-own-admin-token-1234", "my-own-admin-token-1234"),
    ],
    ids=["loopback", "localhost", "ipv6-loopback", "given", "given-any-interface"],
)
def test_admin_token_when_chosen_is_the_sandbox_one_only_on_loopback_without_a_given_one(
    host: str, given: str | None, expected: str
) -> None:
    assert demo_process.admin_token_for(host, given) == expected


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "exchange.example"])
def test_admin_token_when_bound_beyond_loopback_without_a_given_one_is_random(host: str) -> None:
    first, second = demo_process.admin_token_for(host, None), demo_process.admin_token_for(host, None)
    assert first != second and demo_process.SANDBOX_ADMIN_TOKEN not in (first, second)
    assert len(first) >= 16  # what the service accepts (SPEC §10a)


@pytest.mark.parametrize("under_make", [True, False], ids=["make", "python"])
def test_port_busy_message_when_port_is_listened_on_names_a_free_port_and_the_command(
    under_make: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if under_make:
        monkeypatch.setenv("MAKELEVEL", "1")
    else:
        monkeypatch.delenv("MAKELEVEL", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        error = demo_process.bind_error("127.0.0.1", port)
        assert error is not None
        message = demo_process.port_busy_message("127.0.0.1", port, error)
    assert "\n" not in message
    assert message.startswith(f"error: port {port} on 127.0.0.1 is in use (another sandbox?); run ")
    fix = message.rsplit("run ", 1)[1]
    if under_make:
        assert fix.startswith("make sandbox PORT=")
    else:
        assert fix.startswith("python -m service.demo --port ")
    suggested = int(fix.rsplit("=" if under_make else " ", 1)[1])
    assert suggested > port


# -- the sandbox's feed and funding ------------------------------------------------------------

METRICS = """# HELP exchange_funding_rounds Funding rounds the scheduler applied since the service started
# TYPE exchange_funding_rounds gauge
exchange_funding_rounds{symbol="BTC-PERP"} 3.0
exchange_funding_rounds{symbol="ETH-PERP"} 3.0
exchange_funding_paid_usd{symbol="BTC-PERP"} 17.28000003
exchange_funding_received_usd{symbol="BTC-PERP"} 17.28
exchange_funding_rate{symbol="BTC-PERP"} -0.0002
exchange_index_price{symbol="BTC-PERP"} 10003.6
exchange_trades_total{symbol="BTC-PERP"} 12.0
"""


def test_funding_totals_when_read_from_metrics_give_rounds_money_and_the_last_rate() -> None:
    metrics = demo_report.parse_metrics(METRICS)
    assert metrics["exchange_index_price"] == {"BTC-PERP": 10003.6}
    got = demo_report.funding_totals(metrics, "BTC-PERP")
    assert got == demo_report.FundingTotals(3, Decimal("17.28000003"), Decimal("17.28"), Decimal("-0.0002"))
    assert demo_report.funding_totals(demo_report.parse_metrics("exchange_trades_total 1.0\n"), "BTC-PERP") is None
    start = demo_report.FundingTotals(1, Decimal("5.76"), Decimal("5.76"), Decimal("0.0001"))
    assert got.since(start) == demo_report.FundingTotals(2, Decimal("11.52000003"), Decimal("11.52"), Decimal("-0.0002"))


@pytest.mark.parametrize(
    ("totals", "interval_s", "expected"),
    [
        (None, None, "funding: not reported by this service (no exchange_funding_* in its /metrics)"),
        (demo_report.FundingTotals(), 60, "funding: no round of BTC-PERP during this run (rounds every 60 s)"),
        (
            demo_report.FundingTotals(2, Decimal("11.52000003"), Decimal("11.52"), Decimal("0.0001")),
            60,
            "funding: 2 rounds of BTC-PERP (every 60 s; last rate +0.0100%): payers paid 11.52 USD, "
            "receivers got 11.52 USD (0.00 USD of rounding to the insurance fund)",
        ),
        (
            demo_report.FundingTotals(1, Decimal("1"), Decimal("0.99"), None),
            None,
            "funding: 1 round of BTC-PERP: payers paid 1.00 USD, receivers got 0.99 USD (0.01 USD of "
            "rounding to the insurance fund)",
        ),
    ],
    ids=["not-reported", "no-round", "rounds", "no-rate-no-interval"],
)
def test_funding_summary_when_printed_says_rounds_paid_received_and_the_rounding(
    totals: demo_report.FundingTotals | None, interval_s: int | None, expected: str
) -> None:
    assert demo_report.funding_summary(totals, interval_s) == expected


def test_funding_round_line_when_the_rate_is_negative_says_shorts_pay_longs() -> None:
    line = demo_report.funding_round_line("BTC-PERP", demo_report.FundingTotals(1, Decimal("2"), Decimal("2"), Decimal("-0.0002")))
    assert line == "a funding round of BTC-PERP, rate -0.0200% (shorts pay longs): paid 2.00 USD, received 2.00 USD"


def test_summary_when_funding_was_seen_reports_it_after_the_insurance_fund() -> None:
    report = Report(fund_start=Decimal("200"), funding=demo_report.FundingTotals(1, Decimal("1"), Decimal("1"), Decimal("0.0001")))
    accounts = [("ann", {"wallet_balance": "4999", "equity": "4990", "positions": [
        {"symbol": "BTC-PERP", "size": "1.75", "adl_quantile": 2, "funding": "-1.75"}]})]
    lines = demo_report.summary_lines(report, NAMES, {"balance": "200", "bad_debt": "0"}, accounts, 60)
    assert lines[3].startswith("insurance fund: ") and lines[4].startswith("funding: 1 round of BTC-PERP (every 60 s;")
    assert lines[-1].endswith("1.75 BTC, ADL quantile 2, funding -1.75")


@pytest.mark.parametrize(
    ("given", "key"),
    [("25%", "25%"), ("25", "25%"), ("25.0%", "25%"), ("10%", "10%"), (" 10 ", "10%")],
    ids=["25%", "25", "25.0%", "10%", "spaces"],
)
def test_crash_option_when_a_shipped_depth_picks_its_feed(given: str, key: str) -> None:
    assert demo._crash(given) == key
    assert demo.CRASH_FEEDS[key].path.is_file()


@pytest.mark.parametrize("given", ["30%", "0", "abc", "", "100%"], ids=["30%", "zero", "word", "empty", "100%"])
def test_crash_option_when_not_a_shipped_depth_names_the_choices(given: str) -> None:
    with pytest.raises(demo.argparse.ArgumentTypeError) as err:
        demo._crash(given)
    assert "choose 25% (feeds/crash25.csv: 30 s calm, then a 25% fall" in str(err.value)
    assert "10% (feeds/flash10.csv: 30 s calm, then a 10% flash crash" in str(err.value)


def test_sandbox_env_when_the_demo_starts_its_service_names_config_feed_speed_and_loop() -> None:
    calm = demo_process.sandbox_env(demo_process.CALM_FEED, 1.0)
    assert calm == {
        "EXCHANGE_CONFIG": str(demo_process.SANDBOX_CONFIG),
        "EXCHANGE_PRICE_FEED": str(demo_process.CALM_FEED),
        "EXCHANGE_FEED_SPEED": "1.0",
        "EXCHANGE_FEED_LOOP": "1",
    }
    crash = demo_process.sandbox_env(demo.CRASH_FEEDS["25%"].path, 20.0)
    assert crash["EXCHANGE_FEED_LOOP"] == "0" and crash["EXCHANGE_FEED_SPEED"] == "20.0"
