"""generate: write the reply from the ticket and its tenant's documents.

The writer may call ``search_kb`` (its own tenant's knowledge base only) through tool calling, inside the
guarded loop of :mod:`processors.tool_loop`; a guard that ends the loop escalates the ticket with its reason
(LOOP_CAP, LOOP_REPEAT, BUDGET) and the trail of calls. The first pass uses the step's writer; a draft the
gate sent back (``hops`` > 0) is written by the stronger writer. A reply that is empty or cites a document it
was not given is invalid: retried, then the next model of the chain, then the dead-letter topic.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

from processors import prompts
from processors.case import evolve
from processors.kb_search import Index
from processors.tool_loop import SEARCH_TOOL, Loop, run_loop
from streams import metrics
from streams.errors import GuardTripped, InvalidModelOutput, ModelError, StateError
from streams.models import parse_json
from streams.records import Emit, Record
from streams.step import StepContext
from processors.topology import DRAFTS, ENRICHED, ESCALATIONS

MIN_REPLY_CHARS = 20


def reply_validator(doc_ids: set[str]) -> Callable[[dict[str, Any]], tuple[str, list[str]]]:
    def check(doc: dict[str, Any]) -> tuple[str, list[str]]:
        reply = doc.get("reply")
        if not isinstance(reply, str) or len(reply.strip()) < MIN_REPLY_CHARS:
            raise InvalidModelOutput("the reply is empty or too short")
        cites = doc.get("citations", [])
        if not isinstance(cites, list) or not all(isinstance(c, str) for c in cites):
            raise InvalidModelOutput("citations must be a list of document ids")
        foreign = [c for c in cites if c not in doc_ids]
        if foreign:
            raise InvalidModelOutput(f"the reply cites documents it was not given: {', '.join(foreign)}")
        return reply.strip(), list(dict.fromkeys(cites))
    return check


def hops(record: Record) -> int:
    try:
        return max(0, int(record.headers.get("hops", "0")))
    except ValueError:
        return 0


def question_key(case: dict[str, Any]) -> str:
    text = " ".join(f"{case['ticket']['subject']} {case['ticket']['body']}".lower().split())
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Generate:
    name = "generate"
    inputs = (ENRICHED,)
    stateful = False

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        case = record.value
        strong = hops(record) > 0
        store = ctx.store(case["tenant_id"])
        if ctx.settings.response_cache and store is not None and not strong:
            cached = await _cache_get(store, question_key(case))
            if cached is not None:
                return [Emit(DRAFTS, evolve(case, "generate: reply from the tenant's response cache", **cached))]
        policy = ctx.settings.policy("generate-strong" if strong else "generate")
        documents = list(case.get("documents") or [])
        memo = ctx.memo(record, case["tenant_id"])
        loop = Loop(ctx.settings.loop, case.get("model_calls", 0), case.get("tokens", 0))

        async def search(query: str) -> list[dict[str, Any]]:
            if store is None:
                return []
            hits = Index.build(await store.kb_docs()).search(query, k=3)
            for d, score in hits:
                if d["doc_id"] not in {x["doc_id"] for x in documents}:
                    documents.append({**d, "score": round(score, 4)})
            return [{"doc_id": d["doc_id"], "title": d["title"], "body": d["body"]} for d, _ in hits]

        last: ModelError | None = None
        try:
            for model in policy.models:
                for attempt in range(policy.retry.attempts):
                    async def call(messages: list[dict[str, Any]], model: str = model,
                                   salt: str = str(attempt)) -> tuple[Any, str, int, int]:
                        message, calls, tokens = await ctx.models.chat(policy, model, messages, [SEARCH_TOOL], memo,
                                                                       salt)
                        return message, model, calls, tokens
                    try:
                        content, used = await run_loop(call, search, prompts.write(case), loop)
                        reply, citations = reply_validator({d["doc_id"] for d in documents})(parse_json(used, content))
                    except InvalidModelOutput as exc:
                        last = exc
                        continue
                    except ModelError as exc:
                        last = exc
                        break
                    return [self._draft(case, reply, citations, used, documents, loop, ctx, store)]
        except GuardTripped as exc:
            metrics.GUARD_TRIPS.labels(exc.code).inc()
            trail = [*case.get("trail", []), *(f"generate: {t}" for t in getattr(exc, "trail", []))]
            out = evolve({**case, "trail": trail}, f"generate: stopped by guard {exc.code}: {exc}",
                         calls=loop.calls, tokens=loop.tokens, route="human", escalation_reason=exc.code,
                         documents=documents)
            return [Emit(ESCALATIONS, out, headers={"escalation.reason": exc.code})]
        assert last is not None
        last.calls, last.tokens = loop.calls, loop.tokens  # type: ignore[attr-defined]
        raise last

    def _draft(self, case: dict[str, Any], reply: str, citations: list[str], model: str,
               documents: list[dict[str, Any]], loop: Loop, ctx: StepContext, store: Any) -> Emit:
        trail = f"generate: draft by {model}" + (f" citing {', '.join(citations)}" if citations else "")
        if loop.trail[:-1]:
            trail += f" after {'; '.join(loop.trail[:-1])}"
        out = evolve(case, trail, calls=loop.calls, tokens=loop.tokens, reply=reply, citations=citations,
                     writer_model=model, documents=documents)
        return Emit(DRAFTS, out, headers={"cache.key": question_key(case)} if ctx.settings.response_cache else {})


async def _cache_get(store: Any, key: str) -> dict[str, Any] | None:
    try:
        return await store.cache_get("replies", key)
    except StateError:
        return None
