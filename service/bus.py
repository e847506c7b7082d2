"""The command bus: commands reach the engine over a Redis stream, exactly once.

`python -m service --role engine` runs the service as usual and, beside its HTTP API,
consumes the stream `<prefix>:commands` (prefix `exchange` by default, EXCHANGE_BUS_PREFIX;
`{exchange}` puts every key of one engine in one Redis Cluster slot). Anything that can
write to Redis and build a command can trade through it: the gateway processes of the
scale-out, a test, a script.

An entry has three fields:

- `key`: the sender's idempotency key (1..128 printable ASCII characters), unique per
  command. The engine applies a key once; a second entry with a key it has applied (within
  the last EXCHANGE_BUS_DEDUPE_WINDOW bus commands) is answered `duplicate` with the first
  one's seq range.
- `cmd`: the command as the journal writes it (service/storage/codec.py):
  `["PlaceOrder", account_id, "BTC-PERP", "buy", 1, 5000000, ...]`, fields in declaration
  order, trailing ones with defaults may be left out. Every value is checked against the
  field's type before the engine sees it (ints within +-10^23, the largest the HTTP edge can
  produce; strings up to 256 characters);
  `ts_ns` is the engine's to stamp and must be left out or 0.
- `reply` (optional): a stream `<prefix>:results:<name>` where the answer goes.

The answer (fields `key`, `status`, `seq_before`, `seq`, `events`, `error`): `applied` (the
command's events, as on `exchange:events`), `rejected` (the engine refused it: one rejection
event), `duplicate` (the key was applied before: `seq_before`..`seq` are the first
application's, no events), or `invalid` (the entry itself is malformed: `error` says why;
nothing was applied). An answer is written only once the command is journaled (as an HTTP
answer is); `events` holds at most 1,000 events (`events_truncated` says when more were
made: read them from `exchange:events` by seq).

Exactly once (service/storage/bus_ledger.py): each bus command that made events is journaled
with its entry id and key, and every snapshot keeps the ledger, so a restarted engine
resumes after the last journaled entry: nothing skipped, nothing applied twice. Entries
read are removed from the stream in the same transaction that writes their answers (after
the journal), so an answered entry is never read again, one that changed nothing included.
An answer `error` means the command was applied but its answer was lost: send the key again.

Trust: whoever can write the stream can send any command (deposits, marks, withdrawals
from any account): the bus is admin-equivalent, like the admin token. Keep Redis private;
gateways authenticate users before they write.

Back-pressure: `submit` (the senders' side) refuses to add an entry while the stream holds
`max_pending` unapplied entries or more (`BusFull`: the engine is behind; a gateway answers
503 with Retry-After), checked and added in one Lua call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.engine import Engine
from engine.events import REJECTION_TYPES
from service.engine_loop import Duplicate, EngineHalted, EngineLoop
from service.format import EventFormatter
from service.storage.codec import COMMAND_TYPES, dumps_exact, encode_command, parse_record

log = logging.getLogger("service.bus")

KEY_MAX = 128
REPLY_MAX = 200
CMD_MAX_BYTES = 64 << 10
STR_MAX = 256
INT_LIMIT = 10**23  # the largest integer the HTTP edge can produce (10^15 units in atoms)
EVENTS_IN_ANSWER = 1_000


class BusKeys:
    """The Redis keys of one engine's bus (all share `prefix`, e.g. a `{tag}` for a cluster)."""

    def __init__(self, prefix: str = "exchange") -> None:
        self.prefix = prefix
        self.commands = f"{prefix}:commands"
        self.results = f"{prefix}:results:"  # + the sender's name

    def reply(self, name: str) -> str:
        return self.results + name

    def is_reply(self, stream: str) -> bool:
        """Whether `stream` is a reply stream of this bus (`<prefix>:results:<name>`)."""
        return stream.startswith(self.results) and len(stream) > len(self.results)


class BusEntryInvalid(ValueError):
    """A bus entry that is not a command the engine may see."""


_NAMES: dict[str, type] = {"int": int, "str": str, "bool": bool, "None": type(None)}


