"""What the gateway makes of a chat completion as an OpenAI-compatible server sent it, without a server."""
from __future__ import annotations

import json


def test_tool_call_arguments_sent_as_an_object_are_read_and_others_are_invalid_output() -> None:
    """The API sends a tool call's arguments as JSON text; some compatible servers send the object itself.
    Anything else is invalid output (retried, then the fallback chain), not a crash dead-lettered as INTERNAL."""
    import pytest

    from streams.errors import InvalidModelOutput
    from streams.models import _Message

    def completion(arguments: object) -> dict:
        call = {"id": "c1", "type": "function", "function": {"name": "search_kb", "arguments": arguments}}
        return {"choices": [{"message": {"content": None, "tool_calls": [call]}}], "usage": {"total_tokens": 3}}

    for args in ('{"query": "refund"}', {"query": "refund"}):
        message, _ = _Message.of_completion(completion(args))
        assert json.loads(message.tool_calls[0].function.arguments) == {"query": "refund"}
    for bad in (7, ["refund"]):
        with pytest.raises(InvalidModelOutput):
            _Message.of_completion(completion(bad))
