"""The offline recommenders and the rule that picks one answer: ``step(request, deps) -> dict``.

A request is ``{"user_id", "history": [item id...], "session"?: [item id...], "limit"?: int}``. Each
recommender answers ``{"items": [...], "confidence": 0..1}``; one that fails for good answers
``{"failed": reason}`` through its fallback, and the result says so.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from processors.recommend.catalog import BASKETS, ITEMS
from streams.errors import SchemaInvalid

RECOMMENDERS = ("collaborative", "content", "session", "trending")
THRESHOLD = 0.5
"""Under this confidence no recommender's answer is taken; popularity answers instead."""


def _ids(request: dict[str, Any], field: str, required: bool = False) -> list[str]:
    value = request.get(field)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SchemaInvalid(f"{field!r} must be a list of item ids")
    return [v for v in value if v in ITEMS]


def _limit(request: dict[str, Any]) -> int:
    n = request.get("limit", 3)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 20:
        raise SchemaInvalid("'limit' must be an integer from 1 to 20")
    return n


def _answer(scores: Counter[str], seen: set[str], limit: int, confidence: float) -> dict[str, Any]:
    ranked = [i for i, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])) if i not in seen][:limit]
    return {"items": ranked, "confidence": round(confidence if ranked else 0.0, 3)}


def collaborative(request: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    history = set(_ids(request, "history", required=True))
    scores: Counter[str] = Counter()
    for basket in BASKETS:
        overlap = len(basket & history)
        for item in basket - history:
            scores[item] += overlap
    evidence = sum(scores.values())
    return _answer(+scores, history, _limit(request), min(0.95, evidence / 6))


def content(request: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    history = _ids(request, "history", required=True)
    liked: Counter[str] = Counter(t for i in history for t in ITEMS[i].tags)
    scores: Counter[str] = Counter({i: sum(liked[t] for t in item.tags) for i, item in ITEMS.items()
                                    if i not in history})
    top = max(scores.values(), default=0)
    return _answer(+scores, set(history), _limit(request), min(0.9, top / (3 * max(1, len(history)))))


def session(request: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    recent = _ids(request, "session")
    if not recent:
        return {"items": [], "confidence": 0.0}
    tags = ITEMS[recent[-1]].tags
    scores: Counter[str] = Counter({i: len(item.tags & tags) for i, item in ITEMS.items()})
    seen = {*recent, *_ids(request, "history")}  # nothing the user already has
    return _answer(+scores, seen, _limit(request), 0.6 if len(recent) >= 2 else 0.4)


def trending(request: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    seen = set(_ids(request, "history", required=True))
    scores: Counter[str] = Counter({i: item.recent for i, item in ITEMS.items()})
    return _answer(scores, seen, _limit(request), 0.3)


def unavailable(request: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    """Every recommender's fallback: no answer, and why."""
    return {"failed": "no answer after its retries"}


def pick(request: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    """The most confident answer at or over the threshold (ties: the first in RECOMMENDERS), or none."""
    answers = {n: deps.get(n) for n in RECOMMENDERS}
    failed = {n: a["failed"] for n, a in answers.items() if isinstance(a, dict) and "failed" in a}
    usable = [(a["confidence"], -RECOMMENDERS.index(n), n) for n, a in answers.items()
              if isinstance(a, dict) and "failed" not in a and a.get("items")]
    best = max(usable, default=None)
    if best is None or best[0] < THRESHOLD:
        return {"answered_by": None, "items": [], "confidence": best[0] if best else 0.0, "failed": failed}
    name = best[2]
    return {"answered_by": name, "items": answers[name]["items"], "confidence": best[0], "failed": failed}


def nobody_confident(request: dict[str, Any], deps: dict[str, Any]) -> bool:
    return (deps.get("pick") or {}).get("answered_by") is None


def popular(request: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    seen = set(_ids(request, "history"))
    ranked = sorted((i for i in ITEMS if i not in seen), key=lambda i: (-ITEMS[i].popularity, i))
    return {"items": ranked[:_limit(request)], "confidence": 1.0}


def answer(request: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    chosen = deps.get("pick") or {}
    if chosen.get("answered_by"):
        return {"answered_by": chosen["answered_by"], "items": chosen["items"], "confidence": chosen["confidence"],
                "failed": chosen.get("failed", {})}
    fallback = deps.get("popular") or {"items": []}
    return {"answered_by": "popular", "items": fallback["items"], "confidence": chosen.get("confidence", 0.0),
            "failed": chosen.get("failed", {})}
