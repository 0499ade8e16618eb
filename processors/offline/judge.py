"""The offline judge: five cheap, explainable checks on a draft reply.

``judge(ticket, draft, documents)`` returns ``{"score", "passed", "checks"}``: score is the fraction of
checks passed, passed means all of them did. The tone check fails an angry ticket's reply that does
not apologise, which is what sends the weak writer's drafts to the strong one.
"""
from __future__ import annotations

import re
from typing import Any

from processors.offline import lexicon
from processors.offline.matching import TermMatcher, normalise
from processors.offline.write import language_of

_MIN_REPLY_CHARS = 20
_CITATION = re.compile(r"\[([A-Za-z0-9][\w.:-]*)\]")
_APOLOGY = {lang: TermMatcher({"apology": terms}) for lang, terms in lexicon.APOLOGY_MARKERS.items()}

CHECKS = ("non_empty", "grounded", "no_foreign_citation", "tone", "language")


def judge(ticket: dict[str, Any], draft: dict[str, Any], documents: list[dict[str, Any]]) -> dict[str, Any]:
    """Scores ``draft`` (``{"reply": str, "citations": [doc_id, ...]}``) for ``ticket``.

    ``ticket`` needs language and sentiment; ``documents`` are the ones the writer was given (each with
    doc_id). Returns ``{"score": float in [0, 1], "passed": bool, "checks": {name: bool}}``.
    """
    reply = draft.get("reply") if isinstance(draft.get("reply"), str) else ""
    citations = [c for c in draft.get("citations") or [] if isinstance(c, str)]
    known = {d.get("doc_id") for d in documents if d.get("doc_id")}
    lang = language_of(ticket)

    grounded = len(citations) == len(draft.get("citations") or []) and all(c in known for c in citations)
    if known:
        grounded = grounded and bool(citations)
    tone = True
    if ticket.get("sentiment") == "angry":
        tone = bool(_APOLOGY[lang].hits(normalise(reply)))

    checks = {
        "non_empty": len(reply.strip()) >= _MIN_REPLY_CHARS,
        "grounded": grounded,
        "no_foreign_citation": all(ref in known for ref in _CITATION.findall(reply)),
        "tone": tone,
        "language": reply.lstrip().startswith(lexicon.GREETING_PREFIXES[lang]),
    }
    score = sum(checks.values()) / len(checks)
    return {"score": round(score, 3), "passed": all(checks.values()), "checks": checks}
