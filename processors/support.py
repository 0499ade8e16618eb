"""The support-ticket triage pipeline, declared: its steps, the topics between them and what each carries.

    tickets.in -> ingest -> tickets.valid -> classify-{intent,language,priority,sentiment} -> tickets.classified
    tickets.valid + tickets.classified -> join -> tickets.joined -> route -> tickets.routed | tickets.escalations
    tickets.routed -> retrieve -> tickets.enriched -> generate -> tickets.drafts | tickets.escalations
    tickets.drafts -> gate -> tickets.responses | tickets.enriched (one rewrite) | tickets.escalations

A classifier is one entry of ``CLASSIFIERS`` (with its prompt and offline model): its step, its group, its
dead-letter topic and the join's wait for it all follow from this declaration.
"""
from __future__ import annotations

from functools import partial
from typing import Any

from processors import human
from processors.classify import Classify
from processors.generate import Generate
from processors.ingest import Ingest
from processors.join import Join
from processors.quality_gate import QualityGate
from processors.retrieve import Retrieve
from processors.route import Route
from processors.topology import (CLASSIFIED, CLASSIFIERS, DLQ_REPLAYS, DRAFTS, ENRICHED, ESCALATIONS, IN, JOIN_STATE,
                                 JOINED, RESPONSES, ROUTED, STEPS, TOPIC_SCHEMA, VALID)
from streams.pipeline import Pipeline, StepSpec, Topic


def _classify(classifier: str, settings: Any) -> Classify:
    return Classify(classifier)


def _join(settings: Any) -> Join:
    return Join(settings.join_timeout_s, max_value_bytes=settings.max_value_bytes)


def _steps() -> tuple[StepSpec, ...]:
    steps = [StepSpec("ingest", lambda settings: Ingest(), (IN,), (VALID,))]
    steps += [StepSpec(f"classify-{c}", partial(_classify, c), (VALID,), (CLASSIFIED,)) for c in CLASSIFIERS]
    steps += [
        StepSpec("join", _join, (VALID, CLASSIFIED), (JOINED,), changelog=JOIN_STATE),
        StepSpec("route", lambda settings: Route(), (JOINED,), (ROUTED, ESCALATIONS)),
        StepSpec("retrieve", lambda settings: Retrieve(), (ROUTED,), (ENRICHED,)),
        StepSpec("generate", lambda settings: Generate(), (ENRICHED,), (DRAFTS, ESCALATIONS)),
        StepSpec("gate", lambda settings: QualityGate(), (DRAFTS,), (RESPONSES, ENRICHED, ESCALATIONS)),
    ]
    assert tuple(s.name for s in steps) == STEPS, "processors.topology.STEPS and the declaration disagree"
    return tuple(steps)


def _summary(topic: str, value: Any) -> str | None:
    """What `triage trace` says of a classification (a Case says its last trail line without help)."""
    if topic != CLASSIFIED or not isinstance(value, dict):
        return None
    if value.get("ok"):
        return (f"{value['classifier']} = {value['label']} ({value['confidence']:.2f}, {value['model']}, "
                f"{value['model_calls']} calls)")
    return f"{value['classifier']} failed: {value['error_code']}"


# How the deploy files run this pipeline (`triage render compose|k8s`; see streams/render/plan.py): the offline
# model server and the model each step asks it for, the sample knowledge bases loaded before the workers start.
DEPLOY = {
    "settings": {"TRIAGE_MISSING_PRIORITY": "human"},
    "models": {
        "module": "processors.offline.server",
        "port": 8700,
        "env": {**{f"TRIAGE_MODEL_CLASSIFY_{c.upper()}": f"offline-{c}" for c in CLASSIFIERS},
                "TRIAGE_MODEL_GENERATE": "offline-writer",
                "TRIAGE_MODEL_GENERATE_STRONG": "offline-writer-strong",
                "TRIAGE_MODEL_GATE": "offline-judge"},
    },
    "setup": [{"name": "kb", "command": ["kb", "load"], "needs": ["redis"],
               "about": "the sample knowledge bases into Redis, one namespace per tenant (retrieve reads them)"}],
    "sample": "tickets.jsonl",
}

PIPELINE = Pipeline(
    name="support",
    input=IN,
    steps=_steps(),
    outcomes=(RESPONSES, ESCALATIONS),
    topics=tuple(Topic(t, schema=s) for t, s in TOPIC_SCHEMA.items()),
    prefix="tickets",
    group_prefix="triage",
    replays=DLQ_REPLAYS,
    describe="Support-ticket triage: four classifiers, a join, a router, retrieval, a writer and a quality gate.",
    extras={"classifiers": CLASSIFIERS, "escalations": ESCALATIONS, "responses": RESPONSES, "human": human,
            "summary": _summary, "deploy": DEPLOY},
)
