"""Avro values in Confluent framing, and schema evolution: a new reader reads old records."""
from __future__ import annotations

import io
import json
import struct

import fastavro
import pytest

from schemas import SCHEMA_DIR
from streams import avro
from streams.errors import MalformedInput, SchemaInvalid, TriageError


def _v1_bytes(record: dict) -> bytes:
    schema = fastavro.parse_schema(json.loads((SCHEMA_DIR / "ticket.v1.avsc").read_text()), named_schemas={})
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, 1))
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def test_round_trip_uses_the_newest_schema_id() -> None:
    rec = {"tenant_id": "acme", "subject": "s", "body": "b", "ticket_id": "T-1", "customer_id": None,
           "channel": "web", "submitted_at_ms": 5, "labels": {"x": "y"}}
    raw = avro.encode(avro.TICKET, rec)
    assert raw[0] == 0 and struct.unpack(">I", raw[1:5])[0] == avro.local_registry().writer_id(avro.TICKET)
    assert avro.decode(raw, avro.TICKET) == rec


def test_new_reader_reads_v1_records_with_defaults() -> None:
    raw = _v1_bytes({"tenant_id": "globex", "subject": "Hi", "body": "Hello", "ticket_id": None,
                     "customer_id": "c-1", "channel": None})
    rec = avro.decode(raw, avro.TICKET)
    assert rec["tenant_id"] == "globex" and rec["customer_id"] == "c-1"
    assert rec["submitted_at_ms"] is None and rec["labels"] == {}


@pytest.mark.parametrize("raw", [b"", b"\x01\x00\x00\x00\x01abc", b"\x00\x00\x00\x00\x01",
                                 b"\x00\x00\x00\x00\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"])
def test_garbage_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedInput) as info:
        avro.decode(raw, avro.TICKET)
    assert info.value.code == "MALFORMED" and not info.value.retryable


def test_unknown_schema_id_is_malformed() -> None:
    with pytest.raises(TriageError) as info:
        avro.decode(b"\x00\x00\x01\x86\xa0\x02\x08acme", avro.TICKET)
    assert info.value.code == "MALFORMED" and "100000" in str(info.value)


def test_a_record_of_another_type_is_refused() -> None:
    case_like = avro.encode(avro.CLASSIFICATION, {
        "correlation_id": "c", "tenant_id": "acme", "classifier": "intent", "ok": True, "label": "billing",
        "confidence": 0.9, "model": "m", "error_code": None, "error": None, "model_calls": 1, "tokens": 2})
    with pytest.raises(SchemaInvalid):
        avro.decode(case_like, avro.TICKET)


def test_encoding_validates_the_record() -> None:
    with pytest.raises(SchemaInvalid):
        avro.encode(avro.TICKET, {"tenant_id": "acme", "body": 42})


@pytest.mark.parametrize("version_file", ["classification.v1.avsc", "classification.v2.avsc"])
def test_a_classifier_written_as_an_enum_is_read_as_its_name(version_file: str) -> None:
    """v3 made the classifier a string (a pipeline declares its classifiers); records of v1 and v2, where it
    was an enum of four, still read, with their symbol as the string."""
    registry = avro.local_registry()
    sid = next(int(i) for i, f in json.loads((SCHEMA_DIR / "registry.json").read_text())["schemas"].items()
               if f == version_file)
    record = {"correlation_id": "c-1", "tenant_id": "acme", "classifier": "priority", "ok": True, "label": "high",
              "confidence": 0.8, "model": "offline-priority", "error_code": None, "error": None}
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, sid))
    fastavro.schemaless_writer(buf, registry.schema(sid), record)
    got = avro.decode(buf.getvalue(), avro.CLASSIFICATION)
    assert got["classifier"] == "priority" and got["label"] == "high"
    assert registry.writer_id(avro.CLASSIFICATION) > sid


def test_a_new_classifier_needs_no_schema_version() -> None:
    value = avro.encode(avro.CLASSIFICATION, {"correlation_id": "c-2", "tenant_id": "acme",
                                              "classifier": "product_area", "ok": True, "label": "billing"})
    assert avro.decode(value, avro.CLASSIFICATION)["classifier"] == "product_area"


def test_garbage_behind_a_known_id_of_another_record_is_malformed() -> None:
    """The header names a schema this registry knows (here the Classification) but the bytes are no record of
    it: garbage, whatever id it happens to carry, not a well-formed record of the wrong type."""
    sid = avro.local_registry().writer_id(avro.CLASSIFICATION)
    with pytest.raises(MalformedInput):
        avro.decode(struct.pack(">bI", 0, sid) + b"\x9c\xff\x01\x02\x03garbage\x00\xff", avro.TICKET)
