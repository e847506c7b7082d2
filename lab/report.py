"""The lab's report: Markdown, CSV and JSON tables, and one self-contained HTML page.

Everything here is text built from integers and fractions (lab/numbers.py), so the same run
gives the same bytes: no timestamps, no paths of the machine, no floats. The PNG plots are
made by plots.py (matplotlib, optional) and only referenced or inlined here.

Files (`write_all`): `report.md`, `report.html`, `metrics.json`, `metrics.csv` (one row
per policy), `winners.csv` (every winner's profit and, per policy, haircut and ADL lots),
`liquidations.csv` (per policy, every liquidation with its shortfall, needed and taken
budgets), `series.csv` (per policy, the state after every step of the path).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from engine.instruments import Instrument
from engine.units import decimal_str_to_e8, e8_to_str
from lab.metrics import PolicyMetrics, Winner, top_winners
from lab.numbers import percent, ratio, short_ratio, usd, usd_short
from lab.run import RunResult
from lab.sybil import SybilResult

FORMAT = "adl-lab/1"


@dataclass
class Report:
    """What a lab run produced, ready to be written."""

    command: str  # how to reproduce it (without --out)
    scenario: dict[str, Any]  # plain JSON values, deterministic
    metrics: list[PolicyMetrics]
    winners: list[Winner]
    results: dict[str, RunResult]
    names: dict[int, str]
    instruments: dict[str, Instrument]
    sybil: SybilResult | None = None
    plots: dict[str, Path] = field(default_factory=dict)  # name -> PNG file, when made
    notes: list[str] = field(default_factory=list)


# == the metrics table, one definition for every format ======================================

Cell = Callable[[PolicyMetrics], str]


def _with_account(atoms: int, name: str | None) -> str:
    return usd_short(atoms) + (f" ({name})" if name else "")


# (label, text) of the main table's rows; metrics_dict has the exact values for machines
ROWS: list[tuple[str, Cell]] = [
    ("liquidations (to ADL)", lambda m: f"{m.liquidations:,} ({m.adl_liquidations:,})"),
    ("ADL fills", lambda m: f"{m.adl_fills:,}"),
    ("needed budget, USD", lambda m: usd_short(m.needed_atoms)),
    ("haircut taken, USD", lambda m: usd_short(m.taken_atoms)),
    ("overshoot (taken - needed), USD", lambda m: usd_short(m.overshoot_atoms)),
    ("counterparties touched", lambda m: f"{m.touched:,}"),
    ("largest haircut, USD (account)", lambda m: _with_account(m.largest_haircut_atoms, m.largest_haircut_account)),
    ("largest haircut's share", lambda m: percent(m.largest_share)),
    ("Gini of winners' haircuts", lambda m: short_ratio(m.gini)),
    ("top winner's surviving profit, USD", lambda m: f"{usd_short(m.top_surviving_atoms)} of {usd_short(m.top_profit_atoms)}"),
    ("PTSR (surviving / needed)", lambda m: short_ratio(m.ptsr)),
    ("bad debt, USD", lambda m: usd_short(m.bad_debt_atoms)),
    ("insurance fund at the end, USD", lambda m: usd_short(m.fund_end_atoms)),
]


def metrics_dict(m: PolicyMetrics) -> dict[str, Any]:
    """Every metric of one policy as JSON values (money as exact USD strings)."""
    return {
        "policy": m.policy,
        "liquidations": m.liquidations,
        "adl_liquidations": m.adl_liquidations,
        "adl_fills": m.adl_fills,
        "adl_lots": m.adl_lots,
        "shortfall_usd": usd(m.shortfall_atoms),
        "needed_usd": usd(m.needed_atoms),
        "taken_usd": usd(m.taken_atoms),
        "overshoot_usd": usd(m.overshoot_atoms),
        "touched": m.touched,
        "winners_touched": m.winners_touched,
        "largest_haircut_usd": usd(m.largest_haircut_atoms),
        "largest_haircut_account": m.largest_haircut_account,
        "largest_share": ratio(m.largest_share),
        "gross_haircut_usd": usd(m.gross_haircut_atoms),
        "gini": ratio(m.gini),
        "top_winner": m.top_winner,
        "top_profit_usd": usd(m.top_profit_atoms),
        "top_haircut_usd": usd(m.top_haircut_atoms),
        "top_surviving_usd": usd(m.top_surviving_atoms),
        "ptsr": ratio(m.ptsr),
        "bad_debt_usd": usd(m.bad_debt_atoms),
        "fund_start_usd": usd(m.fund_start_atoms),
        "fund_end_usd": usd(m.fund_end_atoms),
    }


def sybil_rows(s: SybilResult) -> list[dict[str, Any]]:
    return [{
        "policy": r.policy,
        "haircut_single_usd": usd(r.haircut_single_atoms),
        "haircut_split_usd": usd(r.haircut_split_atoms),
        "change_usd": usd(r.change_atoms),
        "adl_lots_single": r.lots_single,
        "adl_lots_split": r.lots_split,
    } for r in s.rows]


def top_winner_rows(rep: Report) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for policy, res in rep.results.items():
        for i, (w, haircut, surviving) in enumerate(top_winners(res, rep.winners)):
            if len(rows) <= i:
                rows.append({"name": w.name, "profit_usd": usd(w.profit_atoms), "haircut_usd": {}, "surviving_usd": {}})
            rows[i]["haircut_usd"][policy] = usd(haircut)
            rows[i]["surviving_usd"][policy] = usd(surviving)
    return rows


# == JSON and CSV ============================================================================


def to_json(rep: Report) -> str:
    doc = {
        "format": FORMAT,
        "command": rep.command,
        "scenario": rep.scenario,
        "winners": {"count": len(rep.winners), "profit_usd": usd(sum(w.profit_atoms for w in rep.winners))},
        "policies": [metrics_dict(m) for m in rep.metrics],
        "sybil": None if rep.sybil is None else {
            "target": rep.sybil.target, "k": rep.sybil.k, "policies": sybil_rows(rep.sybil),
        },
        "top_winners": top_winner_rows(rep),
        "notes": rep.notes,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def metrics_csv(rep: Report) -> str:
    dicts = [metrics_dict(m) for m in rep.metrics]
    header = list(dicts[0]) if dicts else ["policy"]
    return _csv(header, [["" if d[k] is None else d[k] for k in header] for d in dicts])


def winners_csv(rep: Report) -> str:
    policies = list(rep.results)
    header = ["account", "profit_usd"] + [f"{p}_{col}" for p in policies for col in ("haircut_usd", "adl_lots")]
    rows = []
    for w in rep.winners:
        row: list[Any] = [w.name, usd(w.profit_atoms)]
        for p in policies:
            r = rep.results[p]
            row += [usd(r.haircut.get(w.account_id, 0)), r.adl_lots.get(w.account_id, 0)]
        rows.append(row)
    return _csv(header, rows)


def _price(rep: Report, symbol: str, ticks: int) -> str:
    return e8_to_str(rep.instruments[symbol].price_e8(ticks))


def _seconds(ts_ns: int) -> str:
    return e8_to_str(ts_ns // 10)


def liquidations_csv(rep: Report) -> str:
    header = ["policy", "seq", "offset_s", "account", "symbol", "qty", "mark", "equity_before_usd", "book_fill_lots",
              "adl_lots", "adl_fills", "shortfall_usd", "needed_usd", "taken_usd", "bad_debt_usd"]
    rows = []
    for p, r in rep.results.items():
        for x in r.liquidations:
            inst = rep.instruments[x.symbol]
            rows.append([p, x.seq, _seconds(x.ts_ns), rep.names.get(x.account_id, x.account_id), x.symbol,
                         e8_to_str(inst.qty_e8(x.qty_lots)), _price(rep, x.symbol, x.mark_ticks), usd(x.equity_before_atoms),
                         x.book_fill_lots, x.adl_lots, x.counterparties, usd(x.shortfall_atoms), usd(x.needed_atoms),
                         usd(x.taken_atoms), usd(x.bad_debt_atoms)])
    return _csv(header, rows)


def series_csv(rep: Report) -> str:
    header = ["policy", "offset_s", "symbol", "mark", "fund_usd", "bad_debt_usd", "taken_usd", "needed_usd", "liquidations"]
    rows = [[p, _seconds(s.ts_ns), s.symbol, _price(rep, s.symbol, s.mark_ticks), usd(s.fund_atoms), usd(s.bad_debt_atoms),
             usd(s.taken_atoms), usd(s.needed_atoms), s.liquidations] for p, r in rep.results.items() for s in r.series]
    return _csv(header, rows)


# == for people: Markdown and HTML ===========================================================


def headline(rep: Report) -> list[str]:
    """One sentence per policy, for the top of the report."""
    out = []
    for m in rep.metrics:
        share = percent(m.largest_share)
        out.append(
            f"**{m.policy}**: took {usd_short(m.taken_atoms)} USD for a need of {usd_short(m.needed_atoms)} "
            f"from {m.touched:,} accounts; the largest haircut was {share} of the total; the top winner "
            f"kept {usd_short(m.top_surviving_atoms)} of {usd_short(m.top_profit_atoms)} USD."
        )
    return out


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def metrics_table(rep: Report) -> tuple[list[str], list[list[str]]]:
    """The main table for people: a row per metric, a column per policy."""
    header = ["metric"] + [m.policy for m in rep.metrics]
    return header, [[label] + [text(m) for m in rep.metrics] for label, text in ROWS]


def sybil_table(rep: Report) -> tuple[list[str], list[list[str]]]:
    s = rep.sybil
    assert s is not None
    header = ["policy", "haircut as 1 account", f"as {s.k} accounts", "change", "ADL lots (1 / k)"]
    rows = [[r.policy, usd_short(r.haircut_single_atoms), usd_short(r.haircut_split_atoms),
             _change(r.change_atoms, r.haircut_single_atoms),
             f"{r.lots_single:,} / {r.lots_split:,}"] for r in s.rows]
    return header, rows


def _change(change: int, before: int) -> str:
    if before == 0:
        return ("+" if change > 0 else "") + usd_short(change)
    return ("+" if change >= 0 else "") + percent(Fraction(change, abs(before)))


def winners_table(rep: Report) -> tuple[list[str], list[list[str]]]:
    policies = list(rep.results)
    header = ["winner", "profit without ADL"] + [f"kept under {p}" for p in policies]
    rows = []
    for w in rep.winners[:10]:
        rows.append([w.name, usd_short(w.profit_atoms)] + [
            usd_short(w.profit_atoms - rep.results[p].haircut.get(w.account_id, 0)) for p in policies
        ])
    return header, rows


PLOT_TITLES = {
    "haircuts": "Haircut per winner, largest first",
    "lorenz": "Lorenz curve of the winners' haircuts",
    "top_winners": "Surviving profit of the top 10 winners",
    "fund": "Mark, insurance fund and bad debt along the path",
}


def _short(exact_usd: str) -> str:
    return usd_short(decimal_str_to_e8(exact_usd) or 0)


def _scenario_lines(rep: Report) -> list[tuple[str, str]]:
    s = rep.scenario
    return [
        ("population", str(s["population"]["source"])),
        ("accounts", f"{s['population']['accounts']:,} ({s['population']['longs']:,} long, {s['population']['shorts']:,} short)"),
        ("open interest", f"{_short(s['population']['open_interest_usd'])} USD at the starting marks"),
        ("path", str(s["path"]["description"])),
        ("insurance fund at the start", f"{_short(s['insurance_fund_usd'])} USD"),
        ("book", str(s["book"]["description"])),
        ("winners", f"{len(rep.winners):,} accounts, {usd_short(sum(w.profit_atoms for w in rep.winners))} USD of profit at the stress marks"),
        ("reproduce", f"`{rep.command}`"),
    ]


def markdown_table(rep: Report) -> str:
    """The main table alone, in Markdown (what the CLI prints)."""
    return _md_table(*metrics_table(rep))


def markdown(rep: Report) -> str:
    out = ["# ADL lab report", ""]
    out += [f"- **{k}**: {v}" for k, v in _scenario_lines(rep)]
    out += ["", *[f"- {h}" for h in headline(rep)], "", "## Metrics per policy", ""]
    out += [_md_table(*metrics_table(rep)), ""]
    if rep.sybil is not None:
        out += [f"## Sybil test: {rep.sybil.target} split into {rep.sybil.k} accounts", "", _md_table(*sybil_table(rep)), ""]
    out += ["## Top 10 winners", "", _md_table(*winners_table(rep)), ""]
    if rep.plots:
        out += ["## Plots", ""]
        out += [f"![{PLOT_TITLES.get(n, n)}](plots/{p.name})" for n, p in rep.plots.items()]
        out.append("")
    out += [f"> {n}" for n in rep.notes]
    out += ["", "Definitions of every metric: docs/lab.md in the repository.", ""]
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1d2330}
h1{font-size:1.7em;margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-variant-numeric:tabular-nums}
th,td{padding:.35em .8em;border-bottom:1px solid #e4e6eb;text-align:right} th:first-child,td:first-child{text-align:left}
th{background:#f3f5f8} dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em} dt{font-weight:600}
code{background:#f3f5f8;padding:.1em .3em;border-radius:3px} figure{margin:1.2em 0}
img{max-width:100%} .note{color:#8a5a00} li{margin:.2em 0}
"""

