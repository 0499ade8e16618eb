"""confluent-kafka configuration, in one place, and the small synchronous helpers every Kafka user calls.

Every client triage makes is configured here: a step's consumer (:func:`consumer_config`), a reader's
(:func:`reader_config`: the reads of the CLI, the page, the ledgers and a restore), a producer
(:func:`producer_config`, transactional or not, made ready by :func:`transactional_producer`), all on
:func:`base_config` (the bootstrap servers and the security properties). A record is queued by :func:`produce`.
librdkafka's client errors are translated here into :class:`KafkaFailure` with the flags the runtime reads.
"""
from __future__ import annotations

import time
from functools import lru_cache
from typing import Any, Callable, Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition


class KafkaFailure(Exception):
    """A Kafka client error, with what the runtime must do about it."""

    def __init__(self, message: str, *, abortable: bool, fatal: bool, retriable: bool, code: str = "") -> None:
        super().__init__(message)
        self.abortable, self.fatal, self.retriable, self.code = abortable, fatal, retriable, code

    @classmethod
    def of(cls, exc: KafkaException) -> "KafkaFailure":
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is None:
            return cls(str(exc), abortable=True, fatal=False, retriable=False)
        return cls(f"{err.name()}: {err.str()}", abortable=err.txn_requires_abort(), fatal=err.fatal(),
                   retriable=err.retriable(), code=err.name())


@lru_cache(maxsize=1)
def security() -> dict[str, str]:
    """librdkafka properties every client gets (SASL/TLS...): [kafka] of the config file and TRIAGE_KAFKA_*.
    Read once per process; the process's configuration does not change while it runs."""
    from streams.config import kafka_properties, merged_env
    return kafka_properties(merged_env())


def base_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, **security(), **extra}


def producer_config(bootstrap: str, transactional_id: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **base_config(bootstrap),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # Java's partitioner, so a Java or kcat producer and ours put one key on the same partition.
        "partitioner": "murmur2_random",
        "compression.type": "lz4",
        "message.max.bytes": 8 * 1024 * 1024,
    }
    if transactional_id:
        # Short, so a killed worker's open transaction is aborted quickly and read_committed readers move on.
        conf.update({"transactional.id": transactional_id, "transaction.timeout.ms": 20000})
    conf.update(extra or {})
    return conf


def transactional_producer(conf: dict[str, Any], init_timeout_s: float,
                           new: Callable[[dict[str, Any]], Producer] = Producer) -> Producer:
    """A producer of ``conf`` (a transactional.id in it) whose ``init_transactions`` has fenced every older
    producer of that id and settled the transaction it left open (committed or aborted)."""
    p = new(conf)
    p.init_transactions(init_timeout_s)
    return p


def produce(p: Producer, topic: str, *, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]],
            partition: int | None = None, on_delivery: Callable[[KafkaError | None, Any], None] | None = None,
            wait_s: float = 0.05, until: float | None = None, budget_s: float = 0.0) -> None:
    """Queue one record. While the local queue is full, let deliveries drain, ``wait_s`` at a time; past
    ``until`` (time.monotonic(), None for no limit) a KafkaFailure: the queue has been full for ``budget_s``."""
    kwargs: dict[str, Any] = {}
    if partition is not None:
        kwargs["partition"] = partition
    if on_delivery is not None:
        kwargs["on_delivery"] = on_delivery
    while True:
        try:
            p.produce(topic, value=value, key=key, headers=headers, **kwargs)
            return
        except BufferError:
            if until is not None and time.monotonic() > until:
                raise KafkaFailure(f"producer queue full for {budget_s:.0f} s", abortable=True, fatal=False,
                                   retriable=True) from None
            p.poll(wait_s)


