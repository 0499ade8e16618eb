"""What keeps a graph from running, found before anything runs: one sentence per problem.

Checked: names (two steps of one name, names a topic cannot carry, the reserved ``collect``), policies
(timeout, retries, models), dependencies (unknown names, cycles, naming the steps in each), functions (a task,
condition or fallback that cannot be imported or cannot take its arguments) and reachability. Every step that
nothing depends on feeds the result, so in a graph without a cycle every step reaches one; a step no result
can be reached from is one whose every path leads into a cycle.
"""
from __future__ import annotations

import difflib
from collections import Counter
from typing import TYPE_CHECKING

from streams.graph import naming
from streams.graph.refs import arity, resolve

if TYPE_CHECKING:
    from streams.graph.declare import Graph, StepDecl

TASK_ARGS = (2, 3)  # (input, deps) or (input, deps, ctx)
CONDITION_ARGS = (2,)
ROUTE_ARGS = (1,)  # (result)


def problems(graph: "Graph") -> list[str]:
    found = list(graph.problems_found)
    if not isinstance(graph.name, str) or not naming.NAME.match(graph.name):
        found.append(f"the pipeline name {graph.name!r} must be letters, digits, '-' or '_', starting with a "
                     f"letter (it names topics: <name>.in, <name>.results)")
    if not graph.steps:
        found.append("the pipeline has no step")
    counts = Counter(s.name for s in graph.steps)
    for name, n in counts.items():
        if n > 1:
            lines = [str(s.line) for s in graph.steps if s.name == name and s.line]
            at = f" (lines {', '.join(lines)})" if len(lines) == n else ""
            found.append(f"two steps are called {name!r}{at}" if n == 2 else f"{n} steps are called {name!r}{at}")
    names = list(counts)
    for s in _first_of_each(graph.steps):
        found.extend(_step_problems(s, names, graph))
    found.extend(_cycle_problems(graph))
    found.extend(_outcome_problems(graph))
    return found


def _outcome_problems(graph: "Graph") -> list[str]:
    out: list[str] = []
    outcomes = tuple(graph.outcomes)
    if not outcomes and graph.route is None:
        return out
    if not outcomes or graph.route is None:
        out.append("outcomes and route go together: outcomes names the topics <name>.<outcome>, route(result) "
                   "picks one")
    for o in outcomes:
        if not isinstance(o, str) or not naming.NAME.match(o) or o in naming.TAKEN_OUTCOMES:
            out.append(f"outcome {o!r} must be letters, digits, '-' or '_', starting with a letter, and not one of "
                       f"{', '.join(sorted(naming.TAKEN_OUTCOMES))} (it names the topic <name>.<outcome>)")
    if len(set(outcomes)) != len(outcomes):
        out.append(f"an outcome is named twice: {', '.join(outcomes)}")
    if graph.route is not None:
        got = resolve(graph.route, graph.base)
        if got.problem:
            out.append(f"route {got.problem}")
        elif got.fn is not None and arity(got.fn, ROUTE_ARGS) is None:
            out.append(f"route {_label(graph.route)} must take (result)")
    return out


def _first_of_each(steps: list["StepDecl"]) -> list["StepDecl"]:
    seen: dict[str, "StepDecl"] = {}
    for s in steps:
        seen.setdefault(s.name, s)
    return list(seen.values())


