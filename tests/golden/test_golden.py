"""Replays of journals recorded before a refactor give the same events and state, to the atom.

The files were written by `python -m tests.golden.record` (see there); a change that fails
this test changed behaviour: either a bug, or a rule change that must re-record them.
"""

from __future__ import annotations

import json

import pytest

from tests.golden.record import HERE, SEEDS, read, replay

EXPECTED = json.loads((HERE / "expected.json").read_text())


@pytest.mark.parametrize("seed", SEEDS)
def test_recorded_journal_replays_to_the_recorded_events_and_state_hash(seed: int) -> None:
    got = replay(read(seed))
    want = EXPECTED[str(seed)]
    assert got["types"] == want["types"]
    assert (got["events"], got["events_sha256"], got["state_hash"]) == (
        want["events"], want["events_sha256"], want["state_hash"]
    )


def test_recorded_journals_cover_liquidation_and_adl() -> None:
    assert sum(EXPECTED[str(s)]["types"].get("liquidation", 0) for s in SEEDS) >= 20
    assert sum(EXPECTED[str(s)]["types"].get("adl", 0) for s in SEEDS) >= 40
