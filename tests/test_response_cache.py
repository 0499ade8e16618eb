"""The opt-in response cache, step by step without Kafka (real Redis and the offline model server): an
identical question of the same tenant reuses a reply that passed the gate; another tenant never does."""
from __future__ import annotations

import dataclasses

import pytest

from processors.case import new_case
from processors.generate import Generate
from processors.quality_gate import QualityGate
from streams.models import ModelGateway
from streams.records import Record
from streams.step import StepContext
from streams.tenant_state import connect
from processors.topology import DRAFTS, RESPONSES
from tests.harness import Stack

pytestmark = pytest.mark.kafka


def _record(case: dict, topic: str) -> Record:
    headers = {"correlation_id": case["correlation_id"], "tenant_id": case["tenant_id"], "attempt": "1", "hops": "0"}
    return Record(topic, 0, 0, case["correlation_id"], b"", headers, 0, value=case)


def _case(cid: str, tenant: str) -> dict:
    case = new_case(cid, tenant, {"subject": "Password reset", "body": "I never receive the password reset email, what can I do?"}, 0)
    case["labels"] = {"intent": {"label": "account", "confidence": 0.9, "model": "m"},
                      "language": {"label": "en", "confidence": 0.9, "model": "m"},
                      "sentiment": {"label": "neutral", "confidence": 0.9, "model": "m"},
                      "priority": {"label": "medium", "confidence": 0.9, "model": "m"}}
    case["documents"] = [{"doc_id": f"{tenant}-password", "title": "Password reset", "score": 1.0,
                          "body": f"{tenant.capitalize()} password reset emails can take 10 minutes."}]
    return case


async def test_identical_questions_reuse_a_passed_reply_within_a_tenant_only(pipeline: Stack) -> None:
    settings = dataclasses.replace(pipeline.settings, response_cache=True)
    gateway = ModelGateway(settings.model_base_url, "offline")
    redis = connect(settings.redis_url)
    try:
        gen, gate = StepContext("generate", settings, gateway, redis), StepContext("gate", settings, gateway, redis)
        (draft,) = await Generate().handle(_record(_case("cache-1", "acme"), "tickets.enriched"), gen)
        assert draft.topic == DRAFTS and draft.value["model_calls"] == 1
        (passed,) = await QualityGate().handle(_record(draft.value, DRAFTS), gate)
        assert passed.topic == RESPONSES

        (again,) = await Generate().handle(_record(_case("cache-2", "acme"), "tickets.enriched"), gen)
        assert again.value["model_calls"] == 0 and again.value["reply"] == draft.value["reply"]
        assert "response cache" in again.value["trail"][-1]

        (other,) = await Generate().handle(_record(_case("cache-3", "globex"), "tickets.enriched"), gen)
        assert other.value["model_calls"] == 1 and "globex" in " ".join(other.value["citations"])

        off = StepContext("generate", dataclasses.replace(settings, response_cache=False), gateway, redis)
        (fresh,) = await Generate().handle(_record(_case("cache-4", "acme"), "tickets.enriched"), off)
        assert fresh.value["model_calls"] == 1  # off by default: answers are fresh
    finally:
        await gateway.close()
        await redis.aclose()
