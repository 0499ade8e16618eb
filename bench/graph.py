"""The same pipeline as a LangGraph graph: the same step functions as nodes (via :class:`bench.pipeline.Pipeline`).

    START -> ingest -> classify_intent ┐
                    -> classify_language ┤
                    -> classify_priority ┼-> join -> route -> retrieve -> generate -> gate -> END
                    -> classify_sentiment┘         │                        │ ▲      │
                                                   └-> END (escalated)      │ └──────┘ (regenerate)
                                                                            └-> END (escalated by a guard)

The four classifier nodes run in the same super-step (in parallel); the join node waits for all four.
"""
from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from bench.pipeline import TERMINAL, Pipeline
from streams.records import Record
from processors.topology import CLASSIFIERS, DRAFTS, ENRICHED, ROUTED


class TicketState(TypedDict, total=False):
    record: Record
    """The tickets.in record (input)."""
    valid: Record
    classified: Annotated[list, operator.add]
    current: Record | None
    """The record between route and gate; None after a step failed (dead letter)."""
    outcome: str


def build_graph(pipe: Pipeline) -> Any:
    g = StateGraph(TicketState)

    async def ingest(state: TicketState) -> dict[str, Any]:
        valid = await pipe.ingest(state["record"])
        return {"valid": valid} if valid is not None else {"outcome": "dlq"}

    def classifier(c: str) -> Any:
        async def node(state: TicketState) -> dict[str, Any]:
            return {"classified": [await pipe.classify(c, state["valid"])]}
        node.__name__ = f"classify_{c}"
        return node

    async def join(state: TicketState) -> dict[str, Any]:
        return {"current": await pipe.join(state["valid"], state["classified"])}

    async def step(state: TicketState) -> dict[str, Any]:
        rec = await pipe.step(state["current"])
        if rec is None:
            return {"current": None, "outcome": "dlq"}
        if rec.topic in TERMINAL:
            return {"current": rec, "outcome": TERMINAL[rec.topic]}
        return {"current": rec}

    g.add_node("ingest", ingest)
    for c in CLASSIFIERS:
        g.add_node(f"classify_{c}", classifier(c))
    g.add_node("join", join)
    for name in ("route", "retrieve", "generate", "gate"):
        g.add_node(name, step)

    g.add_edge(START, "ingest")
    g.add_conditional_edges("ingest", lambda s: END if s.get("outcome") else [f"classify_{c}" for c in CLASSIFIERS])
    g.add_edge([f"classify_{c}" for c in CLASSIFIERS], "join")
    g.add_edge("join", "route")

    def after(expected: str, nxt: str) -> Any:
        def decide(s: TicketState) -> str:
            cur = s.get("current")
            return nxt if cur is not None and cur.topic == expected and not s.get("outcome") else END
        return decide

    g.add_conditional_edges("route", after(ROUTED, "retrieve"), ["retrieve", END])
    g.add_conditional_edges("retrieve", after(ENRICHED, "generate"), ["generate", END])
    g.add_conditional_edges("generate", after(DRAFTS, "gate"), ["gate", END])
    g.add_conditional_edges("gate", after(ENRICHED, "generate"), ["generate", END])
    return g.compile()
