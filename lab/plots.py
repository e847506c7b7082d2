"""PNG plots of a lab report; the only module that imports matplotlib (the `lab` extra).

`make_plots(report, out_dir)` writes four figures into `out_dir` and returns them by name:

- `haircuts`: each winner's haircut, largest first (log-log: the queue's few large
  haircuts against pro-rata's long tail);
- `lorenz`: the Lorenz curve of the winners' haircuts (share of winners, poorest first,
  against their share of all haircuts), with each policy's Gini in the legend;
- `top_winners`: the profit of the ten largest winners without ADL, and what each policy
  left them;
- `fund`: the mark, the insurance fund and the bad debt after every step of the path.

Every float drawn is made here from the report's integers (matplotlib needs floats).
Figures are made with `matplotlib.figure.Figure` (no pyplot, no global state, no GUI
backend: PNGs go through Agg), fixed sizes, no software/date metadata in the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from lab.metrics import winner_haircuts
from lab.numbers import short_ratio
from lab.report import Report

COLORS = ["#d1495b", "#00798c", "#edae49", "#66a182", "#30638e", "#8d6a9f"]
DPI = 110
USD = 1e8


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _usd_axis(ax: Any) -> None:
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.0f}" if abs(v) >= 0.5 else "$0"))


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def haircuts(rep: Report, path: Path) -> Path:
    fig = Figure(figsize=(8, 4.6))
    ax = fig.subplots()
    drawn = 0
    for i, (policy, res) in enumerate(rep.results.items()):
        values = sorted((h for h in winner_haircuts(res, rep.winners) if h > 0), reverse=True)
        if values:
            drawn += 1
            ax.plot(range(1, len(values) + 1), [v / USD for v in values], color=_color(i), lw=2,
                    label=f"{policy}: {len(values):,} of {len(rep.winners):,} winners")
    if not drawn:
        ax.text(0.5, 0.5, "no winner lost anything to ADL", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Haircut per winner, largest first")
        return _save(fig, path)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("winner, by haircut (1 = largest)")
    ax.set_ylabel("haircut, USD")
    ax.set_title("Haircut per winner, largest first")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(frameon=False)
    return _save(fig, path)


def lorenz(rep: Report, path: Path) -> Path:
    fig = Figure(figsize=(5.6, 5.2))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="equal haircuts")
    gini = {m.policy: m.gini for m in rep.metrics}
    for i, (policy, res) in enumerate(rep.results.items()):
        values = sorted(winner_haircuts(res, rep.winners))
        total = sum(values)
        if not values or total <= 0:
            continue
        xs, ys, run = [0.0], [0.0], 0
        n = len(values)
        stride = max(1, n // 2000)  # at most ~2000 points a curve
        for j, v in enumerate(values, 1):
            run += v
            if j % stride == 0 or j == n:
                xs.append(j / n)
                ys.append(run / total)
        ax.plot(xs, ys, color=_color(i), lw=2, label=f"{policy} (Gini {short_ratio(gini.get(policy))})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("share of winners (smallest haircut first)")
    ax.set_ylabel("share of all haircuts")
    ax.set_title("Lorenz curve of the winners' haircuts")
    ax.legend(frameon=False, loc="upper left")
    return _save(fig, path)


def top_winners(rep: Report, path: Path) -> Path:
    top = rep.winners[:10]
    policies = list(rep.results)
    fig = Figure(figsize=(9, 4.6))
    ax = fig.subplots()
    width = 0.8 / (len(policies) + 1)
    xs = range(len(top))
    ax.bar([x - 0.4 + width / 2 for x in xs], [w.profit_atoms / USD for w in top], width, color="#c8ccd4", label="without ADL")
    for i, p in enumerate(policies):
        res = rep.results[p]
        kept = [(w.profit_atoms - res.haircut.get(w.account_id, 0)) / USD for w in top]
        ax.bar([x - 0.4 + width * (i + 1.5) for x in xs], kept, width, color=_color(i), label=p)
    ax.set_xticks(list(xs), [w.name for w in top], rotation=30, ha="right")
    ax.axhline(0, color="#333", lw=0.8)
    _usd_axis(ax)
    ax.set_ylabel("profit at the stress mark, USD")
    ax.set_title("Surviving profit of the top 10 winners")
    ax.legend(frameon=False, ncols=min(4, len(policies) + 1))
    return _save(fig, path)


def fund(rep: Report, path: Path) -> Path:
    fig = Figure(figsize=(9, 7.4))
    ax_mark, ax_fund, ax_debt = fig.subplots(3, 1, sharex=True)
    series = {p: r.series for p, r in rep.results.items() if r.series}
    end = max((s[-1].ts_ns for s in series.values()), default=0) / 1e9
    pad = max(1.0, end * 0.05)  # the last level, drawn for a while after the last step

    def xy(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
        return [x for x, _ in points] + [end + pad], [y for _, y in points] + [points[-1][1]]

    first = next(iter(series.values()), [])
    for sym in sorted({s.symbol for s in first}):
        inst = rep.instruments[sym]
        marks = [(s.ts_ns / 1e9, inst.price_e8(s.mark_ticks) / 1e8) for s in first if s.symbol == sym]
        ax_mark.plot(*xy(marks), drawstyle="steps-post", lw=1.6, label=sym)
    ax_mark.set_ylabel("mark, USD")
    ax_mark.legend(frameon=False)
    for i, (policy, pts) in enumerate(series.items()):
        lw = max(1.2, 3.4 - 0.9 * i)  # wider first: policies that coincide stay visible
        ax_fund.plot(*xy([(s.ts_ns / 1e9, s.fund_atoms / USD) for s in pts]), drawstyle="steps-post",
                     color=_color(i), lw=lw, label=policy)
        ax_debt.plot(*xy([(s.ts_ns / 1e9, s.bad_debt_atoms / USD) for s in pts]), drawstyle="steps-post",
                     color=_color(i), lw=lw, label=policy)
    top = max((s.bad_debt_atoms for pts in series.values() for s in pts), default=0) / USD
    if top > 0:
        ax_debt.set_ylim(0, top * 1.1)
    else:
        ax_debt.set_ylim(-0.05, 1)
        ax_debt.set_yticks([0])
        ax_debt.text(0.5, 0.5, "no bad debt in any policy", ha="center", va="center", transform=ax_debt.transAxes)
    ax_fund.set_ylabel("insurance fund")
    ax_debt.set_ylabel("bad debt (cumulative)")
    ax_debt.set_xlabel("seconds into the path")
    for ax in (ax_fund, ax_debt):
        _usd_axis(ax)
        ax.legend(frameon=False)
    for ax in (ax_mark, ax_fund, ax_debt):
        ax.grid(True, alpha=0.3)
    ax_mark.set_title("Mark, insurance fund and bad debt along the path")
    return _save(fig, path)


def make_plots(rep: Report, out_dir: Path) -> dict[str, Path]:
    """Draw every plot into `out_dir`; returns {name: file}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "haircuts": haircuts(rep, out_dir / "haircuts.png"),
        "lorenz": lorenz(rep, out_dir / "lorenz.png"),
        "top_winners": top_winners(rep, out_dir / "top_winners.png"),
        "fund": fund(rep, out_dir / "fund.png"),
    }
