"""The reader behind `triage read`, DLQ listings, traces and every test that counts outcomes: it reads to the
end that was there when it began, and a consumer that stops fetching is replaced, not waited on."""
from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from streams.client import Reader, read
from streams.kafka_io import base_config
from streams.services.kafka_broker import TopicSpec, ensure_topics
from tests.harness import Stack

pytestmark = pytest.mark.kafka


def _topic(pipeline: Stack) -> str:
    topic = f"test.reader.{uuid.uuid4().hex[:8]}"
    ensure_topics(pipeline.bootstrap, [TopicSpec(topic, 3)])
    return topic


def _produce(bootstrap: str, topic: str, values: list[str], *, abort_after: bool = False) -> None:
    p = Producer(base_config(bootstrap, **{"transactional.id": f"{topic}.{uuid.uuid4().hex[:6]}"}))
    p.init_transactions(30)
    p.begin_transaction()
    for i, v in enumerate(values):
        p.produce(topic, value=v.encode(), partition=i % 3)
    p.commit_transaction(30)
    if abort_after:
        p.begin_transaction()
        p.produce(topic, value=b"aborted", partition=0)
        p.abort_transaction(30)


def test_a_listing_reads_to_the_end_past_markers_and_aborted_records(pipeline: Stack) -> None:
    topic = _topic(pipeline)
    values = [f"v{i}" for i in range(30)]
    _produce(pipeline.bootstrap, topic, values, abort_after=True)
    got = [o.raw.decode() for o in read(pipeline.bootstrap, [topic], timeout=60, idle=0.3) if o.raw]
    assert sorted(got) == sorted(values)


def test_a_consumer_that_stops_fetching_is_replaced(pipeline: Stack) -> None:
    topic = _topic(pipeline)
    _produce(pipeline.bootstrap, topic, [f"a{i}" for i in range(30)])
    reader = Reader(pipeline.bootstrap, [topic])
    try:
        seen: list[str] = []
        records = reader.records(timeout=120, stall_s=1.0, stop=lambda o: len(seen) >= 40)
        for o in records:
            seen.append(o.raw.decode())
            if len(seen) == 30:
                # What a fetch that never resumes looks like from outside: a pause nobody remembers.
                reader.consumer.pause(reader.consumer.assignment())
                _produce(pipeline.bootstrap, topic, [f"b{i}" for i in range(10)])
        assert sorted(seen) == sorted([f"a{i}" for i in range(30)] + [f"b{i}" for i in range(10)])
        assert reader.replaced >= 1
    finally:
        reader.close()
