"""Before the insights worker starts: its consumer group moved back to where the tables' day begins.

Why: the tables must not depend on faust's committed offsets being behind what its changelogs hold (a kill -9
was seen to lose one count: an offset committed whose table write never reached the changelog). Each
aggregate carries the offset of the last record in it, written with its counts in one changelog record, and
records at or below it are skipped; so reading the terminal topics again from where the oldest window kept
begins can only add what is missing, never count a record twice.
"""
from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.kafka_io import base_config

log = logging.getLogger("triage.insights")


def rewind(bootstrap: str, group: str, topics: list[str], since_ms: int, timeout_s: float = 90.0) -> int:
    """Move ``group``'s committed offsets on ``topics`` back to the first record at or after ``since_ms``
    (never forward; partitions without a commit are left, faust starts them at the beginning). Waits, up to
    ``timeout_s``, while the group still has a member (a worker killed a moment ago, until its session
    expires): the broker refuses commits from outside a group that has one. Returns the partitions moved."""
    c = Consumer(base_config(bootstrap, **{"group.id": group, "enable.auto.commit": False}))
    try:
        parts = [TopicPartition(t, p) for t in topics
                 for p in c.list_topics(t, timeout=30).topics[t].partitions]
        committed = {(tp.topic, tp.partition): tp.offset for tp in c.committed(parts, timeout=30)}
        at = c.offsets_for_times([TopicPartition(tp.topic, tp.partition, since_ms) for tp in parts], timeout=30)
        moves = []
        for tp in at:
            was = committed[(tp.topic, tp.partition)]
            to = tp.offset if tp.offset >= 0 else c.get_watermark_offsets(tp, timeout=30)[1]
            if was >= 0 and to < was:
                moves.append(TopicPartition(tp.topic, tp.partition, to))
        if not moves:
            return 0
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                c.commit(offsets=moves, asynchronous=False)
                log.info("insights group rewound to the tables' day", extra={"fields": {"partitions": len(moves)}})
                return len(moves)
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise
                log.info("insights group still has a member; waiting to rewind it",
                         extra={"fields": {"error": str(exc)[:200]}})
                time.sleep(2.0)
    finally:
        c.close()
