"""A checked graph onto Kafka: the runtime's Pipeline, a step per declared step, a join per step with several
dependencies and one collector.

    <name>.in ─► root steps ─► <name>.out.<step> ─► a step with one dependency reads its topic directly
                                                 └► join.<step> ─► <name>.joined.<step> ─► a step with several
    <name>.out.<each step nothing depends on> ─► collect ─► <name>.results | <name>.dlq.<failed step>
"""
from __future__ import annotations

from functools import partial
from typing import Any

from streams.graph import naming
from streams.graph.checks import CONDITION_ARGS, ROUTE_ARGS, TASK_ARGS
from streams.graph.declare import Graph, StepDecl
from streams.graph.envelope import replay_target
from streams.graph.join_step import Collector, StepJoin
from streams.graph.refs import arity, resolve
from streams.graph.task_step import Call, TaskStep
from streams.pipeline import Pipeline, StepSpec


def compile_graph(graph: Graph) -> Pipeline:
    """``graph`` must be checked (``Graph.compile`` does it)."""
    name = graph.name
    decls = {s.name: s for s in graph.steps}
    order = [s.name for s in graph.steps]
    roots = [n for n in order if not decls[n].depends_on]
    depended = {d for s in graph.steps for d in s.depends_on}
    sinks = [n for n in order if n not in depended]
    specs: list[StepSpec] = []
    for n in order:
        decl = decls[n]
        if len(decl.depends_on) > 1:
            join = naming.join_step(n)
            consumes = tuple(naming.output_topic(name, d) for d in decl.depends_on)
            specs.append(StepSpec(join, partial(_join, name, decl), consumes, (naming.joined_topic(name, n),),
                                  changelog=naming.changelog_topic(name, join)))
        specs.append(StepSpec(n, partial(_task, graph, decl, _inputs(name, decl), bool(roots) and n == roots[0]),
                              _inputs(name, decl), (naming.output_topic(name, n),)))
    collect_inputs = tuple(naming.output_topic(name, s) for s in sinks)
    outcomes = _outcome_topics(graph)
    specs.append(StepSpec(naming.COLLECT, partial(_collector, graph, tuple(order), tuple(sinks)), collect_inputs,
                          (*outcomes.values(), *(naming.dlq_topic(name, n) for n in order)),
                          changelog=naming.changelog_topic(name, naming.COLLECT)))
    return Pipeline(name=name, input=naming.input_topic(name), steps=tuple(specs),
                    outcomes=tuple(outcomes.values()),
                    describe=graph.describe or f"A graph of {len(order)} steps: {', '.join(order)}.",
                    extras={**graph.extras, "graph": graph,
                            "replay": partial(replay_target, naming.input_topic(name))})


def _inputs(pipeline: str, decl: StepDecl) -> tuple[str, ...]:
    if not decl.depends_on:
        return (naming.input_topic(pipeline),)
    if len(decl.depends_on) == 1:
        return (naming.output_topic(pipeline, decl.depends_on[0]),)
    return (naming.joined_topic(pipeline, decl.name),)


def _call(graph: Graph, ref: Any, allowed: tuple[int, ...]) -> Call | None:
    if ref is None:
        return None
    fn = resolve(ref, graph.base).fn
    assert fn is not None, "compile a checked graph"
    args = arity(fn, allowed)
    assert args is not None
    label = ref if isinstance(ref, str) else getattr(fn, "__qualname__", repr(fn))
    return Call(fn, args, label)


def _task(graph: Graph, decl: StepDecl, inputs: tuple[str, ...], first_root: bool, settings: Any) -> TaskStep:
    task = _call(graph, decl.task, TASK_ARGS)
    assert task is not None
    return TaskStep(decl.name, inputs=inputs, output=naming.output_topic(graph.name, decl.name),
                    depends_on=decl.depends_on, task=task, condition=_call(graph, decl.condition, CONDITION_ARGS),
                    fallback=_call(graph, decl.fallback, TASK_ARGS), timeout_s=decl.timeout_s, retries=decl.retries,
                    rounds=decl.rounds, until=_call(graph, decl.until, CONDITION_ARGS),
                    models=decl.models, root=not decl.depends_on, first_root=first_root,
                    max_value_bytes=settings.max_value_bytes, deadline_s=settings.step_deadline_s)


def _join(pipeline: str, decl: StepDecl, settings: Any) -> StepJoin:
    join = naming.join_step(decl.name)
    return StepJoin(join, target=decl.name, output=naming.joined_topic(pipeline, decl.name),
                    inputs=tuple(naming.output_topic(pipeline, d) for d in decl.depends_on), deps=decl.depends_on,
                    changelog=naming.changelog_topic(pipeline, join), max_value_bytes=settings.max_value_bytes,
                    timeout_s=decl.join_timeout_s, give_up_s=decl.join_give_up_s)


def _outcome_topics(graph: Graph) -> dict[str, str]:
    """Outcome name -> topic: the branching outputs, or the one ``<name>.results``."""
    if not graph.outcomes:
        return {"results": naming.results_topic(graph.name)}
    return {o: naming.outcome_topic(graph.name, o) for o in graph.outcomes}


def _collector(graph: Graph, order: tuple[str, ...], sinks: tuple[str, ...], settings: Any) -> Collector:
    pipeline = graph.name
    route = _call(graph, graph.route, ROUTE_ARGS) if graph.route is not None else None
    return Collector(naming.COLLECT, results=_outcome_topics(graph), route=route, all_steps=order,
                     dlq_topic=partial(naming.dlq_topic, pipeline),
                     inputs=tuple(naming.output_topic(pipeline, s) for s in sinks), deps=sinks,
                     changelog=naming.changelog_topic(pipeline, naming.COLLECT),
                     max_value_bytes=settings.max_value_bytes)
