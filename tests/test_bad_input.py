"""Every bad input of the sample set lands in tickets.dlq.ingest with its reason and its original bytes,
and good tickets around it still flow."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from streams.client import TicketProducer, read
from processors.topology import ESCALATIONS, RESPONSES, dlq_topic
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


def test_inputs_too_big_to_pass_on_do_not_wedge_ingest(pipeline: Stack) -> None:
    """Records that fit tickets.in but whose dead letter or whose headers would not fit a record (a value that
    compresses to under the topic's limit, a key or a traceparent of megabytes), and keys that are not UTF-8:
    each ends once, and the tickets behind them still flow. Before, each wedged ingest in a loop of refused
    transactions, or two tickets shared one correlation ID."""
    import hashlib

    from confluent_kafka import Producer

    from streams.dead_letter import MAX_VALUE_BYTES, source_id
    from streams.kafka_io import base_config

    delivered: dict[bytes, tuple[int, int]] = {}
    p = Producer(base_config(pipeline.bootstrap, **{"message.max.bytes": 32 * 1024 * 1024,
                                                    "compression.type": "lz4", "linger.ms": 5}))

    def send(value: bytes, key: bytes, headers: dict[str, str] | None = None) -> None:
        def on_delivery(err: object, msg: object) -> None:
            assert err is None, err
            delivered[key] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]
        p.produce("tickets.in", value=value, key=key, headers=headers or {}, on_delivery=on_delivery)

    tag = uuid.uuid4().hex[:8]
    ticket = json.dumps({"tenant_id": "acme", "subject": "Refund",
                         "body": "I was charged twice for my subscription this month, please refund it."}).encode()
    huge = json.dumps({"tenant_id": "acme", "subject": "big", "body": "x" * 20_000_000}).encode()
    send(huge, f"huge-{tag}".encode())
    send(ticket, f"fat-trace-{tag}".encode(), {"traceparent": "0" * 2_000_000})
    long_key = (f"long-{tag}-" + "k" * 1_000_000).encode()
    send(json.dumps({"tenant_id": "nobody", "body": "hello"}).encode(), long_key)
    binary = [(int(tag, 16) * 1000 + n).to_bytes(8, "big") + b"\xff" for n in (128, 200)]
    for k in binary:
        send(ticket, k)
    assert p.flush(60) == 0
    after = pipeline.produce(sample_tickets(6), prefix=f"after-big-{tag}-")

    long_cid = source_id("tickets.in", *delivered[long_key])
    binary_cids = {"hex:" + k.hex() for k in binary}
    wanted = {f"huge-{tag}", f"fat-trace-{tag}", long_cid, *binary_cids, *after}
    outcomes = pipeline.outcomes(wanted, timeout=300)
    assert {c: len(outcomes.get(c, [])) for c in wanted} == {c: 1 for c in wanted}

    [dead] = outcomes[f"huge-{tag}"]
    assert (dead.topic, dead.headers["dlq.reason"]) == (dlq_topic("ingest"), "OVERSIZED")
    assert dead.headers["dlq.truncated_from"] == str(len(huge))
    assert dead.headers["dlq.sha256"] == hashlib.sha256(huge).hexdigest()
    assert dead.raw == huge[:MAX_VALUE_BYTES]
    from streams import dlq
    kept_in_part = dlq.replay(pipeline.bootstrap, "ingest", correlation_id=f"huge-{tag}", dry_run=True)
    assert (kept_in_part.selected, kept_in_part.truncated, kept_in_part.ids) == (1, 1, ()), "a prefix is no ticket"
    [traced] = outcomes[f"fat-trace-{tag}"]
    assert traced.topic in (RESPONSES, ESCALATIONS) and len(traced.headers["traceparent"]) == 55
    [unknown] = outcomes[long_cid]
    assert (unknown.topic, unknown.headers["dlq.reason"]) == (dlq_topic("ingest"), "UNKNOWN_TENANT")
    for cid in binary_cids | set(after):
        assert outcomes[cid][0].topic in (RESPONSES, ESCALATIONS)


def test_a_replay_by_entry_id_sends_that_entry_only(pipeline: Stack) -> None:
    """Two dead letters share a correlation ID (two tenants may use the same one): replaying one entry by its
    id sends that entry alone; by the correlation ID, the rest, each once ever."""
    from streams import dlq

    cid = f"twin-{uuid.uuid4().hex[:8]}"
    p = TicketProducer(pipeline.bootstrap)
    for n in (1, 2):
        p.send_raw(f'{{"tenant_id": "acme", "body": "cut short {n}'.encode(), cid, {"content-type": "application/json"})
    p.flush()
    twins = pipeline.outcomes({cid}, timeout=120, settle=3)[cid]
    assert [o.headers["dlq.reason"] for o in twins] == ["MALFORMED", "MALFORMED"]
    first, second = (f"{o.topic}/{o.partition}/{o.offset}" for o in twins)

    one = dlq.replay(pipeline.bootstrap, "ingest", entry_id=first)
    assert (one.selected, one.replayed, one.ids) == (1, 1, (first,))
    again = dlq.replay(pipeline.bootstrap, "ingest", entry_id=first)
    assert (again.selected, again.replayed, again.already) == (1, 0, 1)
    # By the correlation ID: the twin, and whatever the replayed entry's new attempt left (it is still
    # malformed), but never the entry already replayed.
    rest = dlq.replay(pipeline.bootstrap, "ingest", correlation_id=cid, dry_run=True)
    assert second in rest.ids and first not in rest.ids and rest.already == 1
