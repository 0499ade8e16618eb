"""join: assemble the four classifications of a ticket with the ticket itself, per correlation ID.

State is per (tenant, correlation ID, attempt), so IDs that collide across tenants never share state. It
lives in memory per input partition and in the compacted changelog ``triage.join.state``, written in the
same transaction as the outputs and the input offsets; on assignment it is restored from the changelog
(the Kafka Streams way), so a crash loses and doubles nothing.

A join completes on four results, or gives up on a classifier once that classifier has moved on by
``join_timeout_s`` past the ticket (or after a hard timeout when it delivers nothing): the missing
classifiers are named in the Case and the router's policy decides what that means.

What the state holds, and why it is bounded: the ticket's own ``tickets.valid`` bytes (Avro, as ingest wrote
them, so never bigger than a record ingest was allowed to write) and a few short fields of bookkeeping, never a
re-encoding of the text (JSON with ``ensure_ascii`` spelt an emoji in 12 bytes, and a ticket within every ingest
limit made a state record over the output limit). Every outcome of a ticket at the join is exactly one record:
its joined Case, or one dead letter of the ticket itself when the join cannot finish it (a failure inside the
join, whatever it is, dead-letters the ticket, never the classification that happened to trigger it).

One (tenant, correlation ID, attempt) is one ticket. A second ticket with the same triple, while the first is in
flight or within ``DONE_RETENTION_MS`` after it finished, is dead-lettered ``DUPLICATE`` naming the record that
holds the ID. Every output of the runtime names the record it was made from (the ``source`` header), so a
classification says which ``tickets.valid`` record it classified and a duplicate's labels are never taken for
the first ticket's.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Iterable

from processors.case import evolve
from streams import avro, metrics
from streams.dead_letter import dead_letter_headers, dead_letter_id, fit_value
from streams.errors import DuplicateTicket, TriageError
from streams.records import Emit, Record
from streams.step import StepContext
from processors.topology import CLASSIFIED, CLASSIFIERS, JOIN_STATE, JOINED, TOPIC_SCHEMA, VALID, dlq_topic

log = logging.getLogger("triage.join")
DONE_RETENTION_MS = 10 * 60 * 1000
"""How long a finished ticket's ID is remembered: the window within which a re-sent ticket is a DUPLICATE."""
ORPHAN_MS = 10 * 60 * 1000
TICK_EVERY_MS = 250
CARRY = ("correlation_id", "tenant_id", "attempt", "traceparent", "hops")
MAX_FIELD_CHARS = 200
"""Per bookkeeping string kept in the state (a model name, a label, an error code, a header): four results and
five headers stay well inside the runtime's STATE_OVERHEAD_BYTES, what a changelog record may hold beside the
ticket's bytes."""
_SEP = b"\0"  # between the JSON bookkeeping (which never holds a raw NUL: JSON escapes it) and the ticket's bytes


def source(record: Record) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


def encode_state(entry: dict[str, Any]) -> bytes:
    """A state entry as a changelog value: compact UTF-8 JSON of the bookkeeping, then the ticket's bytes."""
    meta = {k: v for k, v in entry.items() if k != "raw"}
    head = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")
    raw = entry.get("raw")
    return head if raw is None else head + _SEP + raw


def decode_state(value: bytes) -> dict[str, Any]:
    head, sep, raw = value.partition(_SEP)
    entry: dict[str, Any] = json.loads(head)
    if sep:
        entry["raw"] = raw
    elif "case" in entry:
        # Written before the state held the ticket's bytes: the whole Case in JSON, results not yet per source.
        case = entry.pop("case")
        entry["raw"] = avro.encode(TOPIC_SCHEMA[VALID], case, topic=VALID) if case is not None else None
        entry.setdefault("src", None)  # its ticket's record is not known: every classification is taken as its
        entry.setdefault("early", {})
    return entry


def _short(v: Any) -> Any:
    return v[:MAX_FIELD_CHARS] if isinstance(v, str) else v


