"""The Case record (schemas/case.v1.avsc) as the steps build it up. Pure functions, no I/O."""
from __future__ import annotations

import copy
from typing import Any


def new_case(correlation_id: str, tenant_id: str, ticket: dict[str, Any], received_at_ms: int) -> dict[str, Any]:
    return {
        "correlation_id": correlation_id,
        "tenant_id": tenant_id,
        "ticket": {
            "subject": ticket.get("subject") or "",
            "body": ticket["body"],
            "ticket_id": ticket.get("ticket_id"),
            "customer_id": ticket.get("customer_id"),
            "channel": ticket.get("channel"),
        },
        "received_at_ms": received_at_ms,
        "labels": {},
        "missing": [],
        "missing_reasons": {},
        "route": None,
        "route_reason": None,
        "retrieval": None,
        "documents": [],
        "reply": None,
        "citations": [],
        "writer_model": None,
        "gate": None,
        "gate_history": [],
        "escalation_reason": None,
        "model_calls": 0,
        "tokens": 0,
        "trail": [],
        "flags": [],
    }


def evolve(case: dict[str, Any], trail: str | None = None, *, calls: int = 0, tokens: int = 0,
           **changes: Any) -> dict[str, Any]:
    """A copy of ``case`` with ``changes``, the model cost added and one more line in its trail."""
    out = copy.deepcopy(case)
    out.update(changes)
    out["model_calls"] = case.get("model_calls", 0) + calls
    out["tokens"] = case.get("tokens", 0) + tokens
    if trail:
        out["trail"] = [*case.get("trail", []), trail]
    return out


def label(case: dict[str, Any], classifier: str) -> str | None:
    entry = (case.get("labels") or {}).get(classifier)
    return entry["label"] if entry else None
