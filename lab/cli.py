"""`python -m lab`: build a population and a price path, run every ADL policy, write the report.

    python -m lab --seed 1 --accounts 2000 --crash 25% --out lab-report/
    python -m lab --population accounts.json --path feeds/crash25.csv --policies queue,pro_rata
    python -m lab --seed 7 --crash 12% --steps 6 --fund 250000 --sybil-k 10

The order of a run: the path's starting marks (the CSV's first prices, or 10,000 / 2,000
USD, `--start-price`), the population (file or synthetic), the starting state (built once),
the winners (from that state and the path), one run per policy from a copy of it, the sybil
population and its runs, then the files. Money and ratios in the files are exact decimal
strings; wall times are printed, never written into them. Exit status: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from engine import commands as c
from engine.instruments import Instrument
from engine.units import E8, PPM, decimal_str_to_e8, div_half_even, e8_to_str
from lab import metrics, population, report, sybil
from lab.numbers import usd, usd_short
from lab.paths import PathError, PricePath, crash, load_csv, parse_move_ppm
from lab.population import Population, PopulationError, SyntheticParams
from lab.progress import Progress
from lab.run import RunError, RunResult, run_policy, snapshot
from lab.scenario import BookSpec, BuildError, FundSpec, Scenario, build, lab_instruments

DEFAULT_START_USD = {"BTC-PERP": "10000", "ETH-PERP": "2000"}
PLOTS_HINT = "plots need matplotlib: pip install -e '.[lab]'"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lab",
        description="The ADL lab: one crash through the real engine, once per ADL policy, from the same state.",
        epilog="Metrics and file formats: docs/lab.md.",
    )
    src = p.add_argument_group("population (a file, or a seeded synthetic one)")
    src.add_argument("--population", type=Path, metavar="FILE", help="accounts and positions, .json or .csv")
    src.add_argument("--seed", type=int, default=1, help="synthetic population seed (default 1)")
    src.add_argument("--accounts", type=int, default=2000, help="synthetic traders (default 2000)")
    src.add_argument("--symbol", default="BTC-PERP", help="synthetic population's symbol (default BTC-PERP)")
    src.add_argument("--size-alpha", default="1.3", help="Pareto tail index of notionals (default 1.3; smaller = heavier)")
    src.add_argument("--min-size", default="1000", help="smallest notional, USD (default 1000)")
    src.add_argument("--max-size", default="5000000", help="largest notional, USD (default 5000000)")
    src.add_argument("--leverage-median", default="5", help="median effective leverage, clipped to 2..50 (default 5)")
    src.add_argument("--entry-spread", default="3%", help="entry prices within this of the mark (default 3%%)")
    path = p.add_argument_group("price path (one move, or a feed CSV)")
    move = path.add_mutually_exclusive_group()
    move.add_argument("--crash", default=None, metavar="P%", help="every symbol falls by P (default 25%%; negative: a rally)")
    move.add_argument("--path", type=Path, metavar="FILE.csv", help="offset_s,symbol,price rows (feeds/*.csv)")
    path.add_argument("--steps", type=int, default=1, help="--crash in this many equal moves, 1 s apart (default 1)")
    path.add_argument("--start-price", default=None, metavar="USD", help="starting mark of --symbol (default 10000 BTC, 2000 ETH)")
    path.add_argument("--mark-source", choices=c.MARK_SOURCES, default=c.MARK_FROM_ADMIN,
                      help="admin: the path sets the mark; index: it sets the index and the mark follows (SPEC §12)")
    mkt = p.add_argument_group("market")
    mkt.add_argument("--fund", default="1%", help="insurance fund: USD, or P%% of the open interest (default 1%%)")
    mkt.add_argument("--book-levels", type=int, default=10, help="market maker's levels per side (default 10; 0: no book)")
    mkt.add_argument("--book-step", default="0.5%", help="between levels (default 0.5%%)")
    mkt.add_argument("--book-depth", default="0.05%", help="lots per level, of the open interest (default 0.05%%)")
    run = p.add_argument_group("runs and report")
    run.add_argument("--policies", default=None, help=f"comma-separated, from {','.join(c.ADL_POLICIES)} (default all)")
    run.add_argument("--sybil-k", type=int, default=5, help="split the top winner into k accounts (default 5; 0: off)")
    run.add_argument("--out", type=Path, default=Path("lab-report"), help="report directory (default lab-report/)")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p.parse_args(argv)


class InputError(ValueError):
    """A bad flag value, said in words (exit status 2)."""


def parse_ppm(text: str, what: str) -> int:
    """"0.5%" -> 5000, "0.005" -> 5000: a fraction in parts per million, >= 0."""
    t = text.strip()
    pct = t.endswith("%")
    e8 = decimal_str_to_e8(t[:-1] if pct else t)
    if e8 is None or e8 < 0:
        raise InputError(f"{what}: {text!r} is not a fraction (e.g. 0.5% or 0.005)")
    return div_half_even(e8 * (10_000 if pct else PPM), E8)


def parse_usd(text: str, what: str) -> int:
    e8 = decimal_str_to_e8(text.strip())
    if e8 is None or e8 < 0:
        raise InputError(f"{what}: {text!r} is not a USD amount")
    return e8


def _positive_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a number") from None
    if not value > 0:
        raise InputError(f"{what} must be positive")
    return value


def choose_policies(text: str | None) -> list[str]:
    """The policies to run: `text` split on commas, or every one the engine has."""
    if text is None:
        return list(c.ADL_POLICIES)
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in c.ADL_POLICIES]
    if unknown or not chosen:
        raise InputError(f"unknown policy {', '.join(unknown) or '(none)'}; the engine has {', '.join(c.ADL_POLICIES)}")
    return list(dict.fromkeys(chosen))


def start_marks(args: argparse.Namespace, instruments: dict[str, Instrument]) -> dict[str, int]:
    marks = {}
    for sym, text in DEFAULT_START_USD.items():
        if args.start_price is not None and sym == args.symbol:
            text = args.start_price
        e8 = decimal_str_to_e8(text)
        ticks = None if e8 is None else instruments[sym].ticks_from_e8(e8)
        if ticks is None or ticks <= 0:
            raise InputError(f"--start-price {text!r} is not a positive price on the {sym} tick grid")
        marks[sym] = ticks
    return marks


def make_inputs(args: argparse.Namespace, instruments: dict[str, Instrument]) -> tuple[Population, PricePath]:
    """The population and the path the flags describe."""
    if args.symbol not in instruments:
        raise InputError(f"--symbol: unknown symbol {args.symbol!r}; known: {', '.join(sorted(instruments))}")
    path: PricePath | None = None
    if args.path is not None:
        path = load_csv(args.path, instruments)
        marks = path.start_marks()
    else:
        marks = start_marks(args, instruments)
    if args.population is not None:
        if path is not None:
            pop = population.load(args.population, instruments, marks)
        else:  # the file's own marks, unless --start-price says otherwise
            chosen = {args.symbol: marks[args.symbol]} if args.start_price is not None else {}
            pop = population.load(args.population, instruments, chosen, fallback=marks)
    else:
        if args.symbol not in marks:
            raise InputError(f"the path has no prices for {args.symbol}")
        params = SyntheticParams(
            alpha=_positive_float(args.size_alpha, "--size-alpha"),
            min_usd=int(parse_usd(args.min_size, "--min-size") // E8),
            max_usd=int(parse_usd(args.max_size, "--max-size") // E8),
            leverage_median=_positive_float(args.leverage_median, "--leverage-median"),
            entry_spread=parse_ppm(args.entry_spread, "--entry-spread") / PPM,
        )
        if not 0 < params.min_usd <= params.max_usd:
            raise InputError("--min-size must be positive and at most --max-size")
        pop = population.synthetic(args.seed, args.accounts, args.symbol, marks[args.symbol], instruments[args.symbol], params)
    if path is None:
        path = crash(pop.marks, parse_move_ppm(args.crash or "25%"), args.steps)
    missing = [s for s in pop.symbols() if s not in path.start_marks()]
    if missing:
        raise InputError(f"the path has no prices for {', '.join(missing)}")
    return pop, path


def reproduce_command(args: argparse.Namespace, policies: list[str]) -> str:
    """The command line of this run, without --out (so it is the same wherever it ran)."""
    parts = ["python -m lab"]
    if args.population is not None:
        parts.append(f"--population {args.population.name}")
    else:
        parts.append(f"--seed {args.seed} --accounts {args.accounts}")
        defaults = parse_args([])
        for flag in ("symbol", "size_alpha", "min_size", "max_size", "leverage_median", "entry_spread"):
            if getattr(args, flag) != getattr(defaults, flag):
                parts.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}")
    if args.path is not None:
        parts.append(f"--path {args.path.name}")
    else:
        parts.append(f"--crash {args.crash or '25%'}" + (f" --steps {args.steps}" if args.steps != 1 else ""))
    if args.start_price is not None:
        parts.append(f"--start-price {args.start_price}")
    if args.mark_source != c.MARK_FROM_ADMIN:
        parts.append(f"--mark-source {args.mark_source}")
    parts.append(f"--fund {args.fund} --book-levels {args.book_levels} --book-step {args.book_step} --book-depth {args.book_depth}")
    parts.append(f"--policies {','.join(policies)} --sybil-k {args.sybil_k}")
    return " ".join(parts)


def scenario_dict(args: argparse.Namespace, sc: Scenario, path: PricePath, policies: list[str],
                  instruments: dict[str, Instrument]) -> dict[str, Any]:
    pop = sc.population
    stress = path.stress_marks(pop.marks)

    def prices(marks: dict[str, int]) -> dict[str, str]:
        return {s: e8_to_str(instruments[s].price_e8(m)) for s, m in sorted(marks.items())}

    book = sc.book
    return {
        "seed": None if args.population is not None else args.seed,
        "population": {
            "source": pop.source,
            "accounts": len(pop.accounts),
            "longs": sum(1 for a in pop.accounts if any(p.size_lots > 0 for p in a.positions)),
            "shorts": sum(1 for a in pop.accounts if any(p.size_lots < 0 for p in a.positions)),
            "symbols": pop.symbols(),
            "open_interest_usd": usd(sc.open_interest_atoms),
            "net_lots": {s: pop.net_lots(s) for s in pop.symbols()},
        },
        "path": {"description": path.description, "steps": len(path.steps), "start_marks": prices(pop.marks),
                 "stress_marks": prices(stress)},
        "mark_source": args.mark_source,
        "insurance_fund_usd": usd(sc.fund_atoms),
        "book": {
            "levels": book.levels, "step_ppm": book.step_ppm, "depth_ppm": book.depth_ppm,
            "lots_per_level": dict(sorted(sc.book_lots.items())),
            "description": (f"{book.levels} levels a side, {args.book_step} apart, {args.book_depth} of the open interest each"
                            if book.levels else "none"),
        },
        "policies": policies,
        "sybil_k": args.sybil_k,
        "start_state_hash": sc.engine.state_hash(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    try:
        instruments = lab_instruments(args.mark_source)
        policies = choose_policies(args.policies)
        pop, path = make_inputs(args, instruments)
        fund_text = args.fund.strip()
        fund = FundSpec(oi_ppm=parse_ppm(fund_text, "--fund")) if fund_text.endswith("%") else FundSpec(atoms=parse_usd(fund_text, "--fund"))
        book = BookSpec(max(0, args.book_levels), parse_ppm(args.book_step, "--book-step"), parse_ppm(args.book_depth, "--book-depth"))
        if args.sybil_k == 1 or args.sybil_k < 0:
            raise InputError("--sybil-k is 0 (off) or at least 2")
    except (InputError, PathError, PopulationError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sybil_on = args.sybil_k >= 2
    bar = Progress((1 + len(policies)) * (2 if sybil_on else 1))
    timings: list[tuple[str, float]] = []
    try:
        t0 = time.perf_counter()
        n_positions = sum(len(a.positions) for a in pop.accounts)
        sc = build(pop, instruments, fund, book, bar.phase(f"building {len(pop.accounts):,} accounts", n_positions))
        state = snapshot(sc)
        timings.append((f"build ({len(pop.accounts):,} accounts)", time.perf_counter() - t0))
        winners = metrics.find_winners(sc.engine, path.stress_marks(pop.marks), sc.names)
        results: dict[str, RunResult] = {}
        for p in policies:
            results[p] = run_policy(sc, state, path, p, bar.phase(f"{p}: {len(path.steps):,} steps", len(path.steps)))
            timings.append((p, results[p].seconds))
        table = [metrics.compute(results[p], winners, sc.names) for p in policies]
        syb = None
        if sybil_on and winners:
            t0 = time.perf_counter()
            target = winners[0].name
            split_sc, split_results, k = sybil.run_split(
                pop, target, args.sybil_k, instruments, sc.fund_atoms, book, path, policies, bar.phase,
            )
            syb = sybil.compare(target, k, sc.ids[target], results, split_sc, split_results)
            timings.append((f"sybil ({target} in {k})", time.perf_counter() - t0))
    except (BuildError, RunError) as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    bar.close()
    t0 = time.perf_counter()
    rep = report.Report(reproduce_command(args, policies), scenario_dict(args, sc, path, policies, instruments), table,
                        winners, results, sc.names, instruments, syb)
    if any(pop.net_lots(s) for s in pop.symbols()):
        rep.notes.append("longs and shorts of the population do not add up: the market maker holds the difference")
    refused = {p: r.maker_refused for p, r in results.items() if r.maker_refused}
    if refused:
        rep.notes.append("the engine refused some of the market maker's quotes: " + ", ".join(f"{p} {n}" for p, n in refused.items()))
    plots_msg = None
    if not args.no_plots:
        try:
            from lab import plots
        except ImportError:
            plots_msg = PLOTS_HINT
        else:
            rep.plots = plots.make_plots(rep, args.out / "plots")
    written = report.write_all(rep, args.out)
    population.write_csv(pop, args.out / "population.csv", instruments)
    timings.append(("report", time.perf_counter() - t0))
    print(report.markdown_table(rep))
    print()
    print(f"{len(pop.accounts):,} accounts, {path.description}, insurance fund {usd_short(sc.fund_atoms)} USD, "
          f"{len(winners):,} winners")
    print("time: " + ", ".join(f"{name} {s:.2f} s" for name, s in timings) + f"; total {time.perf_counter() - t_start:.2f} s")
    print(f"wrote {args.out}/: " + ", ".join(p.name for p in written) + ", population.csv"
          + (f", plots/ ({len(rep.plots)} PNG)" if rep.plots else ""))
    if plots_msg:
        print(f"no plots: {plots_msg}")
    return 0
