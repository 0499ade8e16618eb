"""join: assemble the four classifications of a ticket with the ticket itself, per correlation ID.

State is per (tenant, correlation ID, attempt), so IDs that collide across tenants never share state. It
lives in memory per input partition and in the compacted changelog ``triage.join.state``, written in the
same transaction as the outputs and the input offsets; on assignment it is restored from the changelog
(the Kafka Streams way), so a crash loses and doubles nothing.

A join completes on four results, or gives up on a classifier once that classifier has moved on by
``join_timeout_s`` past the ticket (or after a hard timeout when it delivers nothing): the missing
classifiers are named in the Case and the router's policy decides what that means.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Iterable

from processors.case import evolve
from streams.records import Emit, Record
from streams.step import StepContext
from streams.topology import CLASSIFIED, CLASSIFIERS, JOIN_STATE, JOINED, VALID

log = logging.getLogger("triage.join")
DONE_RETENTION_MS = 10 * 60 * 1000
ORPHAN_MS = 10 * 60 * 1000
TICK_EVERY_MS = 250
CARRY = ("correlation_id", "tenant_id", "attempt", "traceparent", "hops")


class Join:
    name = "join"
    inputs = (VALID, CLASSIFIED)
    stateful = True

    def __init__(self, timeout_s: float, hard_timeout_s: float = 1800.0) -> None:
        self.timeout_ms = int(timeout_s * 1000)
        self.hard_timeout_ms = int(hard_timeout_s * 1000)
        # (partition, classifier) -> newest join-arrival time of a ticket that classifier delivered for
        self._progress: dict[tuple[int, str], int] = {}
        self._state: dict[int, dict[str, dict[str, Any]]] = {}
        self._last_tick = 0

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
                    entry = json.loads(value)
                    # The timeout is the join's patience with live classifiers; a restart must not spend it. The
                    # hard timeout still counts from the ticket's arrival: restores come with every rebalance
                    # and every aborted transaction, and restarting it each time could put it off for good.
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
        value = record.value
        tenant = value["tenant_id"]
        cid = value["correlation_id"]
        skey = f"{tenant}/{cid}/{record.attempt}"
        table = self._state.setdefault(record.partition, {})
        entry = table.get(skey)
        if entry is not None and entry.get("done"):
            return []  # a late or repeated result of a ticket that already went on
        entry = entry or {"case": None, "results": {}, "seen_ms": int(time.time() * 1000), "headers": {}}
        if record.topic == VALID:
            entry["case"] = value
            entry["headers"] = {k: record.headers[k] for k in CARRY if k in record.headers}
        else:
            key = (record.partition, value["classifier"])
            self._progress[key] = max(self._progress.get(key, 0), entry["seen_ms"])
            entry["results"][value["classifier"]] = {
                "ok": value["ok"], "label": value["label"], "confidence": value["confidence"],
                "model": value["model"], "error_code": value["error_code"],
                "calls": value["model_calls"], "tokens": value["tokens"]}
        if entry["case"] is not None and len(entry["results"]) == len(CLASSIFIERS):
            return self._complete(record.partition, skey, entry, record.timestamp_ms, timed_out=False)
        table[skey] = entry
        return [self._changelog(record.partition, skey, entry)]

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
                        out.append(Emit(JOIN_STATE, None, key=skey, partition=p))
                elif entry["case"] is not None and self._given_up(p, entry, now_ms):
                    out.extend(self._complete(p, skey, entry, now_ms, timed_out=True))
                elif entry["case"] is None and age > ORPHAN_MS:
                    log.warning("classifications without a ticket dropped", extra={"fields": {"key": skey}})
                    del table[skey]
                    out.append(Emit(JOIN_STATE, None, key=skey, partition=p))
        return out

    # ---- helpers ---------------------------------------------------------------------------------------
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
        missing = [c for c in CLASSIFIERS if c not in entry["results"]]
        return all(self._progress.get((partition, c), 0) > seen + self.timeout_ms for c in missing)

    def _complete(self, partition: int, skey: str, entry: dict[str, Any], now_ms: int, *, timed_out: bool) -> list[Emit]:
        case = entry["case"]
        labels: dict[str, Any] = {}
        missing: list[str] = []
        reasons: dict[str, str] = {}
        calls = tokens = 0
        for c in CLASSIFIERS:
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
        done = {"done": True, "done_ms": now_ms}
        self._state.setdefault(partition, {})[skey] = done
        headers = dict(entry.get("headers") or {})
        headers.setdefault("correlation_id", case["correlation_id"])
        headers.setdefault("tenant_id", case["tenant_id"])
        return [Emit(JOINED, joined, key=case["correlation_id"], headers=headers),
                Emit(JOIN_STATE, json.dumps(done).encode(), key=skey, partition=partition)]

    @staticmethod
    def _changelog(partition: int, skey: str, entry: dict[str, Any]) -> Emit:
        return Emit(JOIN_STATE, json.dumps(entry, separators=(",", ":")).encode(), key=skey, partition=partition)
