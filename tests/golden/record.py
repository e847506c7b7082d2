"""Record the golden journals: fixed command streams with the events and state hash they give.

    python -m tests.golden.record     # rewrites tests/golden/*.jsonl.gz and expected.json

Run it only when a change is *meant* to change behaviour (and say so in the commit); a
refactor of the engine must leave `test_golden.py` passing against the recorded files.
Each journal is a seeded `random_commands` stream (every command kind, mark moves with
liquidations and ADL under every policy, hostile ids) encoded as the service's journal
records are.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from engine.engine import Engine
from service.storage.codec import decode_command, encode_command
from tests.unit.helpers import random_commands

HERE = Path(__file__).parent
SEEDS = (7, 23)
COMMANDS = 4_000


def replay(records: list[bytes]) -> dict[str, Any]:
    """Apply the records to a fresh engine: event count, digest of every event, state hash."""
    engine = Engine()
    digest = hashlib.sha256()
    count = 0
    types: dict[str, int] = {}
    for raw in records:
        for event in engine.apply(decode_command(raw)):
            digest.update(repr(event).encode())
            count += 1
            types[event.TYPE] = types.get(event.TYPE, 0) + 1
        engine.check_invariants()
    return {"events": count, "events_sha256": digest.hexdigest(), "state_hash": engine.state_hash(), "types": types}


def read(seed: int) -> list[bytes]:
    with gzip.open(HERE / f"journal-{seed}.jsonl.gz", "rb") as fh:
        return [line for line in fh.read().split(b"\n") if line]


def main() -> None:
    expected = {}
    for seed in SEEDS:
        records = [encode_command(cmd) for cmd in random_commands(seed, COMMANDS)]
        with gzip.GzipFile(HERE / f"journal-{seed}.jsonl.gz", "wb", mtime=0) as fh:
            fh.write(b"\n".join(records) + b"\n")
        expected[str(seed)] = replay(records)
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(json.dumps(expected, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
