"""The support-ticket triage pipeline, declared: its steps, the topics between them and what each carries.

    tickets.in -> ingest -> tickets.valid -> classify-{intent,language,priority,sentiment} -> tickets.classified
    tickets.valid + tickets.classified -> join -> tickets.joined -> route -> tickets.routed | tickets.escalations
    tickets.routed -> retrieve -> tickets.enriched -> generate -> tickets.drafts | tickets.escalations
    tickets.drafts -> gate -> tickets.responses | tickets.enriched (one rewrite) | tickets.escalations

A classifier is one :class:`Classifier` (its labels, its offline model, its model chains): its step, its group,
its dead-letter topic, its model setting, its offline model's id and the join's wait for it all follow from
the declaration. ``declare((*CLASSIFIERS, Classifier("product_area", ...)))`` is support with a fifth one.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from processors import human, prompts
from processors.offline import heldout
from processors.offline.classify import classify as offline_classify
from processors.classify import Classify
from processors.generate import Generate
from processors.ingest import Ingest
from processors.join import Join
from processors.quality_gate import QualityGate
from processors.retrieve import Retrieve
from processors.route import Route
from processors.topology import (CLASSIFIED, DLQ_REPLAYS, DRAFTS, ENRICHED, ESCALATIONS, IN, JOIN_STATE,
                                 JOINED, RESPONSES, ROUTED, STEPS, TOPIC_SCHEMA, VALID)
from streams.pipeline import Models, Pipeline, StepSpec, Topic

OfflineModel = Callable[[str, str], tuple[str, float]]
"""``model(subject, body) -> (label, confidence)``: a deterministic classifier the offline provider serves."""


@dataclass(frozen=True)
class Classifier:
    """One classifier of the support pipeline: a step ``classify-<name>`` that the join waits for."""

    name: str
    labels: tuple[str, ...]
    offline: OfflineModel
    remote: tuple[str, ...] = ("gpt-4o-mini",)

    @property
    def offline_model(self) -> str:
        return f"offline-{self.name}"


def _shipped(name: str) -> Classifier:
    return Classifier(name, prompts.LABELS[name], partial(offline_classify, name))


CLASSIFIERS: tuple[Classifier, ...] = tuple(_shipped(n) for n in ("intent", "language", "priority", "sentiment"))


def _classify(classifier: Classifier, settings: Any) -> Classify:
    return Classify(classifier.name, classifier.labels)


def _join(classifiers: tuple[str, ...], settings: Any) -> Join:
    return Join(settings.join_timeout_s, max_value_bytes=settings.max_value_bytes, classifiers=classifiers)


def _steps(classifiers: tuple[Classifier, ...]) -> tuple[StepSpec, ...]:
    names = tuple(c.name for c in classifiers)
    steps = [StepSpec("ingest", lambda settings: Ingest(), (IN,), (VALID,))]
    steps += [StepSpec(f"classify-{c.name}", partial(_classify, c), (VALID,), (CLASSIFIED,)) for c in classifiers]
    steps += [
        StepSpec("join", partial(_join, names), (VALID, CLASSIFIED), (JOINED,), changelog=JOIN_STATE),
        StepSpec("route", lambda settings: Route(), (JOINED,), (ROUTED, ESCALATIONS)),
        StepSpec("retrieve", lambda settings: Retrieve(), (ROUTED,), (ENRICHED,)),
        StepSpec("generate", lambda settings: Generate(), (ENRICHED,), (DRAFTS, ESCALATIONS)),
        StepSpec("gate", lambda settings: QualityGate(), (DRAFTS,), (RESPONSES, ENRICHED, ESCALATIONS)),
    ]
    return tuple(steps)


def _models(classifiers: tuple[Classifier, ...]) -> dict[str, Models]:
    # With a real endpoint a small model serves and the stronger one is only a fallback (a cost guard).
    return {**{f"classify-{c.name}": Models((c.offline_model,), c.remote) for c in classifiers},
            "generate": Models(("offline-writer",), ("gpt-4o-mini",)),
            "generate-strong": Models(("offline-writer-strong",), ("gpt-4o",)),
            "gate": Models(("offline-judge",), ("gpt-4o-mini",))}


def _summary(topic: str, value: Any) -> str | None:
    """What `triage trace` says of a classification (a Case says its last trail line without help)."""
    if topic != CLASSIFIED or not isinstance(value, dict):
        return None
    if value.get("ok"):
        return (f"{value['classifier']} = {value['label']} ({value['confidence']:.2f}, {value['model']}, "
                f"{value['model_calls']} calls)")
    return f"{value['classifier']} failed: {value['error_code']}"


def _deploy(models: dict[str, Models]) -> dict[str, Any]:
    """How the deploy files run this pipeline (`triage render compose|k8s`; see streams/render/plan.py): the
    offline model server and the model each chain asks it for, the sample knowledge bases loaded first."""
    return {
        "settings": {"TRIAGE_MISSING_PRIORITY": "human"},
        "models": {"module": "processors.offline.server", "port": 8700,
                   "env": {f"TRIAGE_MODEL_{name.upper().replace('-', '_')}": ",".join(m.offline)
                           for name, m in models.items()}},
        "setup": [{"name": "kb", "command": ["kb", "load"], "needs": ["redis"],
                   "about": "the sample knowledge bases into Redis, one namespace per tenant (retrieve reads them)"}],
        "sample": "tickets.jsonl",
    }


def declare(classifiers: tuple[Classifier, ...] = CLASSIFIERS) -> Pipeline:
    """The support pipeline with these classifiers (the shipped four by default)."""
    names = tuple(c.name for c in classifiers)
    if len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
        raise ValueError(f"classifier names must be distinct identifiers: {names}")
    models = _models(classifiers)
    return Pipeline(
        name="support",
        input=IN,
        steps=_steps(classifiers),
        outcomes=(RESPONSES, ESCALATIONS),
        topics=tuple(Topic(t, schema=s) for t, s in TOPIC_SCHEMA.items()),
        prefix="tickets",
        group_prefix="triage",
        replays=DLQ_REPLAYS,
        describe="Support-ticket triage: classifiers in parallel, a join, a router, retrieval, a writer and a "
                 "quality gate.",
        models=models,
        extras={"input": "ticket", "classifiers": names, "escalations": ESCALATIONS, "responses": RESPONSES,
                "human": human, "summary": _summary, "deploy": _deploy(models),
                # tickets written apart from the sample's templates and from the training corpus
                "held_out": {"file": "eval/tickets.jsonl", "accuracy": heldout.accuracy},
                "offline_models": {c.offline_model: c.offline for c in classifiers}},
    )


PIPELINE = declare()
assert PIPELINE.step_names == STEPS, "processors.topology.STEPS and the declaration disagree"
