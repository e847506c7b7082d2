"""`make sandbox` as a newcomer meets it: `python -m service.demo` run for real in subprocesses,
each starting its own service (no Redis) on the sandbox's market (feeds/sandbox.toml: marks
from the index, funding every 60 s) and price feed.

- A bounded crash run (feeds/crash25.csv at 20x speed) prints every liquidation with its
  book fill and a summary with funding, and leaves no temp dir behind; the same seed gives
  the same accounts and liquidates the same traders twice (the rest depends on timing: the
  feed runs on the service's clock).
- `python -m service.tools --config feeds/sandbox.toml dump DIR --events` reads that run's
  data dir back in decimal units, the same numbers the demo printed.
- `--crash` other than 25% or 10%: one usage line naming the choices, exit status 2.
- Ctrl-C (SIGINT to the demo's process group, as a terminal sends it) or SIGTERM: the summary,
  exit status 0, no traceback, no temp dir left.
- A port in use: one line naming the fix, exit status 1, no traceback (demo and service).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the crash hits bottom 210 s of feed time in: 10.5 s at 20x; the run lasts until then
CRASH_ARGS = ["--seconds", "1.5", "--tick", "0.05", "--crash", "25%", "--seed", "11", "--speed", "20"]
SANDBOX_CONFIG = ROOT / "feeds" / "sandbox.toml"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """This environment without EXCHANGE_* (no Redis, no fixed token), temp files under `tmp`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_") and k != "MAKELEVEL"}
    return {**env, "TMPDIR": str(tmp), **extra}


def _demo(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.demo", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def _liquidated(stdout: str) -> list[str]:
    """The traders a run liquidated, by name."""
    return sorted(set(re.findall(r"^  LIQUIDATED (\w+) #\d+:", stdout, re.M)))


def _line(stdout: str, start: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(start))


@pytest.fixture(scope="module")
def crash_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str], Path, Path]:
    """Two bounded crash runs with seed 11, side by side: the first keeps its data dir, the
    second has the default temp dir (under its own TMPDIR)."""
    kept, temp = tmp_path_factory.mktemp("kept"), tmp_path_factory.mktemp("temp")
    data = kept / "data"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "service.demo", *CRASH_ARGS, *extra],
            cwd=ROOT, env=_env(tmp, EXCHANGE_LOG_LEVEL="warning"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for tmp, extra in ((kept, ["--data-dir", str(data)]), (temp, []))
    ]
    runs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        runs.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
        assert proc.returncode == 0, stdout + stderr
    return runs[0], runs[1], data, temp


@pytest.mark.slow
def test_demo_when_bounded_crash_run_ends_prints_liquidations_with_book_fills_and_a_summary(
    crash_runs: tuple[Any, ...],
) -> None:
    out = crash_runs[0]
    assert "Traceback" not in out.stdout + out.stderr
    liquidations = [line for line in out.stdout.splitlines() if "LIQUIDATED" in line]
    assert liquidations, out.stdout
    for line in liquidations:
        assert re.search(r"\| (book fill [0-9.]+ BTC @ [0-9.]+ \(|no book fill)", line), line
        assert re.search(r"ADL [0-9.]+ BTC \| insurance fund [-+]?[0-9.]+, bad debt [0-9.]+$", line), line
    assert re.search(r"ADL rank 1 \(queue\): \w+ #\d+ \(short\) closes .* haircut -?[0-9.]+", out.stdout)
    assert "market: the index of BTC-PERP and ETH-PERP comes from feeds/crash25.csv" in out.stdout
    assert "the maker thins its book" in out.stdout  # the fall is fast: it pulls back
    summary = out.stdout.split("=== summary ===", 1)[1]
    assert f"liquidations: {len(liquidations)} (" in summary
    assert re.search(r"^funding: (no round of BTC-PERP during this run \(rounds every 60 s\)|\d+ rounds? of BTC-PERP \(every 60 s; last rate [-+]\d\.\d{4}%\): payers paid)", summary, re.M), summary
    assert re.search(r"insurance fund: 200 -> [0-9.]+ USD \([-+]?[0-9.]+\); bad debt [0-9.]+ this run", summary)
    assert re.search(r"most deleveraged \(ADL'd\) accounts by qty: \w+ #\d+ [0-9.]+ BTC in \d+ fills?", summary)
    assert "ADL light" in summary and "ADL quantile" in summary


@pytest.mark.slow
def test_demo_when_run_twice_with_the_same_seed_has_the_same_accounts_and_liquidated_traders(
    crash_runs: tuple[Any, ...],
) -> None:
    first, again, _, temp = crash_runs
    assert _line(again.stdout, "accounts: ") == _line(first.stdout, "accounts: ")
    assert _line(again.stdout, "market: ") == _line(first.stdout, "market: ")
    # a 25% fall: ben (20x) and cat (50x), never ann (5x, liquidated only ~28% under her entry)
    assert _liquidated(again.stdout) == _liquidated(first.stdout) == ["ben", "cat"]
    assert "removed at exit" in again.stdout
    assert list(temp.glob("exchange-demo-*")) == []


