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


def test_a_replacement_goes_on_where_the_last_consumer_stopped(pipeline: Stack) -> None:
    """A fresh consumer knows no position in a partition until it hands out a record there: replaced twice, with
    partitions finished before the first replacement and quiet since, the reader must not read them again."""
    topic = _topic(pipeline)
    first = [f"a{i}" for i in range(30)]
    _produce(pipeline.bootstrap, topic, first)
    reader = Reader(pipeline.bootstrap, [topic])
    try:
        seen: list[str] = []
        for o in reader.records(timeout=90, idle=3.0, stall_s=1.0):
            seen.append(o.raw.decode())
            if len(seen) == 30 or seen[-1] == "b0":
                # Stalled again, and one more record, in partition 0 only.
                reader.consumer.pause(reader.consumer.assignment())
                _produce(pipeline.bootstrap, topic, ["b0" if len(seen) == 30 else "c0"])
        assert sorted(seen) == sorted([*first, "b0", "c0"]), "a record was read twice, or missed"
        assert reader.replaced == 2
    finally:
        reader.close()


def test_reading_from_the_end_a_replacement_skips_nothing(pipeline: Stack) -> None:
    """From the end, where the read began is fixed when it begins: records that came while the consumer was
    stalled, before it took any, are read by its replacement, not skipped as older than the new end."""
    topic = _topic(pipeline)
    _produce(pipeline.bootstrap, topic, ["old0", "old1", "old2"])
    reader = Reader(pipeline.bootstrap, [topic], from_beginning=False)
    try:
        reader.consumer.pause(reader.consumer.assignment())
        new = [f"n{i}" for i in range(6)]
        _produce(pipeline.bootstrap, topic, new)
        seen = [o.raw.decode() for o in reader.records(timeout=60, stall_s=1.0, max_records=len(new))]
        assert sorted(seen) == sorted(new)
        assert reader.replaced == 1
    finally:
        reader.close()
