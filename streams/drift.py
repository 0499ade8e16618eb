"""Drift monitor: one per classifier, shared by every replica through Redis.

Each observed result adds its label and its confidence bin to two sliding windows (the last ``window``
results) kept in Redis by one Lua script, so all replicas see one window. The first ``baseline`` results
(or a baseline given in configuration) are the reference. The score is the Jensen-Shannon divergence (base 2,
0..1) between reference and window, the larger of the label and confidence components. The monitor trips at
``trip_at`` and clears below ``clear_at`` (hysteresis, so it does not flap); every change is logged and kept in
Redis for `triage status`, and the score is a Prometheus gauge.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streams import metrics
from streams.errors import StateError

log = logging.getLogger("triage.drift")

_OBSERVE = """
local n = redis.call('INCR', KEYS[1])
for i = 0, 1 do
  local win, counts, base, sym = KEYS[2 + i * 3], KEYS[3 + i * 3], KEYS[4 + i * 3], ARGV[1 + i]
  if n <= tonumber(ARGV[4]) then redis.call('HINCRBY', base, sym, 1) end
  redis.call('LPUSH', win, sym)
  redis.call('HINCRBY', counts, sym, 1)
  if redis.call('LLEN', win) > tonumber(ARGV[3]) then
    local old = redis.call('RPOP', win)
    redis.call('HINCRBY', counts, old, -1)
  end
end
return {n, redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),
        redis.call('HGETALL', KEYS[6]), redis.call('HGETALL', KEYS[7])}
"""


@dataclass(frozen=True)
class DriftPolicy:
    """When a classifier counts as drifted, and what happens then."""

    window: int = 200
    """Results in the sliding window."""
    baseline: int = 500
    """Results that form the reference distribution (the first ones seen)."""
    trip_at: float = 0.05
    """Jensen-Shannon divergence (0..1) at which the monitor trips."""
    clear_at: float = 0.02
    """Divergence under which a tripped monitor clears."""
    action: str = "fallback"
    """'fallback': take the label from the next model of the chain; 'human': send the ticket to review."""
    classifiers: tuple[str, ...] = ("intent", "language", "priority", "sentiment")
    """Classifiers that are watched."""


@dataclass(frozen=True)
class DriftState:
    classifier: str
    score: float
    tripped: bool
    seen: int
    ready: bool
    """False until the baseline and a first full window exist: no verdict before that."""


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence, base 2 (0 = same distribution, 1 = disjoint)."""
    keys = set(p) | set(q)
    sp, sq = sum(p.values()) or 1.0, sum(q.values()) or 1.0
    out = 0.0
    for k in keys:
        a, b = p.get(k, 0.0) / sp, q.get(k, 0.0) / sq
        m = (a + b) / 2
        if a > 0:
            out += 0.5 * a * math.log2(a / m)
        if b > 0:
            out += 0.5 * b * math.log2(b / m)
    return max(0.0, min(1.0, out))


def confidence_bin(conf: float) -> str:
    return f"{min(9, int(conf * 10))}"


def _pairs(flat: list[Any]) -> dict[str, float]:
    return {flat[i].decode() if isinstance(flat[i], bytes) else flat[i]: float(flat[i + 1])
            for i in range(0, len(flat), 2)}


class DriftMonitor:
    """Observe one classifier's results; read whether it is tripped. Safe for concurrent records."""

    def __init__(self, client: aioredis.Redis, classifier: str, policy: DriftPolicy) -> None:
        self._r, self.classifier, self.policy = client, classifier, policy
        p = f"triage:drift:{classifier}:"
        self._keys = [p + "seen", p + "lw", p + "lc", p + "lb", p + "cw", p + "cc", p + "cb"]
        self._state_key = p + "state"
        self._script = client.register_script(_OBSERVE)
        self._tripped = False

    async def observe(self, label: str, confidence: float) -> DriftState:
        try:
            seen, lw, lb, cw, cb = await self._script(keys=self._keys, args=[
                label, confidence_bin(confidence), self.policy.window, self.policy.baseline])
        except RedisError as exc:
            raise StateError(f"drift monitor unavailable: {exc}") from exc
        window, base = _pairs(lw), _pairs(lb)
        ready = seen >= self.policy.baseline + min(self.policy.window, self.policy.baseline) // 2
        score = max(js_divergence(base, window), js_divergence(_pairs(cb), _pairs(cw))) if ready else 0.0
        tripped = self._tripped
        if ready and not tripped and score >= self.policy.trip_at:
            tripped = True
        elif tripped and score <= self.policy.clear_at:
            tripped = False
        if tripped != self._tripped or seen % 20 == 0:
            await self._publish(score, tripped, seen)
        if tripped != self._tripped:
            log.warning("drift monitor " + ("tripped" if tripped else "cleared"), extra={"fields": {
                "classifier": self.classifier, "score": round(score, 4), "seen": seen, "action": self.policy.action}})
        self._tripped = tripped
        metrics.DRIFT_SCORE.labels(self.classifier).set(score)
        metrics.DRIFT_TRIPPED.labels(self.classifier).set(int(tripped))
        return DriftState(self.classifier, score, tripped, seen, ready)

    async def last_verdict(self) -> DriftState | None:
        """The verdict published last, by any replica, without observing; None before the first. For a result
        observed once already (a memo hit, when a record is handled again after a crash or an abort): observing
        it again would count it twice, and skipping the check would pass a drifted label on."""
        try:
            raw = await self._r.hgetall(self._state_key)
        except RedisError as exc:
            raise StateError(f"drift state read failed: {exc}") from exc
        if not raw:
            return None
        d = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in raw.items()}
        return DriftState(self.classifier, float(d.get("score", 0)), d.get("tripped") == "1", int(d.get("seen", 0)),
                          True)

    async def _publish(self, score: float, tripped: bool, seen: int) -> None:
        try:
            await self._r.hset(self._state_key, mapping={"score": f"{score:.4f}", "tripped": int(tripped),
                                                         "seen": seen, "ts": int(time.time() * 1000),
                                                         "action": self.policy.action})
        except RedisError as exc:
            raise StateError(f"drift state write failed: {exc}") from exc


async def read_states(client: aioredis.Redis, classifiers: list[str]) -> dict[str, dict[str, str]]:
    out = {}
    for c in classifiers:
        raw = await client.hgetall(f"triage:drift:{c}:state")
        out[c] = {k.decode(): v.decode() for k, v in raw.items()}
    return out


async def reset(client: aioredis.Redis, classifier: str) -> int:
    """Forget a classifier's baseline, window and verdict: the monitor learns its reference again from the next
    results. For a change that is the new normal (a model upgraded, a tenant onboarded with another mix of
    languages), which would otherwise hold the monitor tripped for good. Returns the keys deleted."""
    keys = [k async for k in client.scan_iter(f"triage:drift:{classifier}:*", count=100)]
    return int(await client.delete(*keys)) if keys else 0
