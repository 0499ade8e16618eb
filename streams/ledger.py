"""The decision ledgers of the human queue, and reading topics to their end without waiting for silence.

Two compacted topics record what was decided about a queue entry (an escalation or a dead letter):

- ``triage.human.resolutions``: answered by hand on the queue page (key ``<tenant>/<entry id>``);
- ``triage.dlq.replays``: a dead letter sent back into the step that failed (key ``<entry id>``).

An entry id is ``<topic>/<partition>/<offset>``. Read together they are one ledger: an entry has at most one
decision. Every decision is written by :mod:`streams.transact` in the transaction of its effect, after fencing
and reading this ledger to its end, so it holds across processes (a CLI replay, page replicas, restarts).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams import pipelines
from streams.client import Out
from streams.kafka_io import KafkaFailure, reader_config
from streams.records import decode_key, message_headers

HUMAN_RESOLUTIONS = "triage.human.resolutions"
"""The same topic as ``streams.ui.queue.RESOLUTIONS`` (the page's index reads it)."""


def ledgers() -> tuple[str, ...]:
    """The answers by hand (one topic for every pipeline: its keys name the entry's topic) and the replays of
    the pipeline this process works on."""
    return (HUMAN_RESOLUTIONS, pipelines.active().replay_topic)

ANSWERED, REPLAYED = "answered", "replayed"


def entry_of_resolution(key: str) -> str:
    """The entry id of a resolution key ``<tenant>/<topic>/<partition>/<offset>`` (a topic has no slash)."""
    return "/".join(key.rsplit("/", 3)[1:])


@dataclass
class Decisions:
    """What the ledgers say: entry id -> the record of its decision, by kind."""

    answered: dict[str, dict[str, Any]] = field(default_factory=dict)
    replayed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, topic: str, key: str | None, value: bytes | None) -> None:
        """Take one ledger record (a tombstone forgets the decision)."""
        if not key or topic not in ledgers():
            return
        table, ident = ((self.answered, entry_of_resolution(key)) if topic == HUMAN_RESOLUTIONS
                        else (self.replayed, key))
        if value is None:
            table.pop(ident, None)
            return
        try:
            info = json.loads(value)
        except ValueError:
            info = {}
        info = info if isinstance(info, dict) else {}
        if topic == HUMAN_RESOLUTIONS:
            info.setdefault("tenant", key[:-len(ident) - 1])
        table[ident] = info

    def of(self, entry_id: str) -> tuple[str, dict[str, Any]] | None:
        """``(ANSWERED | REPLAYED, record)`` if the entry was decided, else None."""
        if entry_id in self.answered:
            return ANSWERED, self.answered[entry_id]
        if entry_id in self.replayed:
            return REPLAYED, self.replayed[entry_id]
        return None

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self.answered or entry_id in self.replayed


def read_decisions(bootstrap: str, *, timeout: float = 60.0) -> Decisions:
    """Both ledgers read to the end they have now, every transaction below it settled; KafkaFailure if that
    cannot be done in ``timeout`` (a partial read would let an entry be decided twice)."""
    out = Decisions()
    for o in read_to_end(bootstrap, ledgers(), settled=True, timeout=timeout):
        out.apply(o.topic, o.key, o.raw)
    return out


def read_to_end(bootstrap: str, topics: Iterable[str], *, settled: bool = False,
                timeout: float = 120.0) -> Iterator[Out]:
    """Every committed record of ``topics`` (missing topics are skipped) up to where each partition ends now;
    it returns as soon as it gets there, instead of waiting for the topic to fall silent.

    ``settled=False``: the end is the last stable offset (what read_committed may read now): a listing.
    ``settled=True``: the end is the high watermark, so the read also waits for every transaction open below
    it to commit or abort. A ledger is read so: after our own fencing, records of ours may lie beyond another
    writer's open transaction, and stopping at the last stable offset would miss them.
    """
    conf = reader_config(bootstrap, f"triage.ledger.{uuid.uuid4()}", **{"enable.partition.eof": True,
                                                                        "fetch.wait.max.ms": 20})
    c = Consumer(conf)
    high = Consumer({**conf, "isolation.level": "read_uncommitted"}) if settled else c
    try:
        md = c.list_topics(timeout=10)
        tps = [TopicPartition(t, p) for t in dict.fromkeys(topics) if t in md.topics for p in md.topics[t].partitions]
        pending: dict[tuple[str, int], int] = {}
        for tp in tps:
            low, end = high.get_watermark_offsets(tp, timeout=10)
            if end > low:
                pending[(tp.topic, tp.partition)] = end
        if not pending:
            return
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in pending])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                left = ", ".join(f"{t}[{p}]" for t, p in sorted(pending))
                raise KafkaFailure(f"could not read {left} to its end in {timeout:.0f} s", abortable=False,
                                   fatal=False, retriable=True)
            msgs = c.consume(1000, 0.1)
            for m in msgs:
                tp_key = (m.topic(), m.partition())
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF and m.offset() >= pending.get(tp_key, 0):
                        pending.pop(tp_key, None)
                    continue
                if tp_key not in pending:
                    continue  # past the end it had when the read began
                yield Out(m.topic(), m.partition(), m.offset(), decode_key(m.key()), message_headers(m), m.value(),
                          m.timestamp()[1])
                if m.offset() + 1 >= pending[tp_key]:
                    pending.pop(tp_key, None)
            if pending and not msgs:
                # Commit markers and aborted records are not handed out; the position steps past them.
                for tp in c.position([TopicPartition(t, p) for t, p in pending]):
                    if tp.offset >= pending[(tp.topic, tp.partition)]:
                        pending.pop((tp.topic, tp.partition), None)
    finally:
        c.close()
        if high is not c:
            high.close()
