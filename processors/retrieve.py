"""retrieve: add the tenant's knowledge-base context, only when the ticket needs it.

Skipped for short tickets and trivial intents (cost guard). The search reads only the ticket's own tenant's
documents, through its TenantStore; an index is cached per tenant and rebuilt when the KB version changes.
"""
from __future__ import annotations

from processors.case import evolve, label
from processors.kb_search import Index
from streams.errors import StateError
from streams.records import Emit, Record
from streams.step import StepContext
from processors.topology import ENRICHED, ROUTED


def needs_retrieval(case: dict, *, min_chars: int, skip_intents: tuple[str, ...]) -> tuple[bool, str]:
    intent = label(case, "intent")
    if intent in skip_intents:
        return False, f"skipped:{intent}"
    text = case["ticket"]["body"]
    if len(text.strip()) < min_chars:
        return False, "skipped:short"
    return True, "used"


class Retrieve:
    name = "retrieve"
    inputs = (ROUTED,)
    stateful = False

    def __init__(self) -> None:
        # tenant -> (kb version, index). Keyed by tenant, so one tenant's index never serves another.
        self._indexes: dict[str, tuple[int, Index]] = {}

    async def _index(self, ctx: StepContext, tenant: str) -> Index:
        store = ctx.store(tenant)
        if store is None:
            raise StateError("retrieval needs Redis, and no Redis is configured")
        version = await store.kb_version()
        cached = self._indexes.get(tenant)
        if cached is not None and cached[0] == version:
            return cached[1]
        index = Index.build(await store.kb_docs())
        self._indexes[tenant] = (version, index)
        return index

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        case = record.value
        s = ctx.settings
        needed, why = needs_retrieval(case, min_chars=s.retrieval_min_chars, skip_intents=s.retrieval_skip_intents)
        if not needed:
            return [Emit(ENRICHED, evolve(case, f"retrieve: {why}", retrieval=why))]
        index = await self._index(ctx, case["tenant_id"])
        query = " ".join(filter(None, [case["ticket"]["subject"], case["ticket"]["body"], label(case, "intent")]))
        hits = index.search(query, k=s.retrieval_top_k)
        docs = [{"doc_id": d["doc_id"], "title": d["title"], "body": d["body"], "score": round(score, 4)}
                for d, score in hits]
        trail = f"retrieve: {len(docs)} documents" + (f" ({', '.join(d['doc_id'] for d in docs)})" if docs else "")
        return [Emit(ENRICHED, evolve(case, trail, retrieval="used", documents=docs))]
