"""Dead-letter records: the original bytes, untouched, with the reason in the headers.

A dead-letter topic is the human queue; ``triage dlq replay`` sends a record back into the step that
failed as a new attempt, so the body must be exactly what that step consumed. The one exception is a record
too big to be written at all: its dead letter keeps a prefix, its size and its hash (``dlq.truncated_from``,
``dlq.sha256``), and ``dlq.source`` says where the whole of it still is.
"""
from __future__ import annotations

import hashlib
import time
import uuid

from streams.records import ENTERED_HEADER, Record

DLQ_HEADERS = ("dlq.reason", "dlq.error", "dlq.step", "dlq.source", "dlq.attempts", "dlq.ts")
MAX_ERROR_CHARS = 2000
# Under the producer's message.max.bytes (8 MiB) with room for the key and headers: a dead letter over it
# would be refused by the client, and the transaction carrying it aborted and replayed, forever.
MAX_VALUE_BYTES = 8 * 1024 * 1024 - 256 * 1024
MAX_HEADER_CHARS = 1024  # per copied header: a traceparent is 55, a correlation ID at most 200
MAX_COPIED_HEADER_CHARS = 64 * 1024  # all copied headers together, well inside the value's margin above
MAX_KEY_CHARS = 200


def dead_letter_headers(record: Record, step: str, reason: str, error: str, attempts: int) -> dict[str, str]:
    # The input's own headers go along (a replay carries them back), but no more of them than fits a record.
    headers: dict[str, str] = {}
    room = MAX_COPIED_HEADER_CHARS
    for k, v in record.headers.items():
        if k.startswith("dlq.") or len(k) > MAX_HEADER_CHARS or len(v) > MAX_HEADER_CHARS or len(k) + len(v) > room:
            continue
        headers[k] = v
        room -= len(k) + len(v)
    dropped = sorted(k for k in record.headers if not k.startswith("dlq.") and k not in headers)
    if dropped:
        headers["dlq.dropped_headers"] = ",".join(k[:64] for k in dropped)[:MAX_HEADER_CHARS]
    headers["attempt"] = str(record.attempt)
    headers.setdefault(ENTERED_HEADER, str(record.timestamp_ms))
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


def fit_value(raw: bytes | None, headers: dict[str, str]) -> bytes | None:
    """The dead letter's value: the original bytes, or a prefix of them (noted in ``headers``) when they could
    not be written whole."""
    if raw is None or len(raw) <= MAX_VALUE_BYTES:
        return raw
    headers["dlq.truncated_from"] = str(len(raw))
    headers["dlq.sha256"] = hashlib.sha256(raw).hexdigest()
    return raw[:MAX_VALUE_BYTES]


def dead_letter_id(record: Record) -> str:
    """The dead letter's key: the record's correlation ID, or, when it has none fit to be one (missing, or a
    key of megabytes), an ID stable across re-deliveries of that record, so it can still be counted."""
    cid = record.correlation_id
    if cid and len(cid) <= MAX_KEY_CHARS:
        return cid
    return source_id(record.topic, record.partition, record.offset)


def source_id(topic: str, partition: int, offset: int) -> str:
    """A correlation ID for a record that came without one: the same on every re-delivery of that record."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{topic}/{partition}/{offset}"))
