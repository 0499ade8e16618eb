"""The writer's tool loop guards, without a model server: a repeat is a loop within one conversation; a retry
that starts the conversation over may search again, and the cap still counts the whole ticket."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from processors.tool_loop import GuardTripped, Loop, LoopGuards, run_loop


def _writer(script: list[str | None]) -> Any:
    """A model that, call after call, searches for the next query of ``script`` or (None) answers."""
    steps = iter(script)

    async def call(messages: list[dict[str, Any]]) -> tuple[Any, str, int, int]:
        query = next(steps)
        if query is None:
            return SimpleNamespace(content='{"reply": "done"}', tool_calls=None), "m", 1, 10
        tc = SimpleNamespace(id="t", function=SimpleNamespace(name="search_kb", arguments=f'{{"query": "{query}"}}'))
        return SimpleNamespace(content="", tool_calls=[tc]), "m", 1, 10
    return call


async def _search(query: str) -> list[dict[str, Any]]:
    return []


async def test_a_retry_may_search_again_what_the_failed_attempt_searched() -> None:
    loop = Loop(LoopGuards(max_tool_calls=5), 0, 0)
    await run_loop(_writer(["refund policy", None]), _search, [], loop)  # an answer the caller then rejects
    content, _ = await run_loop(_writer(["refund policy", None]), _search, [], loop)
    assert content == '{"reply": "done"}'


async def test_within_one_conversation_the_same_search_twice_is_a_loop() -> None:
    with pytest.raises(GuardTripped) as trip:
        await run_loop(_writer(["refund policy", "refund policy", None]), _search, [], Loop(LoopGuards(), 0, 0))
    assert trip.value.code == "LOOP_REPEAT"


async def test_the_cap_counts_the_tool_calls_of_every_attempt() -> None:
    loop = Loop(LoopGuards(max_tool_calls=3), 0, 0)
    await run_loop(_writer(["a", "b", None]), _search, [], loop)
    with pytest.raises(GuardTripped) as trip:
        await run_loop(_writer(["c", "d", None]), _search, [], loop)
    assert trip.value.code == "LOOP_CAP"
