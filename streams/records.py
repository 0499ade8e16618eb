"""What a step receives and returns. Steps see decoded values and headers, never a consumer or Avro."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

log = logging.getLogger("triage.records")

# Headers every record carries from the first step to its terminal topic.
CARRIED_HEADERS = ("correlation_id", "tenant_id", "attempt", "traceparent", "hops", "entered_ms")
ENTERED_HEADER = "entered_ms"
"""When the record first entered the pipeline: the input's timestamp, stamped by the first step's outputs and
carried to the end (a replay keeps it: the end-to-end time of a ticket includes its time in the human queue)."""


@dataclass(frozen=True)
class Record:
    """One consumed Kafka record. ``value`` is decoded from the topic's schema; ``raw`` keeps the bytes."""

    topic: str
    partition: int
    offset: int
    key: str | None
    raw: bytes | None
    headers: Mapping[str, str]
    timestamp_ms: int
    value: Any = None

    @property
    def attempt(self) -> int:
        try:
            return max(1, int(self.headers.get("attempt", "1")))
        except ValueError:
            return 1

    @property
    def correlation_id(self) -> str:
        return self.headers.get("correlation_id") or self.key or ""

    @property
    def tenant_id(self) -> str:
        return self.headers.get("tenant_id", "")


@dataclass(frozen=True)
class Emit:
    """One output. ``value`` is a record of the topic's schema (encoded by the runtime), or bytes as-is.

    ``key`` defaults to the input's key; ``headers`` are added on top of the carried ones.
    """

    topic: str
    value: Any
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    partition: int | None = None
    """Only for changelogs, which must sit on the input's partition; otherwise the key decides."""


def decode_key(key: bytes | None) -> str | None:
    """A record key as text. Keys that are not UTF-8 (a Java LongSerializer's, say) are spelt in hex: decoding
    them with replacement characters would give distinct keys, distinct tickets, one correlation ID."""
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + key.hex()


def message_headers(msg: Any) -> dict[str, str]:
    """A consumed message's headers as text; none when they cannot be read (a header name that is not UTF-8
    makes confluent-kafka's headers() raise), so one odd record cannot stop the loop that reads it."""
    try:
        return decode_headers(msg.headers())
    except Exception:  # noqa: BLE001 - see above
        log.warning("unreadable record headers; taken as none", extra={"fields": {
            "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}})
        return {}


def decode_headers(raw: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in raw or ():
        if v is None:
            out[k] = ""
            continue
        out[k] = v.decode("utf-8", errors="replace")
    return out
