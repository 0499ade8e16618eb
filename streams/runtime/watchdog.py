"""Watchdogs for what no error reports: a consumer that stopped fetching, and one that left its group.

Both were seen with librdkafka after a broker restart: fetching never resumed, or the session timed out and
the consumer never joined the group again; nothing failed, the process lived, the step did nothing. Either
ends the runner with a fatal, retriable KafkaFailure, and the worker starts it again with fresh clients.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import metrics
from streams.kafka_io import KafkaFailure, base_config, unread
from streams.runtime.polling import Poller
from streams.runtime.stats import Stats
from streams.runtime.threads import KafkaThreads

log = logging.getLogger("triage.runtime")

WATCH_EVERY_S = 15.0
STALL_AFTER_S = 60.0
"""An assigned partition whose consumer has not moved for this long while the runner had room, and that had
committed records to read at two watches in a row, is stalled: the runner starts again with fresh clients."""


class Watchdog:
    """Looks at one runner's consumer every ``watch_every_s``. Its ``_k_*`` methods run on the consumer's
    thread."""

    def __init__(self, *, step: str, inputs: Iterable[str], group: str, bootstrap: str, poller: Poller,
                 kafka: KafkaThreads, stats: Stats, watch_every_s: float = WATCH_EVERY_S,
                 stall_after_s: float = STALL_AFTER_S) -> None:
        self._step, self._inputs, self._group, self._bootstrap = step, tuple(inputs), group, bootstrap
        self._poller, self._kafka, self._stats = poller, kafka, stats
        self._watch_every_s, self._stall_after_s = watch_every_s, stall_after_s
        self._next_watch = 0.0
        self._watch_seen: dict[tuple[str, int], tuple[int, float]] = {}
        """Per assigned partition: the consumer's position at the last watch that saw it move, and when."""
        self._lag_seen: set[tuple[str, int]] = set()
        """Idle partitions that had records to read at the last watch."""
        self._next_query = 0.0
        self._unassigned_since: float | None = None
        self._group_seen: dict[tuple[str, int], int] | None = None
        """The group's committed offsets at the last look while this runner had no partitions."""
        self._admin: AdminClient | None = None  # made on the first look at the group, then kept
        self._watch_busy: tuple[int, int, int] = (0, 0, 0)

    def due(self) -> bool:
        return time.monotonic() >= self._next_watch

    async def watch(self, room: int, paused: bool) -> None:
        """Every ``watch_every_s``: a runner that had room all along but whose consumer left a partition with
        records unread for ``stall_after_s`` is stalled (seen with librdkafka after a broker restart: fetching
        never resumed, nothing failed, the process lived). Nothing else would notice; start afresh."""
        now = time.monotonic()
        self._next_watch = now + self._watch_every_s
        busy = (self._stats.full_waits, self._stats.pauses, self._stats.rebalances + self._stats.aborts)
        if paused or room <= 0 or busy != self._watch_busy:
            # Full, paused, rebalanced or rewound since the last watch: not taking records was expected.
            self._watch_busy = busy
            self._watch_seen.clear()
            self._lag_seen.clear()
            self._unassigned_since, self._group_seen = None, None
            return
        self._stats.watches += 1
        stalled = await self._kafka.call(self._k_stalled, now)
        if stalled:
            self._stats.stalls += 1
            metrics.STALLS.labels(self._step).inc()
            raise KafkaFailure(f"consumer stalled: {stalled}", abortable=False, fatal=True, retriable=True)

    def _k_stalled(self, now: float) -> str | None:
        """A partition whose position has not moved for ``stall_after_s`` and that had committed records to
        read at this watch and the one before; None if there is none. Two watches, so a record that arrived
        just before a watch is not taken for a stall. The broker is asked only about partitions idle that long,
        at most once per ``stall_after_s`` unless the last answer showed records to read: a busy runner pays a
        local position() per watch, a quiet one an offset query per partition a minute."""
        c = self._poller.consumer
        assert c is not None
        assignment = c.assignment()
        if not assignment:
            return self._k_unassigned(now)
        self._unassigned_since, self._group_seen = None, None
        seen: dict[tuple[str, int], tuple[int, float]] = {}
        idle: list[TopicPartition] = []
        for tp in c.position(assignment):
            key = (tp.topic, tp.partition)
            prev = self._watch_seen.get(key)
            if prev is not None and prev[0] == tp.offset:
                seen[key] = prev
                if now - prev[1] >= self._stall_after_s:
                    idle.append(tp)
            else:
                seen[key] = (tp.offset, now)
        self._watch_seen = seen
        lagging, self._lag_seen = self._lag_seen, set()
        if not idle or (not lagging and now < self._next_query):
            return None
        self._next_query = now + self._stall_after_s
        try:
            # Nothing taken since the assignment or a seek: the position is unknown, the committed offset is where
            # it starts.
            unknown = [TopicPartition(t.topic, t.partition) for t in idle if t.offset < 0]
            starts = {(t.topic, t.partition): t.offset for t in c.committed(unknown, timeout=5)} if unknown else {}
            for tp in idle:
                key = (tp.topic, tp.partition)
                # From the log start when retention emptied the partition (the committed offset is then a
                # deleted marker's).
                left = unread(c, tp.topic, tp.partition, tp.offset if tp.offset >= 0 else starts.get(key, -1))
                if left:
                    if key in lagging:
                        return (f"{tp.topic}/{tp.partition} has had records {left.start}..{left.stop - 1} to read and "
                                f"the consumer has not moved for {now - seen[key][1]:.0f} s")
                    self._lag_seen.add(key)
        except KafkaException as exc:
            log.info("stall check failed", extra={"fields": {"error": str(exc)}})  # asked again next watch
        return None

    def _k_unassigned(self, now: float) -> str | None:
        """A runner with no partitions at all for ``stall_after_s``, while its group's committed offsets stood
        still across two looks and records wait past them; None otherwise. Seen after a broker restart: the
        session timed out, the assignment was revoked, and librdkafka never joined the group again; the group
        stayed empty and the step did nothing, with no error. (A spare replica, more members than partitions,
        has no partitions either, but the member that has them moves the offsets.)"""
        c = self._poller.consumer
        assert c is not None
        if self._unassigned_since is None:
            self._unassigned_since = now
        if now - self._unassigned_since < self._stall_after_s or now < self._next_query:
            return None
        self._next_query = now + self._stall_after_s
        try:
            tps = [TopicPartition(t, p) for t in self._inputs
                   for p in c.list_topics(t, timeout=5).topics[t].partitions]
            offsets = {(tp.topic, tp.partition): tp.offset for tp in c.committed(tps, timeout=5)}
            waiting = any(unread(c, tp.topic, tp.partition, offsets[(tp.topic, tp.partition)]) for tp in tps)
        except KafkaException as exc:
            log.info("stall check failed", extra={"fields": {"error": str(exc)}})
            return None
        previous, self._group_seen = self._group_seen, offsets
        if not (waiting and previous == offsets):
            return None
        # "Records wait" is true of any partition that ends in a commit marker, and an idle pipeline's offsets
        # stand still: only the coordinator can tell a spare member from a consumer that has left the group.
        try:
            held = self._k_held_by_group()
        except Exception as exc:  # noqa: BLE001 - a check that cannot tell says nothing; asked again later
            log.info("stall check failed", extra={"fields": {"error": str(exc)}})
            return None
        if held == 0:
            return None  # a member with nothing assigned: a spare replica, more members than partitions
        where = "the group does not list this consumer" if held is None else \
            f"the group lists {held} partition(s) as this consumer's"
        return (f"no partitions assigned for {now - self._unassigned_since:.0f} s while records wait, the group's "
                f"committed offsets have not moved and {where}")

    def _k_held_by_group(self) -> int | None:
        """How many partitions the group's coordinator lists as this consumer's; None when it does not list this
        consumer as a member at all."""
        assert self._poller.consumer is not None
        me = self._poller.consumer.memberid()
        if not me:
            return None
        group = self._group
        if self._admin is None:
            self._admin = AdminClient(base_config(self._bootstrap))
        desc = self._admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=10)
        for member in desc.members:
            if member.member_id == me:
                return len(member.assignment.topic_partitions or [])
        return None
