"""One record through its step: bound to its context (log fields, trace span), decoded, handled within the
step's deadline, infrastructure that is away waited for, and whatever happens ended with outputs.

A record's handling is bounded by the step's deadline, which bounds how long it holds its partition back;
when a record still fails, it leaves a dead letter with the reason (:mod:`streams.runtime.outputs`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

from streams import avro, metrics, tracing
from streams.context import RecordContext, bind, reset
from streams.errors import ModelError, TriageError
from streams.records import Record
from streams.runtime.ordering import InOrder, Slot
from streams.runtime.outputs import Outputs
from streams.runtime.stats import Stats
from streams.step import Step, StepContext

log = logging.getLogger("triage.runtime")


class Handler:
    """Handles the records of one step; every record handled ends its slot (unless the slot was dropped)."""

    def __init__(self, step: Step, ctx: StepContext, stats: Stats, outputs: Outputs, order: InOrder,
                 schemas: Mapping[str, str]) -> None:
        self._step, self._ctx, self._settings, self._stats = step, ctx, ctx.settings, stats
        self._outputs, self._order, self._schemas = outputs, order, schemas

    async def __call__(self, slot: Slot, record: Record) -> None:
        step = self._step.name
        token = bind(RecordContext(step=step, correlation_id=record.correlation_id, tenant_id=record.tenant_id,
                                   attempt=record.attempt, topic=record.topic, partition=record.partition,
                                   offset=record.offset))
        started = time.monotonic()
        attempts = 0
        metrics.RECORDS_IN.labels(step).inc()
        span_cm = tracing.record_span(step, record.headers, {
            "triage.correlation_id": record.correlation_id, "triage.tenant_id": record.tenant_id,
            "messaging.destination.name": record.topic, "messaging.kafka.partition": record.partition,
            "messaging.kafka.offset": record.offset, "triage.attempt": record.attempt})
        span_cm.__enter__()
        try:
            schema = self._schemas.get(record.topic)
            if schema is not None:
                try:
                    record = _with_value(record, avro.decode(record.raw, schema))
                except Exception as exc:  # noqa: BLE001 - a decoder bug must not leave the slot open for good
                    code = exc.code if isinstance(exc, TriageError) else "INTERNAL"
                    outputs = self._outputs.failed(record, code, str(exc) or type(exc).__name__, 1)
                    self._order.finish(slot, outputs)
                    return
            policy_deadline = self._settings.step_deadline_s
            deadline = started + policy_deadline
            while True:
                attempts += 1
                try:
                    left = max(0.001, deadline - time.monotonic())
                    async with asyncio.timeout(left):  # not wait_for: that starts a second task per record
                        emits = await self._step.handle(record, self._ctx)
                    outputs = self._outputs.encode(record, emits)
                    break
                except TriageError as exc:
                    # Infrastructure that is away (Redis, a model outage in "wait" mode) is waited for, with
                    # backoff, until the step deadline; model answers were already retried by the gateway.
                    pause = min(5.0, self._settings.retry.backoff(attempts))
                    if exc.retryable and not isinstance(exc, ModelError) and time.monotonic() + pause < deadline:
                        await asyncio.sleep(pause)
                        continue
                    calls = getattr(exc, "calls", attempts)
                    outputs = self._outputs.failed(record, exc.code, str(exc), calls)
                    break
                except asyncio.TimeoutError:
                    outputs = self._outputs.failed(record, "STEP_TIMEOUT",
                                                   f"not done within the step deadline of {policy_deadline:.0f}s",
                                                   attempts)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug in a step must not stop the worker or lose the record
                    log.exception("step raised an unexpected error")
                    outputs = self._outputs.failed(record, "INTERNAL", f"{type(exc).__name__}: {exc}", attempts)
                    break
            self._order.finish(slot, outputs)
            wait = time.monotonic() - started
            metrics.STEP_SECONDS.labels(step).observe(wait)
            if wait > self._stats.max_hol_wait_s:
                self._stats.max_hol_wait_s = wait
                metrics.HOL_WAIT.labels(step).set(wait)
        finally:
            span_cm.__exit__(None, None, None)
            reset(token)


def _with_value(record: Record, value: Any) -> Record:
    return Record(topic=record.topic, partition=record.partition, offset=record.offset, key=record.key,
                  raw=record.raw, headers=record.headers, timestamp_ms=record.timestamp_ms, value=value)
