"""`triage trace CID`: one ticket's path through the steps, with timings, model calls and outcome.

It reads every pipeline topic (committed records) and keeps the records of that correlation ID. Fine for a
support desk's volumes; a large deployment would point the trace at its OpenTelemetry backend instead
(every record carries a W3C traceparent, and workers export spans over OTLP when configured).
"""
from __future__ import annotations

from typing import Any

from streams import pipelines
from streams.client import Out, decode_value, read
from streams.pipeline import Pipeline


def _summary(p: Pipeline, o: Out, value: Any) -> str:
    if o.topic in p.dead_letter_topics():
        return f"dead-lettered by {o.headers.get('dlq.step')}: {o.headers.get('dlq.reason')} ({o.headers.get('dlq.error', '')[:120]})"
    if o.topic == p.input:
        return "submitted"
    said = p.extras.get("summary")  # the pipeline's words for one of its records, if it has some
    if said is not None:
        text = said(o.topic, value)
        if text is not None:
            return text
    if isinstance(value, dict) and value.get("trail"):
        return value["trail"][-1]
    return ""


def trace(bootstrap: str, correlation_id: str, timeout: float = 60.0) -> dict[str, Any]:
    p = pipelines.active()
    path = [*p.data_topics(), *(t for t in p.dead_letter_topics())]
    terminal = set(p.terminal_topics())
    hits = [o for o in read(bootstrap, path, timeout=timeout, idle=1.5)
            if correlation_id in (o.key, o.headers.get("correlation_id"))]
    hits.sort(key=lambda o: (o.timestamp_ms, path.index(o.topic)))
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
                     "tenant_id": o.headers.get("tenant_id"), "what": _summary(p, o, value)})
        if o.topic in terminal:
            reason = o.headers.get("dlq.reason") or (value.get("escalation_reason") if isinstance(value, dict) else None)
            outcome = {"topic": o.topic, "attempt": o.headers.get("attempt", "1"), "reason": reason}
    return {"correlation_id": correlation_id, "found": True, "hops": hops, "outcome": outcome,
            "elapsed_ms": hits[-1].timestamp_ms - start,
            "model_calls": (last_case or {}).get("model_calls"), "tokens": (last_case or {}).get("tokens"),
            "trail": (last_case or {}).get("trail", [])}
