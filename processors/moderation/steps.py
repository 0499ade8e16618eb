"""The moderation pipeline's steps: plain functions ``step(post, deps) -> dict``.

A post is a JSON object: ``{"post_id", "tenant_id"?, "text", "links"?: [url...], "image_description"?,
"transcript"?}``. A check of a part the post does not have is skipped (its output is ``None``).
"""
from __future__ import annotations

from typing import Any

from processors.moderation import rules
from streams.errors import SchemaInvalid

CHECKS = ("toxicity", "links", "image", "transcript")


def _text(post: dict[str, Any], field: str) -> str:
    value = post.get(field)
    if not isinstance(value, str):
        raise SchemaInvalid(f"{field!r} must be a string, got {type(value).__name__}")
    return value


def toxicity(post: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    return rules.toxicity(_text(post, "text"))


def links(post: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    urls = post.get("links") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise SchemaInvalid("'links' must be a list of strings")
    return rules.link_reputation(urls)


def has_image(post: dict[str, Any], deps: dict[str, Any]) -> bool:
    return bool(post.get("image_description"))


def image(post: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    return rules.image_safety(_text(post, "image_description"))


def has_transcript(post: dict[str, Any], deps: dict[str, Any]) -> bool:
    return bool(post.get("transcript"))


def transcript(post: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    return rules.hate_speech(_text(post, "transcript"))


def cannot_answer(post: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    """The fallback of every check: no verdict, which holds the post (fail closed)."""
    return {"ok": None, "score": None, "reasons": ["the check could not answer"]}


def decide(post: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    """Published only if every check that ran passed; a check without a verdict holds the post."""
    failing = sorted(name for name in CHECKS if deps.get(name) is not None and deps[name].get("ok") is not True)
    reasons = [r for name in failing for r in deps[name].get("reasons", [])]
    return {"verdict": "held" if failing else "published", "failing": failing, "reasons": reasons[:20],
            "skipped": sorted(name for name in CHECKS if deps.get(name) is None)}


def outcome(result: dict[str, Any]) -> str:
    """Which terminal topic a finished post goes to: ``published`` or ``held``."""
    return (result["steps"].get("decide") or {}).get("verdict", "held")
