"""Dead-letter records: the original bytes, untouched, with the reason in the headers.

A dead-letter topic is the human queue; ``triage dlq replay`` sends a record back into the step that
failed as a new attempt, so the body must be exactly what that step consumed.
"""
from __future__ import annotations

import time
import uuid

from streams.records import Record

DLQ_HEADERS = ("dlq.reason", "dlq.error", "dlq.step", "dlq.source", "dlq.attempts", "dlq.ts")
MAX_ERROR_CHARS = 2000


def dead_letter_headers(record: Record, step: str, reason: str, error: str, attempts: int) -> dict[str, str]:
    headers = {k: v for k, v in record.headers.items() if not k.startswith("dlq.")}
    headers.setdefault("attempt", str(record.attempt))
    if record.correlation_id:
        headers.setdefault("correlation_id", record.correlation_id)
    headers.update({
        "dlq.reason": reason,
        "dlq.error": error[:MAX_ERROR_CHARS],
        "dlq.step": step,
        "dlq.source": f"{record.topic}/{record.partition}/{record.offset}",
        "dlq.attempts": str(attempts),
        "dlq.ts": str(int(time.time() * 1000)),
    })
    return headers


def source_id(topic: str, partition: int, offset: int) -> str:
    """A correlation ID for a record that came without one: the same on every re-delivery of that record."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{topic}/{partition}/{offset}"))