DEFINITIONS = [
    ("winner", "an account whose starting positions are in profit at the path's stress mark (the price farthest from the start)"),
    ("haircut", "the sum of an account's `haircut` in its ADL fills: what closing at the fill's price cost it against the mark"),
    ("needed budget", "per liquidation sent to ADL, its shortfall at the mark that the insurance fund, paying first, could not cover"),
    ("taken", "the sum of all haircuts; overshoot = taken - needed"),
    ("share", "the largest haircut of one account over the sum of all positive haircuts"),
    ("Gini", "of the winners' haircuts (negative as 0, untouched winners as 0): 0 = equal, 1 = one winner pays all"),
    ("PTSR", "the top winner's surviving profit (profit at the stress mark - its haircut) over the needed budget"),
    ("bad debt", "what the insurance fund could not pay during the run"),
]


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline_md(text: str) -> str:
    """Escape, then the two bits of Markdown the headline uses: **bold** and `code`."""
    parts = html.escape(text).split("**")
    text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(rep: Report) -> str:
    """One page, no external resource: the CSS inline, the plots as base64 data URIs."""
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>ADL lab report</title>", f"<style>{CSS}</style></head><body>", "<h1>ADL lab report</h1>", "<dl>"]
    out += [f"<dt>{html.escape(k)}</dt><dd>{_inline_md(v)}</dd>" for k, v in _scenario_lines(rep)]
    out += ["</dl>", "<ul>", *[f"<li>{_inline_md(h)}</li>" for h in headline(rep)], "</ul>"]
    out += ["<h2>Metrics per policy</h2>", _html_table(*metrics_table(rep))]
    if rep.sybil is not None:
        out += [f"<h2>Sybil test: {html.escape(rep.sybil.target)} split into {rep.sybil.k} accounts</h2>",
                _html_table(*sybil_table(rep))]
    out += ["<h2>Top 10 winners</h2>", _html_table(*winners_table(rep))]
    if rep.plots:
        out.append("<h2>Plots</h2>")
        for name, p in rep.plots.items():
            data = base64.b64encode(p.read_bytes()).decode("ascii")
            title = html.escape(PLOT_TITLES.get(name, name))
            out.append(f'<figure><img alt="{title}" src="data:image/png;base64,{data}"></figure>')
    out += [f'<p class="note">{html.escape(n)}</p>' for n in rep.notes]
    out += ["<h2>Definitions</h2>", "<dl>"]
    out += [f"<dt>{html.escape(k)}</dt><dd>{_inline_md(v)}</dd>" for k, v in DEFINITIONS]
    out += ["</dl>", "<p>Units: USD; every amount is exact to 1e-8 USD in metrics.json. Full definitions: docs/lab.md.</p>",
            "</body></html>", ""]
    return "\n".join(out)


def write_all(rep: Report, out: Path) -> list[Path]:
    """Write every file of the report into `out`; returns them."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "metrics.json": to_json(rep),
        "metrics.csv": metrics_csv(rep),
        "winners.csv": winners_csv(rep),
        "liquidations.csv": liquidations_csv(rep),
        "series.csv": series_csv(rep),
        "report.md": markdown(rep),
        "report.html": to_html(rep),
    }
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text)
        written.append(path)
    return written
