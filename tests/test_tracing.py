"""Tracing without an exporter: no spans, and a ticket's traceparent reaches its terminal record unchanged
through every step (on the real broker, workers without any OTEL_EXPORTER_OTLP_* setting)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from streams import tracing
from streams.client import TicketProducer
from tests.harness import Stack, routine_tickets

INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_without_an_exporter_no_span_is_made() -> None:
    assert not tracing._exporting, "no OTEL_EXPORTER_OTLP_* endpoint is set in the test process"
    with tracing.record_span("route", {"traceparent": INCOMING}, {"triage.correlation_id": "c1"}) as span:
        assert not span.is_recording()
        with tracing.model_span("fake-intent") as inner:
            assert not inner.is_recording()
            # None tells the runtime to leave the carried header alone.
            assert tracing.current_traceparent() is None


@pytest.fixture(scope="module")
def untraced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack.create(tmp_path_factory.mktemp("untraced-home"))  # the harness drops OTEL_* from the workers
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.mark.kafka
def test_the_producer_s_traceparent_reaches_the_terminal_record_unchanged(untraced: Stack) -> None:
    docs = routine_tickets(3, english=True)
    p = TicketProducer(untraced.bootstrap)
    cids = [p.send(d, correlation_id=f"trace-{i}", headers={"traceparent": INCOMING}).correlation_id
            for i, d in enumerate(docs)]
    p.flush()
    p.close()
    outcomes = untraced.outcomes(set(cids), timeout=240, settle=1.0)
    assert set(outcomes) == set(cids), untraced.progress()
    for cid, outs in outcomes.items():
        assert [o.headers.get("traceparent") for o in outs] == [INCOMING], (cid, outs[0].topic, outs[0].headers)
