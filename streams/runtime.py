"""The step runtime: runs one step as a Kafka consumer-transform-producer, exactly once.

How it keeps the promise (every input reaches its outputs once, whatever dies):
- records are consumed in batches and handled concurrently (up to ``max_in_flight``), because a model call
  takes 100 ms to seconds and a partition-serial consumer would cap throughput at partitions / latency;
- a record's outputs are *held* until every earlier record of its partition is done; then the outputs of
  that contiguous prefix and the offset after it are committed in one Kafka transaction
  (``send_offsets_to_transaction``), so a crash replays exactly the records whose outputs were not committed;
- downstream consumers read ``read_committed``; an aborted transaction rewinds the consumer to the last
  committed offsets and drops what was in flight, so nothing is emitted twice;
- a record's handling is bounded by the step's deadline, which bounds how long it holds its partition back;
- when a record still fails, its original bytes go to ``tickets.dlq.<step>`` with the reason: the DLQ record
  is an output like any other, committed with the offset.

The clients are synchronous, so the consumer runs on one thread and the transactional producer on another;
handlers run on the asyncio loop. Two threads, because a hop's latency is the sum of what waits: a record
must not wait for a poll to time out before its transaction starts, nor for a transaction to finish before
the next record is fetched. A poll returns as soon as one record is there; the committer starts a transaction
as soon as a record is done (at most one every ``commit_interval_s``, and one at a time, so a transaction
carries everything that finished while the previous one was in flight).

Back-pressure: a runner holding ``max_in_flight`` records stops taking more. If a commit makes room within
``pause_after_s`` it just takes more; only a runner full for longer pauses its partitions, which empties
librdkafka's prefetch queue. Not pausing at once matters: after a resume librdkafka took about a second to
fetch again, so a busy join, full after every 100 ms of records, spent most of its time paused. While the
runner waits without polling, librdkafka's prefetch is bounded by ``queued.max.messages.kbytes``.

The two threads meet at a rebalance: the revoke callback waits for a transaction in flight to finish and
refuses new ones until the loop has dropped the revoked partitions, so the next owner (whose offset fetch
waits for our pending transaction, KIP-447) never restores join state older than the offsets it resumes from.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import avro, metrics, tracing
from streams.context import RecordContext, bind, reset
from streams.dead_letter import MAX_VALUE_BYTES, dead_letter_headers, dead_letter_id, fit_value
from streams.errors import ModelError, TriageError
from streams.kafka_io import (KafkaFailure, base_config, consumer_config, encode_headers, producer_config, read_partition,
                              unread)
from streams.records import CARRIED_HEADERS, Emit, Record, decode_key, message_headers
from streams.step import Step, StepContext

log = logging.getLogger("triage.runtime")

Output = tuple[str, int | None, bytes | None, bytes | None, list[tuple[str, bytes]]]
Event = tuple[str, list[tuple[str, int]]]
Polled = list[Message] | Event
"""What a poll returns, in order: a run of records, or a rebalance event ("assign"/"revoke", partitions)."""

STATE_OVERHEAD_BYTES = 64 * 1024
"""What a changelog record may hold beyond the output limit (the join's bookkeeping beside a ticket's bytes)."""
TXN_BUDGET_S = 25.0
ABORT_TIMEOUT_S = 10.0
COMMIT_DEADLINE_S = 45.0
"""A commit call that has not returned by then (budget and abort spent) is stuck in the client."""
ABORTS_IN_ROW = 5
TIMEOUTS_IN_ROW = 2
WATCH_EVERY_S = 15.0
STALL_AFTER_S = 60.0
"""An assigned partition whose consumer has not moved for this long while the runner had room, and that had
committed records to read at two watches in a row, is stalled: the runner starts again with fresh clients."""


@dataclass(eq=False)
class _Slot:
    offset: int
    record: Record | None = None
    done: bool = False
    dropped: bool = False
    outputs: list[Output] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    seq: int = 0
    """When it finished, in the runner's order of outputs (see StepRunner._seq)."""


@dataclass(eq=False)
class _Partition:
    committed: int
    """Offset after the last committed record: where a rewind seeks to."""
    queue: deque[_Slot] = field(default_factory=deque)
    last: asyncio.Task[None] | None = None
    """The newest handler task, for partition-serial mode."""


