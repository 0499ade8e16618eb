"""`triage trace CID`: one ticket's path through the steps, with timings, model calls and outcome.

It reads every pipeline topic (committed records) and keeps the records of that correlation ID. Fine for a
support desk's volumes; a large deployment would point the trace at its OpenTelemetry backend instead
(every record carries a W3C traceparent, and workers export spans over OTLP when configured).
"""
from __future__ import annotations

from typing import Any

from streams.client import Out, decode_value, read
from streams.topology import (CLASSIFIED, DRAFTS, ENRICHED, ESCALATIONS, IN, JOINED, RESPONSES, ROUTED, STEPS, VALID,
                              dlq_topic)

PATH = [IN, VALID, CLASSIFIED, JOINED, ROUTED, ENRICHED, DRAFTS, RESPONSES, ESCALATIONS, *(dlq_topic(s) for s in STEPS)]
TERMINAL = {RESPONSES, ESCALATIONS, *(dlq_topic(s) for s in STEPS)}


def _summary(o: Out, value: Any) -> str:
    if o.topic.startswith("tickets.dlq."):
        return f"dead-lettered by {o.headers.get('dlq.step')}: {o.headers.get('dlq.reason')} ({o.headers.get('dlq.error', '')[:120]})"
    if o.topic == CLASSIFIED and isinstance(value, dict):
        if value.get("ok"):
            return f"{value['classifier']} = {value['label']} ({value['confidence']:.2f}, {value['model']}, {value['model_calls']} calls)"
        return f"{value['classifier']} failed: {value['error_code']}"
    if o.topic == IN:
        return "submitted"
    if isinstance(value, dict) and value.get("trail"):
        return value["trail"][-1]
    return ""


def trace(bootstrap: str, correlation_id: str, timeout: float = 60.0) -> dict[str, Any]:
    hits = [o for o in read(bootstrap, PATH, timeout=timeout, idle=1.5)
            if correlation_id in (o.key, o.headers.get("correlation_id"))]
    hits.sort(key=lambda o: (o.timestamp_ms, PATH.index(o.topic)))
    if not hits:
        return {"correlation_id": correlation_id, "found": False, "hops": []}
    start = hits[0].timestamp_ms
    hops = []
    outcome = None
    last_case: dict[str, Any] | None = None
    for o in hits:
        value = decode_value(o.topic, o.raw)
        if isinstance(value, dict) and "trail" in value:
            last_case = value
        hops.append({"t_ms": o.timestamp_ms - start, "topic": o.topic, "attempt": o.headers.get("attempt", "1"),
                     "tenant_id": o.headers.get("tenant_id"), "what": _summary(o, value)})
        if o.topic in TERMINAL:
            reason = o.headers.get("dlq.reason") or (value.get("escalation_reason") if isinstance(value, dict) else None)
            outcome = {"topic": o.topic, "attempt": o.headers.get("attempt", "1"), "reason": reason}
    return {"correlation_id": correlation_id, "found": True, "hops": hops, "outcome": outcome,
            "elapsed_ms": hits[-1].timestamp_ms - start,
            "model_calls": (last_case or {}).get("model_calls"), "tokens": (last_case or {}).get("tokens"),
            "trail": (last_case or {}).get("trail", [])}
