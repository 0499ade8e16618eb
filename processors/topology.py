"""Topic and step names: the one place the shape of the pipeline is written down.

Terminal topics are ``tickets.responses``, ``tickets.escalations`` and ``tickets.dlq.<step>``: every ticket
that enters ``tickets.in`` reaches exactly one terminal record per attempt.
"""
from __future__ import annotations

from typing import Final, Literal

IN: Final = "tickets.in"
VALID: Final = "tickets.valid"
CLASSIFIED: Final = "tickets.classified"
JOINED: Final = "tickets.joined"
ROUTED: Final = "tickets.routed"
ENRICHED: Final = "tickets.enriched"
DRAFTS: Final = "tickets.drafts"
RESPONSES: Final = "tickets.responses"
ESCALATIONS: Final = "tickets.escalations"
JOIN_STATE: Final = "triage.join.state"
DLQ_REPLAYS: Final = "triage.dlq.replays"

Classifier = Literal["intent", "language", "priority", "sentiment"]
CLASSIFIERS: Final[tuple[Classifier, ...]] = ("intent", "language", "priority", "sentiment")

STEPS: Final[tuple[str, ...]] = (
    "ingest",
    "classify-intent",
    "classify-language",
    "classify-priority",
    "classify-sentiment",
    "join",
    "route",
    "retrieve",
    "generate",
    "gate",
)

# The Avro record each topic carries (tickets.in is JSON or Avro Ticket, decoded by ingest itself).
TOPIC_SCHEMA: Final[dict[str, str]] = {
    VALID: "dev.triage.Case",
    CLASSIFIED: "dev.triage.Classification",
    JOINED: "dev.triage.Case",
    ROUTED: "dev.triage.Case",
    ENRICHED: "dev.triage.Case",
    DRAFTS: "dev.triage.Case",
    RESPONSES: "dev.triage.Case",
    ESCALATIONS: "dev.triage.Case",
}


def dlq_topic(step: str) -> str:
    return f"tickets.dlq.{step}"


def group_id(step: str) -> str:
    return f"triage.{step}"


TERMINAL_FIXED: Final[tuple[str, ...]] = (RESPONSES, ESCALATIONS)


def terminal_topics() -> list[str]:
    return [*TERMINAL_FIXED, *(dlq_topic(s) for s in STEPS)]


def all_topics() -> list[str]:
    return [IN, VALID, CLASSIFIED, JOINED, ROUTED, ENRICHED, DRAFTS, RESPONSES, ESCALATIONS, JOIN_STATE, DLQ_REPLAYS,
            *(dlq_topic(s) for s in STEPS)]
