"""A classifier that fails for good passes a failed classification on to the join (which names the missing
label and lets the router's policy decide) instead of dead-lettering: the ticket then ends once."""
from __future__ import annotations

from processors.classify import Classify
from streams import avro
from streams.records import Record
from processors.topology import CLASSIFIED, TOPIC_SCHEMA


def _record(value: object, headers: dict[str, str]) -> Record:
    return Record("tickets.valid", 0, 7, headers.get("correlation_id"), b"raw", headers, 0, value)


def test_a_failure_becomes_a_failed_classification_the_join_can_place() -> None:
    case = {"correlation_id": "c-1", "tenant_id": "acme"}
    [emit] = Classify("intent").on_failure(_record(case, {"attempt": "2"}), "STEP_TIMEOUT", "not done in 60s") or []
    assert (emit.topic, emit.key) == (CLASSIFIED, "c-1")
    assert emit.value["ok"] is False and emit.value["label"] is None
    assert (emit.value["classifier"], emit.value["tenant_id"], emit.value["error_code"]) == ("intent", "acme",
                                                                                           "STEP_TIMEOUT")
    avro.decode(avro.encode(TOPIC_SCHEMA[CLASSIFIED], emit.value), TOPIC_SCHEMA[CLASSIFIED])  # a valid record


def test_an_undecodable_record_is_placed_by_its_headers_or_dead_lettered() -> None:
    classify = Classify("language")
    [emit] = classify.on_failure(_record(None, {"correlation_id": "c-2", "tenant_id": "globex"}), "INTERNAL", "x") or []
    assert (emit.value["correlation_id"], emit.value["tenant_id"]) == ("c-2", "globex")
    assert classify.on_failure(_record(None, {}), "INTERNAL", "no identity") is None

