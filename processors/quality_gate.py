"""gate: check a draft before a customer sees it.

A judge model scores it, and checks in code that never trust the judge (non-empty, cites only the tenant's
own documents given to the writer) must pass as well. A failing draft goes back to the stronger writer
(bounded by ``max_regenerations``, counted in the ``hops`` header), then to a human with the scores.
"""
from __future__ import annotations

import re
from typing import Any

from processors import prompts
from processors.case import evolve
from processors.generate import hops, question_key
from processors.injection import leaks_prompt, mentions_other_tenant, quotes_documents
from streams.errors import InvalidModelOutput, StateError
from streams.records import Emit, Record
from streams.step import StepContext
from processors.topology import DRAFTS, ENRICHED, ESCALATIONS, RESPONSES

_CITE = re.compile(r"\[([A-Za-z0-9][\w.-]*)\]")


def judge_validator(doc: dict[str, Any]) -> tuple[float, bool, dict[str, bool]]:
    score, passed, checks = doc.get("score"), doc.get("passed"), doc.get("checks", {})
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        raise InvalidModelOutput(f"judge score {score!r} is not a number in [0, 1]")
    if not isinstance(passed, bool):
        raise InvalidModelOutput(f"judge verdict {passed!r} is not a boolean")
    if not isinstance(checks, dict) or not all(isinstance(v, bool) for v in checks.values()):
        raise InvalidModelOutput("judge checks must map names to booleans")
    return float(score), passed, {str(k): v for k, v in checks.items()}


def guard_checks(case: dict[str, Any], tenants: tuple[str, ...], foreign_docs: list[dict[str, Any]] | None = None,
                 own_docs: list[dict[str, Any]] | None = None) -> dict[str, bool]:
    """Checks the judge cannot overrule: what an obedient or confused model would leak. ``foreign_docs`` are
    the other tenants' documents: a reply quoting one (six words in a row that neither the ticket nor its own
    tenant's documents have) leaked it, whether or not it names that tenant."""
    reply = case.get("reply") or ""
    given = {d["doc_id"] for d in case.get("documents") or []}
    cited_in_text = set(_CITE.findall(reply))
    own = {f"{d.get('title', '')} {d.get('body', '')}" for d in [*(case.get("documents") or []), *(own_docs or [])]}
    customer = f"{case['ticket'].get('subject', '')} {case['ticket'].get('body', '')}"  # quoting it is fine
    return {
        "guard_non_empty": bool(reply.strip()),
        "guard_citations_given": set(case.get("citations") or []) <= given and cited_in_text <= given,
        "guard_no_prompt_leak": not leaks_prompt(reply),
        "guard_no_other_tenant": not mentions_other_tenant(reply, case["tenant_id"], tenants)
        and not quotes_documents(reply, foreign_docs or [], own, customer),
    }


class QualityGate:
    name = "gate"
    inputs = (DRAFTS,)
    stateful = False

    def __init__(self) -> None:
        # tenant -> (kb version, its documents): read through that tenant's own store, only to compare against
        self._kbs: dict[str, tuple[int, list[dict[str, Any]]]] = {}

    async def _kb_by_tenant(self, ctx: StepContext) -> dict[str, list[dict[str, Any]]]:
        """Every configured tenant's documents. Without Redis there is nothing to compare against (and no
        retrieval either); the name check still holds."""
        out: dict[str, list[dict[str, Any]]] = {}
        for other in ctx.settings.tenants:
            store = ctx.store(other)
            if store is None:
                continue
            try:
                version = await store.kb_version()
                cached = self._kbs.get(other)
                if cached is None or cached[0] != version:
                    cached = self._kbs[other] = (version, await store.kb_docs())
            except StateError:
                cached = self._kbs.get(other)  # the last copy read, if any
            out[other] = cached[1] if cached else []
        return out

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        case = record.value
        result = await ctx.models.complete_json(ctx.settings.policy("gate"), prompts.judge(case), judge_validator,
                                                memo=ctx.memo(record, case["tenant_id"]))
        score, passed, checks = result.value
        kbs = await self._kb_by_tenant(ctx)
        foreign = [d for t, docs in kbs.items() if t != case["tenant_id"] for d in docs]
        checks = {**checks, **guard_checks(case, ctx.settings.tenants, foreign, kbs.get(case["tenant_id"]))}
        passed = passed and all(checks.values())
        gate = {"score": score, "passed": passed, "checks": checks, "model": result.model}
        history = [*case.get("gate_history", []), gate]
        failed = ", ".join(k for k, v in checks.items() if not v)
        n = hops(record)
        if passed:
            out = evolve(case, f"gate: passed ({score:.2f})", calls=result.calls, tokens=result.tokens, gate=gate,
                         gate_history=history)
            store = ctx.store(case["tenant_id"])
            if ctx.settings.response_cache and store is not None and n == 0:
                try:
                    await store.cache_set("replies", question_key(case), {
                        "reply": case["reply"], "citations": case["citations"], "writer_model": case["writer_model"],
                        "documents": case["documents"]})
                except StateError:
                    pass  # a cache is an optimisation: the reply still goes out
            return [Emit(RESPONSES, out)]
        if n < ctx.settings.max_regenerations:
            out = evolve(case, f"gate: failed ({score:.2f}: {failed}); to the stronger writer", calls=result.calls,
                         tokens=result.tokens, gate=gate, gate_history=history, reply=None, citations=[])
            return [Emit(ENRICHED, out, headers={"hops": str(n + 1)})]
        out = evolve(case, f"gate: failed ({score:.2f}: {failed}) after {n} rewrites; to a human", calls=result.calls,
                     tokens=result.tokens, gate=gate, gate_history=history, route="human",
                     escalation_reason="QUALITY_GATE")
        return [Emit(ESCALATIONS, out, headers={"escalation.reason": "QUALITY_GATE"})]
