"""What the deploy files of one pipeline are made of: its steps and topics, and its ``extras["deploy"]``.

The engine knows no pipeline, so everything one pipeline needs beyond its steps and topics is declared with it,
under ``extras["deploy"]`` (every key optional)::

    {"settings": {"TRIAGE_MISSING_PRIORITY": "human"},      # the pipeline's own TRIAGE_* settings
     "models": {"module": "my_pipeline.offline", "port": 8700,  # an offline OpenAI-compatible server
                "env": {"TRIAGE_MODEL_CLASSIFY": "offline-x"}},  # what each step asks it for
     "setup": [{"name": "kb", "command": ["kb", "load"],     # one-shot `triage ...` commands run before
                "needs": ["redis"], "about": "..."}],        # the workers start
     "sample": "tickets.jsonl"}                              # an input file in the image's TRIAGE_DATA

Names: the support pipeline's objects keep the names they had before pipelines existed (``triage-<step>``,
consumer groups ``triage.<step>``): its prefix is its ``group_prefix``. Any other pipeline's objects are
prefixed with its own (by default its name), so two pipelines' manifests apply side by side in one namespace.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.errors import PipelineError
from streams.pipeline import Pipeline, StepSpec
from streams.pipelines import DEFAULT
from streams.topic_config import topic_configs

APP = "triage"
"""The application: the image, the Kubernetes namespace (with the Strimzi cluster) and the name label."""
NEEDS = ("kafka", "redis")

# Kubernetes: every pipeline in one namespace, beside the Strimzi Kafka cluster (whose topic operator reconciles
# only the KafkaTopics of its own namespace).
NAMESPACE = APP
CLUSTER = APP
"""The Strimzi Kafka cluster (its bootstrap Service is ``<cluster>-kafka-bootstrap``)."""
BOOTSTRAP = f"{CLUSTER}-kafka-bootstrap.{NAMESPACE}.svc:9092"
REPLICAS = 3
LAG_PER_REPLICA = 50
"""Records of lag per replica at which KEDA adds one."""


@dataclass(frozen=True)
class Setup:
    """A one-shot ``triage <command>`` that must have run before the workers start."""

    name: str
    command: tuple[str, ...]
    needs: tuple[str, ...]
    about: str


@dataclass(frozen=True)
class ModelServer:
    """An OpenAI-compatible server run from the image (``python -m <module> --host 0.0.0.0 --port <port>``)."""

    module: str
    port: int
    env: Mapping[str, str]
    """Each step's model on it (``TRIAGE_MODEL_*``): delete these to use a real endpoint's default models."""


@dataclass(frozen=True)
class Plan:
    """One pipeline, as its deploy files see it."""

    pipeline: Pipeline
    spec: str
    """What ``TRIAGE_PIPELINE`` says in the deploy files: how a worker in the image finds the pipeline."""
    partitions: int
    tenants: tuple[str, ...]
    settings: Mapping[str, str]
    models: ModelServer | None
    setup: tuple[Setup, ...]
    sample: str | None

    @property
    def prefix(self) -> str:
        return self.pipeline.group_prefix or self.pipeline.name

    @property
    def command(self) -> str:
        """The `triage render` arguments naming this pipeline (none for the default one)."""
        return "" if self.spec == DEFAULT else f" --pipeline {self.spec}"

    def name(self, *parts: str) -> str:
        """A Kubernetes object's name: ``<prefix>-<part>...``, as a DNS label allows."""
        return k8s_name("-".join((self.prefix, *parts)))

    def labels(self, **more: str) -> dict[str, str]:
        # The support pipeline's labels predate pipelines, and a Deployment's selector cannot change in place:
        # only another pipeline's objects carry an instance label, which keeps their selectors apart.
        base = {"app.kubernetes.io/name": APP}
        if self.prefix != APP:
            base["app.kubernetes.io/instance"] = self.prefix
        return {**base, **more}

    def topic_configs(self, replication: int) -> dict[str, dict[str, str]]:
        return topic_configs(self.pipeline, replication)

    def producers(self, topic: str) -> list[StepSpec]:
        return [s for s in self.pipeline.steps if topic in s.emits]

    def lag_topic(self, step: StepSpec) -> str:
        """The input a step's scaling watches: the one most steps write to, which carries the most records
        per input (a join's classifications, not its one copy of the case); the first one on a tie."""
        return max(step.consumes, key=lambda t: (len(self.producers(t)), -step.consumes.index(t)))

    def topic_summary(self) -> str:
        """The topics whose configs differ from the default, in a few words (the deploy files' comments)."""
        p = self.pipeline
        configs = self.topic_configs(replication=1)
        compacted = [t for t, c in configs.items() if c.get("cleanup.policy") == "compact"]
        big = [t for t, c in configs.items() if "max.message.bytes" in c]
        said = [f"compacted {' and '.join(compacted)}"] if compacted else []
        if big:
            dlqs = p.dead_letter_topics()
            named = [t for t in big if t not in dlqs]
            named += [p.dlq_topic("*")] if set(dlqs) <= set(big) else [t for t in big if t in dlqs]
            said.append(f"8 MiB records on {' and '.join(named)}")
        return "; ".join(said) or "all default"

    def stateful(self) -> list[StepSpec]:
        return [s for s in self.pipeline.steps if s.changelog]


def plan(pipeline: Pipeline, spec: str, partitions: int, tenants: tuple[str, ...]) -> Plan:
    """The deploy plan of ``pipeline``; PipelineError naming the key when its ``extras["deploy"]`` is malformed."""
    raw = pipeline.extras.get("deploy") or {}
    where = f"pipeline {pipeline.name!r}: extras['deploy']"
    if not isinstance(raw, Mapping):
        raise PipelineError(f"{where} must be a mapping, not {type(raw).__name__}")
    unknown = sorted(set(raw) - {"settings", "models", "setup", "sample"})
    if unknown:
        raise PipelineError(f"{where} has unknown key(s) {', '.join(map(repr, unknown))}")
    models = None
    if raw.get("models"):
        m = raw["models"]
        if not isinstance(m, Mapping) or not isinstance(m.get("module"), str) or not isinstance(m.get("port"), int):
            raise PipelineError(f"{where}['models'] needs 'module' (a module name) and 'port' (a number)")
        models = ModelServer(m["module"], m["port"], _env(m.get("env") or {}, f"{where}['models']['env']"))
    setups = []
    for i, s in enumerate(raw.get("setup") or ()):
        if not isinstance(s, Mapping) or not isinstance(s.get("name"), str) or not s.get("command"):
            raise PipelineError(f"{where}['setup'][{i}] needs 'name' and 'command' (the `triage` arguments)")
        needs = tuple(s.get("needs") or NEEDS)
        if not set(needs) <= set(NEEDS):
            raise PipelineError(f"{where}['setup'][{i}]['needs'] may name {', '.join(NEEDS)}, not {needs}")
        setups.append(Setup(s["name"], tuple(map(str, s["command"])), needs, str(s.get("about") or "")))
    sample = raw.get("sample")
    return Plan(pipeline, spec, partitions, tuple(tenants), _env(raw.get("settings") or {}, f"{where}['settings']"), models,
                tuple(setups), str(sample) if sample else None)


def _env(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and re.fullmatch(r"[A-Z_][A-Z0-9_]*", k)
                                                 for k in value):
        raise PipelineError(f"{where} must map environment variable names to values")
    return {k: str(v) for k, v in value.items()}


def k8s_name(text: str) -> str:
    """``text`` as a Kubernetes object name: lower case, letters, digits, '-' and '.'; at most 253 characters."""
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")
    return name[:253] or "x"
