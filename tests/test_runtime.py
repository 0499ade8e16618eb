"""The step runtime on the real broker: bounded in-flight records (back-pressure) and exactly-once delivery
of a slow step's outputs, with records finishing out of order."""
from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.kafka_io import base_config
from streams.records import Emit, Record
from streams.runtime import StepRunner
from streams.services.kafka_broker import TopicSpec, ensure_topics
from streams.step import StepContext
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
