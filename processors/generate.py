"""generate: write the reply from the ticket and its tenant's documents.

The first pass uses the step's writer; a draft the quality gate sent back (``hops`` header > 0) is written
by the stronger writer. A reply that is empty or cites a document it was not given is invalid output: it is
retried, then dead-lettered, never passed on.
"""
from __future__ import annotations

from typing import Any, Callable

from processors import prompts
from processors.case import evolve
from streams.errors import InvalidModelOutput
from streams.records import Emit, Record
from streams.step import StepContext
from streams.topology import DRAFTS, ENRICHED

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


class Generate:
    name = "generate"
    inputs = (ENRICHED,)
    stateful = False

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        case = record.value
        strong = hops(record) > 0
        policy = ctx.settings.policy("generate-strong" if strong else "generate")
        validate = reply_validator({d["doc_id"] for d in case.get("documents") or []})
        result = await ctx.models.complete_json(policy, prompts.write(case), validate,
                                                memo=ctx.memo(record, case["tenant_id"]))
        reply, citations = result.value
        trail = f"generate: draft by {result.model}" + (f" citing {', '.join(citations)}" if citations else "")
        out = evolve(case, trail, calls=result.calls, tokens=result.tokens, reply=reply, citations=citations,
                     writer_model=result.model)
        return [Emit(DRAFTS, out)]
