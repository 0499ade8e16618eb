"""The dead-letter topics are the human queue: list them, show one entry, replay after a fix.

A replay sends the original bytes back into the topic the failed step consumed (``dlq.source``) as a new
attempt of the ticket (``attempt`` + 1, the old ``dlq.*`` headers kept as ``replayed.dlq.*``). Replays are
recorded in the compacted ledger ``triage.dlq.replays`` in the same Kafka transaction as the replayed
records, so running the same replay twice sends nothing the second time, even after a crash mid-way.
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

from confluent_kafka import KafkaException, Producer

from streams.client import Out, Reader, read
from streams.kafka_io import KafkaFailure, producer_config
from streams.topology import DLQ_REPLAYS, STEPS, dlq_topic

BATCH = 500


@dataclass(frozen=True)
class DeadLetter:
    out: Out

    @property
    def id(self) -> str:
        return f"{self.out.topic}/{self.out.partition}/{self.out.offset}"

    @property
    def step(self) -> str:
        return self.out.headers.get("dlq.step") or self.out.topic.removeprefix("tickets.dlq.")

    @property
    def reason(self) -> str:
        return self.out.headers.get("dlq.reason", "UNKNOWN")

    @property
    def correlation_id(self) -> str:
        return self.out.headers.get("correlation_id") or self.out.key or ""

    @property
    def attempt(self) -> int:
        try:
            return int(self.out.headers.get("attempt", "1"))
        except ValueError:
            return 1

    @property
    def source_topic(self) -> str:
        return self.out.headers.get("dlq.source", "").split("/")[0]


def scan(bootstrap: str, steps: Iterable[str] | None = None, *, idle: float = 1.5, timeout: float = 120) -> list[DeadLetter]:
    topics = [dlq_topic(s) for s in (steps or STEPS)]
    return [DeadLetter(o) for o in read(bootstrap, topics, timeout=timeout, idle=idle)]


def replayed_ids(bootstrap: str, timeout: float = 120) -> dict[str, dict]:
    """The replay ledger, read to its end; KafkaFailure if it cannot be read that far, since every entry
    missing from a partial read would be replayed again."""
    reader = Reader(bootstrap, [DLQ_REPLAYS])
    try:
        done = {o.key: json.loads(o.raw) for o in reader.records(timeout=timeout, idle=1.5) if o.key and o.raw}
        if not reader.read_to_end():
            raise KafkaFailure(f"the replay ledger {DLQ_REPLAYS} could not be read to its end in {timeout:.0f} s",
                               abortable=False, fatal=False, retriable=True)
        return done
    finally:
        reader.close()


def summary(letters: Iterable[DeadLetter], replayed: dict[str, dict] | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """step -> reason -> {"count": n, "replayed": m}."""
    replayed = replayed or {}
    out: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for d in letters:
        c = out[d.step][d.reason]
        c["count"] += 1
        c["replayed"] += d.id in replayed
    return {s: {r: dict(c) for r, c in reasons.items()} for s, reasons in out.items()}


def find(letters: Iterable[DeadLetter], ident: str) -> list[DeadLetter]:
    """Entries whose id (``topic/partition/offset``) or correlation ID is ``ident``."""
    return [d for d in letters if ident in (d.id, d.correlation_id)]


@dataclass(frozen=True)
class ReplayReport:
    selected: int
    replayed: int
    already: int
    ids: tuple[str, ...]
    truncated: int = 0
    """Selected entries not replayed because their dead letter keeps only a prefix of the record (it was too
    big to write whole): the whole record is at its ``dlq.source``."""


def is_entry_id(ident: str) -> bool:
    """Whether ``ident`` is written as a dead letter's id, ``tickets.dlq.<step>/<partition>/<offset>``."""
    return bool(_ENTRY_ID.fullmatch(ident))


_ENTRY_ID = re.compile(r"tickets\.dlq\.[\w.-]+/\d+/\d+")


def replay(bootstrap: str, step: str, *, reason: str | None = None, correlation_id: str | None = None,
           entry_id: str | None = None, dry_run: bool = False,
           progress: Callable[[int, int], None] | None = None) -> ReplayReport:
    """Replay the selected dead letters of ``step`` into the step that failed, each once ever: those with
    ``reason``, of ``correlation_id`` (which two tenants may share), or the one entry ``entry_id``."""
    letters = [d for d in scan(bootstrap, [step])
               if (reason is None or d.reason == reason)
               and (correlation_id is None or d.correlation_id == correlation_id)
               and (entry_id is None or d.id == entry_id)]
    whole = [d for d in letters if "dlq.truncated_from" not in d.out.headers]
    truncated = len(letters) - len(whole)

    def report(todo: list[DeadLetter], replayed: int) -> ReplayReport:
        return ReplayReport(len(letters), replayed, len(whole) - len(todo), tuple(d.id for d in todo), truncated)

    todo = [d for d in whole if d.id not in replayed_ids(bootstrap)]
    if dry_run or not todo:
        return report(todo, 0)
    # One transactional id per step: a replay of the same step running at once is fenced (its open
    # transaction aborted) before the ledger is read again, so what it committed is in the ledger and nothing
    # of it is sent twice. (Read first without fencing: a replay with nothing to send must not stop another.)
    p = Producer(producer_config(bootstrap, f"triage.replay.{step}"))
    try:
        p.init_transactions(60)
        done = replayed_ids(bootstrap)
        todo = [d for d in whole if d.id not in done]
        sent = 0
        for i in range(0, len(todo), BATCH):
            batch = todo[i:i + BATCH]
            p.begin_transaction()
            try:
                for d in batch:
                    _send(p, d)
                p.commit_transaction(60)
            except KafkaException as exc:
                p.abort_transaction(30)
                raise KafkaFailure.of(exc) from exc
            sent += len(batch)
            if progress:
                progress(sent, len(todo))
    finally:
        p.flush(10)
    return report(todo, len(todo))


def _send(p: Producer, d: DeadLetter) -> None:
    headers = {k: v for k, v in d.out.headers.items() if not k.startswith(("dlq.", "replayed.", "replay."))}
    headers.update({f"replayed.{k}": v for k, v in d.out.headers.items() if k.startswith("dlq.")})
    headers.update({"attempt": str(d.attempt + 1), "replay.of": d.id, "replay.ts": str(int(time.time() * 1000))})
    if d.correlation_id:
        headers["correlation_id"] = d.correlation_id
    target = d.source_topic
    if not target:
        raise ValueError(f"{d.id} has no dlq.source header; cannot tell where to replay it")
    p.produce(target, value=d.out.raw, key=d.correlation_id.encode() if d.correlation_id else None,
              headers=[(k, v.encode()) for k, v in headers.items()])
    p.produce(DLQ_REPLAYS, key=d.id.encode(), value=json.dumps(
        {"to": target, "attempt": d.attempt + 1, "ts": headers["replay.ts"], "correlation_id": d.correlation_id}).encode())
