"""The names a compiled graph gives its topics and generated steps, in one place.

A user's step names are identifiers without dots (``[A-Za-z][A-Za-z0-9_-]*``); what the compiler adds has a
dot (``join.<step>``) or is reserved (``collect``), so a generated name never meets a declared one.
"""
from __future__ import annotations

import re

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
COLLECT = "collect"
"""The step that writes ``<name>.results`` (or the one dead letter of a failed input)."""
RESERVED = frozenset({COLLECT})
TAKEN_OUTCOMES = frozenset({"in", "out", "joined", "state", "dlq", "results"})
"""Words a compiled graph's own topics use after ``<name>.``: an outcome topic must not meet one."""


def input_topic(pipeline: str) -> str:
    return f"{pipeline}.in"


def results_topic(pipeline: str) -> str:
    return f"{pipeline}.results"


def outcome_topic(pipeline: str, outcome: str) -> str:
    """Where a result goes when the graph has branching outputs."""
    return f"{pipeline}.{outcome}"


def output_topic(pipeline: str, step: str) -> str:
    """What a task step writes: one record per input (its output, a skip, or a failure marker)."""
    return f"{pipeline}.out.{step}"


def joined_topic(pipeline: str, step: str) -> str:
    """What the join of a step with several dependencies writes, for that step to read."""
    return f"{pipeline}.joined.{step}"


def join_step(step: str) -> str:
    return f"join.{step}"


def changelog_topic(pipeline: str, step: str) -> str:
    return f"{pipeline}.state.{step}"


def dlq_topic(pipeline: str, step: str) -> str:
    """As ``Pipeline.dlq_topic`` names it for a pipeline without a prefix."""
    return f"{pipeline}.dlq.{step}"
