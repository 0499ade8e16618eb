"""The runner's consumer: subscribed with the rebalance callbacks, polled so that records and rebalances come
back in the order they happened, rewound, paused. Every ``_k_*`` method runs on the consumer's thread."""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streams.kafka_io import KafkaFailure

log = logging.getLogger("triage.runtime")

Event = tuple[str, list[tuple[str, int]]]
Polled = list[Message] | Event
"""What a poll returns, in order: a run of records, or a rebalance event ("assign"/"revoke", partitions)."""


class Poller:
    """The consumer of one runner. ``on_revoke`` runs on the consumer's thread inside poll(), before the
    revocation is handed to the loop (the transactions use it to let the one in flight finish first)."""

    def __init__(self, conf: dict[str, Any], topics: Iterable[str], on_revoke: Callable[[], None]) -> None:
        self._conf, self._topics, self._revoking = conf, list(topics), on_revoke
        self.consumer: Consumer | None = None
        self.group_metadata: Any = None
        """The consumer's group generation, for send_offsets_to_transaction; read on the consumer thread after
        every rebalance, so the producer thread never calls into the consumer."""
        self._events: list[Event] = []

    def _k_open_consumer(self) -> None:
        self.consumer = Consumer(self._conf)
        self.consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._events.append(("assign", [(tp.topic, tp.partition) for tp in partitions]))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Runs on the consumer thread inside poll(): let a transaction in flight finish before the partitions
        # go, and start none until the loop has seen this revocation.
        self._revoking()
        self._events.append(("revoke", [(tp.topic, tp.partition) for tp in partitions]))

    def _k_poll(self, n: int, timeout: float) -> list[Polled]:
        """What is fetched now, up to ``n``; else wait up to ``timeout`` for the first record and take what
        came with it. (``consume(n, timeout)`` would wait out the timeout for a full batch.) With ``n`` 0 the
        group is still served (heartbeats, rebalances); a record it returns is still returned, since a
        partition assigned meanwhile is not paused, and a record dropped here would be skipped by the commit.

        Records and rebalance events come back in the order they happened. poll() serves the callbacks
        before the record it returns. A batch does not stop at a rebalance, but with the eager protocol a
        revocation leaves nothing assigned and an assignment follows one, so within a batch the records of an
        assignment come after it and those of a revocation before it. What goes wrong otherwise: a record
        fetched before a revocation, admitted after it, commits offsets of a partition now another member's;
        a record of a new partition handled before the join restored that partition's state."""
        c = self.consumer
        assert c is not None
        out: list[Polled] = []

        def take(msgs: list[Message]) -> None:
            events, self._events = self._events, []
            if not msgs or len({kind for kind, _ in events}) > 1:
                # Both kinds with records in one non-blocking call would need a JoinGroup round trip inside it.
                if msgs and events:
                    log.warning("revocation and assignment in one batch", extra={"fields": {"events": len(events)}})
                out.extend(events)
                if msgs:
                    out.append(msgs)
                return
            out.extend(e for e in events if e[0] == "assign")
            out.append(msgs)
            out.extend(e for e in events if e[0] != "assign")

        batch = c.consume(n, 0) if n > 0 else []
        take(batch)
        if not batch:
            first = c.poll(timeout)
            take([])  # events served while waiting came before `first`
            if first is not None:
                out.append([first])
                if n > 1:
                    take(c.consume(n - 1, 0))
        if self.group_metadata is None or any(isinstance(x, tuple) for x in out):
            self.group_metadata = c.consumer_group_metadata()
        return out

    def _k_seek(self, positions: list[TopicPartition]) -> None:
        assert self.consumer is not None
        for tp in positions:
            try:
                self.consumer.seek(tp)
            except KafkaException as exc:
                # Every partition seeked is still assigned (no poll ran since its records were taken, so no
                # revocation either). Going on would fetch from wherever the consumer stands and commit past the
                # records between: a fresh runner resumes from the committed offsets instead.
                raise KafkaFailure(f"seek of {tp.topic}/{tp.partition} to {tp.offset} failed: {exc}",
                                   abortable=False, fatal=True, retriable=False) from exc

    def _k_pause(self, pause: bool) -> None:
        assert self.consumer is not None
        parts = self.consumer.assignment()
        if parts:
            (self.consumer.pause if pause else self.consumer.resume)(parts)

    def _k_assigned(self) -> list[int]:
        assert self.consumer is not None
        return sorted({tp.partition for tp in self.consumer.assignment()})

    def _k_close_consumer(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
