"""One (tenant, correlation ID, attempt) is one ticket. A second ticket sent with the same triple, after the
first finished (within the join's retention) or while the first is in flight, is dead-lettered DUPLICATE by the
join, naming the record that holds the ID; the first keeps its one outcome and its own labels. Before, the
second was dropped without a record or a log line, or merged with the first into one response."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from streams import avro
from streams.client import Out, TicketProducer, read
from processors.topology import ESCALATIONS, RESPONSES, STEPS, dlq_topic
from tests.harness import Stack, routine_tickets

pytestmark = pytest.mark.kafka


def _two_tickets(tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    a, b = routine_tickets(2, english=True)
    # One tenant: an ID is a ticket's within its tenant (the same ID in another tenant is another ticket).
    return ({**a, "tenant_id": "acme", "ticket_id": f"first-{tag}"},
            {**b, "tenant_id": "acme", "ticket_id": f"second-{tag}"})


def _wait_for_duplicate(stack: Stack, cid: str, timeout: float) -> None:
    for _ in read(stack.bootstrap, [dlq_topic("join")], timeout=timeout,
                  stop=lambda o: o.key == cid and o.headers.get("dlq.reason") == "DUPLICATE"):
        pass


def _check(stack: Stack, cid: str, first: dict[str, Any], second: dict[str, Any], holder_state: str) -> None:
    # The first ticket's outcome may come after the second's dead letter: wait for it, then count everything.
    for _ in read(stack.bootstrap, [RESPONSES, ESCALATIONS], timeout=300, stop=lambda o: o.key == cid):
        pass
    outs: list[Out] = stack.outcomes({cid}, timeout=300, settle=3.0).get(cid, [])
    seen = [(o.topic, o.headers.get("dlq.reason")) for o in outs]
    dead = [o for o in outs if o.topic == dlq_topic("join")]
    done = [o for o in outs if o.topic in (RESPONSES, ESCALATIONS)]
    assert len(outs) == 2 and len(dead) == 1 and len(done) == 1, seen
    # The first ticket's outcome is the first ticket's, with labels of its own.
    case = avro.decode(done[0].raw, "dev.triage.Case")
    assert case["ticket"]["ticket_id"] == first["ticket_id"]
    assert case["missing"] == [] and any(line.startswith("join: complete") for line in case["trail"])
    # The second's dead letter is the second ticket itself, saying what holds its ID.
    d = dead[0]
    assert d.headers["dlq.reason"] == "DUPLICATE"
    assert avro.decode(d.raw, "dev.triage.Case")["ticket"]["ticket_id"] == second["ticket_id"]
    error = d.headers["dlq.error"]
    assert f"correlation ID {cid!r}, attempt 1 is already held by tickets.valid/" in error and holder_state in error
    assert d.headers["dlq.source"].startswith("tickets.valid/")
    log = (stack.home / "logs" / "test-worker-join-0.log").read_text(errors="replace")
    assert "DUPLICATE" in log and cid in log  # an operator reading the join's log sees it too


def test_a_ticket_re_sent_after_the_first_finished_is_a_duplicate(pipeline: Stack) -> None:
    cid = f"dup-after-{uuid.uuid4().hex[:12]}"
    first, second = _two_tickets(cid)
    p = TicketProducer(pipeline.bootstrap)
    p.send(first, correlation_id=cid)
    p.flush()
    assert len(pipeline.outcomes({cid}, timeout=300).get(cid, [])) == 1
    p.send(second, correlation_id=cid)
    p.flush()
    _wait_for_duplicate(pipeline, cid, timeout=90)
    _check(pipeline, cid, first, second, "finished at")


def test_two_tickets_in_flight_with_one_id_are_not_merged(tmp_path: Path) -> None:
    """Both tickets reach the join before any classification does (the classifiers start only once the second
    has been dead-lettered), so the second meets the first in flight."""
    stack = Stack.create(tmp_path)
    try:
        stack.start(workers=[s for s in STEPS if not s.startswith("classify-")])
        cid = f"dup-inflight-{uuid.uuid4().hex[:12]}"
        first, second = _two_tickets(cid)
        p = TicketProducer(stack.bootstrap)
        p.send(first, correlation_id=cid)
        p.send(second, correlation_id=cid)
        p.flush()
        _wait_for_duplicate(stack, cid, timeout=90)
        for s in STEPS:
            if s.startswith("classify-"):
                stack.start_worker(s)
        _check(stack, cid, first, second, "in flight")
    finally:
        stack.stop()
