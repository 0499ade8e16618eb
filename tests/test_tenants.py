"""No customer's state reaches another: 1,000 tickets of two tenants interleaved at full speed, some pairs
sharing a correlation ID across tenants, on the real broker and Redis."""
from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import defaultdict

import pytest

from streams.client import TicketProducer, read
from processors.topology import RESPONSES, terminal_topics
from tests.harness import Stack, kb_docs, sample_tickets, value

pytestmark = pytest.mark.kafka
N = 1000


def _sentences(tenant: str) -> set[str]:
    return {s.strip().rstrip(".;") for d in kb_docs(tenant) for s in re.split(r"(?<=[.;])\s+", d["body"]) if len(s) > 25}


def test_interleaved_tenants_with_colliding_ids_never_mix(pipeline: Stack) -> None:
    rows = sample_tickets()
    acme = [r for r in rows if r["tenant_id"] == "acme"][: N // 2]
    globex = [r for r in rows if r["tenant_id"] == "globex"][: N // 2]
    p = TicketProducer(pipeline.bootstrap)
    sent: dict[tuple[str, str], dict] = {}
    for i, (a, g) in enumerate(zip(acme, globex)):
        # Every fourth pair shares one correlation ID across the two tenants.
        ca = f"tenant-{uuid.uuid4()}"
        cg = ca if i % 4 == 0 else f"tenant-{uuid.uuid4()}"
        p.send(a, correlation_id=ca)
        p.send(g, correlation_id=cg)
        sent[(ca, "acme")], sent[(cg, "globex")] = a, g
    p.flush()
    assert len(sent) == N and len({c for c, _ in sent}) == N - N // 8

    pending = set(sent)

    def done(o) -> bool:  # noqa: ANN001
        pending.discard((o.headers.get("correlation_id"), o.headers.get("tenant_id")))
        return not pending

    for _ in read(pipeline.bootstrap, terminal_topics(), timeout=600, stop=done):
        pass
    outcomes = defaultdict(list)
    for o in read(pipeline.bootstrap, terminal_topics(), timeout=120, idle=3):
        key = (o.headers.get("correlation_id"), o.headers.get("tenant_id"))
        if key in sent:
            outcomes[key].append(o)
    assert set(outcomes) == set(sent), f"{len(set(sent) - set(outcomes))} tickets lost"
    assert all(len(v) == 1 for v in outcomes.values()), "a ticket reached two outcomes"

    foreign = {"acme": _sentences("globex"), "globex": _sentences("acme")}
    replies = 0
    for (cid, tenant), (o,) in outcomes.items():
        case = value(o)
        assert case["tenant_id"] == tenant and case["correlation_id"] == cid
        assert case["ticket"]["ticket_id"] == sent[(cid, tenant)]["ticket_id"], "state of another ticket"
        assert all(d["doc_id"].startswith(tenant + "-") for d in case["documents"])
        if o.topic == RESPONSES:
            replies += 1
            leaked = [s for s in foreign[tenant] if s in case["reply"]]
            assert not leaked, f"{tenant} reply quotes the other tenant: {leaked}"
            assert all(c.startswith(tenant + "-") for c in case["citations"])
    assert replies > N // 2

    # Every value stored under a tenant's namespace in Redis belongs to that tenant.
    async def audit() -> dict[str, int]:
        from streams.tenant_state import connect
        r = connect(pipeline.settings.redis_url)
        counts: dict[str, int] = defaultdict(int)
        try:
            async for key in r.scan_iter(match="triage:{*}:*", count=1000):
                k = key.decode()
                tenant = k.split("{", 1)[1].split("}", 1)[0]
                kind = await r.type(key)
                values = [await r.get(key)] if kind == b"string" else list((await r.hgetall(key)).values()) if kind == b"hash" else []
                for v in values:
                    if v and v[:1] == b"{":
                        assert json.loads(v)["tenant"] == tenant, f"{k} holds another tenant's data"
                        counts[tenant] += 1
        finally:
            await r.aclose()
        return counts

    counts = asyncio.run(audit())
    assert counts["acme"] > 100 and counts["globex"] > 100, counts
