"""The join's state on the real broker: bounded by what ingest lets in, one outcome per ticket whatever fails
inside the join, and a changelog whose last record per key is the state's last value."""
from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any, Callable, Iterator

import pytest
from confluent_kafka import Producer

import processors.join as join_module
from processors.case import new_case
from processors.join import Join, decode_state
from streams import avro
from streams.pipeline import Topic
from processors.support import PIPELINE as SUPPORT
from streams.client import Out, TicketProducer, read
from streams.kafka_io import base_config, read_partition
from streams.runtime import StepRunner
from streams.services.kafka_broker import TopicSpec, ensure_topics
from streams.step import StepContext
from processors.topology import CLASSIFIERS, dlq_topic
from tests.harness import Stack

pytestmark = pytest.mark.kafka
EMOJI, CJK = "\U0001F600", "\u6f22"


def _biggest(ch: str) -> dict[str, Any]:
    """A ticket at every ingest limit, in characters that JSON with ensure_ascii spells longest."""
    return {"tenant_id": "acme", "subject": ch * 1000, "body": ch * 20_000, "ticket_id": ch * 200,
            "customer_id": ch * 200, "channel": ch * 200}


@pytest.mark.parametrize("ch", [EMOJI, CJK], ids=["emoji", "cjk"])
def test_a_ticket_at_every_ingest_limit_has_exactly_one_outcome(pipeline: Stack, ch: str) -> None:
    """It used to make join state over the output limit: the ticket and three classifications were each
    dead-lettered by the join, and the fourth still completed it: four dead letters and a response."""
    cid = ch * 180 + uuid.uuid4().hex[:20]  # an ID of 200 characters, the most ingest takes
    p = TicketProducer(pipeline.bootstrap)
    p.send(_biggest(ch), correlation_id=cid)
    p.flush()
    outs = pipeline.outcomes({cid}, timeout=300).get(cid, [])
    where = [(o.topic, o.headers.get("dlq.reason")) for o in outs]
    assert len(outs) == 1, where
    assert outs[0].topic != dlq_topic("join"), where


# ---- a join of its own on the real broker, driven record by record --------------------------------------------
@dataclasses.dataclass
class Lane:
    """Topics of a join beside the pipeline's (so its group and changelog are its own)."""

    stack: Stack
    run: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        r = self.run
        self.valid, self.classified, self.joined = f"test.j.{r}.valid", f"test.j.{r}.classified", f"test.j.{r}.joined"
        self.changelog, self.name = f"test.j.{r}.state", f"test-join-{r}"
        ensure_topics(self.stack.bootstrap, [TopicSpec(t, 1) for t in (
            self.valid, self.classified, self.joined, self.changelog, dlq_topic(self.name))])
        self.producer = Producer(base_config(self.stack.bootstrap))
        # The runtime decodes its inputs by topic: these topics carry what the pipeline's join topics carry.
        self.pipeline = dataclasses.replace(SUPPORT, topics=(*SUPPORT.topics, Topic(self.valid, "dev.triage.Case"),
                                                             Topic(self.classified, "dev.triage.Classification")))

    def join(self, **kwargs: Any) -> Join:
        return Join(120, name=self.name, valid=self.valid, classified=self.classified, joined=self.joined,
                    changelog=self.changelog, **kwargs)

    def ticket(self, cid: str, body: str = "my invoice is wrong") -> bytes:
        raw = avro.encode("dev.triage.Case", new_case(cid, "acme", {"subject": "s", "body": body}, 0))
        self._send(self.valid, cid, raw, {})
        return raw

    def classifications(self, cid: str, ticket_offset: int) -> None:
        for c in CLASSIFIERS:
            value = {"correlation_id": cid, "tenant_id": "acme", "classifier": c, "ok": True, "label": "x",
                     "confidence": 0.9, "model": "m", "error_code": None, "error": None, "model_calls": 1,
                     "tokens": 1, "drift_score": None}
            self._send(self.classified, cid, avro.encode("dev.triage.Classification", value),
                       {"source": f"{self.valid}/0/{ticket_offset}"})

    def _send(self, topic: str, cid: str, raw: bytes, extra: dict[str, str]) -> None:
        headers = {"correlation_id": cid, "tenant_id": "acme", "attempt": "1", **extra}
        self.producer.produce(topic, key=cid.encode(), value=raw, partition=0,
                              headers=[(k, v.encode()) for k, v in headers.items()])
        assert self.producer.flush(30) == 0

    def records(self, topic: str) -> list[Out]:
        return list(read(self.stack.bootstrap, [topic], timeout=30, idle=1.0))


