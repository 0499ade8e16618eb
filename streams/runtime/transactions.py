"""The runner's transactions: outputs and the input offsets after them, committed together, or aborted
(by :func:`streams.transact.commit_outputs`, the protocol every step's transaction follows).

Downstream consumers read ``read_committed``; an aborted transaction makes the runner rewind to the last
committed offsets and drop what was in flight, so nothing is emitted twice.

Transactions and the consumer meet at a rebalance: the revoke callback waits for a transaction in flight to
finish and refuses new ones until the loop has dropped the revoked partitions, so the next owner (whose offset
fetch waits for our pending transaction, KIP-447) never restores join state older than the offsets it resumes
from. Every ``_k_*`` method runs on the producer's thread, except :meth:`Transactions.refuse` (the consumer's).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from confluent_kafka import Producer, TopicPartition

from streams import metrics
from streams.kafka_io import KafkaFailure, transactional_producer
from streams.transact import Output, commit_outputs
from streams.runtime.stats import Stats
from streams.runtime.threads import KafkaThreads

log = logging.getLogger("triage.runtime")

COMMIT_DEADLINE_S = 45.0
"""A commit call that has not returned by then (budget and abort spent) is stuck in the client."""
ABORTS_IN_ROW = 5
TIMEOUTS_IN_ROW = 2


class CommitRefused(KafkaFailure):
    """A commit collected before a revocation: not sent, the records are read again."""


class Transactions:
    """One runner's transactional producer and the rules its commits follow."""

    def __init__(self, conf: dict[str, Any], *, step: str, kafka: KafkaThreads, stats: Stats,
                 group_metadata: Callable[[], Any], commit_deadline_s: float = COMMIT_DEADLINE_S) -> None:
        self._conf, self._step, self._kafka, self._stats = conf, step, kafka, stats
        self._group_metadata = group_metadata
        self._commit_deadline_s = commit_deadline_s
        self.producer: Producer | None = None
        self.lock = threading.Lock()
        self._revoking = False
        """Set by the revoke callback, cleared once the loop has dropped the revoked partitions: no
        transaction may start in between (it could commit offsets of partitions another member now owns)."""
        self.epoch = 0
        """Counts the revocations the loop has handled. A transaction carries the epoch its records were
        collected in and is refused in another: records collected before a revocation, whose commit reaches
        the producer thread only after the loop handled it, belong to partitions that may be gone."""
        self._phase = ""
        """The transaction call the producer thread is in (or was last in), named when it is stuck."""
        self._aborts_in_row = 0
        self._timeouts_in_row = 0

    def _k_open_producer(self) -> None:
        self.producer = transactional_producer(self._conf, 60)

    def _k_close_producer(self) -> None:
        if self.producer is not None:
            self.producer.flush(10)

    def refuse(self) -> None:
        """A revocation has begun (on the consumer's thread): wait for the transaction in flight, start none."""
        with self.lock:
            self._revoking = True

    def revoked(self) -> None:
        """The loop has dropped what belonged to the revoked partitions: commits may go on."""
        self.epoch += 1  # a commit collected before this point is refused
        self._revoking = False

    async def commit(self, outputs: list[Output], offsets: list[TopicPartition], epoch: int) -> bool:
        """Commit ``outputs`` with ``offsets`` (collected in ``epoch``). False when the transaction was aborted
        or refused: the caller rewinds. Raises a fatal KafkaFailure when the runner must start afresh."""
        started = time.monotonic()
        try:
            await self._kafka.call(self._k_commit, outputs, offsets, epoch, deadline=self._commit_deadline_s,
                                   producer=True, where=lambda: self._phase)
        except KafkaFailure as failure:
            if failure.fatal:
                raise
            self._stats.aborts += 1
            if not isinstance(failure, CommitRefused):
                self._aborts_in_row += 1
                self._timeouts_in_row = self._timeouts_in_row + 1 if failure.code == "_TIMED_OUT" else 0
            metrics.TRANSACTIONS.labels(self._step, "aborted").inc()
            log.warning("transaction aborted; rewinding to the last commit", extra={"fields": {"error": str(failure)}})
            # Timeouts twice in a row against a broker that answers everyone else: seen after a broker restart,
            # each of five transactions timed out in send_offsets_to_transaction (stale coordinator state,
            # librdkafka #5511) and a fresh producer committed at once.
            if self._timeouts_in_row >= TIMEOUTS_IN_ROW or self._aborts_in_row >= ABORTS_IN_ROW:
                # Every attempt redoes the records (model calls included) and fails the same way: fresh clients,
                # after the supervisor's backoff, rather than a loop that spends and never commits.
                raise KafkaFailure(f"{self._aborts_in_row} transactions in a row aborted "
                                   f"(the last {self._timeouts_in_row} timed out); last: {failure}",
                                   abortable=False, fatal=True, retriable=True) from failure
            return False
        self._aborts_in_row = self._timeouts_in_row = 0
        metrics.COMMIT_SECONDS.labels(self._step).observe(time.monotonic() - started)
        self._stats.transactions += 1
        metrics.TRANSACTIONS.labels(self._step, "committed").inc()
        self._stats.emitted += len(outputs)
        return True

    def _k_commit(self, outputs: list[Output], offsets: list[TopicPartition], epoch: int) -> None:
        """Outputs and input offsets in one transaction. Raises KafkaFailure; the caller rewinds."""
        self._phase = "the wait for the transaction lock"
        with self.lock:
            if self._revoking or epoch != self.epoch:
                raise CommitRefused("partitions were revoked", abortable=True, fatal=False, retriable=True)
            assert self.producer is not None
            commit_outputs(self.producer, outputs, offsets, self._group_metadata, self._set_phase)

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
