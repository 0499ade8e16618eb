"""Avro values in Confluent wire framing (magic byte 0, 4-byte big-endian schema id, schemaless body).

Ids come from a registry: the local one resolves them from ``schemas/registry.json``; with a Schema Registry
configured (:mod:`streams.schema_registry`, made the process's by :func:`use`) a producer frames with the id
the registry gave its schema and a reader resolves any id through it. Either way a record is read with the
newest schema of its name this code knows, so a new reader reads old records (schema evolution). fastavro's
own exceptions are translated here, once, into :mod:`streams.errors`.
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import fastavro
from fastavro.types import Schema

from schemas import SCHEMA_DIR
from streams.errors import MalformedInput, SchemaInvalid, UnknownSchema

_MAGIC = 0
_HEADER = struct.Struct(">bI")


class SchemaSource(Protocol):
    """Where encode and decode find schemas: the local table, or a Schema Registry."""

    def writer_id(self, name: str, topic: str | None = None) -> int:
        """The id to frame a ``name`` record written to ``topic`` with (the newest version this code knows)."""

    def schema(self, schema_id: int) -> Schema:
        """The schema a framed value's id names. Raises UnknownSchema."""

    def reader(self, name: str) -> tuple[int, Schema]:
        """The newest schema of ``name`` this code knows, and a key that tells it from other versions."""


@dataclass(frozen=True)
class Registry:
    """Schema ids to parsed schemas, and the newest id per record name."""

    by_id: dict[int, Schema]
    latest: dict[str, int] = field(default_factory=dict)
    texts: dict[int, str] = field(default_factory=dict)
    """The schema files' text by id: what a producer registers with a Schema Registry."""

    def writer_id(self, name: str, topic: str | None = None) -> int:
        try:
            return self.latest[name]
        except KeyError:
            raise UnknownSchema(f"no schema named {name!r} in the registry") from None

    def reader(self, name: str) -> tuple[int, Schema]:
        sid = self.writer_id(name)
        return sid, self.schema(sid)

    def schema(self, schema_id: int) -> Schema:
        try:
            return self.by_id[schema_id]
        except KeyError:
            raise UnknownSchema(f"schema id {schema_id} is not known") from None


@lru_cache(maxsize=1)
def local_registry() -> Registry:
    """The project's own schemas. Cached: the files do not change while a process runs."""
    table = json.loads((SCHEMA_DIR / "registry.json").read_text())["schemas"]
    by_id: dict[int, Schema] = {}
    latest: dict[str, int] = {}
    named: dict[str, Any] = {}
    texts: dict[int, str] = {}
    for sid in sorted(table, key=int):
        texts[int(sid)] = (SCHEMA_DIR / table[sid]).read_text()
        raw = json.loads(texts[int(sid)])
        # Each file is parsed on its own: versions of one name must not see each other.
        parsed = fastavro.parse_schema(raw, named_schemas={})
        by_id[int(sid)] = parsed
        name = parsed["name"]
        latest[name] = int(sid)
        named[name] = parsed
    return Registry(by_id=by_id, latest=latest, texts=texts)


_ACTIVE: list[SchemaSource] = []


def use(registry: SchemaSource | None) -> None:
    """Make ``registry`` the one :func:`encode` and :func:`decode` use by default (None: the local table).
    A worker calls it once at start, before any record is read or written."""
    _ACTIVE[:] = [registry] if registry is not None else []


def active() -> SchemaSource:
    """The registry of this process: a Schema Registry made so by :func:`use`, else the local table."""
    return _ACTIVE[0] if _ACTIVE else local_registry()


def short_name(full: str) -> str:
    return full.rsplit(".", 1)[-1]


def encode(name: str, record: dict[str, Any], registry: SchemaSource | None = None,
           topic: str | None = None) -> bytes:
    """Encode ``record`` with the newest schema called ``name`` (e.g. ``"dev.triage.Case"``), framed with the
    id the registry has for it on ``topic`` (a Schema Registry's subject is per topic).

    Raises SchemaInvalid when the record does not fit the schema: a step's output is validated here too.
    """
    reg = registry or active()
    sid = reg.writer_id(name, topic)
    buf = io.BytesIO()
    buf.write(_HEADER.pack(_MAGIC, sid))
    try:
        fastavro.schemaless_writer(buf, reg.schema(sid), record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SchemaInvalid(f"record does not fit {short_name(name)}: {exc}") from exc
    return buf.getvalue()


def _reads_as(data: bytes, schema: Schema) -> bool:
    body = io.BytesIO(data[_HEADER.size:])
    try:
        fastavro.schemaless_reader(body, schema, schema)
    except Exception:  # noqa: BLE001 - any failure to read means: not this record
        return False
    return body.tell() == len(data) - _HEADER.size


def _reader_for(reg: SchemaSource, writer_id: int, name: str) -> Schema:
    """The newest schema, except where it made a field a string that an older version spelt as an enum (the
    Classification's classifier, since v3): Avro's resolution has no enum-to-string rule, and an enum's
    symbol is already the string the newer reader wants, so that field is read with the writer's enum."""
    reader_id, reader = reg.reader(name)
    key = (id(reg), writer_id, reader_id)
    cached = _READERS.get(key)
    if cached is None:
        writer = reg.schema(writer_id)
        enums = {f["name"]: f["type"] for f in writer.get("fields", [])
                 if isinstance(f["type"], dict) and f["type"].get("type") == "enum"}
        fields = [{**f, "type": enums[f["name"]]} if f["type"] == "string" and f["name"] in enums else f
                  for f in reader.get("fields", [])]
        cached = _READERS[key] = (fastavro.parse_schema({**reader, "fields": fields}, named_schemas={})
                                  if fields != reader.get("fields", []) else reader)
    return cached


_READERS: dict[tuple[int, int, int], Schema] = {}


def decode(data: bytes | None, expect: str, registry: SchemaSource | None = None) -> dict[str, Any]:
    """Decode a framed value written with any known version of ``expect``, read as its newest version.

    Raises MalformedInput (empty, unframed, truncated or garbage body), UnknownSchema (id not known),
    SchemaInvalid (a known schema of another record type).
    """
    reg = registry or active()
    if not data:
        raise MalformedInput("empty value")
    if len(data) < _HEADER.size or data[0] != _MAGIC:
        raise MalformedInput("value is not Confluent-framed Avro (magic byte 0 + schema id)")
    _, sid = _HEADER.unpack_from(data)
    writer = reg.schema(sid)
    if writer["name"] != expect:
        # A well-formed record of another type is the wrong schema; bytes that are no record of the schema their
        # header names are garbage behind a valid-looking header, whatever id it happens to name.
        if not _reads_as(data, writer):
            raise MalformedInput(f"body is not a valid record of schema id {sid} ({short_name(writer['name'])})")
        raise SchemaInvalid(f"schema id {sid} is {short_name(writer['name'])}, expected {short_name(expect)}")
    reader = _reader_for(reg, sid, expect)
    body = io.BytesIO(data[_HEADER.size:])
    try:
        record = fastavro.schemaless_reader(body, writer, reader)
    except (EOFError, ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError, OverflowError,
            MemoryError, struct.error) as exc:
        raise MalformedInput(f"body is not a valid {short_name(expect)}: {type(exc).__name__}: {exc}") from exc
    if body.tell() != len(data) - _HEADER.size:
        raise MalformedInput(f"{len(data) - _HEADER.size - body.tell()} trailing bytes after the {short_name(expect)}")
    return record  # type: ignore[return-value]


TICKET = "dev.triage.Ticket"
CLASSIFICATION = "dev.triage.Classification"
CASE = "dev.triage.Case"