@pytest.fixture
def lane(pipeline: Stack) -> Iterator[Lane]:
    lane = Lane(pipeline)
    yield lane
    del lane.producer  # closed now, not at the end of the session after the broker has gone


async def _until(check: Callable[[], bool], task: asyncio.Task[None], what: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert not task.done(), task.result()
        assert asyncio.get_running_loop().time() < deadline, f"not reached within {timeout:.0f} s: {what}"
        await asyncio.sleep(0.01)


async def _stop(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    if not task.done():
        await asyncio.wait_for(task, 60)


async def test_a_failure_inside_the_join_gives_the_ticket_one_dead_letter(lane: Lane) -> None:
    """A joined Case the join cannot write (here: over the output limit, which the ticket itself is not): the
    ticket is dead-lettered once, with its own bytes and the reason, and none of its classifications is."""
    cid = f"fail-{lane.run}"
    raw = lane.ticket(cid, body="b" * 2000)
    lane.classifications(cid, 0)
    limit = len(raw) + 64  # the ticket fits, the joined Case (labels, trail) does not
    settings = dataclasses.replace(lane.stack.settings, max_value_bytes=limit)
    join = lane.join(max_value_bytes=limit)
    runner = StepRunner(join, StepContext(join.name, settings, None, None, lane.pipeline), instance="t")  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _until(lambda: runner.stats.consumed == 5 and runner.in_flight == 0 and runner.stats.transactions >= 1,
                     task, "five records handled and committed")
    finally:
        await _stop(task, stop)
    dead = lane.records(dlq_topic(lane.name))
    assert [(d.key, d.headers["dlq.reason"], d.headers["dlq.source"]) for d in dead] == \
        [(cid, "OVERSIZED", f"{lane.valid}/0/0")]
    assert dead[0].raw == raw  # the ticket's own bytes: a replay runs it again as a new attempt
    assert lane.records(lane.joined) == []


async def test_a_tick_deletion_does_not_outlive_a_newer_state_of_its_key(lane: Lane,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished ticket's entry is deleted by the join's periodic tick once its retention ends; that deletion
    waits for the next transaction. A ticket with the same ID admitted before that transaction writes the key
    again. The changelog must end with the new entry, or a restore loses it and the ticket never finishes."""
    cid = f"order-{lane.run}"
    skey = f"acme/{cid}/1"
    lane.ticket(cid)
    lane.classifications(cid, 0)
    # A transaction every 5 s at most: the deletion is held long enough for the next ticket to join it.
    settings = dataclasses.replace(lane.stack.settings, commit_interval_s=5.0)
    join = lane.join()
    runner = StepRunner(join, StepContext(join.name, settings, None, None, lane.pipeline), instance="t")  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _until(lambda: runner.stats.consumed == 5 and runner.stats.transactions >= 1 and not runner.order.extra
                     and runner.in_flight == 0, task, "the first ticket joined and committed")
        # Right after a commit, so the next one is 5 s away: the finished entry goes at the next tick.
        monkeypatch.setattr(join_module, "DONE_RETENTION_MS", 0)
        await _until(lambda: skey not in join._state.get(0, {}) and bool(runner.order.extra), task,
                     "the tick's deletion of the finished entry, not yet committed")
        committed = runner.stats.transactions
        lane.ticket(cid, body="a second ticket with this ID, after the first's retention")
        await _until(lambda: runner.stats.consumed == 6, task, "the second ticket admitted")
        # The premise: the new state and the deletion go in one transaction.
        assert runner.stats.transactions == committed and runner.order.extra, "the deletion was committed already"
        await _until(lambda: runner.stats.transactions > committed and runner.in_flight == 0 and not runner.order.extra,
                     task, "the deletion and the new state committed")
    finally:
        await _stop(task, stop)
    changelog = [(k, v) for k, v in read_partition(lane.stack.bootstrap, lane.changelog, 0) if k == skey.encode()]
    assert changelog[-1][1] is not None, "the key's last changelog record is the deletion"
    restored = lane.join()
    restored.restore([0], lambda p: read_partition(lane.stack.bootstrap, lane.changelog, p))
    entry = restored._state[0].get(skey)
    assert entry is not None and not entry.get("done") and entry["src"] == f"{lane.valid}/0/1", entry
    assert decode_state(changelog[-1][1])["src"] == f"{lane.valid}/0/1"
