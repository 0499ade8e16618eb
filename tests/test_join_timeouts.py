"""The join's clocks across restores of its state, without Kafka: a restore (every rebalance, every aborted
transaction) gives live classifiers their patience again, but does not put off the hard timeout for good."""
from __future__ import annotations

import asyncio
import json
import time

from processors.case import new_case
from processors.join import Join, encode_state
from streams import avro
from streams.records import Record
from processors.topology import CLASSIFIED, JOINED, VALID

HOUR_MS = 3600 * 1000
RESULT = {"ok": True, "label": "billing", "confidence": 0.9, "model": "m", "error_code": None, "calls": 1, "tokens": 1}


def _case(cid: str) -> dict:
    return new_case(cid, "acme", {"subject": "s", "body": "my invoice is wrong"}, 0)


def _entry(seen_ms: int) -> bytes:
    return encode_state({"src": f"{VALID}/0/5", "raw": avro.encode("dev.triage.Case", _case("c-1")),
                         "results": {"intent": RESULT}, "early": {}, "seen_ms": seen_ms, "headers": {}})


def _classification(cid: str, classifier: str, offset: int) -> Record:
    value = {"correlation_id": cid, "tenant_id": "acme", "classifier": classifier, "ok": True, "label": "billing",
             "confidence": 0.9, "model": "m", "error_code": None, "error": None, "model_calls": 1, "tokens": 1,
             "drift_score": None}
    return Record(topic=CLASSIFIED, partition=0, offset=offset, key=cid, raw=b"",
                  headers={"correlation_id": cid, "tenant_id": "acme", "attempt": "1", "source": f"{VALID}/0/9"},
                  timestamp_ms=int(time.time() * 1000), value=value)


def test_a_restore_does_not_restart_the_hard_timeout() -> None:
    join = Join(timeout_s=120, hard_timeout_s=1800)
    now = int(time.time() * 1000)
    join.restore([0], lambda p: [(b"acme/c-1/1", _entry(now - HOUR_MS))])
    out = join.tick(now + 1000)
    assert [e.topic for e in out if e.topic == JOINED] == [JOINED], "an hour-old ticket waits no longer"


def test_a_restore_gives_classifiers_their_patience_again() -> None:
    """Ten minutes old, but the classifiers get their timeout after a restore: even classifiers that have moved on
    since the ticket first arrived (results for a ticket that reached the join after the restore) have not moved
    on from it by the timeout since the restore. Without that progress the test could not tell a restore that
    resets the ticket's clock from one that does not."""
    join = Join(timeout_s=120, hard_timeout_s=1800)
    now = int(time.time() * 1000)
    join.restore([0], lambda p: [(b"acme/c-1/1", _entry(now - 600 * 1000))])
    ticket = Record(topic=VALID, partition=0, offset=9, key="c-2", raw=avro.encode("dev.triage.Case", _case("c-2")),
                    headers={"correlation_id": "c-2", "tenant_id": "acme", "attempt": "1"},
                    timestamp_ms=now, value=_case("c-2"))
    asyncio.run(join.handle(ticket, None))  # type: ignore[arg-type]
    for i, c in enumerate(("language", "priority", "sentiment")):
        asyncio.run(join.handle(_classification("c-2", c, i), None))  # type: ignore[arg-type]
    assert join.tick(now + 1000) == []


def test_state_written_before_the_ticket_bytes_were_kept_is_restored() -> None:
    """An upgrade finds the old changelog: JSON with the whole Case. It is read, and its ticket still joins."""
    join = Join(timeout_s=120, hard_timeout_s=1800)
    now = int(time.time() * 1000)
    old = {"case": _case("c-1"), "results": {"intent": RESULT}, "seen_ms": now - HOUR_MS, "headers": {}}
    join.restore([0], lambda p: [(b"acme/c-1/1", json.dumps(old).encode())])
    out = [e for e in join.tick(now + 1000) if e.topic == JOINED]
    assert len(out) == 1 and out[0].key == "c-1"
    assert avro.decode(out[0].value, "dev.triage.Case")["labels"]["intent"]["label"] == "billing"
