"""The join's clocks across restores of its state, without Kafka: a restore (every rebalance, every aborted
transaction) gives live classifiers their patience again, but does not put off the hard timeout for good."""
from __future__ import annotations

import json
import time

from processors.join import Join
from streams.topology import JOINED

HOUR_MS = 3600 * 1000


def _entry(seen_ms: int) -> dict:
    case = {"correlation_id": "c-1", "tenant_id": "acme", "trail": [], "model_calls": 0, "tokens": 0}
    return {"case": case, "results": {"intent": {"ok": True, "label": "billing", "confidence": 0.9, "model": "m",
                                                 "error_code": None, "calls": 1, "tokens": 1}},
            "seen_ms": seen_ms, "headers": {}}


def test_a_restore_does_not_restart_the_hard_timeout() -> None:
    join = Join(timeout_s=120, hard_timeout_s=1800)
    now = int(time.time() * 1000)
    join.restore([0], lambda p: [(b"acme/c-1/1", json.dumps(_entry(now - HOUR_MS)).encode())])
    out = join.tick(now + 1000)
    assert [e.topic for e in out if e.topic == JOINED] == [JOINED], "an hour-old ticket waits no longer"


def test_a_restore_gives_classifiers_their_patience_again() -> None:
    join = Join(timeout_s=120, hard_timeout_s=1800)
    now = int(time.time() * 1000)
    join.restore([0], lambda p: [(b"acme/c-1/1", json.dumps(_entry(now - 600 * 1000)).encode())])
    assert join.tick(now + 1000) == [], "ten minutes old, but the classifiers get their timeout after a restore"
