"""The runner's loop: poll, admit, hand to the handlers, commit, rewind; each job in its own module."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from confluent_kafka import Message

from streams import metrics
from streams.kafka_io import consumer_config, producer_config
from streams.records import Record, decode_key, message_headers
from streams.runtime.backpressure import BackPressure
from streams.runtime.handling import Handler
from streams.runtime.ordering import InOrder, Slot
from streams.runtime.outputs import Outputs
from streams.runtime.polling import Poller
from streams.runtime.state import ChangelogState
from streams.runtime.stats import Stats
from streams.runtime.threads import KafkaThreads
from streams.runtime.transactions import COMMIT_DEADLINE_S, Transactions
from streams.runtime.watchdog import STALL_AFTER_S, WATCH_EVERY_S, Watchdog
from streams.step import Step, StepContext

log = logging.getLogger("triage.runtime")


class StepRunner:
    """Runs ``step`` until ``stop`` is set. One per step per worker process."""

    def __init__(self, step: Step, ctx: StepContext, *, instance: str,
                 consumer_extra: dict[str, Any] | None = None, producer_extra: dict[str, Any] | None = None,
                 watch_every_s: float = WATCH_EVERY_S, stall_after_s: float = STALL_AFTER_S,
                 commit_deadline_s: float = COMMIT_DEADLINE_S) -> None:
        self.step, self.ctx, self.instance = step, ctx, instance
        self.settings = settings = ctx.settings
        self.stats = Stats()
        # What the pipeline says of this step: its group, its dead letters' topic (and what every such topic
        # starts with), its changelog, the topics' schemas. The only lines of the runtime that read it.
        pipeline = ctx.pipeline
        group, dead_letters, dead_letter_prefix = (pipeline.group_id(step.name), pipeline.dlq_topic(step.name),
                                                   pipeline.dlq_topic(""))
        changelog = getattr(step, "changelog", None)
        schemas = {t.name: t.schema for t in pipeline.topics if t.schema}
        self.kafka = KafkaThreads(step.name)
        self.order = InOrder()
        self.txns = Transactions(
            # The group leads the transactional id: two pipelines with a step of one name never fence each other.
            producer_config(settings.bootstrap, f"{group}.{instance}",
                            {**settings.kafka, **(producer_extra or {})}),
            step=step.name, kafka=self.kafka, stats=self.stats, group_metadata=lambda: self.poller.group_metadata,
            commit_deadline_s=commit_deadline_s)
        self.poller = Poller(consumer_config(settings.bootstrap, group, {**settings.kafka, **(consumer_extra or {})}),
                             step.inputs, on_revoke=self.txns.refuse)
        self.pressure = BackPressure(settings, self.stats, self.order.freed, self.kafka, self.poller)
        self.watchdog = Watchdog(step=step.name, inputs=step.inputs, group=group, bootstrap=settings.bootstrap,
                                 poller=self.poller, kafka=self.kafka, stats=self.stats, watch_every_s=watch_every_s,
                                 stall_after_s=stall_after_s)
        self.state = ChangelogState(step, settings.bootstrap, changelog) if getattr(step, "stateful", False) else None
        self.outputs = Outputs(step, settings, self.stats, schemas=schemas, dead_letters=dead_letters,
                               dead_letter_prefix=dead_letter_prefix, changelog=changelog)
        self.handle = Handler(step, ctx, self.stats, self.outputs, self.order, schemas)
        self._consuming = asyncio.Lock()
        """Held by a poll and the admission of its records, and by a rewind: no poll runs across a seek."""
        self._closing = False

    @property
    def in_flight(self) -> int:
        return self.order.in_flight

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, handle, commit until ``stop``; then drain what is in flight and commit it."""
        await self.kafka.call(self.txns._k_open_producer, producer=True)
        await self.kafka.call(self.poller._k_open_consumer)
        log.info("step started", extra={"fields": {"step": self.step.name, "inputs": list(self.step.inputs),
                                                    "instance": self.instance}})
        committer = asyncio.create_task(self._committer(), name=f"commit-{self.step.name}")
        self.kafka.break_with(committer)
        try:
            while not stop.is_set():
                await self._cycle(admit=True)
                if committer.done():
                    committer.result()  # a fatal Kafka failure ends the runner
                    break
            # Drain: no new records; give in-flight ones their deadline to finish, then commit them.
            await self.kafka.call(self.poller._k_pause, True)
            deadline = time.monotonic() + min(15.0, self.settings.step_deadline_s)
            while self.in_flight and time.monotonic() < deadline and not committer.done():
                await self._cycle(admit=False)
            self._closing = True
            self.order.ready.set()
            await committer
        finally:
            if not committer.done():
                committer.cancel()
            self.order.close()
            self.kafka.broken = None  # closing must not end on the committer's error; it has its own deadline
            if not self.kafka.stuck:
                # Past whatever consumer call the loop stopped waiting for (a restore settles for up to 45 s).
                await self.kafka.call(self.poller._k_close_consumer, deadline=90.0)
                await self.kafka.call(self.txns._k_close_producer, deadline=30.0, producer=True)
            self.kafka.shutdown()
            log.info("step stopped", extra={"fields": {"step": self.step.name, **self.stats.__dict__}})

    async def _committer(self) -> None:
        """Commit whenever something is done: at most one transaction every ``commit_interval_s``, one at a
        time; what finishes during a transaction goes into the next. Returns after the last commit once the
        runner is closing; a transaction is never cancelled halfway (its records would be skipped)."""
        last = 0.0
        ready = self.order.ready
        while True:
            await ready.wait()
            ready.clear()
            gap = last + self.settings.commit_interval_s - time.monotonic()
            if gap > 0 and not self._closing:
                await asyncio.sleep(gap)
            last = time.monotonic()
            await self._commit()
            if self._closing and not ready.is_set():
                return

    async def _cycle(self, admit: bool) -> None:
        in_flight = self.in_flight
        self.stats.in_flight = in_flight
        metrics.IN_FLIGHT.labels(self.step.name).set(in_flight)
        room = await self.pressure.room(in_flight, admit)
        if room is None:
            return
        async with self._consuming:
            # The poll returns on the first record, so a long wait costs no latency; it bounds how late a
            # paused runner notices room again and how often the join's timeouts are checked.
            polled = await self.kafka.call(self.poller._k_poll, min(max(room, 0), self.settings.max_batch),
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
                await self.pressure.rebalanced()
            if admit and self.watchdog.due():
                await self.watchdog.watch(room, self.pressure.paused)
            if self.state is not None:
                extra = self.outputs.encode(None, self.state.tick(int(time.time() * 1000)))
                if extra:
                    self.order.add(extra)

    async def _on_event(self, kind: str, tps: list[tuple[str, int]]) -> None:
        self.stats.rebalances += 1
        if kind == "revoke":
            self.order.revoked(tps)
            if self.state is not None:
                self.order.extra.clear()
                self.state.drop(sorted({p for _, p in tps}))
            self.txns.revoked()
        elif kind == "assign" and self.state is not None:
            await self.kafka.call(self.state._k_restore, sorted({p for _, p in tps}))
        log.info(f"partitions {kind}ed", extra={"fields": {"partitions": [f"{t}/{p}" for t, p in tps]}})

    async def _admit(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            log.warning("consume error", extra={"fields": {"error": str(err)}})
            return
        part, slot = self.order.admit(msg.topic(), msg.partition(), msg.offset())
        self.stats.consumed += 1
        record = _record(msg)
        slot.record = record
        if self.state is not None:
            # State is per partition and order matters: handle in order, inline.
            await self.handle(slot, record)
        elif self.settings.partition_serial:
            # The naive consumer (for comparison): one record in flight per partition.
            slot.task = part.last = asyncio.create_task(self._after(part.last, slot, record))
        else:
            slot.task = asyncio.create_task(self.handle(slot, record))

    async def _after(self, previous: asyncio.Task[None] | None, slot: Slot, record: Record) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        await self.handle(slot, record)

    async def _commit(self) -> None:
        epoch = self.txns.epoch
        taken = self.order.take(in_order_made=self.state is not None)
        if taken is None:
            return
        outputs, offsets, advanced = taken
        if await self.txns.commit(outputs, offsets, epoch):
            self.order.committed(advanced)
        else:
            await self._rewind()

    async def _rewind(self) -> None:
        """After an abort: forget everything uncommitted and read it again from the last committed offsets."""
        async with self._consuming:
            positions = self.order.rewound()
            await self.kafka.call(self.poller._k_seek, positions)
            if self.state is not None:
                parts = await self.kafka.call(self.poller._k_assigned)
                self.state.drop(parts)
                await self.kafka.call(self.state._k_restore, parts)


def _record(msg: Message) -> Record:
    return Record(topic=msg.topic(), partition=msg.partition(), offset=msg.offset(), key=decode_key(msg.key()),
                  raw=msg.value(), headers=message_headers(msg), timestamp_ms=msg.timestamp()[1])
