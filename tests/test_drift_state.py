"""Drift monitor state in real Redis, each test with a monitor of its own: a result handled again (its model
answer read back from the memo) gets the verdict its classifier has, without being counted twice; a reset
makes a tripped monitor learn its baseline again."""
from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from processors.classify import Classify
from streams.drift import DriftMonitor, DriftPolicy, reset
from streams.models import ModelResult
from streams.step import StepContext
from tests.harness import Stack

pytestmark = pytest.mark.kafka  # for the stack's Redis


async def test_a_memo_hit_takes_the_published_verdict_without_observing(pipeline: Stack) -> None:
    r = aioredis.Redis.from_url(pipeline.settings.redis_url)
    policy = DriftPolicy(window=10, baseline=10, trip_at=0.05, clear_at=0.02)
    name = f"test-{uuid.uuid4().hex[:8]}"  # keys of its own: the pipeline's monitors are not touched
    try:
        first = DriftMonitor(r, name, policy)
        for _ in range(policy.baseline):
            await first.observe("billing", 0.9)
        for _ in range(policy.window):
            state = await first.observe("general", 0.9)
        assert state.tripped

        classify = Classify("intent")
        classify._monitor = DriftMonitor(r, name, policy)  # a restarted worker: no verdict held in process
        ctx = StepContext("classify-intent", pipeline.settings, None, r)  # type: ignore[arg-type]
        seen = int(await r.get(f"triage:drift:{name}:seen"))
        hit = ModelResult(("general", 0.9), "primary", 0, 0, memo_hit=True)
        verdict = await classify._observe(ctx, hit, "primary")
        assert verdict is not None and verdict.tripped
        assert int(await r.get(f"triage:drift:{name}:seen")) == seen, "a memo hit must not be observed twice"
    finally:
        await r.delete(*[k async for k in r.scan_iter(f"triage:drift:{name}:*")])
        await r.aclose()


async def test_a_reset_monitor_clears_and_learns_its_baseline_again(pipeline: Stack) -> None:
    r = aioredis.Redis.from_url(pipeline.settings.redis_url)
    policy = DriftPolicy(window=10, baseline=10, trip_at=0.05, clear_at=0.02)
    name = f"test-{uuid.uuid4().hex[:8]}"
    try:
        m = DriftMonitor(r, name, policy)
        for label in ["billing"] * policy.baseline + ["general"] * policy.window:
            state = await m.observe(label, 0.9)
        assert state.tripped  # "general" is the new normal, and the old baseline keeps saying drift
        assert await reset(r, name) > 0
        assert [k async for k in r.scan_iter(f"triage:drift:{name}:*")] == []
        for _ in range(policy.baseline + policy.window):
            state = await m.observe("general", 0.9)
        assert state.ready and not state.tripped and state.score == 0.0
    finally:
        await r.delete(*[k async for k in r.scan_iter(f"triage:drift:{name}:*")])
        await r.aclose()
