"""The generator's agent loop: the writer may call tools (a search of its tenant's knowledge base) through
OpenAI tool calling, under three guards that end every loop:

- a hard cap on tool calls per ticket (``LOOP_CAP``);
- a repetition detector: the same tool with the same or near-same arguments twice (``LOOP_REPEAT``);
- a per-ticket budget of model calls and tokens across all steps (``BUDGET``).

A guard raises GuardTripped with the trail of calls; the generator escalates the ticket with that reason,
never a half-result.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from streams.config import LoopGuards
from streams.errors import GuardTripped, InvalidModelOutput

SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "search_kb",
        "description": "Search the customer's company knowledge base. Returns up to 3 documents.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Loop:
    guards: LoopGuards
    spent_calls: int
    spent_tokens: int
    trail: list[str] = field(default_factory=list)
    calls: int = 0
    tokens: int = 0
    tool_calls: int = 0
    _seen: list[tuple[str, frozenset[str]]] = field(default_factory=list)

    def new_conversation(self) -> None:
        """A retry, or the next model of the chain, starts the conversation over: making a search the failed
        attempt made is not a loop. The cap and the budget still count the whole ticket's calls."""
        self._seen.clear()

    def charge(self, calls: int, tokens: int) -> None:
        self.calls += calls
        self.tokens += tokens

    def check_budget(self) -> None:
        if self.spent_calls + self.calls + 1 > self.guards.max_calls:
            raise self._trip("BUDGET", f"the next model call would exceed {self.guards.max_calls} calls for this ticket")
        if self.spent_tokens + self.tokens > self.guards.max_tokens:
            raise self._trip("BUDGET", f"{self.spent_tokens + self.tokens} tokens spent; the budget is {self.guards.max_tokens}")

    def check_tool_call(self, name: str, arguments: dict[str, Any]) -> None:
        words = frozenset(w.lower() for w in _WORD.findall(json.dumps(arguments, sort_keys=True, ensure_ascii=False)))
        self.trail.append(f"tool {name}({json.dumps(arguments, ensure_ascii=False)[:120]})")
        for prev_name, prev in self._seen:
            union = words | prev
            if prev_name == name and (not union or len(words & prev) / len(union) >= self.guards.near_same):
                raise self._trip("LOOP_REPEAT", f"{name} called again with the same arguments")
        self._seen.append((name, words))
        self.tool_calls += 1
        if self.tool_calls > self.guards.max_tool_calls:
            raise self._trip("LOOP_CAP", f"more than {self.guards.max_tool_calls} tool calls")

    def _trip(self, code: str, message: str) -> GuardTripped:
        exc = GuardTripped(message, code=code)
        exc.trail = list(self.trail)  # type: ignore[attr-defined]
        exc.calls, exc.tokens = self.calls, self.tokens  # type: ignore[attr-defined]
        return exc


Call = Callable[[list[dict[str, Any]]], Awaitable[tuple[Any, str, int, int]]]
"""(messages) -> (assistant message, model, calls made, tokens)."""
Tool = Callable[[str], Awaitable[list[dict[str, Any]]]]


async def run_loop(call: Call, search: Tool, messages: list[dict[str, Any]], loop: Loop) -> tuple[str, str]:
    """Drive the writer until it answers without a tool call. Returns (answer content, model)."""
    messages = list(messages)
    loop.new_conversation()
    while True:
        loop.check_budget()
        message, model, calls, tokens = await call(messages)
        loop.charge(calls, tokens)
        tool_calls = getattr(message, "tool_calls", None) or []
        if not tool_calls:
            loop.trail.append(f"answer by {model}")
            return message.content or "", model
        messages.append({"role": "assistant", "content": message.content or "",
                         "tool_calls": [{"id": tc.id, "type": "function",
                                         "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
                                        for tc in tool_calls]})
        for tc in tool_calls:
            try:
                args = json.loads(tc.function.arguments or "{}")
            except json.JSONDecodeError as exc:
                raise InvalidModelOutput(f"tool arguments are not JSON: {exc}") from exc
            if not isinstance(args, dict):
                raise InvalidModelOutput("tool arguments must be a JSON object")
            loop.check_tool_call(tc.function.name, args)
            if tc.function.name != "search_kb":
                result: Any = {"error": f"unknown tool {tc.function.name}"}
            else:
                result = await search(str(args.get("query", "")))
            messages.append({"role": "tool", "tool_call_id": tc.id, "content": json.dumps(result, ensure_ascii=False)})
