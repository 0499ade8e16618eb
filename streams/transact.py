"""Every Kafka transaction triage writes, by one of two protocols, on producers made by :mod:`streams.kafka_io`.

- :func:`commit_outputs`, a step's: its outputs and the input offsets after them (consume-transform-produce),
  on a producer that lives as long as its runner. A commit that timed out is resumed, not aborted (it goes on
  in the client); any other failure it can be aborted from is aborted, and the runner rewinds and goes on
  with the same producer; a fatal one, or a commit neither confirmed nor refused, ends the runner (a fresh
  producer's init settles it). The whole transaction has one budget, so it ends by itself, well inside the
  runner's deadline for the call.
- :class:`Scope`, a decision's (a replay, an answer on the queue page): fenced and caught up before it
  decides, and never retried on the same producer (below).

Why two: a step never needs to know whether a failed transaction landed, since the input offsets committed with
its outputs tell whoever reads next where to resume; a decision has no input offsets, only its ledger, and the
ledger is only known complete right after a fresh producer's fence.

Decisions written once: a transactional producer per scope, fenced and caught up before it decides.

A *scope* is one ``transactional.id`` (the queue topic of the entries it decides about, see :func:`scope_id`).
Every writer of a decision about an entry uses that entry's scope, so a producer's ``init_transactions`` fences
every other writer of it (another thread, a CLI replay, a page replica, a process restarted) and completes or
aborts their open transaction; only then is the ledger read to its end, and only then does ``decide`` run.
The decision's effect and its ledger record are produced in one transaction.

While that producer lives, the ledger read after its init plus its own commits is the whole ledger of the
scope: any other writer's init would fence it, and its next commit would fail. Any failure (fenced, a commit
that timed out, a delivery error, a broker away) throws the producer away; the next try starts again with a
fresh producer's ``init_transactions`` (which settles the failed transaction: committed or aborted) and a
fresh ledger read, then decides again. A commit that timed out but landed is thus seen in the ledger and never
produced twice.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Generic, Protocol, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from streams.kafka_io import KafkaFailure, encode_headers, produce, producer_config, transactional_producer

log = logging.getLogger("triage.transact")

T = TypeVar("T")
V = TypeVar("V", bound="View")
ATTEMPTS = 5
TXN_TIMEOUT_S = 30.0
TXN_BUDGET_S = 25.0
"""What one step transaction may take, begin to commit."""
ABORT_TIMEOUT_S = 10.0

Output = tuple[str, int | None, bytes | None, bytes | None, list[tuple[str, bytes]]]
"""One record to produce: (topic, partition or None for the key's, key, value, headers)."""


def commit_outputs(p: Producer, outputs: list[Output], offsets: list[TopicPartition],
                   group_metadata: Callable[[], Any], phase: Callable[[str], None]) -> None:
    """Produce ``outputs`` and commit them with ``offsets`` (the consumer's group ``group_metadata()``) in one
    transaction of ``p``, within :data:`TXN_BUDGET_S`. ``phase`` is told each client call before it is made.

    Raises KafkaFailure: ``fatal`` when ``p`` is unusable (fenced, an abort that failed, a commit neither
    confirmed nor refused: a fresh producer's init settles it); otherwise the transaction was aborted."""
    # One budget for the whole transaction, so that it ends by itself (committed, or aborted and rewound)
    # well inside the caller's deadline of 45 s; the sum of separate timeouts would outlast that deadline and
    # turn a slow coordinator (a broker restart) into a process restart.
    end = time.monotonic() + TXN_BUDGET_S

    def left() -> float:
        return max(1.0, end - time.monotonic())
    try:
        phase("begin_transaction")
        p.begin_transaction()
        phase("produce")
        for topic, partition, key, value, headers in outputs:
            # The local queue is full: let deliveries drain, but not forever (broker gone).
            produce(p, topic, key=key, value=value, headers=headers, partition=partition, until=end,
                    budget_s=TXN_BUDGET_S)
        # Deliver the outputs before adding the offsets. Measured at 10 tickets/s: a hop's p90 fell from
        # ~125 ms to ~45 ms; without it the commit often waited out a further delivery cycle.
        phase("flush")
        if p.flush(left()) > 0:
            raise KafkaFailure(f"outputs not delivered within {TXN_BUDGET_S:.0f} s", abortable=True, fatal=False,
                               retriable=True)
        if offsets:
            phase("send_offsets_to_transaction")
            p.send_offsets_to_transaction(offsets, group_metadata(), left())
    except (KafkaException, KafkaFailure) as exc:
        failure = exc if isinstance(exc, KafkaFailure) else KafkaFailure.of(exc)
        if failure.fatal:
            raise failure from exc
        _abort_or_fail(p, phase)
        raise failure from exc
    phase("commit_transaction")
    while True:
        try:
            p.commit_transaction(left())
            return
        except KafkaException as exc:
            f = KafkaFailure.of(exc)
            if f.fatal:
                raise f from exc
            if f.abortable:
                _abort_or_fail(p, phase)
                raise f from exc
            if f.retriable and time.monotonic() < end:
                time.sleep(0.05)
                continue  # a commit that timed out goes on in the client: resume it, do not abort it
            # Neither committed nor aborted: a fresh producer's init_transactions settles it either way.
            raise KafkaFailure(f"commit not confirmed within {TXN_BUDGET_S:.0f} s: {f}", abortable=False,
                               fatal=True, retriable=True) from exc


def _abort_or_fail(p: Producer, phase: Callable[[str], None]) -> None:
    phase("abort_transaction")
    try:
        p.abort_transaction(ABORT_TIMEOUT_S)
    except KafkaException as abort_exc:
        # A producer that cannot abort is in an unknown state: the supervisor starts a fresh one.
        raise KafkaFailure(f"abort failed: {KafkaFailure.of(abort_exc)}", abortable=False, fatal=True,
                           retriable=False) from abort_exc


class View(Protocol):
    """What a scope knows of its ledger; takes the ledger records its own commits wrote."""

    def apply(self, topic: str, key: str | None, value: bytes | None) -> None: ...


def scope_id(queue_topic: str) -> str:
    """The transactional.id of every decision about entries of ``queue_topic``."""
    return f"triage.decide.{queue_topic}"


class Txn:
    """The open transaction ``decide`` produces into."""

    def __init__(self, producer: Producer) -> None:
        self._p = producer
        self._delivered: dict[int, tuple[str, int, int]] = {}
        self._errors: list[str] = []
        self._n = 0
        self.written: list[tuple[str, str | None, bytes | None]] = []

    def produce(self, topic: str, key: str | None, value: bytes | None, headers: dict[str, str] | None = None) -> int:
        """Queue one record; its number, for :meth:`positions`."""
        i = self._n
        self._n += 1

        def done(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                self._errors.append(f"{topic}: {err}")
            else:
                self._delivered[i] = (msg.topic(), msg.partition(), msg.offset())

        produce(self._p, topic, key=key.encode() if key is not None else None, value=value,
                headers=encode_headers(headers or {}), on_delivery=done)
        self.written.append((topic, key, value))
        return i

    def flush(self, timeout: float = TXN_TIMEOUT_S) -> None:
        """Wait until every record produced so far is written (not yet committed)."""
        try:
            self._p.flush(timeout)
        except KafkaException:
            raise
        except SystemError as exc:
            # confluent-kafka 2.16 raises this from flush() when the producer has just been fenced (a fatal
            # error met in the delivery path): for us it is that, a Kafka failure.
            raise KafkaException(KafkaError(KafkaError._FATAL, f"flush failed: {exc}")) from exc
        if self._errors or len(self._delivered) != self._n:
            raise KafkaException(KafkaError(KafkaError._FAIL, f"not delivered: {self._errors[:3] or 'timed out'}"))

    def position(self, i: int) -> tuple[str, int, int]:
        """(topic, partition, offset) of record ``i``, once flushed."""
        return self._delivered[i]


Commit = Callable[[Producer, float], None]


def _commit(p: Producer, timeout: float) -> None:
    p.commit_transaction(timeout)


class Scope(Generic[V]):
    """One transactional.id and what it knows of its ledger. Thread-safe: one decision at a time."""

    def __init__(self, bootstrap: str, transactional_id: str, load: Callable[[], V], *,
                 new_producer: Callable[[dict[str, Any]], Producer] = Producer, commit: Commit = _commit,
                 attempts: int = ATTEMPTS) -> None:
        self.bootstrap, self.transactional_id = bootstrap, transactional_id
        self._load, self._new_producer, self._commit, self._attempts = load, new_producer, commit, attempts
        self._p: Producer | None = None
        self._view: V | None = None
        self._lock = threading.Lock()
        self.fences = 0
        """How many times this scope (re)started its producer: init_transactions, then a ledger read."""

    def run(self, decide: Callable[[V, Txn], T]) -> T:
        """Fence (unless this scope's producer still stands), read the ledger, call ``decide(view, txn)`` and
        commit what it produced. ``decide`` may raise to refuse: nothing is committed and the error goes to
        the caller. Kafka failures are retried from the fence; after ``attempts`` a KafkaFailure."""
        with self._lock:
            last: Exception | None = None
            for attempt in range(1, self._attempts + 1):
                try:
                    p, view = self._fenced()
                    p.begin_transaction()
                    txn = Txn(p)
                    try:
                        result = decide(view, txn)
                    except (KafkaException, KafkaFailure):
                        raise
                    except BaseException:
                        self._abort(p)
                        raise
                    if txn.written:
                        txn.flush()
                        self._commit(p, TXN_TIMEOUT_S)
                        for topic, key, value in txn.written:
                            view.apply(topic, key, value)
                    else:
                        p.abort_transaction(TXN_TIMEOUT_S)
                    return result
                except (KafkaException, KafkaFailure) as exc:
                    last = exc
                    # Neither retried on this producer nor aborted: whatever state the transaction is in (it may
                    # have committed, e.g. a commit that timed out), the next producer's init settles it and the
                    # ledger read after it tells which.
                    self._p, self._view = None, None
                    log.warning("transaction of %s failed (attempt %d/%d): %s", self.transactional_id, attempt,
                                self._attempts, exc)
                    if attempt < self._attempts:
                        time.sleep(random.uniform(0.1, 0.3 * attempt))  # two fencing each other: one goes first
            if isinstance(last, KafkaFailure):
                raise last
            raise KafkaFailure.of(last) from last  # type: ignore[arg-type]

    def _fenced(self) -> tuple[Producer, V]:
        if self._p is None or self._view is None:
            p = transactional_producer(producer_config(self.bootstrap, self.transactional_id, {"log_level": 3}),
                                       TXN_TIMEOUT_S, self._new_producer)
            self.fences += 1
            self._view = self._load()
            self._p = p
        return self._p, self._view

    def _abort(self, p: Producer) -> None:
        try:
            p.abort_transaction(TXN_TIMEOUT_S)
        except KafkaException:
            self._p, self._view = None, None

    def close(self) -> None:
        p, self._p, self._view = self._p, None, None
        if p is not None:
            p.flush(5)