def _annotations() -> dict[str, dict[str, tuple[type, ...]]]:
    """command name -> field -> the Python types its value may have, read from the source of
    engine/commands.py (the compiled build keeps `int | None` only as `type`)."""
    import ast
    from pathlib import Path

    import engine

    tree = ast.parse((Path(engine.__file__).parent / "commands.py").read_text())
    out: dict[str, dict[str, tuple[type, ...]]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in COMMAND_TYPES:
            out[node.name] = {
                stmt.target.id: tuple(_NAMES[part.strip()] for part in ast.unparse(stmt.annotation).split("|"))
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
    return out


def _field_types(cls: type, annotated: dict[str, tuple[type, ...]]) -> list[tuple[str, tuple[type, ...]]]:
    """Each field of a command in declaration order: its name and the types its value may have."""
    return [(f.name, annotated[f.name]) for f in dataclasses.fields(cls)]


_ANNOTATED = _annotations()
_TYPES = {name: (cls, _field_types(cls, _ANNOTATED[name])) for name, cls in COMMAND_TYPES.items()}


def _text(fields: dict[bytes, bytes], name: bytes, limit: int) -> str | None:
    raw = fields.get(name)
    if raw is None:
        return None
    if len(raw) > limit:
        raise BusEntryInvalid(f"{name.decode()}: longer than {limit} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BusEntryInvalid(f"{name.decode()}: not ASCII") from None
    if not text or not text.isprintable():
        raise BusEntryInvalid(f"{name.decode()}: empty or not printable")
    return text


def parse_entry(fields: dict[bytes, bytes], keys: BusKeys) -> tuple[str, Any, str | None]:
    """(idempotency key, command, reply stream) of an entry; raises BusEntryInvalid."""
    key = _text(fields, b"key", KEY_MAX)
    if key is None:
        raise BusEntryInvalid("key: missing")
    reply = _text(fields, b"reply", REPLY_MAX)
    if reply is not None and not keys.is_reply(reply):
        raise BusEntryInvalid(f"reply: must be a stream {keys.results}<name>")
    return key, parse_command(fields.get(b"cmd")), reply


def parse_command(raw: bytes | None) -> Any:
    """The command of an entry's `cmd`, every field checked (BusEntryInvalid otherwise)."""
    if raw is None:
        raise BusEntryInvalid("cmd: missing")
    if len(raw) > CMD_MAX_BYTES:
        raise BusEntryInvalid(f"cmd: longer than {CMD_MAX_BYTES} bytes")
    try:
        parsed = parse_record(raw)
    except ValueError as exc:
        raise BusEntryInvalid(f"cmd: not JSON ({exc})") from None
    if type(parsed) is not list or not parsed or type(parsed[0]) is not str:
        raise BusEntryInvalid('cmd: a JSON array ["CommandName", field values...]')
    found = _TYPES.get(parsed[0])
    if found is None:
        raise BusEntryInvalid(f"cmd: unknown command {parsed[0][:64]!r}")
    cls, types = found
    values = parsed[1:]
    if len(values) > len(types):
        raise BusEntryInvalid(f"cmd: {parsed[0]} has {len(types)} fields, got {len(values)}")
    for (name, allowed), value in zip(types, values, strict=False):
        kind = type(value)
        if kind not in allowed:  # bool is not an int here (type(), not isinstance)
            raise BusEntryInvalid(f"cmd: {parsed[0]}.{name} cannot be {kind.__name__}")
        if kind is int and not -INT_LIMIT <= value <= INT_LIMIT:
            raise BusEntryInvalid(f"cmd: {parsed[0]}.{name} is beyond +-10^23")
        if kind is str and len(value) > STR_MAX:
            raise BusEntryInvalid(f"cmd: {parsed[0]}.{name} is longer than {STR_MAX} characters")
        if name == "ts_ns" and value:
            raise BusEntryInvalid("cmd: ts_ns is stamped by the engine (leave it out or 0)")
    try:
        return cls(*values)
    except TypeError as exc:  # a required field left out
        raise BusEntryInvalid(f"cmd: {exc}") from None


# -- the senders' side -----------------------------------------------------------------------

_SUBMIT = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
"""


class BusFull(Exception):
    """The command stream holds `max_pending` unapplied entries: the engine is behind."""


async def submit(
    client: aioredis.Redis, keys: BusKeys, key: str, command: Any, reply: str | None = None,
    max_pending: int = 10_000,
) -> str:
    """Add a command to the bus (unless it is full: BusFull); returns its entry id."""
    args: list[Any] = [max_pending, "key", key, "cmd", encode_command(command)]
    if reply is not None:
        args += ["reply", reply]
    entry = await client.eval(_SUBMIT, 1, keys.commands, *args)
    if entry is None:
        raise BusFull(f"{keys.commands} holds {max_pending} unapplied commands")
    return entry.decode() if isinstance(entry, bytes) else str(entry)


# -- the engine's side -----------------------------------------------------------------------


class BusConsumer:
    """Reads the command stream in order, hands each command to the engine loop with its
    origin, writes the answers once the commands are journaled, trims what was applied."""

    def __init__(
        self,
        redis_url: str,
        keys: BusKeys,
        loop: EngineLoop,
        formatter: EventFormatter,
        batch: int = 512,
        block_ms: int = 500,
        results_maxlen: int = 10_000,
    ) -> None:
        if loop.bus is None:
            raise ValueError("the engine loop has no bus ledger (recover the journal first)")
        self.redis_url = redis_url
        self.keys = keys
        self.loop = loop
        self.ledger = loop.bus
        self.formatter = formatter
        self.batch = batch
        self.block_ms = block_ms
        self.results_maxlen = results_maxlen
        self.consumed = 0  # entries taken from the stream (applied, duplicate or invalid)
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bus-consumer")

    @property
    def alive(self) -> bool:
        """Whether it is consuming (false once its task ended, e.g. on a fault: /readyz)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # its errors were logged
                await self._task

    def _answer(self, engine: Engine, events: list[Any]) -> dict[str, Any]:
        """Run in the engine loop right after the command: its events, formatted."""
        envelope = self.formatter.envelope
        return {
            "status": "rejected" if events and isinstance(events[0], REJECTION_TYPES) else "applied",
            "seq_before": events[0].seq - 1 if events else engine.seq,
            "seq": engine.seq,
            "events": [envelope(e) for e in events[:EVENTS_IN_ANSWER]],
            "events_truncated": len(events) > EVENTS_IN_ANSWER,
        }

    async def _run(self) -> None:
        try:
            await self._consume()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must be seen: the engine stops hearing the bus
            log.exception("command bus consumer stopped")
            raise

    async def _consume(self) -> None:
        client = aioredis.from_url(self.redis_url)
        read_from = self.ledger.cursor
        backoff = 0.05
        try:
            while not self._stopping:
                resp: Any
                try:
                    resp = await client.xread({self.keys.commands: read_from}, count=self.batch, block=self.block_ms)
                except (RedisError, OSError) as exc:
                    self._failed(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.05
                if not resp:
                    continue
                pending: list[tuple[str | None, str | None, Any]] = []
                raw_id: bytes
                fields: dict[bytes, bytes]
                for raw_id, fields in resp[0][1]:
                    entry_id = raw_id.decode()
                    read_from = entry_id
                    try:
                        key, command, reply_to = parse_entry(fields, self.keys)
                    except BusEntryInvalid as exc:
                        pending.append(_invalid(fields, self.keys, str(exc)))
                        continue
                    try:
                        fut = self.loop.enqueue(command, self._answer, origin=(entry_id, key))
                    except EngineHalted:
                        return
                    pending.append((reply_to, key, fut))
                answers = []
                for reply, sender_key, result in pending:
                    if isinstance(result, asyncio.Future):
                        try:
                            result = await result
                        except EngineHalted:  # not journaled: nobody hears of it
                            return
                        except Exception as exc:  # a fault in `_answer`: applied, answer lost
                            log.exception("command bus: answer for %s failed", sender_key)
                            result = {"status": "error", "error": f"{type(exc).__name__}: the answer was lost; send the key again"}
                    if reply is not None and sender_key is not None:
                        answers.append((reply, _answer_fields(sender_key, result)))
                self.consumed += len(pending)
                await self._write(client, answers, _after(read_from))
        finally:
            await client.aclose()

    async def _write(self, client: aioredis.Redis, answers: list[tuple[str, Any]], below: str) -> None:
        """Remove every entry read (those below `below`: each is journaled, changed nothing,
        was a duplicate or invalid), then write their answers, in one transaction: an
        answered entry is never read again, even one that left no trace in the journal
        (bus_ledger.py)."""
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.xtrim(self.keys.commands, minid=below, approximate=False)
                for reply, fields in answers:
                    pipe.xadd(reply, fields, maxlen=self.results_maxlen, approximate=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:  # the senders time out and retry with their keys
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = warn_changed(log, "command bus", self.last_error, exc)


def warn_changed(logger: logging.Logger, what: str, last: str | None, exc: BaseException, then: str = "") -> str:
    """Log a retried failure once while it stays the same; returns its text (the new `last`)."""
    text = f"{type(exc).__name__}: {exc}"
    if text != last:
        logger.warning("%s: %s%s", what, text, then)
    return text


def _after(entry_id: str) -> str:
    """The smallest stream id above `entry_id`."""
    ms, _, n = entry_id.partition("-")
    return f"{ms}-{int(n or 0) + 1}"


def _invalid(fields: dict[bytes, bytes], keys: BusKeys, why: str) -> tuple[str | None, str | None, Any]:
    """An answer to a malformed entry, when its key and reply are usable (else none)."""
    try:
        reply = _text(fields, b"reply", REPLY_MAX)
        key = _text(fields, b"key", KEY_MAX)
    except BusEntryInvalid:
        return None, None, None
    if key is None or reply is None or not keys.is_reply(reply):
        return None, None, None
    return reply, key, {"status": "invalid", "error": why}


def _answer_fields(key: str, result: Any) -> dict[str, Any]:
    if isinstance(result, Duplicate):
        return {"key": key, "status": "duplicate", "seq_before": result.seq_before, "seq": result.seq}
    out: dict[str, Any] = {"key": key, "status": result["status"]}
    if "error" in result:
        out["error"] = result["error"]
        return out
    out["seq_before"] = result["seq_before"]
    out["seq"] = result["seq"]
    try:
        out["events"] = orjson.dumps(result["events"])
    except TypeError:  # an integer beyond 64 bits (e.g. a rejected 100-digit order id)
        out["events"] = dumps_exact(result["events"])
    if result["events_truncated"]:
        out["events_truncated"] = 1
    return out
