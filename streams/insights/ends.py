"""One terminal record read as what the insights count: its outcome, reason, latency, model use and flags.

The engine knows no pipeline: the outcome is the topic (a declared outcome or a dead letter, with the step and
reason its headers carry); a pipeline that knows more (which models a case called, whether a fallback served,
which of its classifications contradict each other) declares it as functions in ``extras["insights"]``:
``usage(value) -> {model: (calls, tokens)}``, ``fallback(value, pipeline) -> bool``, ``gate(value) -> bool |
None``, ``reason(value) -> str | None``, ``contradictions(value) -> list[str]``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from streams import avro
from streams.pipeline import Pipeline
from streams.records import ENTERED_HEADER

log = logging.getLogger("triage.insights")


@dataclass(frozen=True)
class End:
    """What one terminal record counts for."""

    pipeline: str
    tenant: str
    outcome: str
    """The outcome topic's name, or ``dead_letter``."""
    escalated: bool = False
    """A human takes it: on the topic the pipeline declares as its escalations (``extras["escalations"]``)."""
    reason: str | None = None
    """An escalation's reason, a dead letter's ``<step>:<REASON>``."""
    latency_ms: int | None = None
    attempt: int = 1
    usage: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    fallback: bool = False
    gate: bool | None = None
    contradictions: tuple[str, ...] = ()


def read(pipeline: Pipeline, topic: str, headers: Mapping[str, str], raw: bytes | None,
         timestamp_ms: int) -> End:
    """The summary of one record of ``pipeline``'s terminal ``topic``. A value that cannot be decoded still
    counts as its outcome (its details unknown), so the totals always match a count of the topics."""
    tenant = tenant_of(headers)
    try:
        attempt = max(1, int(headers.get("attempt") or 1))
    except ValueError:
        attempt = 1
    latency = _latency(headers, timestamp_ms)
    if topic in pipeline.dead_letter_topics():
        reason = f"{headers.get('dlq.step') or topic.rsplit('.', 1)[-1]}:{headers.get('dlq.reason') or 'UNKNOWN'}"
        return End(pipeline.name, tenant, "dead_letter", False, reason, latency, attempt)
    hooks: Mapping[str, Callable[..., Any]] = pipeline.extras.get("insights", {})
    escalated = topic == pipeline.extras.get("escalations")
    value = _decode(pipeline, topic, raw)
    if value is None or not hooks:
        return End(pipeline.name, tenant, topic, escalated, None, latency, attempt)
    try:
        usage = {m: (int(c), int(t)) for m, (c, t) in hooks["usage"](value).items()} if "usage" in hooks else {}
        return End(pipeline.name, tenant, topic, escalated,
                   reason=hooks["reason"](value) if "reason" in hooks else None,
                   latency_ms=latency if latency is not None else _own_latency(value, timestamp_ms),
                   attempt=attempt, usage=usage,
                   fallback=bool(hooks["fallback"](value, pipeline)) if "fallback" in hooks else False,
                   gate=hooks["gate"](value) if "gate" in hooks else None,
                   contradictions=tuple(hooks["contradictions"](value)) if "contradictions" in hooks else ())
    except Exception:  # noqa: BLE001 - a pipeline's hook failing on one record must not stop the counts
        log.exception("insights hook failed; counted by outcome only", extra={"fields": {"topic": topic}})
        return End(pipeline.name, tenant, topic, escalated, None, latency, attempt)


def tenant_of(headers: Mapping[str, str]) -> str:
    """The tenant a terminal record counts for: its header, or ``-`` (an unknown tenant's dead letter has
    none)."""
    return headers.get("tenant_id") or "-"


def _latency(headers: Mapping[str, str], timestamp_ms: int) -> int | None:
    try:
        entered = int(headers[ENTERED_HEADER])
    except (KeyError, ValueError):
        return None
    return max(0, timestamp_ms - entered)


def _own_latency(value: Any, timestamp_ms: int) -> int | None:
    received = value.get("received_at_ms") if isinstance(value, dict) else None
    return max(0, timestamp_ms - int(received)) if isinstance(received, int) else None


def _decode(pipeline: Pipeline, topic: str, raw: bytes | None) -> Any:
    if raw is None:
        return None
    schema = pipeline.topic(topic).schema
    try:
        return avro.decode(raw, schema) if schema else json.loads(raw)
    except Exception:  # noqa: BLE001 - undecodable: counted by its outcome alone
        return None
