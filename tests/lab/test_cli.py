"""`python -m lab` end to end: the report's files, determinism, files as input, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import commands as c
from lab.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--seed", "3", "--accounts", "150", "--crash", "20%", "--sybil-k", "3"]
TABLES = ["metrics.json", "metrics.csv", "winners.csv", "liquidations.csv", "series.csv", "report.md", "report.html",
          "population.csv"]


def run_lab(args: list[str], hash_seed: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)  # two different string hashes: no set-order luck
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_lab_when_run_twice_on_a_seed_writes_the_report_and_identical_json(tmp_path: Path) -> None:
    outs = []
    for hash_seed in ("0", "1"):
        out = tmp_path / f"run{hash_seed}"
        done = run_lab([*SMALL, "--no-plots", "--out", str(out)], hash_seed)
        assert done.returncode == 0, done.stderr
        assert "| needed budget, USD |" in done.stdout and "total" in done.stdout
        assert done.stderr == ""  # no progress bar when stderr is not a terminal
        for name in TABLES:
            assert (out / name).stat().st_size > 0, name
        outs.append(out)
    first, second = ((o / "metrics.json").read_bytes() for o in outs)
    assert first == second
    for name in ("metrics.csv", "winners.csv", "liquidations.csv", "series.csv", "report.md", "report.html"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    doc = json.loads(first)
    assert [p["policy"] for p in doc["policies"]] == list(c.ADL_POLICIES)
    assert doc["sybil"]["k"] == 3 and len(doc["sybil"]["policies"]) == len(c.ADL_POLICIES)
    assert all(p["liquidations"] > 0 and p["taken_usd"] != "0" for p in doc["policies"])
    assert "--out" not in doc["command"]


def test_lab_when_matplotlib_missing_writes_tables_and_says_how_to_get_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "lab.plots", None)  # `from lab import plots` -> ImportError
    assert main([*SMALL, "--sybil-k", "0", "--policies", "queue", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pip install -e '.[lab]'" in out
    assert (tmp_path / "report.md").exists() and not (tmp_path / "plots").exists()
    assert "<img" not in (tmp_path / "report.html").read_text()


def test_lab_when_population_json_and_path_csv_runs_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # one 10x long (wallet 10 USD on 100 USD), bankrupt once BTC is 15% down; shorts win
    (tmp_path / "pop.json").write_text(json.dumps({"accounts": [
        {"name": "lev", "leverage": "10", "positions": [{"symbol": "BTC-PERP", "size": "0.01", "entry_price": "10000"}]},
        {"name": "hodl", "wallet": "100", "positions": [{"symbol": "BTC-PERP", "size": "0.01", "entry_price": "10000"}]},
        {"name": "bear", "wallet": "50", "positions": [{"symbol": "BTC-PERP", "size": "-0.015", "entry_price": "10100"}]},
        {"name": "cub", "leverage": "4", "positions": [{"symbol": "BTC-PERP", "size": "-0.005", "entry_price": "9900.5"}]},
    ]}))
    (tmp_path / "path.csv").write_text(
        "offset_s,symbol,price\n0,BTC-PERP,10000.0\n1,BTC-PERP,9500.0\n2,BTC-PERP,8500.0\n3,BTC-PERP,8800.0\n"
    )
    out = tmp_path / "out"
    args = ["--population", str(tmp_path / "pop.json"), "--path", str(tmp_path / "path.csv"), "--book-levels", "0",
            "--sybil-k", "2", "--no-plots", "--out", str(out)]
    assert main(args) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["scenario"]["path"]["stress_marks"] == {"BTC-PERP": "8500"}
    assert doc["scenario"]["population"]["accounts"] == 4
    assert doc["sybil"]["target"] == "bear"
    for p in doc["policies"]:
        assert (p["liquidations"], p["adl_lots"]) == (1, 10)
    series = (out / "series.csv").read_text().splitlines()
    assert len(series) == 1 + len(doc["policies"]) * 5  # header; per policy the start and 4 steps
    assert main(["--population", str(out / "population.csv"), "--path", str(tmp_path / "path.csv"),
                 "--book-levels", "0", "--sybil-k", "0", "--no-plots", "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["scenario"]["start_state_hash"] == doc["scenario"]["start_state_hash"]  # the CSV round-trips


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--policies", "queue,lottery"], "unknown policy lottery"),
        (["--crash", "abc"], "not a move"),
        (["--fund", "-5"], "not a USD amount"),
        (["--sybil-k", "1"], "--sybil-k"),
        (["--path", "no/such/file.csv"], "No such file"),
        (["--symbol", "DOGE-PERP"], "unknown symbol"),
    ],
    ids=["unknown-policy", "bad-crash", "negative-fund", "sybil-1", "missing-path", "unknown-symbol"],
)
def test_lab_when_input_is_bad_exits_2_with_the_reason(
    args: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--accounts", "10", "--out", str(tmp_path)]) == 2
    assert says in capsys.readouterr().err
