"""The step runtime on the real broker: bounded in-flight records (back-pressure) and exactly-once delivery
of a slow step's outputs, with records finishing out of order."""
from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
import uuid
from typing import Any, Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.kafka_io import KafkaFailure, base_config, consumer_config, read_partition
from streams.records import Emit, Record
from streams.runtime import KafkaStuck, StepRunner
from streams.services.kafka_broker import TopicSpec, ensure_topics
from streams.step import StepContext
from processors.topology import dlq_topic, group_id
from tests.harness import Stack

pytestmark = pytest.mark.kafka

LIMIT = 8
RECORDS = 300


class SlowEcho:
    """Echoes each record after a random pause, so records finish out of order and many wait at once."""

    stateful = False

    def __init__(self, name: str, source: str, sink: str) -> None:
        self.name, self.inputs, self.sink = name, (source,), sink
        self.in_flight = 0
        self.peak = 0
        self._rng = random.Random(3)

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self._rng.uniform(0.005, 0.05))
        finally:
            self.in_flight -= 1
        return [Emit(self.sink, record.raw, key=record.key)]


def _read_all(bootstrap: str, topic: str, expect: int, timeout: float = 60.0) -> list[bytes]:
    c = Consumer(base_config(bootstrap, **{"group.id": f"test-{uuid.uuid4()}", "isolation.level": "read_committed",
                                           "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    try:
        md = c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(values) < expect and time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                if m.error() is None:
                    values.append(m.value())
        # Anything beyond `expect` would be a duplicate: read on briefly to catch a late one.
        for m in c.consume(500, 1.0):
            if m.error() is None:
                values.append(m.value())
        return values
    finally:
        c.close()


@pytest.mark.parametrize("pause_after_s", [0.0, 30.0], ids=["pauses-at-once", "waits-for-commits"])
async def test_in_flight_is_bounded_and_every_record_is_emitted_once(pipeline: Stack, pause_after_s: float) -> None:
    """Full, a runner either pauses its partitions (full for longer than pause_after_s) or waits for a commit
    to make room without pausing; either way it holds at most the limit and emits every record once."""
    run = uuid.uuid4().hex[:8]
    source, sink = f"test.bp.{run}.in", f"test.bp.{run}.out"
    ensure_topics(pipeline.bootstrap, [TopicSpec(source, 3), TopicSpec(sink, 3)])
    producer = Producer(base_config(pipeline.bootstrap))
    for i in range(RECORDS):
        producer.produce(source, key=f"k{i % 37}".encode(), value=f"{run}-{i}".encode())
    assert producer.flush(30) == 0

    settings = dataclasses.replace(pipeline.settings, max_in_flight=LIMIT, pause_after_s=pause_after_s)
    step = SlowEcho(f"test-bp-{run}", source, sink)
    runner = StepRunner(step, StepContext(step.name, settings, None, None), instance="t")  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while runner.stats.consumed < RECORDS and loop.time() < deadline and not task.done():
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 60)

    values = _read_all(pipeline.bootstrap, sink, RECORDS)
    assert sorted(values) == sorted(f"{run}-{i}".encode() for i in range(RECORDS))  # each once, none lost
    assert runner.stats.peak_in_flight <= LIMIT, runner.stats
    assert step.peak > 1  # records were handled side by side, not one at a time
    assert runner.stats.full_waits >= 1  # 300 records against a limit of 8: the runner was full
    if pause_after_s == 0:
        assert runner.stats.pauses >= 1
    else:
        assert runner.stats.pauses == 0  # room came with each commit, long before pause_after_s


class Overrun:
    """Outlasts the step deadline on every record; stands a failed result in for it when ``stand_in``."""

    stateful = False

    def __init__(self, name: str, source: str, sink: str, stand_in: bool) -> None:
        self.name, self.inputs, self.sink, self.stand_in = name, (source,), sink, stand_in

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        await asyncio.sleep(60)
        return [Emit(self.sink, record.raw, key=record.key)]

    def on_failure(self, record: Record, code: str, reason: str) -> list[Emit] | None:
        return [Emit(self.sink, f"failed {code} {record.raw.decode()}".encode(), key=record.key)] if self.stand_in else None


@pytest.mark.parametrize("stand_in", [True, False], ids=["stands-in", "dead-letters"])
async def test_a_failure_the_step_stands_a_result_in_for_is_not_dead_lettered(pipeline: Stack, stand_in: bool) -> None:
    """A classifier is one branch of a fan-out: a dead letter there would be its ticket's second outcome, next
    to the one the join's result leads to. A step with on_failure passes its failures on instead; one that
    declines (None) is dead-lettered as before."""
    run = uuid.uuid4().hex[:8]
    source, sink = f"test.fail.{run}.in", f"test.fail.{run}.out"
    step = Overrun(f"test-fail-{run}", source, sink, stand_in)
    ensure_topics(pipeline.bootstrap, [TopicSpec(source, 3), TopicSpec(sink, 3), TopicSpec(dlq_topic(step.name), 1)])
    _produce(pipeline.bootstrap, source, 6, partitions=(0, 1, 2))
    settings = dataclasses.replace(pipeline.settings, step_deadline_s=0.5)
    runner = StepRunner(step, StepContext(step.name, settings, None, None), instance="t")  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _until(lambda: runner.stats.consumed == 6 and runner.in_flight == 0 and runner.stats.transactions >= 1,
                     task)
    finally:
        await _stopped(task, stop)
    passed, dead = (_read_all(pipeline.bootstrap, t, 6 if want else 0, timeout=10 if want else 2)
                    for t, want in ((sink, stand_in), (dlq_topic(step.name), not stand_in)))
    if stand_in:
        assert sorted(passed) == sorted(f"failed STEP_TIMEOUT v{i}".encode() for i in range(6))
        assert dead == [] and runner.stats.dead_lettered == 0
    else:
        assert passed == [] and sorted(dead) == sorted(f"v{i}".encode() for i in range(6))
        assert runner.stats.dead_lettered == 6


class Echo:
    """Echoes each record at once."""

    stateful = False

    def __init__(self, name: str, source: str, sink: str) -> None:
        self.name, self.inputs, self.sink = name, (source,), sink

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        return [Emit(self.sink, record.raw, key=record.key)]


def _echo_runner(pipeline: Stack, **kwargs: float) -> tuple[StepRunner, str]:
    run = uuid.uuid4().hex[:8]
    source, sink = f"test.watch.{run}.in", f"test.watch.{run}.out"
    ensure_topics(pipeline.bootstrap, [TopicSpec(source, 3), TopicSpec(sink, 3)])
    step = Echo(f"test-watch-{run}", source, sink)
    return StepRunner(step, StepContext(step.name, pipeline.settings, None, None), instance="t",  # type: ignore[arg-type]
                      **kwargs), source


def _produce(bootstrap: str, topic: str, n: int, partitions: tuple[int, ...], transactional: bool = False,
             abort: bool = False) -> None:
    producer = Producer(base_config(bootstrap, **({"transactional.id": f"{topic}.writer"} if transactional else {})))
    if transactional:
        producer.init_transactions(30)
        producer.begin_transaction()
    for i in range(n):
        producer.produce(topic, value=f"v{i}".encode(), partition=partitions[i % len(partitions)])
    if transactional:
        (producer.abort_transaction if abort else producer.commit_transaction)(30)
    assert producer.flush(30) == 0


async def _until(check: Callable[[], bool], task: asyncio.Task[None], timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert not task.done(), task.result()
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def _behind_its_back(runner: StepRunner, fn: Callable[[Consumer], Any]) -> None:
    """Do to the runner's consumer, on its own thread, what a wedged client would look like from outside."""
    consumer = runner.poller.consumer
    assert consumer is not None
    await asyncio.get_running_loop().run_in_executor(runner.kafka.cpool, fn, consumer)


async def _ends_stalled(runner: StepRunner, task: asyncio.Task[None], match: str) -> None:
    with pytest.raises(KafkaFailure, match=match):
        await asyncio.wait_for(task, 30)
    assert runner.stats.stalls == 1


async def _stopped(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    if not task.done():
        await asyncio.wait_for(task, 60)


async def test_a_partition_left_unread_is_found_and_the_runner_starts_afresh(pipeline: Stack) -> None:
    """Idle and caught up is not a stall; records the consumer leaves unread past stall_after_s are."""
    runner, source = _echo_runner(pipeline, watch_every_s=0.2, stall_after_s=1.0)
    # In a transaction, as every step writes: each partition then ends in a commit marker, an offset the
    # consumer never takes. Partition 2 stays empty: the consumer has no position there at all.
    _produce(pipeline.bootstrap, source, 20, partitions=(0, 1), transactional=True)
    # And partition 0 ends in an aborted transaction: records a read_committed consumer skips.
    _produce(pipeline.bootstrap, source, 3, partitions=(0,), transactional=True, abort=True)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _until(lambda: runner.stats.consumed == 20 and runner.stats.transactions >= 1, task)
        watched = runner.stats.watches
        # Caught up, for several times stall_after_s: the watchdog looks and finds nothing.
        await _until(lambda: runner.stats.watches >= watched + 15, task)
        assert runner.stats.stalls == 0
        # A pause nobody remembers (what a fetch that never resumes looks like from outside), then records.
        await _behind_its_back(runner, lambda c: c.pause(c.assignment()))
        _produce(pipeline.bootstrap, source, 5, partitions=(1,))
        await _ends_stalled(runner, task,
                            r"consumer stalled: .*/1 has had records 11\.\.15 to read and the consumer has not moved")
    finally:
        await _stopped(task, stop)


async def test_a_runner_left_without_partitions_while_records_wait_starts_afresh(pipeline: Stack) -> None:
    """After a broker restart a consumer's session timed out, its partitions were revoked and it never joined
    the group again: no partitions, no error, nothing done. From outside that looks like an unassign."""
    runner, source = _echo_runner(pipeline, watch_every_s=0.2, stall_after_s=1.0)
    _produce(pipeline.bootstrap, source, 10, partitions=(0, 1, 2))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _until(lambda: runner.stats.consumed == 10 and runner.stats.transactions >= 1, task)
        await _behind_its_back(runner, lambda c: c.unassign())
        _produce(pipeline.bootstrap, source, 5, partitions=(2,))
        await _ends_stalled(runner, task, "consumer stalled: no partitions assigned for .* while records wait")
    finally:
        await _stopped(task, stop)


async def test_a_spare_replica_without_partitions_is_left_alone(pipeline: Stack) -> None:
    """More members than partitions: the spare has nothing assigned, and while the pipeline is idle its group's
    offsets stand still and its partition ends in a commit marker past them. It is a member all the same;
    restarting it would only make the whole group rebalance, again and again."""
    run = uuid.uuid4().hex[:8]
    source, sink = f"test.spare.{run}.in", f"test.spare.{run}.out"
    ensure_topics(pipeline.bootstrap, [TopicSpec(source, 1), TopicSpec(sink, 1)])
    step = Echo(f"test-spare-{run}", source, sink)
    runners = [StepRunner(step, StepContext(step.name, pipeline.settings, None, None), instance=f"t{i}",  # type: ignore[arg-type]
                          watch_every_s=0.2, stall_after_s=1.0) for i in range(2)]
    _produce(pipeline.bootstrap, source, 5, partitions=(0,), transactional=True)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    try:
        await _until(lambda: sum(r.stats.consumed for r in runners) == 5
                     and sum(r.stats.transactions for r in runners) >= 1, tasks[0])
        # Long enough for the unassigned check to have looked at the group several times (every stall_after_s).
        seen = [r.stats.watches for r in runners]
        await _until(lambda: all(r.stats.watches >= w + 30 for r, w in zip(runners, seen)), tasks[0])
        assert [r.stats.stalls for r in runners] == [0, 0]
        assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)


def _member(consumer: Consumer, done: threading.Event) -> None:
    while not done.is_set():
        consumer.poll(0.2)


async def test_a_stuck_commit_ends_a_poll_that_waits_for_it(pipeline: Stack) -> None:
    """A revocation waits for the transaction in flight; when that transaction never ends, the commit's
    deadline must end the runner at once, not the poll's own (180 s) deadline later."""
    runner, source = _echo_runner(pipeline, commit_deadline_s=2.0)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    rival: Consumer | None = None
    member: threading.Thread | None = None
    rival_done = threading.Event()
    try:
        _produce(pipeline.bootstrap, source, 5, partitions=(0, 1, 2))
        await _until(lambda: runner.stats.transactions >= 1, task)
        runner.txns.lock.acquire()  # the transaction in flight that never ends
        _produce(pipeline.bootstrap, source, 5, partitions=(0, 1, 2))  # a commit that will wait for it
        # A second member: the runner's next poll runs the revocation, which waits for the lock.
        rival = Consumer(consumer_config(pipeline.bootstrap, group_id(runner.step.name)))
        rival.subscribe([source])
        member = threading.Thread(target=_member, args=(rival, rival_done), daemon=True)
        member.start()
        started = time.monotonic()
        with pytest.raises(KafkaStuck, match="_k_commit blocked in the wait for the transaction lock"):
            await asyncio.wait_for(task, 60)
        assert time.monotonic() - started < 30  # the poll's own deadline is 180 s
    finally:
        if runner.txns.lock.locked():
            runner.txns.lock.release()
        rival_done.set()
        stop.set()
        if not task.done():
            await asyncio.wait_for(task, 60)
        if member is not None:
            member.join(10)
        if rival is not None:
            rival.close()
        # A stuck runner leaves its clients to the process's exit; this process goes on, so close them here.
        runner.kafka.cpool.shutdown(wait=True)
        if runner.poller.consumer is not None:
            runner.poller.consumer.close()


def test_a_restore_waits_for_the_transactions_on_its_changelog_to_end(pipeline: Stack) -> None:
    """commit_transaction returns before the markers are written, so a restore right after a commit could end
    below committed records; it reads only once no transaction is open on the partition."""
    topic = f"test.restore.{uuid.uuid4().hex[:8]}"
    ensure_topics(pipeline.bootstrap, [TopicSpec(topic, 1)])
    p = Producer(base_config(pipeline.bootstrap, **{"transactional.id": f"{topic}.writer"}))
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, key=b"a", value=b"1", partition=0)
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce(topic, key=b"b", value=b"2", partition=0)
    assert p.flush(30) == 0  # on the broker, in a transaction still open

    with pytest.raises(KafkaFailure, match="has had a transaction open for 1 s"):
        list(read_partition(pipeline.bootstrap, topic, 0, settle=1.0))

    got: list[list[tuple[bytes | None, bytes | None]]] = []
    reader = threading.Thread(target=lambda: got.append(list(read_partition(pipeline.bootstrap, topic, 0))))
    reader.start()
    reader.join(2.0)
    assert reader.is_alive() and not got  # waiting: reading now would end at the open transaction
    p.commit_transaction(30)
    reader.join(30)
    assert got == [[(b"a", b"1"), (b"b", b"2")]]
    del p
