"""Running tests/graph_sample/pipeline.toml on a real stack: its inputs, what each must end as, and the count."""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from streams import pipelines
from streams.client import Out, read
from streams.kafka_io import producer_config

SAMPLE_TOML = Path(__file__).resolve().parent / "graph_sample" / "pipeline.toml"
NAME = "gsample"

# (input, where it must end: (topic, dlq.reason) pairs, any one of them)
RESULT = {(f"{NAME}.results", None)}
KINDS: list[tuple[str, Any, set[tuple[str, str | None]]]] = [
    ("plain", {"text": "great thanks for the quick answer"}, RESULT),
    ("lookup", {"text": "please look this account number up", "lookup": True}, RESULT),
    ("boom", {"text": "a boom in the middle"}, {(f"{NAME}.dlq.keywords", "TASK_ERROR")}),
    ("slow", {"text": "a slow one", "lookup": True}, {(f"{NAME}.dlq.lookup", "STEP_TIMEOUT")}),
    ("slow-skipped", {"text": "a slow one that needs no lookup"}, RESULT),
    ("flaky", {"text": "a flaky answer"}, RESULT),
    ("two-branches", {"text": "boom and slow", "lookup": True},
     {(f"{NAME}.dlq.keywords", "TASK_ERROR"), (f"{NAME}.dlq.lookup", "STEP_TIMEOUT")}),
    ("two-sinks", {"text": "boom and audit-fail"},
     {(f"{NAME}.dlq.keywords", "TASK_ERROR"), (f"{NAME}.dlq.audit", "TASK_ERROR")}),
    ("not-json", b'{"text": "unterminated', {(f"{NAME}.dlq.parse", "MALFORMED")}),
    ("not-object", b'["a", "list"]', {(f"{NAME}.dlq.parse", "MALFORMED")}),
]


def inputs(n: int, prefix: str) -> dict[str, tuple[str, Any]]:
    """``n`` inputs cycling through KINDS: {correlation ID: (kind, input)}."""
    out = {}
    for i in range(n):
        kind, doc, _ = KINDS[i % len(KINDS)]
        if isinstance(doc, dict):
            doc = {**doc, "n": i}
        out[f"{prefix}{i:05d}-{os.urandom(3).hex()}"] = (kind, doc)
    return out


def expected(kind: str) -> set[tuple[str, str | None]]:
    return next(e for k, _, e in KINDS if k == kind)


def produce(bootstrap: str, sent: dict[str, tuple[str, Any]]) -> None:
    p = Producer(producer_config(bootstrap, None))
    errors: list[str] = []
    for cid, (_, doc) in sent.items():
        value = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        while True:
            try:
                p.produce(f"{NAME}.in", value=value, key=cid.encode(),
                          on_delivery=lambda err, msg: errors.append(str(err)) if err else None)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0 and not errors, errors[:3]


def outcomes(bootstrap: str, cids: set[str], timeout: float, settle: float = 3.0) -> dict[str, list[Out]]:
    """Every terminal record of ``cids``: waits until each has one, then reads all again to see doubles."""
    topics = pipelines.load(str(SAMPLE_TOML)).terminal_topics()
    pending = set(cids)

    def done(o: Out) -> bool:
        pending.discard(o.headers.get("correlation_id") or o.key or "")
        return not pending

    for _ in read(bootstrap, topics, timeout=timeout, stop=done):
        pass
    seen: dict[str, list[Out]] = defaultdict(list)
    for o in read(bootstrap, topics, timeout=timeout, idle=settle):
        cid = o.headers.get("correlation_id") or o.key or ""
        if cid in cids:
            seen[cid].append(o)
    return dict(seen)


def verdicts(sent: dict[str, tuple[str, Any]], seen: dict[str, list[Out]]) -> dict[str, list[str]]:
    """What is wrong, per correlation ID (missing, doubled, the wrong end); empty when all is right."""
    wrong: dict[str, list[str]] = {}
    for cid, (kind, _) in sent.items():
        outs = seen.get(cid, [])
        if len(outs) != 1:
            wrong[cid] = [kind, f"{len(outs)} terminal records: {[o.topic for o in outs]}"]
            continue
        o = outs[0]
        got = (o.topic, o.headers.get("dlq.reason"))
        if got not in expected(kind):
            wrong[cid] = [kind, f"ended in {got}, expected one of {sorted(expected(kind), key=str)}"]
    return wrong
