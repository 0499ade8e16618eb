"""OpenTelemetry tracing: a span per record per step and per model call, joined into one trace per ticket
through the W3C ``traceparent`` header every record carries.

Spans are exported over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set;
otherwise no span is made at all (not even the API's no-op ones, whose context switching cost a worker 4%
of its CPU) and the incoming ``traceparent`` passes through unchanged.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Mapping

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("triage")
_exporting = False


def setup(service: str) -> bool:
    """Install an exporting tracer provider when OTLP is configured. Returns whether spans are exported."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    global _tracer, _exporting
    _tracer = trace.get_tracer("triage")
    _exporting = True
    return True


def shutdown() -> None:
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()  # flushes what is batched


@contextmanager
def record_span(step: str, headers: Mapping[str, str], attributes: Mapping[str, object]) -> Iterator[Span]:
    """The span of one record in one step, child of the span that produced the record."""
    if not _exporting:
        yield INVALID_SPAN
        return
    parent = _propagator.extract({"traceparent": headers["traceparent"]}) if headers.get("traceparent") else None
    with _tracer.start_as_current_span(f"step {step}", context=parent, kind=SpanKind.CONSUMER,
                                       attributes=dict(attributes)) as span:  # type: ignore[arg-type]
        yield span


@contextmanager
def model_span(model: str) -> Iterator[Span]:
    if not _exporting:
        yield INVALID_SPAN
        return
    with _tracer.start_as_current_span(f"model {model}", kind=SpanKind.CLIENT,
                                       attributes={"gen_ai.request.model": model}) as span:
        yield span


def current_traceparent() -> str | None:
    """The traceparent to put on records produced now (the current span as parent); None when not exporting,
    so the record carries the one it came with."""
    if not _exporting:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")
