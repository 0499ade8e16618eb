"""A Schema Registry behind the Avro codec: producers register their schemas and frame with its ids, readers
resolve any id through it, cached.

Any registry that speaks Confluent's REST API works (Confluent's own, Apicurio's ``/apis/ccompat/v7``, the
embedded one `triage up` starts). The client is ``confluent_kafka.schema_registry.SchemaRegistryClient``;
fastavro stays the codec (:mod:`streams.avro`). Subjects follow Confluent's naming: ``<topic>-value`` by
default, the record's full name with ``subject_strategy="record"``. The registry's compatibility level of a
subject (BACKWARD unless it says otherwise) decides whether a new version may be registered; a refusal is
:class:`SchemaIncompatible`, raised by :meth:`RemoteRegistry.register` before anything is written.
This module is the one place that calls the client: its exceptions are translated here, once.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Literal, Mapping

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro.types import Schema as Parsed

from streams import avro
from streams.config import Settings
from streams.errors import StateError, TriageError, UnknownSchema

Strategy = Literal["topic", "record"]


class SchemaIncompatible(TriageError):
    """The registry refused a schema: the subject's compatibility level does not allow it after the versions
    it holds. A worker stops at start with this error; ``subject`` names the subject, the message says why."""

    code = "SCHEMA_INCOMPATIBLE"
    retryable = False

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"schema registry refused the new schema of subject {subject!r}: {reason}")
        self.subject = subject


class RegistryUnavailable(StateError):
    """The registry did not answer (or answered with a server error): retryable, like Redis being away."""

    code = "SCHEMA_REGISTRY_UNAVAILABLE"


def client_config(url: str, props: Mapping[str, str] | None = None) -> dict[str, object]:
    conf: dict[str, object] = {"url": url, **(props or {})}
    if "timeout" in conf:
        conf["timeout"] = int(str(conf["timeout"]))
    return conf


def subject_for(topic: str | None, name: str, strategy: Strategy) -> str:
    """Confluent's TopicNameStrategy (``<topic>-value``) or RecordNameStrategy (the record's full name)."""
    if strategy == "record" or topic is None:
        return name
    return f"{topic}-value"


class RemoteRegistry:
    """A :class:`streams.avro.SchemaSource` backed by a Schema Registry; the local table supplies the schemas this
    code writes and reads with. Thread-safe: the runtime encodes in more than one thread."""

    def __init__(self, client: SchemaRegistryClient, strategy: Strategy = "topic",
                 local: avro.Registry | None = None) -> None:
        self._client, self._strategy = client, strategy
        self._local = local or avro.local_registry()
        self._ids: dict[tuple[str | None, str], int] = {}
        self._by_id: dict[int, Parsed] = {}
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, url: str, props: Mapping[str, str] | None = None, strategy: Strategy = "topic") -> RemoteRegistry:
        return cls(SchemaRegistryClient(client_config(url, props)), strategy)

    def subject(self, topic: str | None, name: str) -> str:
        return subject_for(topic, name, self._strategy)

    def register(self, topic: str | None, name: str) -> int:
        """Register the newest local schema of ``name`` under its subject for ``topic`` and return its id.

        Idempotent (the registry returns the id it already has). Raises SchemaIncompatible when the subject's
        compatibility level refuses it, RegistryUnavailable when the registry cannot be reached.
        """
        key = (topic, name)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        local_id = self._local.writer_id(name)
        text = self._local.texts[local_id]
        subject = self.subject(topic, name)
        schema = Schema(json.dumps(json.loads(text)), "AVRO")
        attempts = 4
        for attempt in range(1, attempts + 1):
            try:
                sid = self._client.register_schema(subject, schema)
                break
            except SchemaRegistryError as exc:
                # Apicurio 2.1 answers 409 "artifact already exists" to the loser of two first registrations
                # of one subject at once; asked again, the subject exists and the same schema is found. A 5xx
                # may pass too, so it is asked again as well; but the 500 its SQL storage gives when that race
                # went worse ("Expected only one result but got multiple") lasts, which is why triage up
                # registers every subject from one process first. Only a 409 that lasts is a real refusal,
                # only a 5xx that lasts an unavailable registry.
                refused = exc.http_status_code in (409, 422)
                if not refused and (exc.http_status_code or 0) < 500:
                    raise RegistryUnavailable(f"registering subject {subject!r} failed: {exc}") from exc
                if attempt == attempts:
                    if refused:
                        raise SchemaIncompatible(subject, self._why(subject, text, exc)) from exc
                    raise RegistryUnavailable(f"registering subject {subject!r} failed: {exc}") from exc
                time.sleep(0.1 * 2 ** attempt)
            except Exception as exc:  # noqa: BLE001 - httpx's transport errors and the like: the registry is away
                raise RegistryUnavailable(f"schema registry unreachable registering {subject!r}: {exc}") from exc
        with self._lock:
            self._ids[key] = sid
            self._by_id.setdefault(sid, self._local.schema(local_id))
        return sid

    def _why(self, subject: str, text: str, exc: SchemaRegistryError) -> str:
        """The registry's own words for the refusal (a verbose compatibility check where it gives one)."""
        reason = exc.error_message or str(exc)
        try:
            # The client's test_compatibility returns a bool only; the verbose answer lists the messages.
            answer = self._client._rest_client.post(  # noqa: SLF001 - no public call returns the messages
                f"compatibility/subjects/{subject}/versions/latest?verbose=true",
                body={"schema": json.dumps(json.loads(text)), "schemaType": "AVRO"})
            messages = answer.get("messages") or []
            if messages:
                reason += "; " + "; ".join(map(str, messages))
        except Exception:  # noqa: BLE001 - the refusal itself is the error; its details are a courtesy
            pass
        return reason

    # ------------------------------------------------------------------ SchemaSource
    def writer_id(self, name: str, topic: str | None = None) -> int:
        with self._lock:
            sid = self._ids.get((topic, name))
        return sid if sid is not None else self.register(topic, name)

    def schema(self, schema_id: int) -> Parsed:
        with self._lock:
            parsed = self._by_id.get(schema_id)
        if parsed is not None:
            return parsed
        try:
            found = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchema(f"schema id {schema_id} is not known to the schema registry") from exc
            raise RegistryUnavailable(f"looking up schema id {schema_id} failed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - transport errors
            raise RegistryUnavailable(f"schema registry unreachable looking up id {schema_id}: {exc}") from exc
        if (found.schema_type or "AVRO") != "AVRO":
            raise UnknownSchema(f"schema id {schema_id} is a {found.schema_type} schema, not Avro")
        try:
            parsed = fastavro.parse_schema(json.loads(found.schema_str), named_schemas={})
        except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
            raise UnknownSchema(f"schema id {schema_id} is no Avro schema fastavro can read: {exc}") from exc
        with self._lock:
            self._by_id[schema_id] = parsed
        return parsed

    def reader(self, name: str) -> tuple[int, Parsed]:
        return self._local.reader(name)

    def close(self) -> None:
        self._client.close()


def for_settings(settings: Settings) -> RemoteRegistry | None:
    """The registry ``settings`` configure (TRIAGE_SCHEMA_REGISTRY_URL or the embedded one), or None."""
    if not settings.registry_url:
        return None
    return RemoteRegistry.connect(settings.registry_url, settings.schema_registry_client, settings.subject_strategy)


def register_outputs(registry: RemoteRegistry, schemas: Mapping[str, str]) -> dict[str, int]:
    """Register the schema of every topic in ``schemas`` (topic -> record name); {subject: id}. Raises
    SchemaIncompatible for the first subject that refuses: the caller stops before writing anything."""
    return {registry.subject(topic, name): registry.register(topic, name) for topic, name in sorted(schemas.items())}
