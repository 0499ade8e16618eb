"""The tasks of tests/graph_sample/pipeline.toml: deterministic, no model, each failure chosen by the input."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from streams.graph import TaskContext


def parse(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    text = str(input.get("text", "")).strip()
    return {"text": text, "words": len(text.split())}


def sentiment(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    words = deps["parse"]["text"].lower().split()
    score = sum(w in ("good", "great", "thanks") for w in words) - sum(w in ("bad", "broken", "angry") for w in words)
    return {"label": "positive" if score > 0 else "negative" if score < 0 else "neutral", "score": score}


def keywords(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    text = deps["parse"]["text"]
    if "boom" in text:
        raise ValueError("keywords cannot read a boom")
    return {"keywords": sorted({w.lower() for w in text.split() if len(w) > 4})[:5]}


def wants_lookup(input: dict[str, Any], deps: dict[str, Any]) -> bool:
    return bool(input.get("lookup"))


async def lookup(input: dict[str, Any], deps: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    if "slow" in deps["parse"]["text"]:
        await asyncio.sleep(5)  # far past the step's timeout_s of 0.5
    return {"found": deps["parse"]["words"] % 3, "by": ctx.step}


def answer(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    if "flaky" in input.get("text", ""):
        raise RuntimeError("the answer service is flaky")
    lookup = deps["lookup"]
    return {"text": f"{deps['sentiment']['label']}: {', '.join(deps['keywords']['keywords'])}",
            "looked_up": lookup is not None}


def canned_answer(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    return {"text": "canned", "looked_up": deps["lookup"] is not None}


def audit(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    if "audit-fail" in input.get("text", ""):
        raise KeyError("audit")
    time.sleep(0.001)  # a sync task runs on the step's threads
    return {"chars": len(deps["parse"]["text"])}