def consumer_config(bootstrap: str, group: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **base_config(bootstrap),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        # Range assignment keeps partition p of co-partitioned inputs (the join's) on one member.
        "partition.assignment.strategy": "range",
        # A kill -9'd member is noticed in seconds, not the 45 s default.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1500,
        # A hop's latency floor when traffic is light: the broker answers a fetch at the latest after this.
        "fetch.wait.max.ms": 25,
        # What librdkafka prefetches while a full worker takes no records (it pauses only after
        # pause_after_s): 8 MB instead of 64 MB per step runner. Once over that, librdkafka looks again after
        # 100 ms instead of 1 s, so a worker that drains it quickly does not starve (librdkafka #2879).
        "queued.max.messages.kbytes": 8192,
        "fetch.queue.backoff.ms": 100,
    }
    conf.update(extra or {})
    return conf


def reader_config(bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    """A consumer that only reads: it commits nothing, and sees a transaction's records only once committed
    (``read_committed``, unless ``extra`` says otherwise). ``group`` is a name for the broker, never a step's
    group: readers assign() their partitions, or subscribe in a group of their own."""
    return base_config(bootstrap, **{"group.id": group, "enable.auto.commit": False,
                                     "isolation.level": "read_committed", **extra})


def read_partition(bootstrap: str, topic: str, partition: int, timeout: float = 30.0,
                   settle: float = 45.0) -> Iterator[tuple[bytes | None, bytes | None]]:
    """Every committed (key, value) of one partition, from the beginning to its end once no transaction is
    open on it (waited for up to ``settle`` seconds).

    Why wait: commit_transaction returns before the coordinator has written the commit markers, so right after
    a commit of our own (then a rewind, or a rebalance within this process) a read_committed read ends below
    records already committed, and state restored from it would lack them while the input offsets are past
    them. A dead writer's open transaction is aborted within transaction.timeout.ms (20 s) and the broker's
    10 s check, hence 45 s.
    """
    tp = TopicPartition(topic, partition)
    conf = reader_config(bootstrap, "triage.restore", **{"enable.partition.eof": True})
    c = Consumer(conf)
    try:
        low, high = _settled_end(c, tp, {**conf, "isolation.level": "read_uncommitted"}, timeout, settle)
        if high <= low:
            return
        c.assign([TopicPartition(topic, partition, low)])
        while True:
            msg = c.poll(timeout)
            if msg is None:
                raise KafkaFailure(f"restore of {topic}[{partition}] stalled", abortable=False, fatal=False,
                                   retriable=True)
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    return
                raise KafkaFailure(f"restore of {topic}[{partition}]: {msg.error()}", abortable=False, fatal=False,
                                   retriable=True)
            yield msg.key(), msg.value()
            # read_committed may end below `high` (aborted tail / markers); EOF above ends the loop then.
            if msg.offset() >= high - 1:
                return
    finally:
        c.close()


def _settled_end(committed: Consumer, tp: TopicPartition, uncommitted_conf: dict[str, Any], timeout: float,
                 settle: float) -> tuple[int, int]:
    """(low, last stable offset) of ``tp`` once the last stable offset has reached the high watermark (read by a
    consumer of ``uncommitted_conf``)."""
    uncommitted = Consumer(uncommitted_conf)
    try:
        until = time.monotonic() + settle
        while True:
            low, stable = committed.get_watermark_offsets(tp, timeout=timeout)
            if stable >= uncommitted.get_watermark_offsets(tp, timeout=timeout)[1]:
                return low, stable
            if time.monotonic() > until:
                raise KafkaFailure(f"{tp.topic}[{tp.partition}] has had a transaction open for {settle:.0f} s",
                                   abortable=False, fatal=False, retriable=True)
            time.sleep(0.05)
    finally:
        uncommitted.close()


def unread(c: Consumer, topic: str, partition: int, offset: int) -> range:
    """The offsets of ``topic[partition]`` from ``offset`` to its end as ``c`` sees it (read_committed: the
    last stable offset); empty when nothing is left to read. An offset below the log start (none yet, or one
    that retention deleted) counts from the log start."""
    low, end = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
    return range(max(offset, low), end)


def encode_headers(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(k, v.encode("utf-8")) for k, v in headers.items()]
