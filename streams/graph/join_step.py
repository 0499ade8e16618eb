"""Joins by correlation ID: the join before a step with several dependencies, and the collector of the results.

Each dependency writes exactly one record per input (an output, a skip or a failure marker), so a join waits
for one record per dependency per input, keyed by the input's ``origin``, and needs no timeout to end. Its
state lives in memory per input partition and in a compacted changelog written in the same transaction as its
outputs and offsets (one changelog record per input and dependency, so no record grows with the number of
branches), restored on assignment: a ``kill -9`` loses and doubles nothing.

The first failure marker of an input ends the input at once (the join passes the marker on, the collector
writes the dead letter); the input is remembered as done until its other dependencies have delivered, and
their records are dropped.

A join may also stop waiting (``timeout_s``, the support join's partial-timeout policy): for a dependency that
has moved on (it delivered the records of inputs that reached the join ``timeout_s`` after this one: a backlog
alone costs nothing), or that delivered nothing at all ``give_up_s`` after the input's first record came. The
input then goes on with that dependency's output None and its name in ``missing``; it is remembered as done,
with no time limit, until the dependency's record comes and is dropped, so it never ends twice. Arrival times
are the join's own clock, not written down: after a restart both timeouts count again from the restore.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from streams import metrics
from streams.dead_letter import MAX_ERROR_CHARS, dead_letter_headers, fit_value
from streams.errors import InputError, Oversized, TriageError
from streams.graph.envelope import MARGIN_BYTES, Envelope, Failure, decode, dumps
from streams.records import Emit, Record
from streams.step import StepContext

log = logging.getLogger("triage.graph.join")
DONE_RETENTION_MS = 60 * 60 * 1000
"""How long an input ended early (a failure) waits for its other dependencies' records, to drop them."""
TICK_EVERY_MS = 1000


@dataclass
class _Entry:
    records: dict[str, bytes] = field(default_factory=dict)
    """Per dependency, the record it wrote (only while the input is not done)."""
    done_ms: int | None = None
    seen: set[str] = field(default_factory=set)
    """Dependencies heard from (of a done input)."""
    first_ms: int | None = None
    """When its first record reached this join (or the state was restored): what the timeouts count from."""
    keep: bool = False
    """Done by a partial timeout: kept until every dependency delivered, never expired (its late record would
    otherwise begin a second wait, and a second end)."""

    def copy(self) -> "_Entry":
        return _Entry(dict(self.records), self.done_ms, set(self.seen), self.first_ms, self.keep)


