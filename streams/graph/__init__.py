"""Pipelines declared as a dependency graph of plain functions, in Python or in a TOML file.

    from streams.graph import Graph
    g = Graph("faq")
    g.step("classify", classify, timeout_s=5, retries=2)
    g.step("answer", answer, depends_on=["classify"], fallback=canned_answer)

``--pipeline my_module:g`` (or a path to a ``.toml`` file, :mod:`streams.graph.toml_form`) runs it. See
:mod:`streams.graph.compile` for what it becomes on Kafka and :mod:`streams.graph.envelope` for its records.
"""
from streams.graph.declare import Graph, StepDecl
from streams.graph.task_context import Reply, TaskContext

__all__ = ["Graph", "StepDecl", "TaskContext", "Reply"]
