"""Replicas of the engine over Redis: the engine role ships its journal, a replica replays it.

The engine is a deterministic function of its journaled commands, so the cheapest exact
copy of its state anywhere is the same engine fed the same records. The engine role
(`--role engine`, service/bus.py) publishes:

- `<prefix>:applied`: one entry per journaled command, id `<seq>-0` (the seq its events
  end at), fields `sb` (the seq before it) and `cmd` (the journal payload: the command with
  its `ts_ns`, service/storage/codec.py). Only what is delivered (journaled, and durable in
  the fsync mode's sense) is published, in order; a command without events changes nothing
  and is not journaled, so it is not here either.
- `<prefix>:snapshot`: the bytes of the newest snapshot file (service/storage/snapshot.py:
  magic, seq, crc, state hash, pickled engine), published at start and after each snapshot;
  the applied stream is then trimmed to the entries after it.
- `<prefix>:applied-origin`: which history the two belong to: the data dir's id and an
  epoch. Each start of the engine role begins a new epoch from its newest snapshot (what
  Redis holds may be records the data dir lost in a machine crash with EXCHANGE_FSYNC=off,
  which no replica may keep), and so does a Redis that lost the stream; every replica then
  re-bootstraps. Within one run, the history goes on across Redis errors.

A `Replica` bootstraps from the snapshot (or an empty engine with the same config) and then
applies the applied stream's entries in order, checking each one starts at its seq and ends
at the recorded seq (a replica never guesses: on any mismatch, or a new origin, it starts
over). Its state is the engine's as of `replica.engine.seq`, to the state hash. Replicas
need the engine's EXCHANGE_CONFIG (checked: a snapshot of other rules is refused).

Pickle: a replica unpickles what it reads from Redis, so Redis must be trusted as the data
dir is (it is the engine's own bus; do not expose it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.engine import Engine
from service.bus import warn_changed
from service.storage.codec import decode_command
from service.storage.journal import iter_records
from service.storage.snapshot import HEAD, MAGIC, parse_snapshot, snapshot_seq, snapshots

log = logging.getLogger("service.replication")

SNAPSHOT_HEAD_END = len(MAGIC) + HEAD.size  # a snapshot file's magic and header (seq first)


def _snapshot_head_seq(head: bytes) -> int:
    """The seq of a published snapshot from its first bytes (0: none, an empty engine)."""
    if len(head) < SNAPSHOT_HEAD_END:
        return 0
    return int(HEAD.unpack_from(head, len(MAGIC))[0])


class ReplicationKeys:
    def __init__(self, prefix: str = "exchange") -> None:
        self.applied = f"{prefix}:applied"
        self.snapshot = f"{prefix}:snapshot"
        self.origin = f"{prefix}:applied-origin"


# -- the engine's side ------------------------------------------------------------------------


class AppliedLog:
    """Publishes the journal's delivered records and snapshots (see the module docstring).

    `recent` holds the records the journal wrote lately (DurableJournal.recent); records
    older than it are read back from the journal files. `head` is the last delivered seq."""

    def __init__(
        self,
        redis_url: str,
        keys: ReplicationKeys,
        data_dir: Path,
        data_dir_id: str,
        recent: deque[tuple[int, int, int, bytes]],
        head: Callable[[], int],
        batch: int = 1_000,
    ) -> None:
        self.redis_url = redis_url
        self.keys = keys
        self.data_dir = data_dir
        self.data_dir_id = data_dir_id
        self.recent = recent
        self.head = head
        self.batch = batch
        self.published = 0  # the last seq in the applied stream
        self.epoch = ""  # this process's history in Redis (set at its first connection)
        self.snapshot_published = -1
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def delivered(self, events: list[Any]) -> None:
        """A sink of the engine loop: a batch was delivered, so there may be records to send."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="applied-log")

    @property
    def alive(self) -> bool:
        """Whether it is publishing (false once its task ended, e.g. on a fault: /readyz)."""
        return self._task is not None and not self._task.done()

    async def stop(self, timeout: float = 5.0) -> None:
        """Publish what is delivered (bounded by `timeout`), then end."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
            except Exception:  # it died (logged in `_run`): shutdown goes on
                pass
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        client = aioredis.from_url(self.redis_url)
        backoff = 0.05
        fresh = True  # (re)connected: check where the stream stands first
        try:
            while True:
                try:
                    if fresh:
                        await self._resume(client)
                        fresh = False
                    await self._publish_snapshot(client)
                    progressed = await self._publish(client)
                    backoff = 0.05
                except (RedisError, OSError) as exc:
                    self._failed(exc)
                    fresh = True
                    if self._stopping:
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if self._stopping and self.published >= self.head():
                    return
                self._wake.clear()
                if progressed and self.published < self.head():
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.5)
        except Exception:
            log.exception("applied log publisher stopped")
            raise
        finally:
            await client.aclose()

    async def _resume(self, client: aioredis.Redis) -> None:
        """Continue the published history when Redis holds ours up to a seq this engine has
        delivered; else start a new epoch from the newest snapshot."""
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.origin)
            pipe.exists(self.keys.applied)
            pipe.getrange(self.keys.snapshot, 0, SNAPSHOT_HEAD_END - 1)
            pipe.exists(self.keys.snapshot)
            origin, has_stream, head_bytes, has_snapshot = await pipe.execute()
        last_seq = 0
        if has_stream:
            info = await client.xinfo_stream(self.keys.applied)
            last_seq = int(info["last-generated-id"].decode().split("-")[0])
        # Within one process the history goes on where Redis has it. A restarted engine starts
        # a new epoch: what Redis holds may be records this data dir lost (a machine crash
        # with EXCHANGE_FSYNC=off), which a replica must never keep.
        ours = origin is not None and origin.decode() == self.epoch
        if ours and has_snapshot and last_seq <= self.head():
            self.snapshot_published = _snapshot_head_seq(head_bytes)
            self.published = max(last_seq, self.snapshot_published)
            return
        self.epoch = epoch = f"{self.data_dir_id}:{time.time_ns()}"
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.applied, self.keys.snapshot)
            pipe.set(self.keys.origin, epoch)
            await pipe.execute()
        self.published = 0
        self.snapshot_published = -1
        log.info("applied log: new epoch %s", epoch)

    async def _publish_snapshot(self, client: aioredis.Redis) -> None:
        """The newest snapshot file, when it is newer than the one in Redis; in a new epoch
        first of all (an empty value when there is none: replicas start from an empty
        engine). Else only once the entries up to it are published, so a following replica
        never meets a hole."""
        files = snapshots(self.data_dir)
        seq = snapshot_seq(files[-1]) if files else 0
        if seq <= self.snapshot_published:
            return
        if self.snapshot_published >= 0 and self.published < seq:
            return
        data = b""
        if files:
            try:
                data = await asyncio.to_thread(files[-1].read_bytes)
            except FileNotFoundError:  # pruned meanwhile: the next look finds the newer one
                return
        async with client.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.snapshot, data)
            if seq:
                pipe.xtrim(self.keys.applied, minid=f"{seq + 1}-0", approximate=False)
            await pipe.execute()
        self.snapshot_published = seq
        self.published = max(self.published, seq)

    async def _publish(self, client: aioredis.Redis) -> bool:
        """Send the delivered records after `published`; whether any went."""
        head = self.head()
        records = self._recent_after(self.published, head)
        if records is None:  # older than `recent` holds: read the journal files once, aside
            after = self.published
            records = await asyncio.to_thread(_journal_after, self.data_dir, after, head)
        if not records:
            return False
        for i in range(0, len(records), self.batch):
            chunk = records[i : i + self.batch]
            async with client.pipeline(transaction=False) as pipe:
                for seq_before, seq, _ts, payload in chunk:
                    pipe.xadd(self.keys.applied, {"sb": seq_before, "cmd": payload}, id=f"{seq}-0")
                await pipe.execute()
            self.published = chunk[-1][1]
        return True

    def _recent_after(self, after: int, head: int) -> list[tuple[int, int, int, bytes]] | None:
        """The held records in (after, head], scanning from the newest (None: `recent` does
        not reach back to `after`)."""
        recent = self.recent
        if not recent or recent[-1][1] <= after:
            return []
        out: list[tuple[int, int, int, bytes]] = []
        for rec in reversed(recent):
            if rec[1] <= after:
                out.reverse()
                return [r for r in out if r[1] <= head]
            out.append(rec)
        return None if recent[0][0] > after else [r for r in reversed(out) if r[1] <= head]

    def _failed(self, exc: BaseException) -> None:
        self.last_error = warn_changed(log, "applied log", self.last_error, exc)


def _journal_after(directory: Path, after: int, head: int) -> list[tuple[int, int, int, bytes]]:
    """Records in (after, head] read back from the journal files (one pass, off the loop)."""
    out = []
    for r in iter_records(directory, after):
        if r.seq > head:
            break
        out.append((r.seq_before, r.seq, r.ts_ns, r.payload))
    return out


# -- a replica --------------------------------------------------------------------------------


class ReplicaDiverged(RuntimeError):
    """An applied entry does not continue the replica's state: it starts over."""


