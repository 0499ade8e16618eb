"""A replay reads the ledger a fixed number of times, however many dead letters it selects (it used to read it
once per dead letter: 183 entries took five minutes), and a Replay click on the page reads the one entry at its
offset instead of scanning the step's topic. Counted, not timed: ``python -m bench.replay`` shows the speed."""
from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest
from confluent_kafka import Producer

from streams import dlq
from streams.kafka_io import producer_config
from streams.services.kafka_broker import TopicSpec, ensure_topics
from processors.topology import dlq_topic
from tests.harness import Stack
from tests.queue_pages import bearer, page, path_of, until_indexed, until_status

pytestmark = pytest.mark.kafka

SINK = "test.replay.sink"
"""Where these dead letters say they came from: a topic no worker reads, so a replay adds nothing to count."""
STEP = "retrieve"


def synthetic_dead_letters(stack: Stack, n: int, cid: str, tenant: str = "acme") -> list[str]:
    """``n`` dead letters of ``STEP`` sharing ``cid``, as the runtime writes them; their entry ids."""
    ensure_topics(stack.bootstrap, [TopicSpec(SINK, 1, 1, {})])
    p = Producer(producer_config(stack.bootstrap, None))
    ids: list[str] = []

    def done(err: Any, msg: Any) -> None:
        assert err is None, err
        ids.append(f"{msg.topic()}/{msg.partition()}/{msg.offset()}")

    for i in range(n):
        headers = {"correlation_id": cid, "tenant_id": tenant, "attempt": "1", "dlq.reason": "RETRIEVAL_FAILED",
                   "dlq.error": "synthetic", "dlq.step": STEP, "dlq.source": f"{SINK}/0/{i}", "dlq.attempts": "1",
                   "dlq.ts": "1"}
        p.produce(dlq_topic(STEP), key=cid.encode(), value=f"record {i}".encode(),
                  headers=[(k, v.encode()) for k, v in headers.items()], on_delivery=done)
    assert p.flush(60) == 0
    return ids


def count_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the ledger is read and a dead-letter topic scanned (wrappers around the real functions)."""
    calls = {"ledger": 0, "scan": 0}
    targets: list[tuple[Any, str, str]] = [(dlq, "read_decisions", "ledger"), (dlq, "replayed_ids", "ledger"),
                                           (dlq, "scan", "scan")]
    try:
        from streams.ui import resolve
        targets.append((resolve, "read_decisions", "ledger"))
    except ImportError:
        pass
    for module, name, what in targets:
        real = getattr(module, name, None)
        if real is None:
            continue

        def counted(*args: Any, _real: Callable[..., Any] = real, _what: str = what, **kwargs: Any) -> Any:
            calls[_what] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, name, counted)
    return calls


def test_a_replay_reads_the_ledger_twice_whatever_it_sends(pipeline: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = f"ledger-reads-{uuid.uuid4().hex[:8]}"
    ids = synthetic_dead_letters(pipeline, 25, cid)
    calls = count_calls(monkeypatch)
    first = dlq.replay(pipeline.bootstrap, STEP, correlation_id=cid)
    assert (first.selected, first.replayed, sorted(first.ids)) == (25, 25, sorted(ids))
    assert calls["ledger"] == 2, f"{calls['ledger']} ledger reads for one replay (once before fencing, once after)"
    calls["ledger"] = 0
    again = dlq.replay(pipeline.bootstrap, STEP, correlation_id=cid)
    assert (again.selected, again.replayed, again.already) == (25, 0, 25)
    assert calls["ledger"] == 1, f"{calls['ledger']} ledger reads for a replay with nothing to send"


async def test_a_replay_click_reads_one_entry_not_the_topic(pipeline: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = f"click-{uuid.uuid4().hex[:8]}"
    one, two = synthetic_dead_letters(pipeline, 2, cid)
    async with page(pipeline) as client:
        await until_indexed(client, one)
        await until_indexed(client, two)
        calls = count_calls(monkeypatch)
        for ident in (one, two):
            r = await client.post("/api" + path_of(ident) + "/replay", headers=bearer())
            body = await r.json()
            assert r.status == 200 and body["replayed"] == 1 and body["ids"] == [ident], body
        assert calls["scan"] == 0, "a Replay click scanned the step's dead-letter topic"
        # The first click fences the step's scope and reads the ledger; the second, with the producer still
        # standing (nobody else wrote in the scope), needs no read: its view is the whole ledger.
        assert calls["ledger"] <= 1, f"{calls['ledger']} ledger reads for two clicks"
        for ident in (one, two):
            await until_status(client, ident, "replayed")
        again = await client.post("/api" + path_of(one) + "/replay", headers=bearer())
        assert (await again.json())["replayed"] == 0
    report = dlq.replay(pipeline.bootstrap, STEP, correlation_id=cid, dry_run=True)
    assert (report.selected, report.ids, report.already) == (2, (), 2)
