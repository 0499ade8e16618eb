"""The one door to shared state in Redis, scoped to one tenant.

Every key this module builds starts with ``triage:{<tenant>}:`` and every value it stores names its tenant;
a read whose value names another tenant raises ``GuardTripped(TENANT_MISMATCH)`` instead of returning it.
No code outside this module builds a Redis key for tenant data, so one tenant's data cannot reach another's
answer through a key typo or a colliding correlation ID. Redis errors are translated here into StateError.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streams.errors import GuardTripped, StateError
from streams.redis_coalesce import CoalescingRedis

_TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MEMO_TTL_S = 24 * 3600


def connect(url: str, max_connections: int = 32) -> aioredis.Redis:
    """A pooled async client whose commands go out one pipeline per loop turn (see streams.redis_coalesce).
    Short timeouts: a step degrades (memo miss) rather than hang on a dead Redis."""
    # A bounded pool that waits for a free connection: hundreds of records in flight per worker would otherwise
    # open hundreds of connections each and exhaust the server's maxclients.
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5, socket_timeout=2.0,
                                                    socket_connect_timeout=2.0, health_check_interval=10)
    return CoalescingRedis(connection_pool=pool)


class TenantStore:
    """State of exactly one tenant. Cheap to build: one per record."""

    def __init__(self, client: aioredis.Redis, tenant: str) -> None:
        if not _TENANT_RE.match(tenant or ""):
            raise GuardTripped(f"invalid tenant id {tenant!r}", code="TENANT_INVALID")
        self._r = client
        self.tenant = tenant
        # Hash tag: one tenant's keys land on one Redis Cluster slot.
        self._prefix = f"triage:{{{tenant}}}:"

    def key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _wrap(self, payload: Any) -> bytes:
        return json.dumps({"tenant": self.tenant, "v": payload}, separators=(",", ":")).encode()

    def _unwrap(self, raw: bytes | None, key: str) -> Any:
        if raw is None:
            return None
        doc = json.loads(raw)
        if doc.get("tenant") != self.tenant:
            raise GuardTripped(f"{key} holds data of another tenant", code="TENANT_MISMATCH")
        return doc["v"]

    # --- memo of model calls -------------------------------------------------------------------------
    async def memo_get(self, step: str, correlation_id: str, attempt: int, digest: str) -> Any:
        key = self.key("memo", step, correlation_id, str(attempt), digest)
        try:
            raw = await self._r.get(key)
        except RedisError as exc:
            raise StateError(f"memo read failed: {exc}") from exc
        return self._unwrap(raw, key)

    async def memo_set(self, step: str, correlation_id: str, attempt: int, digest: str, value: Any) -> None:
        key = self.key("memo", step, correlation_id, str(attempt), digest)
        try:
            await self._r.set(key, self._wrap(value), ex=MEMO_TTL_S)
        except RedisError as exc:
            raise StateError(f"memo write failed: {exc}") from exc

    # --- response cache (opt-in) --------------------------------------------------------------------
    async def cache_get(self, kind: str, key: str) -> Any:
        k = self.key("cache", kind, key)
        try:
            raw = await self._r.get(k)
        except RedisError as exc:
            raise StateError(f"cache read failed: {exc}") from exc
        return self._unwrap(raw, k)

    async def cache_set(self, kind: str, key: str, value: Any, ttl_s: int = 3600) -> None:
        try:
            await self._r.set(self.key("cache", kind, key), self._wrap(value), ex=ttl_s)
        except RedisError as exc:
            raise StateError(f"cache write failed: {exc}") from exc

    # --- knowledge base ------------------------------------------------------------------------------
    async def kb_replace(self, docs: Iterable[dict[str, Any]]) -> int:
        """Replace this tenant's knowledge base. Refuses documents of another tenant."""
        docs = list(docs)
        for d in docs:
            if d.get("tenant_id", self.tenant) != self.tenant:
                raise GuardTripped(f"document {d.get('doc_id')} belongs to {d.get('tenant_id')}, not {self.tenant}",
                                   code="TENANT_MISMATCH")
        key = self.key("kb", "docs")
        try:
            async with self._r.pipeline(transaction=True) as p:
                p.delete(key)
                for d in docs:
                    p.hset(key, d["doc_id"], self._wrap({k: d[k] for k in ("doc_id", "title", "body")}))
                p.incr(self.key("kb", "version"))
                await p.execute()
        except RedisError as exc:
            raise StateError(f"knowledge base write failed: {exc}") from exc
        return len(docs)

    async def kb_version(self) -> int:
        try:
            raw = await self._r.get(self.key("kb", "version"))
        except RedisError as exc:
            raise StateError(f"knowledge base read failed: {exc}") from exc
        return int(raw or 0)

    async def kb_docs(self) -> list[dict[str, Any]]:
        key = self.key("kb", "docs")
        try:
            raw = await self._r.hgetall(key)
        except RedisError as exc:
            raise StateError(f"knowledge base read failed: {exc}") from exc
        return [self._unwrap(v, key) for _, v in sorted(raw.items())]
