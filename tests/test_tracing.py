"""Tracing without an exporter: no spans, and a record's traceparent reaches the next step unchanged."""
from __future__ import annotations

from streams import tracing
from streams.records import CARRIED_HEADERS

INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_without_an_exporter_no_span_is_made_and_the_incoming_traceparent_is_kept() -> None:
    assert not tracing._exporting, "no OTEL_EXPORTER_OTLP_* endpoint is set in the test process"
    with tracing.record_span("route", {"traceparent": INCOMING}, {"triage.correlation_id": "c1"}) as span:
        assert not span.is_recording()
        with tracing.model_span("fake-intent") as inner:
            assert not inner.is_recording()
            # None tells the runtime to leave the carried header alone...
            assert tracing.current_traceparent() is None
    # ...and the carried headers include it, so the next step's span (when exporting) joins the same trace.
    assert "traceparent" in CARRIED_HEADERS