class Join:
    name = "join"
    stateful = True

    def __init__(self, timeout_s: float, hard_timeout_s: float = 1800.0, max_value_bytes: int = 256 * 1024, *,
                 name: str = "join", valid: str = VALID, classified: str = CLASSIFIED, joined: str = JOINED,
                 changelog: str = JOIN_STATE, classifiers: tuple[str, ...] = CLASSIFIERS) -> None:
        # The topics are the pipeline's unless a test runs a join of its own beside the pipeline's.
        self.name, self.valid, self.joined, self.changelog = name, valid, joined, changelog
        self.inputs = (valid, classified)
        self.classifiers = tuple(classifiers)  # what the join waits for: the pipeline's declared classifiers
        self.timeout_ms = int(timeout_s * 1000)
        self.hard_timeout_ms = int(hard_timeout_s * 1000)
        self.max_value_bytes = max_value_bytes
        # (partition, classifier) -> newest join-arrival time of a ticket that classifier delivered for
        self._progress: dict[tuple[int, str], int] = {}
        self._state: dict[int, dict[str, dict[str, Any]]] = {}
        self._last_tick = 0
        self._before: tuple[str, int, int, str, dict[str, Any] | None] | None = None
        """(topic, partition, offset, state key, entry before) of the record handled last: when its outputs
        then fail in the runtime (written after handle returned), on_failure puts the entry back first."""

    # ---- state lifecycle (called by the runtime) --------------------------------------------------------
    def restore(self, partitions: list[int], read_changelog: Callable[[int], Iterable[tuple[bytes | None, bytes | None]]]) -> None:
        for p in partitions:
            table: dict[str, dict[str, Any]] = {}
            for key, value in read_changelog(p):
                if key is None:
                    continue
                if value is None:
                    table.pop(key.decode(), None)
                else:
                    entry = decode_state(value)
                    if not entry.get("done"):
                        # The timeout is the join's patience with live classifiers; a restart must not spend it.
                        # The hard timeout still counts from the ticket's arrival: restores come with every
                        # rebalance and every aborted transaction, and restarting it each time could put it off
                        # for good.
                        entry.setdefault("first_ms", entry.get("seen_ms", 0))
                        entry["seen_ms"] = int(time.time() * 1000)
                    table[key.decode()] = entry
            self._state[p] = table
            log.info("join state restored", extra={"fields": {"partition": p, "entries": len(table)}})

    def drop(self, partitions: list[int]) -> None:
        for p in partitions:
            self._state.pop(p, None)

    def size(self) -> int:
        return sum(len(t) for t in self._state.values())

    # ---- records ---------------------------------------------------------------------------------------
    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        """Failure-atomic: the state is changed only once every output is built, so a failure (here or in
        on_failure's fallback) meets the state as it was before this record."""
        value = record.value
        skey = f"{value['tenant_id']}/{value['correlation_id']}/{record.attempt}"
        table = self._state.setdefault(record.partition, {})
        old = table.get(skey)
        self._before = (record.topic, record.partition, record.offset, skey, old)
        if record.topic == self.valid:
            return self._ticket(record, skey, old)
        return self._classification(record, skey, old)

    def _ticket(self, record: Record, skey: str, old: dict[str, Any] | None) -> list[Emit]:
        src = source(record)
        if old is not None and (old.get("done") or old.get("raw") is not None):
            if old.get("src") == src:
                return []  # this very record, read again: it already counts
            raise DuplicateTicket(self._held_by(skey, old))
        entry = self._new_entry() if old is None else dict(old)
        early = dict(entry.get("early") or {})
        # Results that came before their ticket: this ticket's, and those that did not say which ticket (from a
        # classifier older than the source header). Any others classified another ticket with this ID (a
        # DUPLICATE) and are not this one's.
        results = {**early.pop("", {}), **early.pop(src, {})}
        if early:
            log.info("early classifications of another ticket with this ID dropped",
                     extra={"fields": {"key": skey, "sources": sorted(early)[:5]}})
        entry.update(src=src, raw=record.raw, early={}, results=results,
                     headers={k: _short(record.headers[k]) for k in CARRY if k in record.headers})
        if len(record.raw or b"") > self.max_value_bytes:
            # Not written by ingest (whose outputs are within this limit): the state could not hold it.
            return self._dead_end(record.partition, skey, entry, "OVERSIZED",
                                  f"ticket record of {len(record.raw or b'')} bytes is over the join's limit of "
                                  f"{self.max_value_bytes}", time.time())
        return self._settle(record.partition, skey, entry, record.timestamp_ms)

    def _classification(self, record: Record, skey: str, old: dict[str, Any] | None) -> list[Emit]:
        value = record.value
        if old is not None and old.get("done"):
            return []  # a late or repeated result of a ticket that already went on, or one of its duplicate's
        if value["classifier"] not in self.classifiers:
            log.warning("classification by a classifier this join does not wait for ignored",
                        extra={"fields": {"key": skey, "classifier": value["classifier"]}})
            return []
        entry = self._new_entry() if old is None else dict(old)
        key = (record.partition, value["classifier"])
        self._progress[key] = max(self._progress.get(key, 0), entry["seen_ms"])
        result = {"ok": value["ok"], "label": _short(value["label"]), "confidence": value["confidence"],
                  "model": _short(value["model"]), "error_code": _short(value["error_code"]),
                  "calls": value["model_calls"], "tokens": value["tokens"]}
        src = record.headers.get("source", "")
        if entry.get("raw") is None:
            early = {k: dict(v) for k, v in (entry.get("early") or {}).items()}
            early.setdefault(src, {})[value["classifier"]] = result
            entry["early"] = early
        elif src and entry.get("src") and src != entry["src"]:
            log.info("classification of a duplicate ticket ignored",
                     extra={"fields": {"key": skey, "source": src, "ticket": entry["src"]}})
            return []
        else:
            entry["results"] = {**entry.get("results", {}), value["classifier"]: result}
        return self._settle(record.partition, skey, entry, record.timestamp_ms)

    def _settle(self, partition: int, skey: str, entry: dict[str, Any], now_ms: int) -> list[Emit]:
        results = entry.get("results") or {}
        if entry.get("raw") is not None and all(c in results for c in self.classifiers):
            return self._complete(partition, skey, entry, now_ms, timed_out=False)
        out = [self._changelog(partition, skey, entry)]
        self._state.setdefault(partition, {})[skey] = entry
        return out

    def on_failure(self, record: Record, code: str, reason: str) -> list[Emit] | None:
        """Whatever failed while the join handled ``record`` (a bug, an output it could not write), the ticket
        gets exactly one outcome: this ticket's dead letter when the record is a ticket, else the dead letter
        of the ticket this classification belongs to, else (no ticket yet) a failed result it will join with.
        None: the runtime dead-letters the record itself (a duplicate, or a record with no identity)."""
        if code == DuplicateTicket.code:
            return None
        value = record.value if isinstance(record.value, dict) else {}
        tenant = value.get("tenant_id") or record.tenant_id
        cid = value.get("correlation_id") or record.correlation_id
        if not tenant or not cid:
            return None
        skey = f"{tenant}/{cid}/{record.attempt}"
        table = self._state.setdefault(record.partition, {})
        if self._before is not None and self._before[:3] == (record.topic, record.partition, record.offset):
            _, _, _, before_key, before = self._before
            if before is None:
                table.pop(before_key, None)
            else:
                table[before_key] = before  # none of this record's outputs was written: neither is its state
        self._before = None
        entry = table.get(skey)
        now = time.time()
        if record.topic == self.valid:
            if entry is not None and (entry.get("done") or entry.get("raw") is not None) \
                    and entry.get("src") != source(record):
                return None  # another ticket holds this ID: this one's dead letter is its one outcome
            entry = {**self._new_entry(), "src": source(record), "raw": record.raw,
                     "headers": {k: _short(record.headers[k]) for k in CARRY if k in record.headers}}
            return self._dead_end(record.partition, skey, entry, code, reason, now)
        if entry is not None and entry.get("done"):
            return [self._changelog(record.partition, skey, entry)]  # its ticket has had its outcome
        if entry is not None and entry.get("raw") is not None:
            return self._dead_end(record.partition, skey, entry, code, reason, now)
        entry = dict(entry or self._new_entry())
        early = {k: dict(v) for k, v in (entry.get("early") or {}).items()}
        early.setdefault(record.headers.get("source", ""), {})[str(value.get("classifier") or "unknown")] = {
            "ok": False, "label": None, "confidence": None, "model": None, "error_code": _short(code),
            "calls": 0, "tokens": 0}
        entry["early"] = early
        out = [self._changelog(record.partition, skey, entry)]
        table[skey] = entry
        return out

    def tick(self, now_ms: int) -> list[Emit]:
        if now_ms - self._last_tick < TICK_EVERY_MS:
            return []
        self._last_tick = now_ms
        out: list[Emit] = []
        for p, table in self._state.items():
            for skey, entry in list(table.items()):
                age = now_ms - entry.get("seen_ms", now_ms)
                if entry.get("done"):
                    if now_ms - entry["done_ms"] > DONE_RETENTION_MS:
                        del table[skey]
                        out.append(Emit(self.changelog, None, key=skey, partition=p))
                elif entry.get("raw") is not None and self._given_up(p, entry, now_ms):
                    out.extend(self._complete(p, skey, entry, now_ms, timed_out=True))
                elif entry.get("raw") is None and age > ORPHAN_MS:
                    log.warning("classifications without a ticket dropped", extra={"fields": {"key": skey}})
                    del table[skey]
                    out.append(Emit(self.changelog, None, key=skey, partition=p))
        return out

    # ---- helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def _new_entry() -> dict[str, Any]:
        return {"src": None, "raw": None, "results": {}, "early": {}, "seen_ms": int(time.time() * 1000),
                "headers": {}}

    @staticmethod
    def _held_by(skey: str, old: dict[str, Any]) -> str:
        tenant, _, rest = skey.partition("/")
        cid, _, attempt = rest.rpartition("/")
        held = old.get("src") or "a ticket read before this version of the join"
        if old.get("done"):
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(old["done_ms"] / 1000))
            state = f"finished at {when} ({old.get('outcome') or 'joined'})"
        else:
            state = "in flight"
        return (f"tenant {tenant!r}, correlation ID {cid!r}, attempt {attempt} is already held by {held}, "
                f"{state}; a ticket must have an ID of its own (or be replayed as a new attempt)")

    def _given_up(self, partition: int, entry: dict[str, Any], now_ms: int) -> bool:
        """Whether to stop waiting for the classifiers an entry still misses.

        A classifier that merely lags (a backlog, a restart) must not cost a ticket its labels, so the
        timeout counts against the classifier's own progress: it has given up on this ticket once it has
        delivered results for tickets that reached the join ``timeout`` later than this one. A classifier
        that delivers nothing at all is given up on ``hard_timeout`` after the ticket first arrived.
        """
        seen = entry.get("seen_ms", now_ms)
        if now_ms - entry.get("first_ms", seen) > self.hard_timeout_ms:
            return True
        if now_ms - seen <= self.timeout_ms:
            return False
        missing = [c for c in self.classifiers if c not in entry["results"]]
        return all(self._progress.get((partition, c), 0) > seen + self.timeout_ms for c in missing)

    def _complete(self, partition: int, skey: str, entry: dict[str, Any], now_ms: int, *, timed_out: bool) -> list[Emit]:
        try:
            joined, headers = self._joined(entry, timed_out)
            value = avro.encode(TOPIC_SCHEMA[JOINED], joined, topic=JOINED)
            if len(value) > self.max_value_bytes:
                raise TriageError(f"joined case of {len(value)} bytes is over the output limit of "
                                  f"{self.max_value_bytes}", code="OVERSIZED")
        except Exception as exc:  # noqa: BLE001 - whatever it is, the ticket ends here, once
            code = exc.code if isinstance(exc, TriageError) else "INTERNAL"
            if code == "INTERNAL":
                log.exception("join could not build its output")
            return self._dead_end(partition, skey, entry, code, f"{type(exc).__name__}: {exc}", now_ms / 1000)
        done = {"done": True, "done_ms": now_ms, "src": entry.get("src"), "outcome": "joined"}
        out = [Emit(self.joined, value, key=joined["correlation_id"], headers=headers),
               Emit(self.changelog, encode_state(done), key=skey, partition=partition)]
        self._state.setdefault(partition, {})[skey] = done
        return out

    def _joined(self, entry: dict[str, Any], timed_out: bool) -> tuple[dict[str, Any], dict[str, str]]:
        case = avro.decode(entry["raw"], TOPIC_SCHEMA[VALID])
        labels: dict[str, Any] = {}
        missing: list[str] = []
        reasons: dict[str, str] = {}
        calls = tokens = 0
        for c in self.classifiers:
            r = entry["results"].get(c)
            if r is None or not r["ok"]:
                missing.append(c)
                reasons[c] = (r or {}).get("error_code") or "NO_RESULT"
            else:
                labels[c] = {"label": r["label"], "confidence": r["confidence"], "model": r["model"]}
            if r is not None:
                calls += r["calls"]
                tokens += r["tokens"]
        how = "timed out" if timed_out else "complete"
        why = ", ".join(f"{c}:{(entry['results'].get(c) or {}).get('error_code') or 'no result'}" for c in missing)
        trail = f"join: {how}; " + (", ".join(f"{k}={v['label']}" for k, v in labels.items()) or "no labels")
        if missing:
            trail += f"; missing {why}"
        joined = evolve(case, trail, calls=calls, tokens=tokens, labels=labels, missing=missing,
                        missing_reasons=reasons)
        headers = dict(entry.get("headers") or {})
        headers.setdefault("correlation_id", case["correlation_id"])
        headers.setdefault("tenant_id", case["tenant_id"])
        return joined, headers

    def _dead_end(self, partition: int, skey: str, entry: dict[str, Any], code: str, error: str,
                  now_s: float) -> list[Emit]:
        """The ticket's one outcome when the join cannot finish it: a dead letter of the ticket's own record
        (replayable into tickets.valid as a new attempt), and the ticket marked done."""
        _, _, offset = (entry.get("src") or f"{self.valid}/{partition}/-1").rpartition("/")
        headers = dict(entry.get("headers") or {})
        ticket = Record(topic=self.valid, partition=partition, offset=int(offset), key=headers.get("correlation_id"),
                        raw=entry.get("raw"), headers=headers, timestamp_ms=int(now_s * 1000))
        dlq = dead_letter_headers(ticket, self.name, code, error, 1)
        dlq["correlation_id"] = cid = dead_letter_id(ticket)
        value = fit_value(ticket.raw, dlq)
        done = {"done": True, "done_ms": int(now_s * 1000), "src": entry.get("src"), "outcome": f"dead-lettered {code}"}
        out = [Emit(dlq_topic(self.name), value, key=cid, headers=dlq),
               Emit(self.changelog, encode_state(done), key=skey, partition=partition)]
        self._state.setdefault(partition, {})[skey] = done
        metrics.DEAD_LETTERS.labels(self.name, code).inc()
        log.warning("ticket dead-lettered by the join", extra={"fields": {"key": skey, "reason": code,
                                                                           "error": error[:300]}})
        return out

    def _changelog(self, partition: int, skey: str, entry: dict[str, Any]) -> Emit:
        return Emit(self.changelog, encode_state(entry), key=skey, partition=partition)
