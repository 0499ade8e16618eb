"""Fault injection at the model boundary (a fake OpenAI-compatible server over real HTTP, the real `openai`
client) on the real broker: each fault takes its path (retry, fallback, DLQ) and every ticket still reaches
exactly one terminal record. Then the dead-letter round trip: break, dead-letter, fix, replay, replay again."""
from __future__ import annotations

from typing import Iterator

import pytest

from streams import dlq
from processors.topology import ESCALATIONS, RESPONSES, dlq_topic
from tests.fake_openai import FakeModels
from tests.harness import Stack, fake_models_env, routine_tickets, value

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, fake: FakeModels) -> Iterator[Stack]:
    s = Stack.create(tmp_path_factory.mktemp("faults-home"), **fake_models_env(
        fake.base_url, TRIAGE_MODEL_TIMEOUT_S="1", TRIAGE_RETRIES="2", TRIAGE_BACKOFF_S="0.05",
        TRIAGE_STEP_DEADLINE_S="40"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _routine(n: int, offset: int = 0) -> list[dict]:
    return routine_tickets(n, offset, english=True)


def _run(stack: Stack, docs: list[dict], prefix: str) -> dict:
    sent = stack.produce(docs, prefix=prefix)
    outcomes = stack.outcomes(set(sent), timeout=240)
    assert set(outcomes) == set(sent), f"{len(set(sent) - set(outcomes))} tickets lost"
    doubled = [c for c, outs in outcomes.items() if len(outs) != 1]
    assert not doubled, f"{len(doubled)} tickets with more than one outcome"
    return {cid: outs[0] for cid, outs in outcomes.items()}


def test_slow_classifier_times_out_and_the_join_names_it(faulty: Stack, fake: FakeModels) -> None:
    fake.reset()
    fake.set("fake-intent", "slow:3")
    outs = _run(faulty, _routine(8), "slow-")
    for o in outs.values():
        case = value(o)
        assert case["missing"] == ["intent"]
        assert any("intent:MODEL_TIMEOUT" in line for line in case["trail"]), case["trail"]
    # Each ticket's first try reached the model; the circuit breaker (5 failures in a row) refused most
    # second tries locally instead of waiting for another timeout.
    assert sum(1 for r in fake.log() if r["model"] == "fake-intent") >= 8


def test_5xx_falls_back_to_the_next_model_of_the_chain(faulty: Stack, fake: FakeModels) -> None:
    fake.reset()
    fake.set("fake-writer", "error:500")
    outs = _run(faulty, _routine(8, 10), "5xx-")
    writers = {value(o)["writer_model"] for o in outs.values() if o.topic == RESPONSES}
    assert "fake-writer-b" in writers and "fake-writer" not in writers, writers
    assert fake.stats()["fake-writer"].get("500", 0) >= 5  # then the circuit opened and spared the rest


def test_429_retry_after_is_honoured(faulty: Stack, fake: FakeModels) -> None:
    fake.reset()
    fake.set("fake-judge", "ratelimit:1", count=1)
    outs = _run(faulty, _routine(1, 20), "429-")
    assert all(o.topic in (RESPONSES, ESCALATIONS) for o in outs.values())
    calls = [r for r in fake.log() if r["model"] == "fake-judge"]
    assert calls[0]["status"] == 429 and calls[1]["status"] == 200
    assert calls[1]["t"] - calls[0]["t"] >= 1.0, "the retry came before retry-after"


def test_malformed_json_from_priority_escalates_for_lack_of_priority(faulty: Stack, fake: FakeModels) -> None:
    fake.reset()
    fake.set("fake-priority", "garbage")
    outs = _run(faulty, _routine(6, 30), "garbage-")
    for o in outs.values():
        assert o.topic == ESCALATIONS
        case = value(o)
        assert case["escalation_reason"] == "MISSING_PRIORITY" and case["missing"] == ["priority"]
        assert any("priority:INVALID_OUTPUT" in line for line in case["trail"])


def test_label_outside_the_set_is_never_passed_on(faulty: Stack, fake: FakeModels) -> None:
    fake.reset()
    fake.set("fake-sentiment", "badlabel")
    outs = _run(faulty, _routine(6, 40), "badlabel-")
    for o in outs.values():
        case = value(o)
        assert "sentiment" not in case["labels"] and case["missing"] == ["sentiment"]


def test_connection_errors_dead_letter_with_the_reason(faulty: Stack, fake: FakeModels) -> None:
    fake.reset()
    fake.set("fake-judge", "down")
    outs = _run(faulty, _routine(4, 50), "down-")
    for o in outs.values():
        assert o.topic == dlq_topic("gate")
        assert o.headers["dlq.reason"] == "MODEL_UNAVAILABLE"
        assert int(o.headers["dlq.attempts"]) == 2


def test_empty_replies_dead_letter_then_replay_resolves_each_once(faulty: Stack, fake: FakeModels) -> None:
    fake.reset()
    fake.set("fake-writer", "empty")
    fake.set("fake-writer-b", "empty")
    outs = _run(faulty, _routine(10, 60), "empty-")
    for o in outs.values():
        assert o.topic == dlq_topic("generate") and o.headers["dlq.reason"] == "INVALID_OUTPUT"
        assert o.headers["attempt"] == "1" and o.headers["dlq.source"].startswith("tickets.enriched/")
    cids = set(outs)

    fake.reset()  # the cause is fixed
    first = dlq.replay(faulty.bootstrap, "generate", reason="INVALID_OUTPUT")
    mine = [i for i in first.ids if i in {d.id for d in dlq.scan(faulty.bootstrap, ["generate"]) if d.correlation_id in cids}]
    assert len(mine) == len(cids)
    second = dlq.replay(faulty.bootstrap, "generate", reason="INVALID_OUTPUT")
    assert second.replayed == 0 and second.already >= len(cids)

    retried = faulty.outcomes(cids, timeout=240, attempt=2)
    assert set(retried) == cids
    for cid, outs2 in retried.items():
        assert len(outs2) == 1, f"{cid} resolved {len(outs2)} times on its replay"
        o = outs2[0]
        assert o.topic in (RESPONSES, ESCALATIONS)
        assert o.headers["attempt"] == "2"
    # The first attempt still has exactly its one dead letter: the replay added, it did not rewrite.
    first_attempt = faulty.outcomes(cids, timeout=60, attempt=1)
    assert all(len(v) == 1 and v[0].topic == dlq_topic("generate") for v in first_attempt.values())


async def test_a_replayed_record_does_not_pay_for_its_model_calls_twice(faulty: Stack, fake: FakeModels) -> None:
    """What a crash between the model call and the commit costs: the record is handled again, and the memo in
    Redis (keyed by tenant, correlation ID, step, attempt and input) answers instead of the model."""
    from processors.classify import label_validator
    from processors.prompts import classify
    from streams.models import Memo, ModelGateway
    from streams.tenant_state import TenantStore, connect

    fake.reset()
    gateway = ModelGateway(fake.base_url, "test-key")
    redis = connect(faulty.settings.redis_url)
    try:
        policy = faulty.settings.policy("classify-intent")
        messages = classify("intent", "Refund", "I was charged twice for my subscription")
        results = []
        for _ in range(2):  # the same record, handled twice (as after a kill -9 before the commit)
            memo = Memo(TenantStore(redis, "acme"), "classify-intent", "memo-cid-1", 1)
            results.append(await gateway.complete_json(policy, messages, label_validator("intent"), memo=memo))
        other_tenant = Memo(TenantStore(redis, "globex"), "classify-intent", "memo-cid-1", 1)
        results.append(await gateway.complete_json(policy, messages, label_validator("intent"), memo=other_tenant))
    finally:
        await gateway.close()
        await redis.aclose()
    assert [r.calls for r in results] == [1, 0, 1], "the second handling must hit the memo; another tenant must not"
    assert results[0].value == results[1].value and results[1].memo_hit
    assert sum(1 for r in fake.log() if r["model"] == "fake-intent") == 2