@dataclass
class Stats:
    """What a worker has done, for status and tests."""

    consumed: int = 0
    emitted: int = 0
    dead_lettered: int = 0
    transactions: int = 0
    aborts: int = 0
    rebalances: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    """Most records held at once (handling, or done and waiting for their commit); counted per poll, never
    below the true peak."""
    pauses: int = 0
    """Times the partitions were paused (full for longer than ``pause_after_s``)."""
    full_waits: int = 0
    """Times the runner became full (it then waits for a commit to make room, or pauses at once when
    ``pause_after_s`` is 0)."""
    max_hol_wait_s: float = 0.0
    watches: int = 0
    """Times the watchdog looked at the consumer's positions."""
    stalls: int = 0
    """Times the watchdog found a partition with records to read that the consumer did not fetch."""


class KafkaStuck(KafkaFailure):
    """A Kafka client call did not return; only a new process gets fresh clients."""

    def __init__(self, message: str) -> None:
        super().__init__(message, abortable=False, fatal=True, retriable=False)


class CommitRefused(KafkaFailure):
    """A commit collected before a revocation: not sent, the records are read again."""


class StepRunner:
    """Runs ``step`` until ``stop`` is set. One per step per worker process."""

    def __init__(self, step: Step, ctx: StepContext, *, instance: str,
                 consumer_extra: dict[str, Any] | None = None, producer_extra: dict[str, Any] | None = None,
                 watch_every_s: float = WATCH_EVERY_S, stall_after_s: float = STALL_AFTER_S,
                 commit_deadline_s: float = COMMIT_DEADLINE_S) -> None:
        self.step, self.ctx, self.instance = step, ctx, instance
        self.settings = ctx.settings
        self.pipeline = ctx.pipeline
        self.stats = Stats()
        self._consumer_conf = consumer_config(self.settings.bootstrap, self.pipeline.group_id(step.name),
                                              {**self.settings.kafka, **(consumer_extra or {})})
        # The group's name leads the transactional id: two pipelines with a step of the same name never fence
        # each other.
        self._producer_conf = producer_config(self.settings.bootstrap,
                                              f"{self.pipeline.group_id(step.name)}.{instance}",
                                              {**self.settings.kafka, **(producer_extra or {})})
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._extra: list[tuple[int, list[Output]]] = []
        """Outputs not of a record (the join's tick), each run with the sequence number it was made at."""
        self._seq = itertools.count(1)
        """Orders every run of outputs as it was made. A stateful step's changelog must end, per key, with the
        state's last value: a tick's deletion of a key made before a later record wrote that key again must not be
        produced after it, or a restore would lose the entry (and its ticket would never finish)."""
        self._events: list[Event] = []
        self._paused = False
        self._full_since: float | None = None
        self._freed = asyncio.Event()
        """Set when a commit (or a rewind, or a revocation) released records: a full runner has room again."""
        self._cpool = ThreadPoolExecutor(1, thread_name_prefix=f"consumer-{step.name}")
        self._ppool = ThreadPoolExecutor(1, thread_name_prefix=f"producer-{step.name}")
        self._txn_lock = threading.Lock()
        self._revoking = False
        """Set by the revoke callback, cleared once the loop has dropped the revoked partitions: no
        transaction may start in between (it could commit offsets of partitions another member now owns)."""
        self._epoch = 0
        """Counts the revocations the loop has handled. A transaction carries the epoch its records were
        collected in and is refused in another: records collected before a revocation, whose commit reaches
        the producer thread only after the loop handled it, belong to partitions that may be gone."""
        self._ready = asyncio.Event()
        """Set when a record finishes (or the join has state to write): wakes the committer."""
        self._consuming = asyncio.Lock()
        """Held by a poll and the admission of its records, and by a rewind: no poll runs across a seek."""
        self._closing = False
        self._group_metadata: Any = None
        """The consumer's group generation, for send_offsets_to_transaction; read on the consumer thread after
        every rebalance, so the producer thread never calls into the consumer."""
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._stateful = bool(getattr(step, "stateful", False))
        self._changelog: str | None = getattr(step, "changelog", None)
        self._stuck = False
        self._aborts_in_row = 0
        self._timeouts_in_row = 0
        self._txn_phase = ""
        """The transaction call the producer thread is in (or was last in), named when it is stuck."""
        self._watch_every_s, self._stall_after_s = watch_every_s, stall_after_s
        self._commit_deadline_s = commit_deadline_s
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
        self._broken: asyncio.Future[BaseException] | None = None
        """Resolved with the committer's error when it fails: ends every Kafka wait of the loop at once. Without
        it a poll whose revocation callback waits for the stuck transaction would hold the loop until its own
        deadline (180 s) before anyone read the committer's error."""

    # ---- Kafka thread ---------------------------------------------------------------------------------
    def _k_open_producer(self) -> None:
        self._producer = Producer(self._producer_conf)
        self._producer.init_transactions(60)

    def _k_open_consumer(self) -> None:
        self._consumer = Consumer(self._consumer_conf)
        self._consumer.subscribe(list(self.step.inputs), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._events.append(("assign", [(tp.topic, tp.partition) for tp in partitions]))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Runs on the consumer thread inside poll(): let a transaction in flight finish before the partitions
        # go, and start none until the loop has seen this revocation.
        with self._txn_lock:
            self._revoking = True
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
        c = self._consumer
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
        if self._group_metadata is None or any(isinstance(x, tuple) for x in out):
            self._group_metadata = c.consumer_group_metadata()
        return out

    def _k_commit(self, outputs: list[Output], offsets: list[TopicPartition], epoch: int) -> None:
        """Outputs and input offsets in one transaction. Raises KafkaFailure; the caller rewinds."""
        self._txn_phase = "the wait for the transaction lock"
        with self._txn_lock:
            if self._revoking or epoch != self._epoch:
                raise CommitRefused("partitions were revoked", abortable=True, fatal=False, retriable=True)
            self._k_transaction(outputs, offsets)

    def _k_transaction(self, outputs: list[Output], offsets: list[TopicPartition]) -> None:
        p = self._producer
        assert p is not None
        # One budget for the whole transaction, so that it ends by itself (committed, or aborted and rewound)
        # well inside the caller's deadline of 45 s; the sum of separate timeouts would outlast that deadline and
        # turn a slow coordinator (a broker restart) into a process restart.
        end = time.monotonic() + TXN_BUDGET_S

        def left() -> float:
            return max(1.0, end - time.monotonic())
        try:
            self._txn_phase = "begin_transaction"
            p.begin_transaction()
            self._txn_phase = "produce"
            for topic, partition, key, value, headers in outputs:
                while True:
                    try:
                        if partition is None:
                            p.produce(topic, value=value, key=key, headers=headers)
                        else:
                            p.produce(topic, value=value, key=key, headers=headers, partition=partition)
                        break
                    except BufferError:
                        # The local queue is full: let deliveries drain, but not forever (broker gone).
                        if time.monotonic() > end:
                            raise KafkaFailure(f"producer queue full for {TXN_BUDGET_S:.0f} s", abortable=True,
                                               fatal=False, retriable=True) from None
                        p.poll(0.05)
            # Deliver the outputs before adding the offsets. Measured at 10 tickets/s: a hop's p90 fell from
            # ~125 ms to ~45 ms; without it the commit often waited out a further delivery cycle.
            self._txn_phase = "flush"
            if p.flush(left()) > 0:
                raise KafkaFailure(f"outputs not delivered within {TXN_BUDGET_S:.0f} s", abortable=True, fatal=False,
                                   retriable=True)
            if offsets:
                self._txn_phase = "send_offsets_to_transaction"
                p.send_offsets_to_transaction(offsets, self._group_metadata, left())
        except (KafkaException, KafkaFailure) as exc:
            failure = exc if isinstance(exc, KafkaFailure) else KafkaFailure.of(exc)
            if failure.fatal:
                raise failure from exc
            self._k_abort()
            raise failure from exc
        self._txn_phase = "commit_transaction"
        while True:
            try:
                p.commit_transaction(left())
                return
            except KafkaException as exc:
                f = KafkaFailure.of(exc)
                if f.fatal:
                    raise f from exc
                if f.abortable:
                    self._k_abort()
                    raise f from exc
                if f.retriable and time.monotonic() < end:
                    time.sleep(0.05)
                    continue  # a commit that timed out goes on in the client: resume it, do not abort it
                # Neither committed nor aborted: a fresh producer's init_transactions settles it either way.
                raise KafkaFailure(f"commit not confirmed within {TXN_BUDGET_S:.0f} s: {f}", abortable=False,
                                   fatal=True, retriable=True) from exc

    def _k_abort(self) -> None:
        assert self._producer is not None
        self._txn_phase = "abort_transaction"
        try:
            self._producer.abort_transaction(ABORT_TIMEOUT_S)
        except KafkaException as abort_exc:
            # A producer that cannot abort is in an unknown state: the supervisor starts a fresh one.
            raise KafkaFailure(f"abort failed: {KafkaFailure.of(abort_exc)}", abortable=False, fatal=True,
                               retriable=False) from abort_exc

    def _k_seek(self, positions: list[TopicPartition]) -> None:
        assert self._consumer is not None
        for tp in positions:
            try:
                self._consumer.seek(tp)
            except KafkaException as exc:
                # Every partition seeked is still assigned (no poll ran since its records were taken, so no
                # revocation either). Going on would fetch from wherever the consumer stands and commit past the
                # records between: a fresh runner resumes from the committed offsets instead.
                raise KafkaFailure(f"seek of {tp.topic}/{tp.partition} to {tp.offset} failed: {exc}",
                                   abortable=False, fatal=True, retriable=False) from exc

    def _k_pause(self, pause: bool) -> None:
        assert self._consumer is not None
        parts = self._consumer.assignment()
        if parts:
            (self._consumer.pause if pause else self._consumer.resume)(parts)

    def _k_restore(self, partitions: list[int]) -> None:
        def reader(partition: int) -> Any:
            return read_partition(self.settings.bootstrap, self._changelog, partition)
        self.step.restore(partitions, reader)  # type: ignore[attr-defined]

    def _k_stalled(self, now: float) -> str | None:
        """A partition whose position has not moved for ``stall_after_s`` and that had committed records to
        read at this watch and the one before; None if there is none. Two watches, so a record that arrived
        just before a watch is not taken for a stall. The broker is asked only about partitions idle that long,
        at most once per ``stall_after_s`` unless the last answer showed records to read: a busy runner pays a
        local position() per watch, a quiet one an offset query per partition a minute."""
        c = self._consumer
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
        c = self._consumer
        assert c is not None
        if self._unassigned_since is None:
            self._unassigned_since = now
        if now - self._unassigned_since < self._stall_after_s or now < self._next_query:
            return None
        self._next_query = now + self._stall_after_s
        try:
            tps = [TopicPartition(t, p) for t in self.step.inputs
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
        assert self._consumer is not None
        me = self._consumer.memberid()
        if not me:
            return None
        group = self.pipeline.group_id(self.step.name)
        if self._admin is None:
            self._admin = AdminClient(base_config(self.settings.bootstrap))
        desc = self._admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=10)
        for member in desc.members:
            if member.member_id == me:
                return len(member.assignment.topic_partitions or [])
        return None

    def _k_assigned(self) -> list[int]:
        assert self._consumer is not None
        return sorted({tp.partition for tp in self._consumer.assignment()})

    def _k_close_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    def _k_close_producer(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)

    # ---- loop ----------------------------------------------------------------------------------------
    async def _kafka(self, fn: Callable[..., Any], *args: Any, deadline: float = 180.0,
                     producer: bool = False) -> Any:
        """Run a Kafka client call on the consumer's thread (or the producer's). librdkafka can block past its
        own timeouts (e.g. send_offsets_to_transaction after a coordinator restart, librdkafka #5456/#5511);
        a call past ``deadline`` cannot be interrupted, so the runner declares itself stuck and the process
        restarts."""
        fut = asyncio.get_running_loop().run_in_executor(self._ppool if producer else self._cpool, fn, *args)
        waits: tuple[asyncio.Future[Any], ...] = (fut,) if self._broken is None else (fut, self._broken)
        await asyncio.wait(waits, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
        if fut.done():
            return fut.result()
        if self._broken is not None and self._broken.done():
            raise self._broken.result()
        self._stuck = True
        where = f" in {self._txn_phase}" if fn == self._k_commit else ""  # which librdkafka call, for a bug report
        raise KafkaStuck(f"{getattr(fn, '__name__', fn)} blocked{where} for more than {deadline:.0f}s")

    @property
    def in_flight(self) -> int:
        return sum(len(p.queue) for p in self._parts.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, handle, commit until ``stop``; then drain what is in flight and commit it."""
        await self._kafka(self._k_open_producer, producer=True)
        await self._kafka(self._k_open_consumer)
        log.info("step started", extra={"fields": {"step": self.step.name, "inputs": list(self.step.inputs),
                                                    "instance": self.instance}})
        self._broken = asyncio.get_running_loop().create_future()
        committer = asyncio.create_task(self._committer(), name=f"commit-{self.step.name}")
        committer.add_done_callback(self._committer_ended)
        try:
            while not stop.is_set():
                await self._cycle(admit=True)
                if committer.done():
                    committer.result()  # a fatal Kafka failure ends the runner
                    break
            # Drain: no new records; give in-flight ones their deadline to finish, then commit them.
            await self._kafka(self._k_pause, True)
            deadline = time.monotonic() + min(15.0, self.settings.step_deadline_s)
            while self.in_flight and time.monotonic() < deadline and not committer.done():
                await self._cycle(admit=False)
            self._closing = True
            self._ready.set()
            await committer
        finally:
            if not committer.done():
                committer.cancel()
            for part in self._parts.values():
                self._drop_queue(part)
            self._broken = None  # closing must not end on the committer's error; it has its own deadline
            if not self._stuck:
                # Past whatever consumer call the loop stopped waiting for (a restore settles for up to 45 s).
                await self._kafka(self._k_close_consumer, deadline=90.0)
                await self._kafka(self._k_close_producer, deadline=30.0, producer=True)
            self._cpool.shutdown(wait=False)
            self._ppool.shutdown(wait=False)
            log.info("step stopped", extra={"fields": {"step": self.step.name, **self.stats.__dict__}})

    def _committer_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._broken and not self._broken.done():
            self._broken.set_result(task.exception())  # type: ignore[arg-type]

    async def _committer(self) -> None:
        """Commit whenever something is done: at most one transaction every ``commit_interval_s``, one at a
        time; what finishes during a transaction goes into the next. Returns after the last commit once the
        runner is closing; a transaction is never cancelled halfway (its records would be skipped)."""
        last = 0.0
        while True:
            await self._ready.wait()
            self._ready.clear()
            gap = last + self.settings.commit_interval_s - time.monotonic()
            if gap > 0 and not self._closing:
                await asyncio.sleep(gap)
            last = time.monotonic()
            await self._commit()
            if self._closing and not self._ready.is_set():
                return

    async def _cycle(self, admit: bool) -> None:
        in_flight = self.in_flight
        self.stats.in_flight = in_flight
        metrics.IN_FLIGHT.labels(self.step.name).set(in_flight)
        room = self.settings.max_in_flight - in_flight if admit else 0
        if admit and not self._paused and room <= 0:
            now = time.monotonic()
            if self._full_since is None:
                self._full_since = now
                self.stats.full_waits += 1
            wait = self._full_since + self.settings.pause_after_s - now
            if wait > 0:
                self._freed.clear()
                try:
                    await asyncio.wait_for(self._freed.wait(), min(wait, 0.1))
                except asyncio.TimeoutError:
                    pass
                return
            await self._kafka(self._k_pause, True)
            self._paused = True
            self.stats.pauses += 1
        elif admit and self._paused and in_flight <= self.settings.max_in_flight // 2:
            await self._kafka(self._k_pause, False)
            self._paused = False
        if room > 0:
            self._full_since = None
        async with self._consuming:
            # The poll returns on the first record, so a long wait costs no latency; it bounds how late a
            # paused runner notices room again and how often the join's timeouts are checked.
            polled = await self._kafka(self._k_poll, min(max(room, 0), self.settings.max_batch),
                                       0.05 if in_flight else 0.1)
            rebalanced = False
            admitted = 0
            for item in polled:
                if isinstance(item, tuple):
                    await self._on_event(*item)
                    rebalanced = True
                elif admit:
                    for m in item:
                        await self._admit(m)
                    admitted += len(item)
            # Only admission adds records, so this bounds the peak from above without a per-record recount.
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, in_flight + admitted)
            if rebalanced and admit:
                # Whether librdkafka keeps a partition's pause across a rebalance depends on the assignor and
                # version; a pause nobody remembers stops a step for good. Resume explicitly, and pause again
                # next cycle if the step is still full.
                await self._kafka(self._k_pause, False)
                self._paused = False
            if admit and time.monotonic() >= self._next_watch:
                await self._watch(room)
            if self._stateful:
                extra = self._encode_all(None, self.step.tick(int(time.time() * 1000)))  # type: ignore[attr-defined]
                if extra:
                    self._extra.append((next(self._seq), extra))
                    self._ready.set()

    async def _watch(self, room: int) -> None:
        """Every ``watch_every_s``: a runner that had room all along but whose consumer left a partition with
        records unread for ``stall_after_s`` is stalled (seen with librdkafka after a broker restart: fetching
        never resumed, nothing failed, the process lived). Nothing else would notice; start afresh."""
        now = time.monotonic()
        self._next_watch = now + self._watch_every_s
        busy = (self.stats.full_waits, self.stats.pauses, self.stats.rebalances + self.stats.aborts)
        if self._paused or room <= 0 or busy != self._watch_busy:
            # Full, paused, rebalanced or rewound since the last watch: not taking records was expected.
            self._watch_busy = busy
            self._watch_seen.clear()
            self._lag_seen.clear()
            self._unassigned_since, self._group_seen = None, None
            return
        self.stats.watches += 1
        stalled = await self._kafka(self._k_stalled, now)
        if stalled:
            self.stats.stalls += 1
            metrics.STALLS.labels(self.step.name).inc()
            raise KafkaFailure(f"consumer stalled: {stalled}", abortable=False, fatal=True, retriable=True)

    async def _on_event(self, kind: str, tps: list[tuple[str, int]]) -> None:
        self.stats.rebalances += 1
        if kind == "revoke":
            for tp in tps:
                part = self._parts.pop(tp, None)
                if part is not None:
                    self._drop_queue(part)
            if self._stateful:
                self._extra.clear()
                self.step.drop(sorted({p for _, p in tps}))  # type: ignore[attr-defined]
            self._epoch += 1  # a commit collected before this point is refused
            self._revoking = False  # what belonged to the revoked partitions is gone: commits may go on
        elif kind == "assign" and self._stateful:
            await self._kafka(self._k_restore, sorted({p for _, p in tps}))
        log.info(f"partitions {kind}ed", extra={"fields": {"partitions": [f"{t}/{p}" for t, p in tps]}})

    def _drop_queue(self, part: _Partition) -> None:
        self._freed.set()
        for slot in part.queue:
            slot.dropped = True
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
        part.queue.clear()

    async def _admit(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            log.warning("consume error", extra={"fields": {"error": str(err)}})
            return
        tp = (msg.topic(), msg.partition())
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition(committed=msg.offset())
        slot = _Slot(offset=msg.offset())
        part.queue.append(slot)
        self.stats.consumed += 1
        record = self._record(msg)
        slot.record = record
        if self._stateful:
            # State is per partition and order matters: handle in order, inline.
            await self._handle(slot, record)
        elif self.settings.partition_serial:
            # The naive consumer (for comparison): one record in flight per partition.
            slot.task = part.last = asyncio.create_task(self._after(part.last, slot, record))
        else:
            slot.task = asyncio.create_task(self._handle(slot, record))

    async def _after(self, previous: asyncio.Task[None] | None, slot: _Slot, record: Record) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        await self._handle(slot, record)

    def _record(self, msg: Message) -> Record:
        return Record(topic=msg.topic(), partition=msg.partition(), offset=msg.offset(), key=decode_key(msg.key()),
                      raw=msg.value(), headers=message_headers(msg), timestamp_ms=msg.timestamp()[1])

    async def _handle(self, slot: _Slot, record: Record) -> None:
        step = self.step.name
        token = bind(RecordContext(step=step, correlation_id=record.correlation_id, tenant_id=record.tenant_id,
                                   attempt=record.attempt, topic=record.topic, partition=record.partition,
                                   offset=record.offset))
        started = time.monotonic()
        attempts = 0
        metrics.RECORDS_IN.labels(step).inc()
        span_cm = tracing.record_span(step, record.headers, {
            "triage.correlation_id": record.correlation_id, "triage.tenant_id": record.tenant_id,
            "messaging.destination.name": record.topic, "messaging.kafka.partition": record.partition,
            "messaging.kafka.offset": record.offset, "triage.attempt": record.attempt})
        span_cm.__enter__()
        try:
            schema = self.pipeline.schema_of(record.topic)
            if schema is not None:
                try:
                    record = _with_value(record, avro.decode(record.raw, schema))
                except Exception as exc:  # noqa: BLE001 - a decoder bug must not leave the slot open for good
                    code = exc.code if isinstance(exc, TriageError) else "INTERNAL"
                    outputs = self._failed(record, code, str(exc) or type(exc).__name__, 1)
                    self._finish(slot, outputs)
                    return
            policy_deadline = self.settings.step_deadline_s
            deadline = started + policy_deadline
            while True:
                attempts += 1
                try:
                    left = max(0.001, deadline - time.monotonic())
                    async with asyncio.timeout(left):  # not wait_for: that starts a second task per record
                        emits = await self.step.handle(record, self.ctx)
                    outputs = self._encode_all(record, emits)
                    break
                except TriageError as exc:
                    # Infrastructure that is away (Redis, a model outage in "wait" mode) is waited for, with
                    # backoff, until the step deadline; model answers were already retried by the gateway.
                    pause = min(5.0, self.settings.retry.backoff(attempts))
                    if exc.retryable and not isinstance(exc, ModelError) and time.monotonic() + pause < deadline:
                        await asyncio.sleep(pause)
                        continue
                    calls = getattr(exc, "calls", attempts)
                    outputs = self._failed(record, exc.code, str(exc), calls)
                    break
                except asyncio.TimeoutError:
                    outputs = self._failed(record, "STEP_TIMEOUT",
                                           f"not done within the step deadline of {policy_deadline:.0f}s", attempts)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug in a step must not stop the worker or lose the record
                    log.exception("step raised an unexpected error")
                    outputs = self._failed(record, "INTERNAL", f"{type(exc).__name__}: {exc}", attempts)
                    break
            self._finish(slot, outputs)
            wait = time.monotonic() - started
            metrics.STEP_SECONDS.labels(step).observe(wait)
            if wait > self.stats.max_hol_wait_s:
                self.stats.max_hol_wait_s = wait
                metrics.HOL_WAIT.labels(step).set(wait)
        finally:
            span_cm.__exit__(None, None, None)
            reset(token)

    def _finish(self, slot: _Slot, outputs: list[Output]) -> None:
        if slot.dropped:
            return
        slot.outputs = outputs
        slot.seq = next(self._seq)
        slot.done = True
        self._ready.set()

    def _encode_all(self, record: Record | None, emits: list[Emit]) -> list[Output]:
        out: list[Output] = []
        for e in emits:
            headers: dict[str, str] = {}
            if record is not None:
                headers.update({k: record.headers[k] for k in CARRIED_HEADERS if k in record.headers})
                headers.setdefault("attempt", str(record.attempt))
                # Which record this output was made from: the join tells a ticket's classifications from those
                # of another ticket that came with the same ID by the tickets.valid record they classified.
                headers["source"] = f"{record.topic}/{record.partition}/{record.offset}"
            headers.update(e.headers)
            traceparent = tracing.current_traceparent()
            if traceparent and record is not None:
                headers["traceparent"] = traceparent  # the next step's span is a child of this one
            if e.value is None or isinstance(e.value, (bytes, bytearray)):
                value = bytes(e.value) if e.value is not None else None
            else:
                schema = self.pipeline.schema_of(e.topic)
                # SchemaInvalid: the step's output failed validation. A topic without a schema carries JSON.
                value = (avro.encode(schema, e.value) if schema is not None
                         else json.dumps(e.value, ensure_ascii=False, separators=(",", ":")).encode())
            if value is not None and len(value) > self._limit(e.topic):
                raise TriageError(f"output of {len(value)} bytes is over the limit", code="OVERSIZED")
            metrics.RECORDS_OUT.labels(self.step.name, e.topic).inc()
            key = e.key if e.key is not None else (record.key if record is not None else None)
            out.append((e.topic, e.partition, key.encode() if key is not None else None, value,
                        encode_headers(headers)))
        return out

    def _limit(self, topic: str) -> int:
        """The most bytes an output to ``topic`` may have. A changelog record holds one input record (itself
        within the output limit, as some step wrote it) and a bounded bookkeeping beside it; a dead letter keeps
        its record's bytes, cut to fit (dead_letter.fit_value)."""
        if topic == self._changelog:
            return self.settings.max_value_bytes + STATE_OVERHEAD_BYTES
        if topic.startswith(self.pipeline.dlq_topic("")):
            return MAX_VALUE_BYTES
        return self.settings.max_value_bytes

    def _failed(self, record: Record, reason: str, error: str, attempts: int) -> list[Output]:
        """What a record the step failed on leaves: a dead letter, unless the step stands something else in for
        it (a classifier's failed classification, so that its ticket ends once, through the join)."""
        instead = getattr(self.step, "on_failure", None)
        if instead is not None:
            try:
                emits = instead(record, reason, error)
                if emits:
                    outputs = self._encode_all(record, emits)
                    metrics.STEP_FAILURES.labels(self.step.name, reason).inc()
                    log.warning("step failed; passed on as a failed result",
                                extra={"fields": {"reason": reason, "error": error[:300]}})
                    return outputs
            except Exception:  # noqa: BLE001 - the dead letter below is the fallback, never nothing
                log.exception("on_failure raised; dead-lettering instead")
        return [self._dead_letter(record, reason, error, attempts)]

    def _dead_letter(self, record: Record, reason: str, error: str, attempts: int) -> Output:
        self.stats.dead_lettered += 1
        metrics.DEAD_LETTERS.labels(self.step.name, reason).inc()
        log.warning("dead-lettered", extra={"fields": {"reason": reason, "error": error[:300]}})
        cid = dead_letter_id(record)
        headers = dead_letter_headers(record, self.step.name, reason, error, attempts)
        headers["correlation_id"] = cid
        value = fit_value(record.raw, headers)
        return (self.pipeline.dlq_topic(self.step.name), None, cid.encode(), value, encode_headers(headers))

    async def _commit(self) -> None:
        epoch = self._epoch
        runs: list[tuple[int, list[Output]]] = []
        offsets: list[TopicPartition] = []
        advanced: list[tuple[_Partition, int]] = []
        for (topic, partition), part in self._parts.items():
            last = None
            while part.queue and part.queue[0].done:
                slot = part.queue.popleft()
                runs.append((slot.seq, slot.outputs))
                last = slot.offset
            if last is not None:
                offsets.append(TopicPartition(topic, partition, last + 1))
                advanced.append((part, last + 1))
        runs.extend(self._extra)
        if self._stateful:
            # In the order the state changed (records are handled inline, ticks between them): the producer keeps
            # that order per partition, so each key's last changelog record is its last state.
            runs.sort(key=lambda run: run[0])
        outputs = [o for _, run in runs for o in run]
        if not outputs and not offsets:
            return
        self._extra = []
        started = time.monotonic()
        try:
            await self._kafka(self._k_commit, outputs, offsets, epoch, deadline=self._commit_deadline_s, producer=True)
        except KafkaFailure as failure:
            if failure.fatal:
                raise
            self.stats.aborts += 1
            if not isinstance(failure, CommitRefused):
                self._aborts_in_row += 1
                self._timeouts_in_row = self._timeouts_in_row + 1 if failure.code == "_TIMED_OUT" else 0
            metrics.TRANSACTIONS.labels(self.step.name, "aborted").inc()
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
            await self._rewind()
            return
        self._aborts_in_row = self._timeouts_in_row = 0
        metrics.COMMIT_SECONDS.labels(self.step.name).observe(time.monotonic() - started)
        for part, nxt in advanced:
            part.committed = nxt
        self._freed.set()
        self.stats.transactions += 1
        metrics.TRANSACTIONS.labels(self.step.name, "committed").inc()
        self.stats.emitted += len(outputs)

    async def _rewind(self) -> None:
        """After an abort: forget everything uncommitted and read it again from the last committed offsets."""
        async with self._consuming:
            positions = [TopicPartition(t, p, part.committed) for (t, p), part in self._parts.items()]
            for part in self._parts.values():
                self._drop_queue(part)
            self._parts.clear()
            self._extra.clear()
            await self._kafka(self._k_seek, positions)
            if self._stateful:
                parts = await self._kafka(self._k_assigned)
                self.step.drop(parts)  # type: ignore[attr-defined]
                await self._kafka(self._k_restore, parts)


def _with_value(record: Record, value: Any) -> Record:
    return Record(topic=record.topic, partition=record.partition, offset=record.offset, key=record.key,
                  raw=record.raw, headers=record.headers, timestamp_ms=record.timestamp_ms, value=value)
