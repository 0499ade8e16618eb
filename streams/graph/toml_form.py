"""The graph as a TOML file, in the shape the source documents use:

    [pipeline]
    name = "faq"                       # topics: faq.in, faq.results, faq.dlq.<step>
    [steps.classify]
    task = "faq_steps:classify"        # module:function, found beside this file first, then on sys.path
    timeout_s = 5
    retries = 2
    [steps.answer]
    task = "faq_steps:answer"
    depends_on = ["classify"]
    condition = "faq_steps:needs_answer"
    fallback = "faq_steps:canned_answer"
    models = ["gpt-4o-mini", "gpt-4o"]

``[pipeline] outcomes = ["published", "held"]`` with ``route = "module:function"`` sends each result to
``<name>.<outcome>`` (the one ``route(result)`` names) instead of ``<name>.results``.

A file that cannot be read as such is a PipelineError naming what is wrong and where; what is wrong with the
graph itself (cycles, unknown dependencies, imports) is left to the graph's checks, so all of it is said at once.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

from streams.errors import PipelineError
from streams.graph.declare import DEFAULT_TIMEOUT_S, Graph

PIPELINE_KEYS = ("name", "describe", "outcomes", "route")
STEP_KEYS = ("task", "timeout_s", "retries", "depends_on", "condition", "fallback", "models", "join_timeout_s",
             "join_give_up_s", "rounds", "until")
_HEADER = re.compile(r"""^\s*\[\s*steps\s*\.\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*\]\s*(?:#.*)?$""")
_DUP = "#"  # never in a step name, so a renamed duplicate cannot meet a real step


def load_file(path: Path) -> Graph:
    """The graph declared in ``path`` (not yet checked: ``compile()`` checks it). PipelineError when the file
    cannot be read or is not TOML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"cannot read pipeline file {path}: {exc}") from exc
    return loads(text, base=path.resolve().parent, source=str(path))


def loads(text: str, *, base: Path | None = None, source: str = "") -> Graph:
    text, lines = _number_steps(text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{source or 'pipeline file'} is not valid TOML: {exc}") from exc
    found: list[str] = []
    head = doc.get("pipeline")
    if not isinstance(head, dict) or "name" not in head:
        found.append('the file has no [pipeline] table with a name (name = "faq")')
        head = head if isinstance(head, dict) else {}
    found.extend(_unknown(head, PIPELINE_KEYS, "[pipeline]"))
    for key in doc:
        if key not in ("pipeline", "steps"):
            found.append(f"unknown table [{key}] (known: [pipeline], [steps.<name>])")
    name = head.get("name", "")
    outcomes = head.get("outcomes", [])
    if not isinstance(outcomes, list) or not all(isinstance(o, str) for o in outcomes):
        found.append('[pipeline] outcomes must be a list of names (outcomes = ["published", "held"])')
        outcomes = []
    if "route" in head and not isinstance(head["route"], str):
        found.append('[pipeline] route must be a "module:function" string')
    graph = Graph(str(name) if isinstance(name, str) else repr(name), base=base, source=source,
                  describe=str(head.get("describe", "")), outcomes=tuple(outcomes), route=_ref(head.get("route")))
    steps = doc.get("steps", {})
    if not isinstance(steps, dict):
        found.append("steps must be tables: [steps.<name>]")
        steps = {}
    for key, table in steps.items():
        step_name = key.split(_DUP)[0]
        where = f"[steps.{step_name}]"
        if not isinstance(table, dict):
            found.append(f"{where} must be a table")
            continue
        found.extend(_unknown(table, STEP_KEYS, where))
        if "task" not in table:
            found.append(f"step {step_name!r} has no task (task = \"module:function\")")
        deps = table.get("depends_on", [])
        if isinstance(deps, str):
            deps = [deps]
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            found.append(f"step {step_name!r}: depends_on must be a list of step names")
            deps = []
        models = table.get("models", [])
        if isinstance(models, str):
            models = [models]
        if not isinstance(models, list):
            found.append(f"step {step_name!r}: models must be a list of model names")
            models = []
        for role in ("task", "condition", "fallback", "until"):
            if role in table and not isinstance(table[role], str):
                found.append(f"step {step_name!r}: {role} must be a \"module:function\" string")
        graph.step(step_name, table.get("task") if isinstance(table.get("task"), str) else "",
                   depends_on=deps, timeout_s=table.get("timeout_s", DEFAULT_TIMEOUT_S),
                   retries=table.get("retries", 0), condition=_ref(table.get("condition")),
                   fallback=_ref(table.get("fallback")), models=models, line=lines.get(key),
                   join_timeout_s=table.get("join_timeout_s"), join_give_up_s=table.get("join_give_up_s"),
                   rounds=table.get("rounds", 1), until=_ref(table.get("until")))
    graph.problems_found.extend(found)
    # A step without a task is said once, above, not again as an import problem.
    graph.steps = [s if s.task else _no_task(s) for s in graph.steps]
    return graph


def _no_task(step: Any) -> Any:
    from dataclasses import replace
    return replace(step, task=_missing_task)


def _missing_task(input: Any, deps: Any) -> Any:  # stands in for a task the file did not name
    raise RuntimeError("no task")


def _ref(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _unknown(table: dict[str, Any], known: tuple[str, ...], where: str) -> list[str]:
    out = []
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
            out.append(f"{where} has an unknown key {key!r} ({hint})")
    return out


def _number_steps(text: str) -> tuple[str, dict[str, int]]:
    """The text with a second ``[steps.X]`` renamed so TOML can read it (the checks then name both, with
    their lines, instead of the parser's one-line refusal), and each step table's line."""
    lines: dict[str, int] = {}
    seen: dict[str, int] = {}
    out = []
    for no, line in enumerate(text.splitlines(keepends=True), start=1):
        m = _HEADER.match(line)
        if m:
            name = next(g for g in m.groups() if g is not None)
            seen[name] = seen.get(name, 0) + 1
            key = name if seen[name] == 1 else f"{name}{_DUP}{seen[name]}"
            lines[key] = no
            if key != name:
                line = f'[steps."{key}"]\n'
        out.append(line)
    return "".join(out), lines
