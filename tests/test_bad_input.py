"""Every bad input of the sample set lands in tickets.dlq.ingest with its reason and its original bytes,
and good tickets around it still flow."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from streams.client import TicketProducer, read
from streams.topology import ESCALATIONS, RESPONSES, dlq_topic
from tests.harness import SAMPLE, Stack, sample_tickets

pytestmark = pytest.mark.kafka

REASON = {"malformed": "MALFORMED", "encoding": "ENCODING", "schema": "SCHEMA_INVALID",
          "unknown_tenant": "UNKNOWN_TENANT", "oversized": "OVERSIZED"}
DLQ_HEADERS = {"dlq.reason", "dlq.error", "dlq.step", "dlq.source", "dlq.attempts", "dlq.ts"}


def _cases() -> list[dict]:
    return [json.loads(l) for l in (SAMPLE / "bad" / "cases.jsonl").read_text().splitlines() if l.strip()]


def test_bad_inputs_are_dead_lettered_and_good_ones_flow(pipeline: Stack) -> None:
    p = TicketProducer(pipeline.bootstrap)
    good = sample_tickets(40)
    before = pipeline.produce(good[:20], prefix="good-before-")
    expected: dict[str, tuple[str, bytes]] = {}
    accepted_marker = f"T-keyless-{uuid.uuid4().hex[:8]}"
    for case in _cases():
        if case["kind"] == "accepted":
            doc = {"tenant_id": "acme", "subject": "Refund", "ticket_id": accepted_marker,
                   "body": "I was charged twice for my subscription this month, please refund the duplicate."}
            p.send_raw(json.dumps(doc).encode(), None, {"content-type": case["content_type"]})
            continue
        if case["file"]:
            raw = (SAMPLE / "bad" / case["file"]).read_bytes()
        else:
            raw = json.dumps({"tenant_id": "acme", "subject": "big", "body": "x" * 2_000_000}).encode()
        cid = f"bad-{case['kind']}-{uuid.uuid4().hex[:8]}"
        p.send_raw(raw, cid, {"content-type": case["content_type"]})
        expected[cid] = (REASON[case["kind"]], raw)
    p.flush()
    after = pipeline.produce(good[20:], prefix="good-after-")

    outcomes = pipeline.outcomes(set(expected) | set(before) | set(after), timeout=300)
    for cid, (reason, raw) in expected.items():
        assert cid in outcomes, f"{cid} never reached a terminal topic"
        assert len(outcomes[cid]) == 1, f"{cid}: {[o.topic for o in outcomes[cid]]}"
        o = outcomes[cid][0]
        assert o.topic == dlq_topic("ingest")
        assert o.headers["dlq.reason"] == reason, (cid, o.headers["dlq.reason"], o.headers["dlq.error"])
        assert DLQ_HEADERS <= set(o.headers), o.headers
        assert o.headers["dlq.step"] == "ingest"
        assert o.headers["dlq.source"].startswith("tickets.in/")
        assert o.raw == (raw or None) or (raw == b"" and not o.raw), "the DLQ must keep the original bytes"
    for cid in (*before, *after):
        assert cid in outcomes and len(outcomes[cid]) == 1
        assert outcomes[cid][0].topic in (RESPONSES, ESCALATIONS)

    # The keyless ticket was accepted: ingest gave it a correlation ID and it reached one outcome.
    found = []
    deadline = time.monotonic() + 120
    while not found and time.monotonic() < deadline:
        for o in read(pipeline.bootstrap, [RESPONSES, ESCALATIONS], timeout=30, idle=2):
            if accepted_marker.encode() in (o.raw or b""):
                found.append(o)
    assert len(found) == 1, f"keyless ticket outcomes: {len(found)}"
    assert found[0].headers["correlation_id"]
