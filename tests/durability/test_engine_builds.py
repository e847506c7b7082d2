"""The Python and the compiled engine (native/) are interchangeable: the same command stream
gives the same events and state hash in both, and a snapshot written by one loads in the
other. Each build runs in its own process (one process holds one of them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import native
from engine.engine import Engine
from tests.builds import COMPILED

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    native.build_state() != "fresh",
    reason=f"no compiled engine ({native.build_state()}): `make compiled` builds it (make test does)",
)

_SCRIPT = """
import pickle, sys
from pathlib import Path
import native
build = native.use()
assert native.active() == build, (native.active(), build)
from engine import commands as c
from engine.engine import Engine
from tests.unit.helpers import random_commands

mode, path = sys.argv[1], Path(sys.argv[2])
if mode == "write":
    eng = Engine(max_open_orders=1_000)
    events = []
    for cmd in random_commands(5, 3_000):
        events.extend(eng.apply(cmd))
    # SPEC §12 state too: an isolated position, untriggered stops, index and funding
    a, b = eng.next_account_id, eng.next_account_id + 1
    mark = eng.marks["BTC-PERP"]
    for cmd in [
        c.CreateAccount("iso"), c.CreateAccount("maker"), c.Deposit(a, 10**13), c.Deposit(b, 10**13),
        c.SetMarginMode(a, "BTC-PERP", "isolated"),
        c.PlaceOrder(b, "BTC-PERP", "sell", 7, mark), c.PlaceOrder(a, "BTC-PERP", "buy", 7, None, order_type="market"),
        c.AdjustPositionMargin(a, "BTC-PERP", 10**9),
        c.PlaceOrder(a, "BTC-PERP", "sell", 0, None, order_type="stop_market", trigger_price_ticks=mark * 9 // 10,
                     close_position=True),
        c.PlaceOrder(b, "BTC-PERP", "buy", 3, mark * 11 // 10, order_type="stop_limit",
                     trigger_price_ticks=mark * 21 // 20, trigger_by="last"),
        c.SetIndexPrice("BTC-PERP", mark + 3), c.ApplyFunding("BTC-PERP"),
    ]:
        events.extend(eng.apply(cmd))
    assert eng.accounts[a].isolated and len(eng.stops.orders) == 2, events[-12:]
    path.write_bytes(pickle.dumps(eng, protocol=pickle.HIGHEST_PROTOCOL))
    digest = __import__("hashlib").sha256(repr(events).encode()).hexdigest()
else:
    eng = pickle.loads(path.read_bytes())
    eng.check_invariants()
    digest = "-"
# after the load (or the write), the same commands go on the same way in either build
tail = []
for cmd in random_commands(6, 500):
    tail.extend(eng.apply(cmd))
print(build, eng.seq, eng.state_hash(), digest, __import__("hashlib").sha256(repr(tail).encode()).hexdigest())
"""


def _run(build: str, mode: str, path: Path) -> list[str]:
    env = {**os.environ, "EXCHANGE_ENGINE": build, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode, str(path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split()


def test_builds_when_given_the_same_commands_give_the_same_events_and_state(tmp_path: Path) -> None:
    py = _run("python", "write", tmp_path / "py.pickle")
    cc = _run("compiled", "write", tmp_path / "cc.pickle")
    assert (py[0], cc[0]) == ("python", "compiled")
    assert py[1:] == cc[1:]  # seq, state hash, digest of every event, then of the tail's


@pytest.mark.parametrize(("writer", "reader"), [("python", "compiled"), ("compiled", "python")])
def test_snapshot_when_written_by_one_build_loads_in_the_other(tmp_path: Path, writer: str, reader: str) -> None:
    path = tmp_path / "engine.pickle"
    wrote = _run(writer, "write", path)
    read = _run(reader, "read", path)
    assert read[0] == reader
    assert read[1:3] == wrote[1:3] and read[4] == wrote[4]  # seq, state hash; the tail's events


def test_state_attrs_when_compared_to_a_new_engine_name_every_attribute() -> None:
    """ExchangeState pickles the attributes it lists (engine/state.py STATE_ATTRS): a new one
    missing there would vanish from snapshots of the compiled build."""
    if COMPILED:
        pytest.skip("compiled instances have no __dict__ to compare with")
    from engine.state import STATE_ATTRS

    assert set(vars(Engine())) <= set(STATE_ATTRS)