class GraphJoin:
    """Waits for one record of each of ``deps`` (read from ``inputs``, in the same order) per input."""

    stateful = True

    def __init__(self, name: str, *, inputs: tuple[str, ...], deps: tuple[str, ...], changelog: str,
                 max_value_bytes: int, timeout_s: float | None = None, give_up_s: float | None = None) -> None:
        self.name, self.inputs, self.deps, self.changelog = name, inputs, deps, changelog
        self._dep_of = dict(zip(inputs, deps))
        self.max_value_bytes = max_value_bytes
        self.timeout_ms = None if timeout_s is None else int(timeout_s * 1000)
        self.give_up_ms = int((give_up_s or 15 * (timeout_s or 0)) * 1000)
        self.clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)
        self._progress: dict[tuple[int, str], int] = {}
        """(partition, dependency) -> the latest arrival time of an input that dependency delivered."""
        self._state: dict[int, dict[str, _Entry]] = {}
        self._last_tick = 0
        self._before: tuple[str, int, int, str, _Entry | None] | None = None

    # ---- what a subclass decides --------------------------------------------------------------------------
    def complete(self, partition: int, envelopes: list[Envelope], missing: tuple[str, ...] = ()) -> list[Emit]:
        raise NotImplementedError

    def failed(self, partition: int, env: Envelope) -> list[Emit]:
        raise NotImplementedError

    # ---- state lifecycle ----------------------------------------------------------------------------------
    def restore(self, partitions: list[int],
                read_changelog: Callable[[int], Iterable[tuple[bytes | None, bytes | None]]]) -> None:
        for p in partitions:
            table: dict[str, _Entry] = {}
            for key, value in read_changelog(p):
                if key is None:
                    continue
                origin, _, dep = key.decode().rpartition("|")
                if value is None:
                    entry = table.get(origin)
                    if entry is not None:
                        if dep:
                            entry.records.pop(dep, None)
                        else:
                            entry.done_ms, entry.seen = None, set()
                        if not entry.records and entry.done_ms is None:
                            del table[origin]
                    continue
                entry = table.setdefault(origin, _Entry())
                if dep:
                    entry.records[dep] = value
                else:
                    doc = json.loads(value)
                    entry.done_ms, entry.seen = int(doc["done_ms"]), set(doc["seen"])
                    entry.keep = bool(doc.get("keep"))
            self._state[p] = table
            log.info("join state restored", extra={"fields": {"step": self.name, "partition": p, "entries": len(table)}})

    def drop(self, partitions: list[int]) -> None:
        for p in partitions:
            self._state.pop(p, None)

    def size(self) -> int:
        return sum(len(t) for t in self._state.values())

    # ---- records ------------------------------------------------------------------------------------------
    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        """Failure-atomic: the outputs are built before the state changes."""
        env = decode(record.raw)
        dep = self._dep_of[record.topic]
        table = self._state.setdefault(record.partition, {})
        old = table.get(env.origin)
        self._before = (record.topic, record.partition, record.offset, env.origin, old)
        entry = old.copy() if old is not None else _Entry()
        p, origin = record.partition, env.origin
        if entry.done_ms is not None:
            if dep in entry.seen:
                return []
            entry.seen.add(dep)
            return self._done(p, origin, entry, [])
        if dep in entry.records:
            return []  # read again after its state was written: it already counts
        if env.failed is not None:
            return self._end(p, origin, entry, dep, self.failed(p, env))
        entry.records[dep] = record.raw or b""
        entry.first_ms = entry.first_ms or self.clock_ms()
        key = (p, dep)
        self._progress[key] = max(self._progress.get(key, 0), entry.first_ms)
        if len(entry.records) < len(self.deps):
            table[origin] = entry
            return [self._state_record(p, origin, dep, record.raw)]
        envelopes = [decode(entry.records[d]) for d in self.deps]
        return self._end(p, origin, entry, dep, self.complete(p, envelopes))

    def on_failure(self, record: Record, code: str, reason: str) -> list[Emit] | None:
        """A failure inside the join ends the input as a failure of this join, once; None (a dead letter of the
        record itself) for a record that is not the graph's."""
        try:
            env = decode(record.raw)
        except InputError:
            return None
        table = self._state.setdefault(record.partition, {})
        if self._before is not None and self._before[:3] == (record.topic, record.partition, record.offset):
            _, _, _, origin, before = self._before
            if before is None:
                table.pop(origin, None)
            else:
                table[origin] = before  # none of this record's outputs was written: neither is its state
        self._before = None
        entry = table.get(env.origin)
        entry = entry.copy() if entry is not None else _Entry()
        dep = self._dep_of.get(record.topic, "")
        if entry.done_ms is not None:
            entry.seen.add(dep)
            return self._done(record.partition, env.origin, entry, [])
        failure = Failure(self.name, code, reason, 1, f"{record.topic}/{record.partition}/{record.offset}",
                          (record.raw or b"").decode("utf-8", "replace"))
        return self._end(record.partition, env.origin, entry, dep, self.failed(record.partition, env.failing(failure)))

    def tick(self, now_ms: int) -> list[Emit]:
        if now_ms - self._last_tick < TICK_EVERY_MS:
            return []
        self._last_tick = now_ms
        out: list[Emit] = []
        for p, table in self._state.items():
            for origin, entry in list(table.items()):
                if entry.done_ms is None:
                    entry.first_ms = entry.first_ms or now_ms  # restored: the timeouts count from now
                    if self._given_up(p, entry, now_ms):
                        out.extend(self._partial(p, origin, entry))
                elif not entry.keep and now_ms - entry.done_ms > DONE_RETENTION_MS:
                    del table[origin]
                    out.append(Emit(self.changelog, None, key=f"{origin}|", partition=p))
        return out

    def _given_up(self, p: int, entry: _Entry, now_ms: int) -> bool:
        if self.timeout_ms is None or entry.first_ms is None:
            return False
        if now_ms - entry.first_ms > self.give_up_ms:
            return True
        if now_ms - entry.first_ms <= self.timeout_ms:
            return False
        missing = [d for d in self.deps if d not in entry.records]
        return all(self._progress.get((p, d), 0) > entry.first_ms + self.timeout_ms for d in missing)

    def _partial(self, p: int, origin: str, entry: _Entry) -> list[Emit]:
        missing = tuple(d for d in self.deps if d not in entry.records)
        log.warning("join stopped waiting", extra={"fields": {"step": self.name, "origin": origin,
                                                              "missing": list(missing)}})
        metrics.JOIN_PARTIAL.labels(self.name).inc()
        outputs = self.complete(p, [decode(entry.records[d]) for d in self.deps if d in entry.records], missing)
        out = list(outputs) + [Emit(self.changelog, None, key=f"{origin}|{d}", partition=p) for d in entry.records]
        done = _Entry(done_ms=self.clock_ms(), seen=set(entry.records), keep=True)
        return self._done(p, origin, done, out)

    # ---- helpers ------------------------------------------------------------------------------------------
    def _end(self, p: int, origin: str, entry: _Entry, dep: str, outputs: list[Emit]) -> list[Emit]:
        """The input is done with ``outputs``: forget what it held; remember it only while a dependency has not
        delivered yet (its record is then dropped)."""
        out = list(outputs)
        for d in entry.records:
            if d != dep:
                out.append(Emit(self.changelog, None, key=f"{origin}|{d}", partition=p))
        seen = set(entry.records) | {dep}
        return self._done(p, origin, _Entry(done_ms=self.clock_ms(), seen=seen), out)

    def _done(self, p: int, origin: str, entry: _Entry, out: list[Emit]) -> list[Emit]:
        table = self._state.setdefault(p, {})
        was_done = origin in table and table[origin].done_ms is not None
        if entry.seen >= set(self.deps):
            table.pop(origin, None)
            if was_done:
                out.append(Emit(self.changelog, None, key=f"{origin}|", partition=p))
            return out
        table[origin] = entry
        doc: dict[str, Any] = {"done_ms": entry.done_ms, "seen": sorted(entry.seen)}
        if entry.keep:
            doc["keep"] = True
        out.append(Emit(self.changelog, dumps(doc), key=f"{origin}|", partition=p))
        return out

    def _state_record(self, p: int, origin: str, dep: str, raw: bytes | None) -> Emit:
        return Emit(self.changelog, raw or b"", key=f"{origin}|{dep}", partition=p)


