"""The lab's inputs: crash paths, feed CSVs, population files and the synthetic generator;
and the progress bar (silent unless on a terminal)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from lab import population
from lab.paths import PathError, Step, crash, load_csv, parse_move_ppm
from lab.population import PopulationError, SyntheticParams, synthetic
from lab.progress import Progress
from tests.lab.cases import INSTRUMENTS, START, SYMBOL, USD, two_winners


@pytest.mark.parametrize(
    ("text", "ppm"),
    [("25%", 250_000), ("0.25", 250_000), ("-20%", -200_000), ("12.5%", 125_000), ("0.0001%", 1)],
    ids=["percent", "fraction", "rally", "half-percent", "one-ppm"],
)
def test_parse_move_when_given_percent_or_fraction_is_ppm(text: str, ppm: int) -> None:
    assert parse_move_ppm(text) == ppm


@pytest.mark.parametrize("text", ["", "x", "0%", "100%", "-1000%"], ids=["empty", "word", "zero", "to-zero", "too-far"])
def test_parse_move_when_nonsense_raises(text: str) -> None:
    with pytest.raises(PathError):
        parse_move_ppm(text)


def test_crash_when_three_steps_moves_in_equal_ticks_to_the_target() -> None:
    path = crash({SYMBOL: START, "ETH-PERP": 200_000}, 250_000, 3)
    btc = [s for s in path.steps if s.symbol == SYMBOL]
    assert btc == [Step(10**9, SYMBOL, 91_667), Step(2 * 10**9, SYMBOL, 83_333), Step(3 * 10**9, SYMBOL, 75_000)]
    assert path.stress_marks({SYMBOL: START, "ETH-PERP": 200_000}) == {SYMBOL: 75_000, "ETH-PERP": 150_000}
    assert path.description == "crash 25% in 3 steps"


def test_load_csv_when_feed_file_reads_steps_in_order(tmp_path: Path) -> None:
    f = tmp_path / "feed.csv"
    f.write_text("offset_s,symbol,price\n0,BTC-PERP,10000.0\n0,ETH-PERP,2000.00\n1.5,BTC-PERP,9000.1\n2,BTC-PERP,9500\n")
    path = load_csv(f, INSTRUMENTS)
    assert path.steps == (
        Step(0, SYMBOL, 100_000), Step(0, "ETH-PERP", 200_000), Step(1_500_000_000, SYMBOL, 90_001), Step(2 * 10**9, SYMBOL, 95_000),
    )
    assert path.start_marks() == {SYMBOL: 100_000, "ETH-PERP": 200_000}
    assert path.stress_marks(path.start_marks()) == {SYMBOL: 90_001, "ETH-PERP": 200_000}


def test_load_csv_when_shipped_feeds_present_reads_them() -> None:
    feeds = sorted(Path(__file__).resolve().parents[2].glob("feeds/*.csv"))
    if not feeds:
        pytest.skip("no feeds/*.csv in this tree")
    for f in feeds:
        assert load_csv(f, INSTRUMENTS).steps


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("time,symbol,price\n0,BTC-PERP,1\n", "header"),
        ("offset_s,symbol,price\n0,DOGE-PERP,1\n", "unknown symbol"),
        ("offset_s,symbol,price\n0,BTC-PERP,10000.05\n", "tick grid"),
        ("offset_s,symbol,price\n2,BTC-PERP,10000\n1,BTC-PERP,10000\n", "back in time"),
        ("offset_s,symbol,price\n", "no prices"),
    ],
    ids=["header", "symbol", "off-grid", "backwards", "empty"],
)
def test_load_csv_when_bad_says_where(tmp_path: Path, body: str, says: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(body)
    with pytest.raises(PathError, match=says):
        load_csv(f, INSTRUMENTS)


def test_synthetic_when_same_seed_is_the_same_and_balanced() -> None:
    inst = INSTRUMENTS[SYMBOL]
    a = synthetic(7, 300, SYMBOL, START, inst)
    assert a == synthetic(7, 300, SYMBOL, START, inst)
    assert a != synthetic(8, 300, SYMBOL, START, inst)
    assert a.net_lots(SYMBOL) == 0
    p = SyntheticParams()
    for acct in a.accounts:
        (pos,) = acct.positions
        notional = abs(inst.notional_atoms(pos.size_lots, START))
        equity = acct.wallet_atoms + inst.notional_atoms(pos.size_lots, START) - inst.notional_atoms(pos.size_lots, pos.entry_ticks)
        assert notional <= p.max_usd * USD * 104 // 100  # the cap, at an entry up to 3% off
        assert acct.wallet_atoms >= 0 and equity * 50 >= notional - 50  # leverage at most 50 (up to rounding)


def test_population_csv_when_written_loads_back_the_same(tmp_path: Path) -> None:
    pop = two_winners()
    f = tmp_path / "pop.csv"
    population.write_csv(pop, f, INSTRUMENTS)
    back = population.load(f, INSTRUMENTS, {SYMBOL: START})
    assert back.accounts == pop.accounts and back.marks == pop.marks


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("account,symbol,size,entry_price,wallet\na,BTC-PERP,0.0001,10000,1\n", "lot grid"),
        ("account,symbol,size,entry_price,wallet\na,BTC-PERP,0.001,10000,1\na,BTC-PERP,0.001,10000,2\n", "two wallet"),
        ("account,symbol,size,entry_price\na,BTC-PERP,0.001,10000\n", "exactly one of wallet or leverage"),
        ("account,symbol,size\na,BTC-PERP,1\n", "columns"),
    ],
    ids=["off-lot-grid", "two-wallets", "no-wallet", "columns"],
)
def test_population_load_when_bad_says_why(tmp_path: Path, body: str, says: str) -> None:
    f = tmp_path / "pop.csv"
    f.write_text(body)
    with pytest.raises(PopulationError, match=says):
        population.load(f, INSTRUMENTS, {SYMBOL: START})


def test_split_when_k_pieces_holds_the_same_total_and_leverage() -> None:
    pop = two_winners()
    split = population.split(pop, "a", 5)  # a: short 12 lots, wallet 120 USD
    pieces = [x for x in split.accounts if x.name.startswith("a#")]
    assert [x.name for x in split.accounts[:4]] == ["liq", "safe", "a#1", "b"]  # a#1 keeps a's place
    assert [x.positions[0].size_lots for x in pieces] == [-3, -3, -2, -2, -2]
    assert [x.wallet_atoms for x in pieces] == [30 * USD, 30 * USD, 20 * USD, 20 * USD, 20 * USD]
    assert population.split(pop, "b", 100).accounts[-1].name == "b#8"  # at most one piece per lot


def test_progress_when_not_a_terminal_writes_nothing() -> None:
    buf = io.StringIO()
    bar = Progress(2, stream=buf)
    bar.phase("build", 10)(10)
    bar.close()
    assert buf.getvalue() == ""


def test_progress_when_enabled_draws_phases_on_one_line() -> None:
    buf = io.StringIO()
    bar = Progress(2, stream=buf, enabled=True)
    tick = bar.phase("build", 4)
    tick(4)
    bar.phase("queue", 1)
    bar.close()
    text = buf.getvalue()
    assert "\n" not in text and "build" in text and " 50% " in text and text.endswith("\r")


def test_population_load_when_json_has_marks_they_win_over_defaults_not_over_a_path(tmp_path: Path) -> None:
    f = tmp_path / "pop.json"
    f.write_text('{"marks": {"BTC-PERP": "20000"}, "accounts": [{"name": "x", "leverage": 4, '
                 '"positions": [{"symbol": "BTC-PERP", "size": "-0.002", "entry_price": "20000"}]}]}')
    assert population.load(f, INSTRUMENTS, fallback={SYMBOL: START}).marks == {SYMBOL: 200_000}
    from_path = population.load(f, INSTRUMENTS, {SYMBOL: 190_000}, fallback={SYMBOL: START})
    assert from_path.marks == {SYMBOL: 190_000}
    # leverage 4 at the starting mark: equity = 2 lots * 19,000 USD * 0.001 / 4 = 9.5 USD;
    # the short entered at 20,000 is 2 USD in profit, so its wallet is 7.5 USD
    assert from_path.accounts[0].wallet_atoms == 750_000_000
