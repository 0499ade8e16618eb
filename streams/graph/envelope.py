"""What travels between the steps of a compiled graph: one JSON record per input per step.

    {"correlation_id", "attempt", "origin", "input", "steps": {<every step upstream, and this one>: output|null}}
    {"correlation_id", "attempt", "origin", "failed": {"step", "reason", "error", "attempts", "source",
                                                       "consumed"}}

``origin`` is where the input was read (``<name>.in/partition/offset``): it tells two inputs that came with
one correlation ID apart, so each has its own join state and its own result. A failed step does not write a
dead letter itself: its marker travels downstream in place of an output (a step after it passes it on
without running), and the collector writes the one dead letter, to ``<name>.dlq.<step>``, with ``consumed``
(the exact text of what that step read) as its value. Two failing branches of one input thus give one dead
letter, never two.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streams.errors import MalformedInput

MARGIN_BYTES = 64 * 1024
"""What a record may hold beyond the step's input: a failure marker is the input's text and an error, so an
output is refused (OVERSIZED) once it comes within this of the runtime's output limit."""


@dataclass(frozen=True)
class Failure:
    step: str
    reason: str
    error: str
    attempts: int
    source: str
    """topic/partition/offset of the record the failed step consumed."""
    consumed: str
    """That record's value, as text (it was JSON), for the dead letter."""

    def doc(self) -> dict[str, Any]:
        return {"step": self.step, "reason": self.reason, "error": self.error, "attempts": self.attempts,
                "source": self.source, "consumed": self.consumed}

    @classmethod
    def of(cls, doc: dict[str, Any]) -> "Failure":
        return cls(str(doc["step"]), str(doc["reason"]), str(doc["error"]), int(doc["attempts"]),
                   str(doc["source"]), str(doc["consumed"]))


@dataclass(frozen=True)
class Envelope:
    correlation_id: str
    attempt: int
    origin: str
    input: dict[str, Any] | None
    steps: dict[str, Any]
    failed: Failure | None = None
    missing: tuple[str, ...] = ()
    """Dependencies a join stopped waiting for (its partial timeout), upstream of here: their outputs are None."""

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"correlation_id": self.correlation_id, "attempt": self.attempt, "origin": self.origin}
        if self.failed is not None:
            doc["failed"] = self.failed.doc()
        else:
            doc["input"] = self.input
            doc["steps"] = self.steps
            if self.missing:
                doc["missing"] = list(self.missing)
        return dumps(doc)

    def with_step(self, name: str, output: Any) -> "Envelope":
        return Envelope(self.correlation_id, self.attempt, self.origin, self.input, {**self.steps, name: output},
                        missing=self.missing)

    def failing(self, failure: Failure) -> "Envelope":
        return Envelope(self.correlation_id, self.attempt, self.origin, None, {}, failure)


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON. Raises ValueError for what JSON cannot carry (NaN, a lone surrogate, a set...)."""
    try:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, UnicodeEncodeError, RecursionError) as exc:
        raise ValueError(f"not JSON: {type(exc).__name__}: {exc}") from exc


def decode(raw: bytes | None) -> Envelope:
    """An envelope written by a step of the graph. MalformedInput when it is not one."""
    try:
        doc = json.loads((raw or b"").decode("utf-8"))
        failed = doc.get("failed")
        return Envelope(str(doc["correlation_id"]), int(doc["attempt"]), str(doc["origin"]),
                        doc.get("input"), dict(doc.get("steps") or {}), Failure.of(failed) if failed else None,
                        tuple(str(m) for m in doc.get("missing") or ()))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise MalformedInput(f"not a record of this graph: {type(exc).__name__}: {exc}") from exc


def parse_input(raw: bytes | None) -> dict[str, Any]:
    """The JSON object produced to ``<name>.in``. MalformedInput (or EncodingError) naming what is wrong."""
    from streams.errors import EncodingError
    if not raw:
        raise MalformedInput("empty value: the input must be a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EncodingError(f"input is not UTF-8: {exc}") from exc
    try:
        doc = json.loads(text)
    except RecursionError:
        raise MalformedInput("input JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise MalformedInput(f"input is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedInput(f"input must be a JSON object, not {type(doc).__name__}")
    try:
        dumps(doc)
    except ValueError as exc:
        raise EncodingError(f"input cannot be carried as JSON: {exc}") from exc
    return doc


def replay_target(input_topic: str, source_topic: str, raw: bytes | None) -> tuple[str, bytes | None]:
    """Where a replayed dead letter goes, and with what: always the graph's input, as a new attempt of the whole
    graph. A later step's dead letter holds the envelope it consumed, whose ``input`` is the original input;
    replayed into that step's own topic it would meet joins whose other branches never come again."""
    if source_topic == input_topic:
        return input_topic, raw
    try:
        doc = json.loads((raw or b"").decode("utf-8"))
        original = doc["input"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the dead letter holds no envelope with the input ({exc})") from None
    return input_topic, json.dumps(original, ensure_ascii=False, separators=(",", ":")).encode()
