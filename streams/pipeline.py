"""A pipeline, as the runtime sees it: named steps that consume and emit named topics.

This is the one description every part of the engine reads (the runner, the supervisor, the stack that creates
topics, status, trace, the dead-letter tools, the queue page). The engine never imports a pipeline; it is handed
one (``streams.pipelines.load``). Two forms compile to this: a pipeline written in Python against
:class:`StepSpec` (the support pipeline, whose steps are hand-written classes) and a graph of plain functions
with ``depends_on`` (``streams.graph``), in Python or TOML.

What a pipeline promises, and what :meth:`Pipeline.problems` checks before anything runs: every record produced
to ``input`` reaches exactly one terminal record per attempt, in one of ``outcomes`` or one dead-letter topic.
So every consumed topic has a producer, and every step can reach a terminal topic.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.errors import PipelineError

BuildStep = Callable[[Any], Any]
"""``build(settings) -> Step``: a step object for the runtime (see ``streams.step``)."""


@dataclass(frozen=True)
class Topic:
    """A topic whose settings differ from the default (or that must exist though no step names it)."""

    name: str
    schema: str | None = None
    """The Avro record its values are; None: bytes the consuming step decodes itself (JSON, or raw input)."""
    compacted: bool = False
    """A changelog or ledger: the latest value per key is what matters."""
    big: bool = False
    """Carries raw inputs (the input topic, dead letters): an oversized record must get in to be rejected."""


@dataclass(frozen=True)
class Models:
    """One model chain (the first model serves, the next ones are fallbacks), by where the models are."""

    offline: tuple[str, ...]
    """Ids the offline provider serves (the default, with no endpoint configured)."""
    remote: tuple[str, ...]
    """Model names at a real OpenAI-compatible endpoint (``OPENAI_BASE_URL``)."""


@dataclass(frozen=True)
class StepSpec:
    """One step: how to build it, and the topics it reads and writes (what status, trace and deploy show)."""

    name: str
    build: BuildStep
    consumes: tuple[str, ...]
    emits: tuple[str, ...]
    changelog: str | None = None
    """The compacted topic its state lives in (a join); None for a stateless step."""


@dataclass(frozen=True)
class Pipeline:
    """Steps over topics, with the naming rules of its dead letters and consumer groups."""

    name: str
    input: str
    steps: tuple[StepSpec, ...]
    outcomes: tuple[str, ...]
    """Terminal topics besides the dead letters (results, escalations, published/held...)."""
    topics: tuple[Topic, ...] = ()
    prefix: str = ""
    """Of its dead-letter topics (``<prefix>.dlq.<step>``); the pipeline's name when empty."""
    group_prefix: str = ""
    """Of its consumer groups and transactional ids (``<group_prefix>.<step>``); the pipeline's name when empty."""
    replays: str = ""
    """The compacted ledger of dead-letter replays and human answers; ``<group_prefix>.dlq.replays`` when empty."""
    describe: str = ""
    models: Mapping[str, Models] = field(default_factory=dict)
    """Model chains by name (a step's name, or another chain a step uses, e.g. a stronger writer); each is a
    setting ``TRIAGE_MODEL_<NAME>``."""
    extras: Mapping[str, Any] = field(default_factory=dict)
    """What one pipeline gives the engine's optional parts (the human queue's answer form, the demo's judge)."""

    # ------------------------------------------------------------------------------------------- naming
    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    def step(self, name: str) -> StepSpec:
        """The step called ``name``. Raises KeyError naming the known steps."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"no step {name!r} in pipeline {self.name!r}; steps: {', '.join(self.step_names)}")

    def build(self, name: str, settings: Any) -> Any:
        """The step object of ``name``, checked against its declaration (the topics it reads)."""
        spec = self.step(name)
        step = spec.build(settings)
        if tuple(step.inputs) != spec.consumes or step.name != name:
            raise PipelineError(f"step {name!r} of pipeline {self.name!r} is declared to read "
                                f"{', '.join(spec.consumes)} but its object {step.name!r} reads "
                                f"{', '.join(step.inputs)}")
        return step

    def dlq_topic(self, step: str) -> str:
        return f"{self.prefix or self.name}.dlq.{step}"

    def group_id(self, step: str) -> str:
        return f"{self.group_prefix or self.name}.{step}"

    @property
    def replay_topic(self) -> str:
        return self.replays or f"{self.group_prefix or self.name}.dlq.replays"

    def dead_letter_topics(self) -> list[str]:
        return [self.dlq_topic(s) for s in self.step_names]

    def terminal_topics(self) -> list[str]:
        return [*self.outcomes, *self.dead_letter_topics()]

    def data_topics(self) -> list[str]:
        """Every topic a record of this pipeline travels, input first, in the order steps are declared."""
        seen: dict[str, None] = {self.input: None}
        for s in self.steps:
            for t in (*s.consumes, *s.emits):
                seen.setdefault(t, None)
        for t in self.outcomes:
            seen.setdefault(t, None)
        return list(seen)

    def all_topics(self) -> list[str]:
        """Every topic to create: data, dead letters, changelogs, the replay ledger and any declared extra."""
        seen = dict.fromkeys(self.data_topics())
        seen.update(dict.fromkeys(self.dead_letter_topics()))
        seen.update(dict.fromkeys(s.changelog for s in self.steps if s.changelog))
        seen[self.replay_topic] = None
        seen.update(dict.fromkeys(t.name for t in self.topics))
        return list(seen)

    def topic(self, name: str) -> Topic:
        """The declared settings of ``name``: changelogs and the ledger are compacted, input and DLQs big."""
        for t in self.topics:
            if t.name == name:
                return t
        if name == self.replay_topic or any(s.changelog == name for s in self.steps):
            return Topic(name, compacted=True)
        if name == self.input or name in self.dead_letter_topics():
            return Topic(name, big=True)
        return Topic(name)

    def schema_of(self, topic: str) -> str | None:
        return self.topic(topic).schema

    # ----------------------------------------------------------------------------------------- checking
    def problems(self) -> list[str]:
        """What keeps this declaration from running, one sentence each; empty when it can run."""
        found: list[str] = []
        names = self.step_names
        for n in sorted({n for n in names if names.count(n) > 1}):
            found.append(f"two steps are called {n!r}")
        if not self.steps:
            found.append("the pipeline has no step")
        produced = {self.input, *(t for s in self.steps for t in s.emits)}
        for s in self.steps:
            if not s.consumes:
                found.append(f"step {s.name!r} consumes no topic")
            for t in s.consumes:
                if t not in produced:
                    found.append(f"step {s.name!r} consumes {t!r}, which no step produces")
        if not any(self.input in s.consumes for s in self.steps):
            found.append(f"no step consumes the input topic {self.input!r}")
        terminal = set(self.outcomes)
        for o in self.outcomes:
            if o not in produced:
                found.append(f"no step produces the outcome topic {o!r}")
        stuck = [s.name for s in self.steps if not self._reaches(s, terminal)]
        for n in stuck:
            found.append(f"no result can be reached from step {n!r}: nothing it emits leads to "
                         f"{', '.join(self.outcomes) or 'an outcome topic'}")
        return found

    def check(self) -> Pipeline:
        """Self, when it can run; else PipelineError naming every problem."""
        found = self.problems()
        if found:
            raise PipelineError(f"pipeline {self.name!r}: " + "; ".join(found))
        return self

    def _reaches(self, start: StepSpec, terminal: set[str]) -> bool:
        # A step whose failures go to its dead-letter topic still owes a result for what it lets through.
        seen: set[str] = set()
        todo = list(start.emits)
        while todo:
            t = todo.pop()
            if t in terminal:
                return True
            if t in seen:
                continue
            seen.add(t)
            todo.extend(e for s in self.steps if t in s.consumes for e in s.emits)
        return False
