"""The what-if's two ways to copy the engine give the same answer, and neither touches it."""

from __future__ import annotations

import pickle

import orjson

from api.routes.whatif import _child_work, _run_all
from engine import commands as c
from service.format import EventFormatter
from tests.scenario.harness import Sim
from tests.scenario.test_liquidation_adl import BTC, _long_wiped_out_setup


def test_what_if_when_run_on_a_pickled_copy_or_in_place_in_a_child_answers_the_same() -> None:
    sim = Sim()
    _long_wiped_out_setup(sim)
    engine = sim.engine
    fmt = EventFormatter(engine.instruments)
    before = engine.state_hash()
    move = c.SetMarkPrice(BTC, 90_000)
    policies = list(c.ADL_POLICIES)
    pickled = _run_all(pickle.dumps(engine), BTC, move, policies, fmt)
    assert engine.state_hash() == before
    # the child's work changes the engine it is given (its own copy-on-write image): use a copy
    in_child = [orjson.loads(_child_work(pickle.loads(pickle.dumps(engine)), BTC, move, p, fmt))["ok"] for p in policies]
    assert pickled == in_child
    queue = next(r for r in pickled if r["policy"] == "queue")
    # tests/scenario/test_liquidation_adl.py: Carol 0.3, Dave 0.4, Bob 0.3 at 8,975.035
    assert [(f["qty"], f["price"], f["rank"]) for f in queue["adl_fills"]] == [
        ("0.3", "8975.035", 1), ("0.4", "8975.035", 2), ("0.3", "8975.035", 3)
    ]
    assert (queue["insurance_fund_delta"], queue["bad_debt"], queue["counterparties"]) == ("0", "0", 3)