def _dump_events(data: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "service.tools", "--config", str(SANDBOX_CONFIG), "dump", str(data),
         "--events", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.slow
def test_tools_dump_events_when_reading_a_crash_run_prints_its_liquidations_in_decimal_units(
    crash_runs: tuple[Any, ...],
) -> None:
    out, data = crash_runs[0], crash_runs[2]
    events = _dump_events(data, "--types", "liquidation,adl")
    liquidations = [e["data"] for e in events if e["type"] == "liquidation"]
    adl = [e["data"] for e in events if e["type"] == "adl"]
    assert {e["type"] for e in events} == {"liquidation", "adl"}
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    printed = [line for line in out.stdout.splitlines() if "LIQUIDATED" in line]
    assert len(liquidations) == len(printed) and len(adl) == out.stdout.count("  ADL rank ")
    for liq, line in zip(liquidations, printed, strict=True):
        assert isinstance(liq["account_id"], int) and liq["account"] == liq["account_id"]
        assert f"#{liq['account_id']}:" in line
        assert f"bankruptcy price {liq['bankruptcy_price']}" in line
        assert f"equity before {liq['equity_before']}" in line
        if liq["book_fill_avg_price"] is not None:
            assert f"book fill {liq['book_fill_qty']} BTC @ {liq['book_fill_avg_price']}" in line
        assert f"ADL {liq['adl_qty']} BTC" in line and f"bad debt {liq['bad_debt']}" in line
    for fill in adl:
        assert {"rank", "price", "haircut", "policy"} <= fill.keys()
        assert f"closes {fill['qty']} BTC at {fill['price']}" in out.stdout
    # --from-seq: from the first liquidation's events on; every type when --types is absent
    first = events[0]["seq"]
    tail = _dump_events(data, "--from-seq", str(first), "--limit", "5")
    assert tail[0]["seq"] == first and len(tail) == 5
    assert all(isinstance(e["data"], dict) and "ts_ns" in e for e in tail)


class _Running:
    """A demo in its own session (as a terminal's foreground job), its output read by threads."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.demo", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.out):
            assert self.proc.poll() is None, "".join(self.out + self.err)
            assert time.monotonic() < deadline, f"no {text!r} in: " + "".join(self.out + self.err)
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout)
        for reader in self.readers:
            reader.join(10)
        return rc, "".join(self.out), "".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the demo alone
            self.proc.wait(10)


@pytest.fixture
def running_demo(tmp_path: Path) -> Iterator[Any]:
    started: list[_Running] = []

    def start(*args: str, **env: str) -> _Running:
        demo = _Running(list(args), _env(tmp_path, **env))
        started.append(demo)
        return demo

    yield start
    for demo in started:
        demo.kill()


@pytest.mark.slow
@pytest.mark.parametrize(
    "how",
    [
        pytest.param(lambda p: os.killpg(p.pid, signal.SIGINT), id="ctrl-c-to-the-process-group"),
        pytest.param(lambda p: p.send_signal(signal.SIGTERM), id="sigterm"),
    ],
)
def test_demo_when_stopped_by_a_signal_prints_the_summary_and_exits_0_quietly(
    how: Any, running_demo: Any, tmp_path: Path
) -> None:
    demo = running_demo("--host", "127.0.0.1", "--seconds", "0", "--tick", "0.05")
    demo.wait_for("mark ")  # the market is running
    how(demo.proc)
    rc, out, err = demo.finish()
    assert rc == 0, out + err
    assert "Traceback" not in out + err and "Error" not in err, out + err
    assert "=== summary ===" in out and "liquidations: 0" in out
    assert out.rstrip().splitlines()[-1].startswith("  eve ")  # the summary comes last
    # bound to 127.0.0.1 without EXCHANGE_ADMIN_TOKEN: the token the README's commands use
    assert "(admin token sandbox-admin-token)" in out
    assert list(tmp_path.glob("exchange-demo-*")) == []


def test_demo_when_crash_is_not_a_shipped_one_prints_the_choices_and_exits_2(tmp_path: Path) -> None:
    out = _demo("--crash", "30%", env=_env(tmp_path), timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines()[-1].startswith("python -m service.demo: error: argument --crash: '30%' is not a shipped crash; choose 25% (feeds/crash25.csv: "), out.stderr
    assert "10% (feeds/flash10.csv: " in out.stderr and "Traceback" not in out.stderr


def test_demo_when_its_port_is_in_use_prints_one_line_with_the_fix_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _demo("--host", "127.0.0.1", "--port", str(port), "--seconds", "0",
                    env=_env(tmp_path, MAKELEVEL="1"), timeout=60)
    assert out.returncode == 1
    assert out.stdout == ""
    assert re.fullmatch(
        rf"error: port {port} on 127\.0\.0\.1 is in use \(another sandbox\?\); run make sandbox PORT=\d+\n",
        out.stderr,
    ), out.stderr
    assert list(tmp_path.glob("exchange-demo-*")) == []


def test_service_when_its_port_is_in_use_prints_one_line_with_the_fix_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "service", "--port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env=_env(tmp_path, EXCHANGE_DATA_DIR=str(tmp_path / "data")),
        )
    assert out.returncode == 1
    assert re.fullmatch(
        rf"error: port {port} on 127\.0\.0\.1 is in use \(another exchange or sandbox\?\); "
        r"run python -m service --port \d+\n",
        out.stderr,
    ), out.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started
