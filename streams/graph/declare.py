"""The public way to declare a graph: steps that are plain functions, each with its dependencies and policy.

    g = Graph("faq")
    g.step("classify", classify, timeout_s=5, retries=2)
    g.step("retrieve", search, depends_on=["classify"], condition=needs_context)
    g.step("answer", answer, depends_on=["classify", "retrieve"], fallback=canned_answer, join_timeout_s=60)
    g.step("review", rewrite, depends_on=["answer"], rounds=2, until=good_enough)   # a bounded loop
    PIPELINE = g          # `--pipeline my_module:PIPELINE`; or g.compile() for the runtime's Pipeline

    Graph("moderation", outcomes=("published", "held"), route=verdict)   # branching outputs

A task is ``task(input, deps)`` or ``task(input, deps, ctx)``, sync or async, returning a JSON-serialisable
dict; ``deps`` maps each dependency to its output, or None when that step was skipped. Functions may also be
given as ``"module:function"`` strings (what the TOML form does).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from streams.errors import PipelineError

Task = Callable[..., Any] | str
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class StepDecl:
    """One declared step, as written (checked by :mod:`streams.graph.checks`, not here)."""

    name: str
    task: Task
    depends_on: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    """Of one attempt; past it the attempt fails (``STEP_TIMEOUT`` when every attempt did)."""
    retries: int = 0
    """Attempts after the first: ``1 + retries`` calls at most, with backoff and jitter between them."""
    condition: Task | None = None
    """``condition(input, deps) -> bool``; false: the step is skipped (its output is None)."""
    fallback: Task | None = None
    """Called with the task's arguments once the attempts are spent; its answer is the step's output."""
    models: tuple[str, ...] = ()
    """The step's model chain, for ``ctx.chat``: the first answers; the next only when it could not."""
    line: int | None = None
    """Where the step is declared in its file, for messages."""
    join_timeout_s: float | None = None
    """Of a step with several dependencies: stop waiting for a dependency once it has delivered the records of
    inputs that reached the join this long after this one (it has moved on: this input's record is not
    coming soon), and run with that dependency's output None, named in ``ctx.missing`` and the result's
    ``missing``. None: wait for every dependency (each writes one record per input, so the wait ends)."""
    join_give_up_s: float | None = None
    """... and stop waiting for a dependency that delivers nothing at all this long after the input's first
    record reached the join (its workers are down). Default: 15 x ``join_timeout_s``."""
    rounds: int = 1
    """A bounded loop: the task runs again (``ctx.round`` 2, 3, ...; its previous output in ``deps[<step>]``)
    until ``until`` says it is done, at most this many times; the last round's output is the step's."""
    until: Task | None = None
    """``until(input, deps) -> bool`` with ``deps[<step>]`` the round's output: true ends the loop."""


@dataclass
class Graph:
    """A pipeline as a dependency graph of plain functions; ``compile()`` turns it into Kafka steps."""

    name: str
    base: Path | None = None
    """Where ``module:function`` names are looked for first (the TOML file's folder)."""
    source: str = ""
    """What the graph was read from, for messages (a file's path)."""
    describe: str = ""
    steps: list[StepDecl] = field(default_factory=list)
    problems_found: list[str] = field(default_factory=list)
    """What a loader already found wrong (a key of the wrong type...), reported with the graph's problems."""
    outcomes: tuple[str, ...] = ()
    """Branching outputs: the result goes to ``<name>.<outcome>`` (e.g. published / held) instead of
    ``<name>.results``, the one ``route`` names."""
    route: Task | None = None
    """``route(result) -> outcome``: which of ``outcomes`` a finished input's result goes to."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Passed to the compiled Pipeline's ``extras`` (e.g. ``sample``: the demo's input file under the data dir)."""

    def step(self, name: str, task: Task, *, depends_on: Iterable[str] = (), timeout_s: float = DEFAULT_TIMEOUT_S,
             retries: int = 0, condition: Task | None = None, fallback: Task | None = None,
             models: Iterable[str] = (), line: int | None = None, join_timeout_s: float | None = None,
             join_give_up_s: float | None = None, rounds: int = 1, until: Task | None = None) -> "Graph":
        """Declare a step; returns the graph, so declarations chain. Nothing is checked until ``check()``."""
        if isinstance(depends_on, str):
            depends_on = (depends_on,)
        self.steps.append(StepDecl(name, task, tuple(depends_on), timeout_s, retries, condition, fallback,
                                   tuple(models), line, join_timeout_s, join_give_up_s, rounds, until))
        return self

    def problems(self) -> list[str]:
        from streams.graph.checks import problems
        return problems(self)

    def check(self) -> "Graph":
        """Self, when it can run; else PipelineError naming every problem (cycles, unknown dependencies, a
        task that cannot be imported, two steps of one name, a step no result can be reached from)."""
        found = self.problems()
        if found:
            where = f" ({self.source})" if self.source else ""
            # One line: the CLI shows a message's control characters escaped, never as line breaks.
            raise PipelineError(f"pipeline {self.name!r}{where} cannot run: " + "; ".join(found))
        return self

    def compile(self) -> Any:
        """The runtime's :class:`streams.pipeline.Pipeline` for this graph, checked. Raises PipelineError."""
        from streams.graph.compile import compile_graph
        return compile_graph(self.check())