def _step_problems(s: "StepDecl", names: list[str], graph: "Graph") -> list[str]:
    out: list[str] = []
    if not isinstance(s.name, str) or not naming.NAME.match(s.name):
        out.append(f"step name {s.name!r} must be letters, digits, '-' or '_', starting with a letter")
    elif s.name in naming.RESERVED:
        out.append(f"step name {s.name!r} is reserved: the step that writes the results has it")
    if isinstance(s.timeout_s, bool) or not isinstance(s.timeout_s, (int, float)) or not s.timeout_s > 0:
        out.append(f"step {s.name!r}: timeout_s must be a number of seconds above 0, not {s.timeout_s!r}")
    if isinstance(s.retries, bool) or not isinstance(s.retries, int) or s.retries < 0:
        out.append(f"step {s.name!r}: retries must be a whole number, 0 or more, not {s.retries!r}")
    out.extend(_join_problems(s))
    out.extend(_loop_problems(s))
    if not all(isinstance(m, str) and m.strip() for m in s.models):
        out.append(f"step {s.name!r}: models must be a list of model names")
    for dep in s.depends_on:
        if dep == s.name:
            continue  # a cycle of one, named by the cycle check
        if dep not in names:
            close = difflib.get_close_matches(str(dep), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (steps: {', '.join(names)})"
            out.append(f"step {s.name!r} depends on {dep!r}, which is not a step{hint}")
    if len(set(s.depends_on)) != len(s.depends_on):
        out.append(f"step {s.name!r} names a dependency twice: {', '.join(s.depends_on)}")
    for role, ref, args in (("task", s.task, TASK_ARGS), ("condition", s.condition, CONDITION_ARGS),
                            ("fallback", s.fallback, TASK_ARGS), ("until", s.until, CONDITION_ARGS)):
        if ref is None:
            continue
        got = resolve(ref, graph.base)
        if got.problem:
            out.append(f"step {s.name!r}: {role} {got.problem}")
            continue
        assert got.fn is not None
        if arity(got.fn, args) is None:
            want = "(input, deps)" if args == CONDITION_ARGS else "(input, deps) or (input, deps, ctx)"
            out.append(f"step {s.name!r}: {role} {_label(ref)} must take {want}")
    return out


MAX_ROUNDS = 10
"""A loop's ceiling: an agent loop that never ends cannot be declared."""


def _seconds(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


def _join_problems(s: "StepDecl") -> list[str]:
    out: list[str] = []
    for key in ("join_timeout_s", "join_give_up_s"):
        value = getattr(s, key)
        if value is None:
            continue
        if not _seconds(value):
            out.append(f"step {s.name!r}: {key} must be a number of seconds above 0, not {value!r}")
        elif len(s.depends_on) < 2:
            out.append(f"step {s.name!r}: {key} is for a step with several dependencies (a join); it has "
                       f"{len(s.depends_on)}")
    if s.join_give_up_s is not None and s.join_timeout_s is None:
        out.append(f"step {s.name!r}: join_give_up_s needs join_timeout_s")
    elif _seconds(s.join_give_up_s) and _seconds(s.join_timeout_s) and s.join_give_up_s < s.join_timeout_s:
        out.append(f"step {s.name!r}: join_give_up_s ({s.join_give_up_s:g}) must not be below join_timeout_s "
                   f"({s.join_timeout_s:g})")
    return out


def _loop_problems(s: "StepDecl") -> list[str]:
    if isinstance(s.rounds, bool) or not isinstance(s.rounds, int) or not 1 <= s.rounds <= MAX_ROUNDS:
        return [f"step {s.name!r}: rounds must be a whole number from 1 to {MAX_ROUNDS}, not {s.rounds!r}"]
    if s.rounds > 1 and s.until is None:
        return [f"step {s.name!r}: rounds = {s.rounds} needs until (input, deps) -> bool, which ends the loop"]
    if s.rounds == 1 and s.until is not None:
        return [f"step {s.name!r}: until needs rounds above 1 (the most times the task runs)"]
    return []


def _label(ref: object) -> str:
    return repr(ref) if isinstance(ref, str) else getattr(ref, "__qualname__", repr(ref))


def _cycle_problems(graph: "Graph") -> list[str]:
    order = [s.name for s in _first_of_each(graph.steps)]
    deps = {s.name: [d for d in s.depends_on if d in order] for s in _first_of_each(graph.steps)}
    found = cycles(order, deps)
    out = [f"a dependency cycle: {' -> '.join(c)} (each depends on the next)" for c in found]
    # Every step nothing depends on feeds the result; a step reaches a result when a dependent of it does.
    dependents: dict[str, list[str]] = {n: [] for n in order}
    for n, ds in deps.items():
        for d in ds:
            dependents[d].append(n)
    reaches = {n for n in order if not dependents[n]}
    todo = list(reaches)
    while todo:
        for d in deps[todo.pop()]:
            if d not in reaches:
                reaches.add(d)
                todo.append(d)
    in_cycle = strongly_connected(order, deps)
    for n in order:
        if n not in reaches and n not in in_cycle:  # a step in a cycle is named by the cycle
            out.append(f"no result can be reached from step {n!r}: every step that depends on it leads back "
                       f"into a dependency cycle")
    return out


def strongly_connected(order: list[str], deps: dict[str, list[str]]) -> set[str]:
    """Every step that is in a cycle."""
    return {n for c in _components(order, deps) for n in c}


def cycles(order: list[str], deps: dict[str, list[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one, as a path that ends where it starts, from
    the component's first step in declaration order."""
    out = []
    for comp in sorted(_components(order, deps), key=lambda c: min(order.index(n) for n in c)):
        start = min(comp, key=order.index)
        out.append(_path_back(start, comp, deps))
    return out


def _components(order: list[str], deps: dict[str, list[str]]) -> list[set[str]]:
    """The strongly connected components that hold a cycle (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[set[str]] = []
    counter = 0
    for root in order:
        if root in index:
            continue
        work = [(root, iter(deps[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(deps[nxt])))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.add(m)
                    if m == node:
                        break
                if len(comp) > 1 or node in deps[node]:
                    comps.append(comp)
    return comps


def _path_back(start: str, comp: set[str], deps: dict[str, list[str]]) -> list[str]:
    """The shortest path from ``start`` back to itself inside its component."""
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for n in frontier:
            for d in deps[n]:
                if d not in comp:
                    continue
                if d == start:
                    return _walk(start, n, prev)
                if d not in prev:
                    prev[d] = n
                    nxt.append(d)
        frontier = nxt
    return [start, start]


def _walk(start: str, last: str, prev: dict[str, str]) -> list[str]:
    path = [last]
    while path[-1] != start:
        path.append(prev[path[-1]])
    return [*reversed(path), start]
