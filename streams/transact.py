"""Decisions written once: a transactional producer per scope, fenced and caught up before it decides.

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

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.kafka_io import KafkaFailure, encode_headers, producer_config

log = logging.getLogger("triage.transact")

T = TypeVar("T")
V = TypeVar("V", bound="View")
ATTEMPTS = 5
TXN_TIMEOUT_S = 30.0


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

        while True:
            try:
                self._p.produce(topic, key=key.encode() if key is not None else None, value=value,
                                headers=encode_headers(headers or {}), on_delivery=done)
                break
            except BufferError:
                self._p.poll(0.05)
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
            p = self._new_producer(producer_config(self.bootstrap, self.transactional_id, {"log_level": 3}))
            p.init_transactions(TXN_TIMEOUT_S)
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
