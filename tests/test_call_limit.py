"""A model that falls behind is not retried into collapse: the adaptive call limit (streams/call_limit.py)."""
from __future__ import annotations

import asyncio
from collections import Counter
from typing import Iterator

import pytest

from streams.call_limit import CallLimit
from streams.models import ModelGateway
from streams.policy import RetryPolicy, StepPolicy
from tests.fake_openai import FakeModels

pytestmark = pytest.mark.asyncio


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_full_limit_makes_the_next_call_wait_for_a_slot() -> None:
    limit = CallLimit("m", ceiling=2)
    entered: list[int] = []
    release = asyncio.Event()

    async def call(i: int) -> None:
        async with limit.slot():
            entered.append(i)
            await release.wait()
    tasks = [asyncio.create_task(call(i)) for i in range(3)]
    await _settle()
    assert entered == [0, 1] and limit.in_flight == 2
    release.set()
    await asyncio.gather(*tasks)
    assert entered == [0, 1, 2] and limit.in_flight == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_time_outs_halve_the_limit_once_per_window_and_answers_grow_it_back() -> None:
    clock = Clock()
    limit = CallLimit("m", ceiling=16, clock=clock)

    def answers(n: int) -> None:  # answered in time, the window before: half of n is more than half the limit
        for _ in range(n):
            limit.answered()
    answers(40)
    clock.now += 4
    limit.failed("MODEL_TIMEOUT", window_s=5)
    assert limit.limit == 8
    clock.now += 1
    limit.failed("MODEL_TIMEOUT", window_s=5)  # the rest of the same late batch
    assert limit.limit == 8
    clock.now += 10
    limit.failed("MODEL_UNAVAILABLE", window_s=5)  # a 5xx says nothing about load
    limit.failed("INVALID_OUTPUT", window_s=5)
    assert limit.limit == 8
    for _ in range(6):  # each window: answers, then a 429 (the endpoint's own "too many")
        answers(4)
        grown = limit.limit
        assert grown > 1
        clock.now += 4
        limit.failed("MODEL_RATE_LIMITED", window_s=5)
        assert limit.limit == max(1.0, min(grown / 2, 2.0))
        clock.now += 6
    assert limit.limit <= 2.0, "six windows of 429s: no more than two calls at once"
    answers(200)
    assert limit.limit == 16, "answers in time bring the limit back to its ceiling, never past it"


async def test_a_time_out_cuts_the_limit_to_what_the_model_answered_in_its_window() -> None:
    """Little's law: 6 answers in one time-out window means about 6 calls can wait there in time; half of it
    leaves room. Halving alone would take three windows of time-outs to get from 64 to 8."""
    limit = CallLimit("m", ceiling=64, clock=Clock())
    for _ in range(6):
        limit.answered()
    limit.failed("MODEL_TIMEOUT", window_s=3600)
    assert limit.limit == 3
    fresh = CallLimit("m", ceiling=64, clock=Clock())
    fresh.failed("MODEL_TIMEOUT", window_s=3600)
    assert fresh.limit == 1, "no answer in the window: one call at a time until answers come back"


N = 200


async def test_a_model_that_falls_behind_is_not_retried_into_collapse() -> None:
    """Against a model that answers one call at a time, 50 ms each, and cannot see a caller hang up: the calls
    of 200 records at once time out (their queue is 10 s long, the time-out 1 s), and the worker's retries must
    not keep the queue that long. With the limit every record is answered and the model serves few calls
    nobody waits for; without it (seen: ``failed`` made a no-op) 155 of 200 records got no answer in 12
    attempts, and the model served 243 calls to callers that had hung up."""
    with FakeModels.start() as fake:
        fake.set("fake-intent", "serial:50")
        gateway = ModelGateway(fake.base_url, "test-key", concurrency=64)
        policy = StepPolicy(models=("fake-intent",), timeout_s=1.0,
                            retry=RetryPolicy(attempts=12, initial_s=0.2, max_s=1.0))
        from processors.classify import label_validator
        from processors.prompts import classify
        try:
            results = await asyncio.gather(*[
                gateway.complete_json(policy, classify("intent", f"Refund {i}", "I was charged twice"),
                                      label_validator("intent")) for i in range(N)], return_exceptions=True)
        finally:
            await gateway.close()
        statuses = Counter(r["status"] for r in fake.log() if r["model"] == "fake-intent")
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {N} records never got an answer: {failures[:3]}; fake: {statuses}"
    # Each abandoned call cost the model 50 ms that answered nobody. The first burst abandons at most N - 20;
    # a caller without the limit keeps re-filling the queue and abandons them again on every retry.
    assert statuses[499] <= N, f"the model served {statuses[499]} calls nobody waited for: {statuses}"