class Replica:
    """An exact copy of the engine, kept by replaying the applied stream (module docstring).
    `on_events(events)` sees every replayed command's events, in order."""

    def __init__(
        self,
        redis_url: str,
        keys: ReplicationKeys,
        new_engine: Callable[[], Engine],
        on_events: Callable[[list[Any]], None] | None = None,
        block_ms: int = 200,
    ) -> None:
        self.redis_url = redis_url
        self.keys = keys
        self.new_engine = new_engine
        self.config = new_engine().config_fingerprint()
        self.on_events = on_events
        self.block_ms = block_ms
        self.engine: Engine | None = None
        self.origin: bytes | None = None
        self.bootstraps = 0
        self.stopped = False  # set before cancelling `run` (a cancelled Redis read may surface as an error)
        self.last_error: str | None = None

    async def bootstrap(self, client: aioredis.Redis) -> None:
        """Load the published snapshot (or start empty) under the current origin."""
        async with client.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.origin)
            pipe.get(self.keys.snapshot)
            origin, data = await pipe.execute()
        if origin is None or data is None:
            raise ReplicaDiverged("nothing published yet")
        engine = parse_snapshot(data, self.keys.snapshot)[0] if data else self.new_engine()
        if engine.config_fingerprint() != self.config:
            raise RuntimeError(
                "the engine publishes a state under other rules (EXCHANGE_CONFIG) than this "
                "replica's: start it with the engine's config"
            )
        self.engine, self.origin = engine, origin
        self.bootstraps += 1

    def apply(self, entry_id: bytes, fields: dict[bytes, bytes]) -> list[Any]:
        """Replay one applied entry; ReplicaDiverged when it does not continue this state."""
        engine = self.engine
        assert engine is not None
        seq = int(entry_id.split(b"-")[0])
        if int(fields[b"sb"]) != engine.seq:
            raise ReplicaDiverged(f"entry {seq} starts at seq {int(fields[b'sb'])}, the replica is at {engine.seq}")
        events = engine.apply(decode_command(fields[b"cmd"]))
        if engine.seq != seq:
            raise ReplicaDiverged(f"entry {seq} took the replica to seq {engine.seq}")
        return events

    async def run(self) -> None:
        """Follow the engine until cancelled, starting over whenever the history changes."""
        client = aioredis.from_url(self.redis_url)
        backoff = 0.05
        try:
            while True:
                try:
                    if self.engine is None:
                        await self.bootstrap(client)
                    await self._follow(client)
                except (ReplicaDiverged, RedisError, OSError) as exc:
                    if self.stopped:
                        return
                    diverged = isinstance(exc, ReplicaDiverged)  # Redis errors: follow on from here
                    then = "; starting over" if diverged else "; retrying"
                    self.last_error = warn_changed(log, "replica", self.last_error, exc, then)
                    if diverged:
                        self.engine = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                else:
                    backoff = 0.05
        finally:
            await client.aclose()

    async def _follow(self, client: aioredis.Redis) -> None:
        while True:
            engine = self.engine
            assert engine is not None
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(self.keys.origin)
                pipe.xread({self.keys.applied: f"{engine.seq}-0"}, count=1_000, block=self.block_ms)
                origin, resp = await pipe.execute()
            if origin != self.origin:
                raise ReplicaDiverged("the engine started a new history")
            if not resp:
                continue
            for entry_id, fields in resp[0][1]:
                events = self.apply(entry_id, fields)
                if events and self.on_events is not None:
                    self.on_events(events)
