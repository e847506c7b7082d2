"""Operator tools for a data dir: `python -m service.tools {verify,dump,snapshot} DATA_DIR`.

- verify: replay snapshot + journal read-only, check invariants, print seq and state hash;
  exit status 1 on any corruption or divergence.
- dump: print journal records as JSON lines (seq range, ts_ns, command); integers beyond 64
  bits (ids an older edge let through) are printed exactly, as JSON integers.
- snapshot: recover (repairing a torn tail) and write a snapshot now. It takes the data dir's
  lock, so it refuses to run while the service runs (the service takes its own snapshots).
  It prunes nothing unless given `--prune`: journal segments behind the snapshot may still be
  needed to regenerate events that Redis has not received yet, and only the running service
  knows how far publication got. Use `--prune` when Redis has everything (or is not used).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from engine.engine import Engine
from service.storage.codec import decode_command, dumps_exact, encode_command, loads_exact
from service.storage.durable import DataDirLocked, lock_data_dir
from service.storage.journal import JournalCorrupt, iter_records, prune_segments
from service.storage.recovery import RecoveryError, recover
from service.storage.snapshot import prune_snapshots, write_snapshot


def _engine_factory(config: str | None) -> Callable[[], Engine]:
    if not config:
        return Engine
    from service.config import engine_factory_from_toml

    return engine_factory_from_toml(Path(config))


def cmd_verify(directory: Path, factory: Callable[[], Engine]) -> int:
    try:
        rec = recover(directory, factory, repair=False)
        rec.engine.check_invariants()
    except (JournalCorrupt, RecoveryError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    torn = f"torn tail at {rec.torn.path}:{rec.torn.offset} (would be truncated)" if rec.torn else "no torn tail"
    print(f"ok: snapshot seq {rec.snapshot_seq}, replayed {rec.replayed} commands, seq {rec.engine.seq}, {torn}")
    print(f"state_hash {rec.engine.state_hash()}")
    return 0


def cmd_dump(directory: Path, after: int, limit: int | None) -> int:
    for n, rec in enumerate(iter_records(directory, after_seq=after)):
        if limit is not None and n >= limit:
            break
        command = decode_command(rec.payload)
        line = {
            "seq_before": rec.seq_before,
            "seq": rec.seq,
            "ts_ns": rec.ts_ns,
            "file": rec.path.name,
            "offset": rec.offset,
            "command": loads_exact(encode_command(command)),
        }
        sys.stdout.write(dumps_exact(line).decode() + "\n")
    return 0


def cmd_snapshot(directory: Path, factory: Callable[[], Engine], prune: bool) -> int:
    try:
        lock = lock_data_dir(directory)
    except DataDirLocked as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            rec = recover(directory, factory, repair=True)
        except (JournalCorrupt, RecoveryError) as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        path = write_snapshot(directory, rec.engine)
        pruned = []
        if prune:
            pruned = prune_segments(directory, rec.engine.seq)
            prune_snapshots(directory, keep=1)
        print(f"wrote {path} at seq {rec.engine.seq}; pruned {len(pruned)} journal segment(s)")
        return 0
    finally:
        lock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.tools", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="EXCHANGE_CONFIG TOML the service runs with")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("verify", "dump", "snapshot"):
        p = sub.add_parser(name)
        p.add_argument("data_dir", type=Path)
        if name == "snapshot":
            p.add_argument(
                "--prune",
                action="store_true",
                help="delete journal segments and snapshots behind the new snapshot "
                "(only when Redis already has every event, or Redis is not used)",
            )
        if name == "dump":
            p.add_argument("--after", type=int, default=0, help="only records with seq > AFTER")
            p.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cmd == "dump":
        return cmd_dump(args.data_dir, args.after, args.limit)
    factory = _engine_factory(args.config)
    if args.cmd == "verify":
        return cmd_verify(args.data_dir, factory)
    return cmd_snapshot(args.data_dir, factory, args.prune)


if __name__ == "__main__":
    raise SystemExit(main())