class StepJoin(GraphJoin):
    """Before a step with several dependencies: one record with every dependency's output, for that step."""

    def __init__(self, name: str, *, target: str, output: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.target, self.output = target, output
        self.limit = max(1024, self.max_value_bytes - MARGIN_BYTES)

    def complete(self, partition: int, envelopes: list[Envelope], missing: tuple[str, ...] = ()) -> list[Emit]:
        first = envelopes[0]
        steps: dict[str, Any] = {}
        for e in envelopes:
            steps.update(e.steps)
        joined = Envelope(first.correlation_id, first.attempt, first.origin, first.input, steps,
                          missing=_missing(envelopes, missing))
        value = joined.encode()
        if len(value) > self.limit:
            # What the step would have read cannot be written: its dead letter carries the input alone.
            bare = Envelope(first.correlation_id, first.attempt, first.origin, first.input, {}).encode()
            failure = Failure(self.target, Oversized.code, f"the joined record of {len(value)} bytes is over the "
                              f"limit of {self.limit}", 0, f"{self.output}/{partition}/-1", bare.decode())
            return self.failed(partition, joined.failing(failure))
        return [_emit(self.output, joined, value)]

    def failed(self, partition: int, env: Envelope) -> list[Emit]:
        return [_emit(self.output, env, env.encode())]


class Collector(GraphJoin):
    """After the steps nothing depends on: the input's one result, or its one dead letter."""

    def __init__(self, name: str, *, results: dict[str, str], all_steps: tuple[str, ...],
                 dlq_topic: Callable[[str], str], route: Any = None, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.results, self.all_steps, self.dlq_topic, self.route = results, all_steps, dlq_topic, route

    def complete(self, partition: int, envelopes: list[Envelope], missing: tuple[str, ...] = ()) -> list[Emit]:
        first = envelopes[0]
        steps: dict[str, Any] = {}
        for e in envelopes:
            steps.update(e.steps)
        doc: dict[str, Any] = {"correlation_id": first.correlation_id, "input": first.input,
                               "steps": {s: steps.get(s) for s in self.all_steps}}
        gone = _missing(envelopes, missing)
        if gone:
            doc["missing"] = list(gone)
        value = dumps(doc)
        if len(value) > self.max_value_bytes:
            bare = dumps({"correlation_id": first.correlation_id, "input": first.input})
            failure = Failure(self.name, Oversized.code, f"the result of {len(value)} bytes is over the limit of "
                              f"{self.max_value_bytes}", 0, first.origin, bare.decode())
            return self.failed(partition, first.failing(failure))
        try:
            topic = self._topic(doc)
        except TriageError as exc:
            failure = Failure(self.name, exc.code, str(exc)[:MAX_ERROR_CHARS], 1, first.origin, value.decode())
            return self.failed(partition, first.failing(failure))
        return [_emit(topic, first, value)]

    def _topic(self, doc: dict[str, Any]) -> str:
        """The outcome topic of a finished input: the one result topic, or the one ``route(result)`` names."""
        if self.route is None:
            return next(iter(self.results.values()))
        try:
            outcome = self.route.fn(doc)
        except Exception as exc:  # noqa: BLE001 - the user's function: the input ends in a dead letter, once
            raise TriageError(f"route {self.route.label} raised {type(exc).__name__}: {exc}",
                              code="ROUTE_ERROR") from exc
        if outcome not in self.results:
            raise TriageError(f"route {self.route.label} answered {outcome!r}; outcomes: {', '.join(self.results)}",
                              code="ROUTE_ERROR")
        return self.results[outcome]

    def failed(self, partition: int, env: Envelope) -> list[Emit]:
        f = env.failed
        assert f is not None
        try:
            src_topic, src_partition, src_offset = f.source.rsplit("/", 2)
            where = (src_topic, int(src_partition), int(src_offset))
        except ValueError:
            where = (f.source, -1, -1)
        raw = f.consumed.encode("utf-8")
        failed_record = Record(topic=where[0], partition=where[1], offset=where[2], key=env.correlation_id,
                               raw=raw, headers={"correlation_id": env.correlation_id, "attempt": str(env.attempt)},
                               timestamp_ms=int(time.time() * 1000))
        headers = dead_letter_headers(failed_record, f.step, f.reason, f.error, f.attempts)
        headers["correlation_id"] = env.correlation_id
        value = fit_value(raw, headers)
        metrics.DEAD_LETTERS.labels(f.step, f.reason).inc()
        return [Emit(self.dlq_topic(f.step), value, key=env.correlation_id, headers=headers)]


def _missing(envelopes: list[Envelope], here: tuple[str, ...]) -> tuple[str, ...]:
    """Every dependency a join gave up on, upstream or here, once each, in the order met."""
    return tuple(dict.fromkeys([m for e in envelopes for m in e.missing] + list(here)))


def _emit(topic: str, env: Envelope, value: bytes) -> Emit:
    return Emit(topic, value, key=env.correlation_id,
                headers={"correlation_id": env.correlation_id, "attempt": str(env.attempt)})
