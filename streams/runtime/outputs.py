"""What a record leaves: its step's outputs encoded (Avro where the topic has a schema, the headers carried
on), or, when the step failed on it, a dead letter with the reason (or what the step stands in for it).

A dead letter is an output like any other, committed with the offset of the record it replaces.
"""
from __future__ import annotations

import json

import logging
from typing import Mapping

from streams import avro, metrics, tracing
from streams.config import Settings
from streams.dead_letter import MAX_VALUE_BYTES, dead_letter_headers, dead_letter_id, fit_value
from streams.errors import TriageError
from streams.kafka_io import encode_headers
from streams.records import CARRIED_HEADERS, Emit, Record
from streams.runtime.ordering import Output
from streams.runtime.state import STATE_OVERHEAD_BYTES
from streams.runtime.stats import Stats
from streams.step import Step

log = logging.getLogger("triage.runtime")


class Outputs:
    """Encodes the outputs of one step. ``schemas`` maps a topic to its Avro schema; ``dead_letters`` is the
    step's dead-letter topic, ``dead_letter_prefix`` what every dead-letter topic starts with."""

    def __init__(self, step: Step, settings: Settings, stats: Stats, *, schemas: Mapping[str, str],
                 dead_letters: str, dead_letter_prefix: str, changelog: str) -> None:
        self._step, self._settings, self._stats = step, settings, stats
        self._schemas, self._changelog = schemas, changelog
        self._dead_letters, self._dead_letter_prefix = dead_letters, dead_letter_prefix

    def encode(self, record: Record | None, emits: list[Emit]) -> list[Output]:
        """The records to produce for ``emits`` made from ``record`` (None: the join's tick). Raises
        SchemaInvalid when a value fails its topic's schema, TriageError OVERSIZED when it is over the limit."""
        out: list[Output] = []
        for e in emits:
            headers: dict[str, str] = {}
            if record is not None:
                headers.update({k: record.headers[k] for k in CARRIED_HEADERS if k in record.headers})
                headers.setdefault("attempt", str(record.attempt))
                # Which record this output was made from: the join tells a ticket's classifications from those
                # of another ticket that came with the same ID by the tickets.valid record they classified.
                headers["source"] = f"{record.topic}/{record.partition}/{record.offset}"
            headers.update(e.headers)
            traceparent = tracing.current_traceparent()
            if traceparent and record is not None:
                headers["traceparent"] = traceparent  # the next step's span is a child of this one
            if e.value is None or isinstance(e.value, (bytes, bytearray)):
                value = bytes(e.value) if e.value is not None else None
            else:
                schema = self._schemas.get(e.topic)
                # SchemaInvalid: the step's output failed validation. A topic without a schema carries JSON.
                value = (avro.encode(schema, e.value, topic=e.topic) if schema is not None
                         else json.dumps(e.value, ensure_ascii=False, separators=(",", ":")).encode())
            if value is not None and len(value) > self._limit(e.topic):
                raise TriageError(f"output of {len(value)} bytes is over the limit", code="OVERSIZED")
            metrics.RECORDS_OUT.labels(self._step.name, e.topic).inc()
            key = e.key if e.key is not None else (record.key if record is not None else None)
            out.append((e.topic, e.partition, key.encode() if key is not None else None, value,
                        encode_headers(headers)))
        return out

    def _limit(self, topic: str) -> int:
        """The most bytes an output to ``topic`` may have. A changelog record holds one input record (itself
        within the output limit, as some step wrote it) and a bounded bookkeeping beside it; a dead letter keeps
        its record's bytes, cut to fit (dead_letter.fit_value)."""
        if topic == self._changelog:
            return self._settings.max_value_bytes + STATE_OVERHEAD_BYTES
        if topic.startswith(self._dead_letter_prefix):
            return MAX_VALUE_BYTES
        return self._settings.max_value_bytes

    def failed(self, record: Record, reason: str, error: str, attempts: int) -> list[Output]:
        """What a record the step failed on leaves: a dead letter, unless the step stands something else in for
        it (a classifier's failed classification, so that its ticket ends once, through the join)."""
        instead = getattr(self._step, "on_failure", None)
        if instead is not None:
            try:
                emits = instead(record, reason, error)
                if emits:
                    outputs = self.encode(record, emits)
                    metrics.STEP_FAILURES.labels(self._step.name, reason).inc()
                    log.warning("step failed; passed on as a failed result",
                                extra={"fields": {"reason": reason, "error": error[:300]}})
                    return outputs
            except Exception:  # noqa: BLE001 - the dead letter below is the fallback, never nothing
                log.exception("on_failure raised; dead-lettering instead")
        return [self._dead_letter(record, reason, error, attempts)]

    def _dead_letter(self, record: Record, reason: str, error: str, attempts: int) -> Output:
        self._stats.dead_lettered += 1
        metrics.DEAD_LETTERS.labels(self._step.name, reason).inc()
        log.warning("dead-lettered", extra={"fields": {"reason": reason, "error": error[:300]}})
        cid = dead_letter_id(record)
        headers = dead_letter_headers(record, self._step.name, reason, error, attempts)
        headers["correlation_id"] = cid
        value = fit_value(record.raw, headers)
        return (self._dead_letters, None, cid.encode(), value, encode_headers(headers))
