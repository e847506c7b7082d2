"""Populations: who holds what when the path starts (accounts, positions, wallets).

A `Population` is a list of `AccountSpec`s, each with a name, a wallet balance (atoms, at
the start, after opening its positions, fees left out) and signed positions with their
entry prices, plus the starting mark of every symbol. scenario.py turns it into engine
state. Three sources:

- `synthetic(...)`: seeded, heavy-tailed. Each trader is long or short (a fair coin), with
  a notional drawn from a Pareto law (`alpha`, from `min_usd`, capped at `max_usd`), an
  effective leverage at the starting mark drawn from a lognormal law (median
  `leverage_median`, clipped to 2..50 and to what the instrument's tier allows for that
  notional), and an entry price within `entry_spread` of the mark (normal in log price,
  clipped). The wallet is then what makes equity at the starting mark equal notional /
  leverage (never below 0: an account far in profit can be less leveraged than drawn).
  One last account (`balance`) takes the opposite of the net position, at the mark, so
  longs and shorts add up to zero without the market maker holding inventory.
- `load(path)`: a JSON or CSV file (formats in docs/lab.md); each account gives either its
  `wallet` (USD) or its `leverage` (effective, at the starting marks).
- `split(population, name, k)`: the sybil copy, one account replaced by k that hold the
  same total (sybil.py).

All quantities are integers in engine units (lots, ticks, atoms); the only floats are the
generator's draws, each turned into an integer once.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from engine.instruments import Instrument
from engine.units import E8, decimal_str_to_e8, e8_to_str

MIN_LEVERAGE = 2
MAX_LEVERAGE = 50
BALANCE_NAME = "balance"


class PopulationError(ValueError):
    """A population file that cannot be used, with the reason (and the line or account)."""


@dataclass(frozen=True, slots=True)
class PositionSpec:
    symbol: str
    size_lots: int  # signed: + long, - short
    entry_ticks: int


@dataclass(frozen=True, slots=True)
class AccountSpec:
    name: str
    wallet_atoms: int
    positions: tuple[PositionSpec, ...]


@dataclass(frozen=True, slots=True)
class Population:
    marks: dict[str, int]  # starting mark per symbol, ticks
    accounts: tuple[AccountSpec, ...]
    source: str = "synthetic"
    notes: tuple[str, ...] = field(default=())

    def symbols(self) -> list[str]:
        """The symbols anyone holds, sorted."""
        return sorted({p.symbol for a in self.accounts for p in a.positions})

    def net_lots(self, symbol: str) -> int:
        """Sum of the signed sizes in `symbol` (0 for a balanced population)."""
        return sum(p.size_lots for a in self.accounts for p in a.positions if p.symbol == symbol)

    def open_interest_lots(self, symbol: str) -> int:
        """Lots held on the larger side of `symbol` (the market maker holds the difference)."""
        sizes = [p.size_lots for a in self.accounts for p in a.positions if p.symbol == symbol]
        return max(sum(q for q in sizes if q > 0), -sum(q for q in sizes if q < 0))


@dataclass(frozen=True, slots=True)
class SyntheticParams:
    """The knobs of `synthetic` (CLI flags of the same names)."""

    alpha: float = 1.3  # Pareto tail index of notionals: smaller = heavier tail
    min_usd: int = 1_000
    max_usd: int = 5_000_000  # half the last maintenance tier: the engine caps a position there
    leverage_median: float = 5.0
    leverage_sigma: float = 0.8  # of log leverage
    entry_spread: float = 0.03  # entry prices within this fraction of the mark


def synthetic(
    seed: int, n_accounts: int, symbol: str, mark_ticks: int, inst: Instrument, params: SyntheticParams | None = None
) -> Population:
    """`n_accounts` traders in `symbol` (plus one balancing account), drawn from `seed`."""
    p = params or SyntheticParams()
    if n_accounts < 2:
        raise PopulationError("a synthetic population needs at least 2 accounts")
    rng = random.Random(seed)
    k = inst.atoms_per_lot_tick
    drawn: list[tuple[int, int, int, int]] = []  # side, lots, entry ticks, leverage in 1/100
    for _ in range(n_accounts):
        side = 1 if rng.random() < 0.5 else -1
        notional_usd = min(p.max_usd, p.min_usd * rng.paretovariate(p.alpha))
        lev = math.exp(rng.gauss(math.log(p.leverage_median), p.leverage_sigma))
        drift = max(-p.entry_spread, min(p.entry_spread, rng.gauss(0.0, p.entry_spread / 2)))
        entry = max(1, round(mark_ticks * math.exp(drift)))
        lots = max(1, round(notional_usd * E8 / (entry * k)))
        cap = inst.max_leverage_for(lots * mark_ticks * k)
        drawn.append((side, lots, entry, max(MIN_LEVERAGE * 100, min(MAX_LEVERAGE * 100, cap * 100, round(lev * 100)))))
    _even_out(drawn)
    accounts: list[AccountSpec] = []
    width = len(str(n_accounts))
    for i, (side, lots, entry, lev_c) in enumerate(drawn, 1):
        pos = PositionSpec(symbol, side * lots, entry)
        wallet = wallet_for_leverage((pos,), {symbol: mark_ticks}, {symbol: inst}, Fraction(lev_c, 100))
        accounts.append(AccountSpec(f"t{i:0{width}d}", wallet, (pos,)))
    net = sum(a.positions[0].size_lots for a in accounts)
    if net:
        pos = PositionSpec(symbol, -net, mark_ticks)
        lev_b = min(Fraction(round(p.leverage_median * 100), 100), Fraction(inst.max_leverage_for(abs(net) * mark_ticks * k)))
        accounts.append(AccountSpec(BALANCE_NAME, wallet_for_leverage((pos,), {symbol: mark_ticks}, {symbol: inst}, lev_b), (pos,)))
    return Population({symbol: mark_ticks}, tuple(accounts), f"synthetic (seed {seed}, {n_accounts} accounts)")


def _even_out(drawn: list[tuple[int, int, int, int]]) -> None:
    """Flip the side of accounts, largest first, when that brings the net position closer
    to zero: a heavy tail leaves a large net otherwise, and one balancing account would
    become the largest trader (largest first: few flips, so the coin's sides mostly stay)."""
    net = sum(side * lots for side, lots, _, _ in drawn)
    for i in sorted(range(len(drawn)), key=lambda j: (-drawn[j][1], j)):
        side, lots, entry, lev_c = drawn[i]
        if net and side * net > 0 and lots < abs(net):
            drawn[i] = (-side, lots, entry, lev_c)
            net -= 2 * side * lots


def wallet_for_leverage(
    positions: tuple[PositionSpec, ...], marks: dict[str, int], instruments: dict[str, Instrument], leverage: Fraction
) -> int:
    """The wallet (atoms, >= 0) that gives `positions` an equity of sum|notional| / leverage at
    `marks`: floor(sum|N| / L) - upnl, rounded down (a hair more leveraged, never less)."""
    gross = 0
    upnl = 0
    for p in positions:
        inst = instruments[p.symbol]
        n = inst.notional_atoms(p.size_lots, marks[p.symbol])
        gross += abs(n)
        upnl += n - inst.notional_atoms(p.size_lots, p.entry_ticks)
    target = gross * leverage.denominator // leverage.numerator
    return max(0, target - upnl)


def split(pop: Population, name: str, k: int) -> Population:
    """`pop` with account `name` replaced by k accounts `name#1..#k` holding the same total:
    each position divided as evenly as lots allow (the first pieces get the remainder), the
    wallet in proportion to the pieces' lots (cumulative rounding: the parts add up exactly),
    so every piece keeps the original's leverage. `name#1` takes the original's place (the same account id once built); the
    others are appended, so every other account keeps its id."""
    idx = next((i for i, a in enumerate(pop.accounts) if a.name == name), None)
    if idx is None:
        raise PopulationError(f"no account named {name!r}")
    orig = pop.accounts[idx]
    k = min([k, *(abs(p.size_lots) for p in orig.positions)])
    if k < 1:
        raise PopulationError(f"cannot split {name!r} in {k}")
    pieces = []
    weight = abs(orig.positions[0].size_lots)
    done = 0  # lots of the first position handed out so far: the wallet follows them
    for j in range(k):
        positions = tuple(
            replace(p, size_lots=(1 if p.size_lots > 0 else -1) * _part(abs(p.size_lots), k, j)) for p in orig.positions
        )
        lots = _part(weight, k, j)
        wallet = orig.wallet_atoms * (done + lots) // weight - orig.wallet_atoms * done // weight
        done += lots
        pieces.append(AccountSpec(f"{name}#{j + 1}", wallet, positions))
    accounts = [*pop.accounts[:idx], pieces[0], *pop.accounts[idx + 1:], *pieces[1:]]
    return replace(pop, accounts=tuple(accounts), source=f"{pop.source}, {name} split in {k}")


def _part(total: int, k: int, j: int) -> int:
    return total // k + (1 if j < total % k else 0)


# == files ====================================================================================


def load(
    path: Path, instruments: dict[str, Instrument], marks: dict[str, int] | None = None,
    fallback: dict[str, int] | None = None,
) -> Population:
    """A population from a `.json` or `.csv` file (docs/lab.md). Starting marks (ticks):
    `marks` (a path's first prices) win over the file's `marks`, which win over `fallback`."""
    text = path.read_text()
    if path.suffix.lower() == ".json":
        rows, file_marks = _json_rows(text)
    elif path.suffix.lower() == ".csv":
        rows, file_marks = _csv_rows(text), {}
    else:
        raise PopulationError(f"{path}: a population file is .json or .csv")
    start = dict(fallback or {})
    for sym, price in file_marks.items():
        start[sym] = _ticks(instruments, sym, price, f"marks.{sym}")
    start.update(marks or {})
    accounts = []
    seen: set[str] = set()
    for name, wallet, leverage, positions in rows:
        if name in seen:
            raise PopulationError(f"account {name!r} appears twice")
        seen.add(name)
        specs = []
        for sym, size, entry in positions:
            inst = instruments.get(sym)
            if inst is None:
                raise PopulationError(f"account {name!r}: unknown symbol {sym!r}")
            lots = _lots(inst, size, f"account {name!r} size")
            if lots:
                specs.append(PositionSpec(sym, lots, _ticks(instruments, sym, entry, f"account {name!r} entry_price")))
        for s in specs:
            if s.symbol not in start:
                raise PopulationError(f"no starting mark for {s.symbol}: give `marks` in the file or a path")
        pos_t = tuple(specs)
        if (wallet is None) == (leverage is None):
            raise PopulationError(f"account {name!r}: give exactly one of wallet or leverage")
        if wallet is not None:
            w = decimal_str_to_e8(wallet)
            if w is None or w < 0:
                raise PopulationError(f"account {name!r}: wallet {wallet!r} is not a non-negative USD amount")
        else:
            lev_e8 = decimal_str_to_e8(str(leverage))
            if lev_e8 is None or lev_e8 <= 0:
                raise PopulationError(f"account {name!r}: leverage {leverage!r} is not a positive number")
            w = wallet_for_leverage(pos_t, start, instruments, Fraction(lev_e8, E8))
        accounts.append(AccountSpec(name, w, pos_t))
    if not accounts:
        raise PopulationError(f"{path}: no accounts")
    used = {p.symbol for a in accounts for p in a.positions}
    return Population({s: m for s, m in sorted(start.items()) if s in used}, tuple(accounts), path.name)


Row = tuple[str, str | None, str | None, list[tuple[str, str, str]]]


def _json_rows(text: str) -> tuple[list[Row], dict[str, str]]:
    try:
        doc = json.loads(text, parse_float=str, parse_int=str)
    except json.JSONDecodeError as e:
        raise PopulationError(f"not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("accounts"), list):
        raise PopulationError('a JSON population is {"accounts": [...], "marks": {...}}')
    marks = {str(k): str(v) for k, v in (doc.get("marks") or {}).items()}
    rows: list[Row] = []
    for i, a in enumerate(doc["accounts"]):
        if not isinstance(a, dict):
            raise PopulationError(f"accounts[{i}] is not an object")
        name = str(a.get("name", f"a{i + 1}"))
        positions = []
        for p in a.get("positions", []):
            try:
                positions.append((str(p["symbol"]), str(p["size"]), str(p["entry_price"])))
            except (KeyError, TypeError):
                raise PopulationError(f"account {name!r}: a position needs symbol, size, entry_price") from None
        wallet, lev = a.get("wallet"), a.get("leverage")
        rows.append((name, None if wallet is None else str(wallet), None if lev is None else str(lev), positions))
    return rows, marks


def _csv_rows(text: str) -> list[Row]:
    reader = csv.DictReader(text.splitlines())
    need = {"account", "symbol", "size", "entry_price"}
    if reader.fieldnames is None or not need <= set(reader.fieldnames):
        raise PopulationError("a CSV population has the columns account,symbol,size,entry_price[,wallet][,leverage]")
    by_name: dict[str, list[Any]] = {}
    for line, r in enumerate(reader, 2):
        name = (r["account"] or "").strip()
        if not name:
            raise PopulationError(f"line {line}: empty account name")
        row = by_name.setdefault(name, [name, None, None, []])
        for col, slot in (("wallet", 1), ("leverage", 2)):
            value = (r.get(col) or "").strip()
            if value:
                if row[slot] is not None and row[slot] != value:
                    raise PopulationError(f"line {line}: account {name!r} has two {col} values")
                row[slot] = value
        if (r["symbol"] or "").strip():
            row[3].append((r["symbol"].strip(), r["size"].strip(), r["entry_price"].strip()))
    return [(n, w, lev, ps) for n, w, lev, ps in by_name.values()]


def _ticks(instruments: dict[str, Instrument], symbol: str, text: str, what: str) -> int:
    inst = instruments.get(symbol)
    if inst is None:
        raise PopulationError(f"{what}: unknown symbol {symbol!r}")
    e8 = decimal_str_to_e8(text)
    ticks = None if e8 is None else inst.ticks_from_e8(e8)
    if ticks is None or ticks <= 0:
        raise PopulationError(f"{what}: {text!r} is not a positive price on the {symbol} tick grid")
    return ticks


def _lots(inst: Instrument, text: str, what: str) -> int:
    e8 = decimal_str_to_e8(text)
    lots = None if e8 is None else inst.lots_from_e8(e8)
    if lots is None:
        raise PopulationError(f"{what}: {text!r} is not a quantity on the {inst.symbol} lot grid")
    return lots


def write_csv(pop: Population, path: Path, instruments: dict[str, Instrument]) -> None:
    """Write `pop` as a CSV population (`--population` reads it back to the same state)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["account", "symbol", "size", "entry_price", "wallet"])
        for a in pop.accounts:
            for i, p in enumerate(a.positions or (None,)):
                wallet = e8_to_str(a.wallet_atoms) if i == 0 else ""
                if p is None:
                    w.writerow([a.name, "", "", "", wallet])
                    continue
                inst = instruments[p.symbol]
                w.writerow([a.name, p.symbol, e8_to_str(inst.qty_e8(p.size_lots)), e8_to_str(inst.price_e8(p.entry_ticks)), wallet])
