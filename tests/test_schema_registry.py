"""triage with a Schema Registry: the settings, the subjects, a worker that cannot register stopping at start,
and (with a real registry) the pipeline read and written by confluent-kafka's own AvroSerializer and
AvroDeserializer with its SchemaRegistryClient.

The tests that need a registry use the session's (tests/conftest.py: the embedded Apicurio registry, or the
one TRIAGE_TEST_SCHEMA_REGISTRY_URL names, any registry with Confluent's API). They are never skipped: a
registry that cannot be built or started fails them with the reason.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from processors.topology import IN, RESPONSES, STEPS, VALID, dlq_topic, group_id, terminal_topics
from schemas import SCHEMA_DIR
from tests.harness import REPO_ROOT, Stack, free_port, routine_tickets


# --------------------------------------------------------------------------- without a registry

def test_settings_name_the_registry() -> None:
    from streams import config
    assert config.load({}).registry_url is None
    embedded = config.load({"TRIAGE_SCHEMA_REGISTRY": "embedded", "TRIAGE_SCHEMA_REGISTRY_PORT": "9801"})
    assert embedded.registry_url == "http://127.0.0.1:9801/apis/ccompat/v6" and embedded.manage_schema_registry
    external = config.load({"TRIAGE_SCHEMA_REGISTRY": "embedded", "TRIAGE_SCHEMA_REGISTRY_URL": "https://sr.example:8081/",
                            "TRIAGE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "user:pw",
                            "TRIAGE_SCHEMA_REGISTRY_SSL_CA_LOCATION": "/etc/ca.pem"})
    assert external.registry_url == "https://sr.example:8081" and not external.manage_schema_registry
    assert external.schema_registry_client == {"basic.auth.user.info": "user:pw", "ssl.ca.location": "/etc/ca.pem"}
    assert "user:pw" not in repr(external)
    with pytest.raises(SystemExit, match="TRIAGE_SUBJECT_NAME_STRATEGY"):
        config.load({"TRIAGE_SUBJECT_NAME_STRATEGY": "topicname"})


def test_subjects_follow_confluents_naming() -> None:
    from streams.schema_registry import subject_for
    assert subject_for("tickets.valid", "dev.triage.Case", "topic") == "tickets.valid-value"
    assert subject_for("tickets.valid", "dev.triage.Case", "record") == "dev.triage.Case"


def test_a_worker_that_cannot_register_stops_at_start(tmp_path: Path) -> None:
    """Nothing answers at the registry's URL: the worker exits before it reads or writes, naming the subject."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "OPENAI_"))}
    env.update({"TRIAGE_HOME": str(tmp_path), "TRIAGE_BOOTSTRAP": f"127.0.0.1:{free_port()}",
                "TRIAGE_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{free_port()}",
                "TRIAGE_SCHEMA_REGISTRY_TIMEOUT": "2"})
    done = subprocess.run([sys.executable, "-m", "streams.cli", "worker", "ingest"], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-2000:]
    assert "SCHEMA_REGISTRY_UNAVAILABLE" in out and f"'{VALID}-value'" in out, out[-2000:]


# --------------------------------------------------------------------------- with a real registry

@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, schema_registry_url: str) -> Iterator[Stack]:
    """The whole pipeline with TRIAGE_SCHEMA_REGISTRY_URL naming the session's registry."""
    s = Stack.create(tmp_path_factory.mktemp("triage-registry"), TRIAGE_SCHEMA_REGISTRY_URL=schema_registry_url)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def client(stack: Stack) -> SchemaRegistryClient:
    assert stack.settings.registry_url
    return SchemaRegistryClient({"url": stack.settings.registry_url})


def consume(stack: Stack, topics: list[str], want: set[str], timeout: float = 240.0) -> list[Any]:
    """Committed records of ``topics`` from the beginning until every key in ``want`` was seen."""
    c = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"plain-{os.urandom(4).hex()}",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        md = c.list_topics(timeout=10)
        c.assign([TopicPartition(t, p, 0) for t in topics for p in md.topics[t].partitions])
        seen, pending, deadline = [], set(want), time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None or m.error():
                continue
            seen.append(m)
            pending.discard((m.key() or b"").decode())
        assert not pending, f"{len(pending)} of {len(want)} never reached {topics}"
        return seen
    finally:
        c.close()


def ticket_schema(version: int) -> str:
    return (SCHEMA_DIR / f"ticket.v{version}.avsc").read_text()


@pytest.mark.kafka
def test_confluent_deserializer_reads_every_terminal_topic_and_dead_letter(registered: Stack) -> None:
    docs = routine_tickets(4)
    sent = registered.produce(docs[:2])
    sent.update(registered.produce(docs[2:], as_json=True))  # JSON with the content-type header, as today
    bad = registered.produce([{"tenant_id": "nobody", "body": "a tenant no one configured"}], as_json=True)
    records = consume(registered, terminal_topics(), set(sent) | set(bad))
    deserialize = AvroDeserializer(client(registered))
    by_cid: dict[str, Any] = {}
    for m in records:
        cid = (m.key() or b"").decode()
        headers = {k: v.decode() for k, v in m.headers() or []}
        if m.topic().startswith("tickets.dlq."):
            by_cid[cid] = ("dlq", headers)
            continue
        case = deserialize(m.value(), SerializationContext(m.topic(), MessageField.VALUE))
        by_cid[cid] = (m.topic(), case)
    for cid, doc in sent.items():
        topic, case = by_cid[cid]
        assert topic in terminal_topics() and case["correlation_id"] == cid
        assert case["ticket"]["body"] == doc["body"]
    kind, headers = by_cid[next(iter(bad))]
    assert kind == "dlq" and headers["dlq.reason"] == "UNKNOWN_TENANT"
    subjects = client(registered).get_subjects()
    assert f"{RESPONSES}-value" in subjects and f"{VALID}-value" in subjects and f"{IN}-value" in subjects


@pytest.mark.kafka
def test_ids_are_the_registrys_not_the_local_table(registered: Stack) -> None:
    latest = client(registered).get_latest_version(f"{VALID}-value")
    assert json.loads(latest.schema.schema_str)["name"] == "Case"
    sent = registered.produce(routine_tickets(1, offset=4))
    [m] = [m for m in consume(registered, [VALID], set(sent)) if (m.key() or b"").decode() in sent]
    assert m.value()[0] == 0 and int.from_bytes(m.value()[1:5], "big") == latest.schema_id


@pytest.mark.kafka
def test_v1_producer_and_v2_reader_and_back(registered: Stack) -> None:
    """A rolling upgrade: a producer still on Ticket v1 (confluent's AvroSerializer, registering v1 itself)
    feeds triage, which reads with v2; and a consumer still on v1 reads what triage (v2) writes."""
    sr = client(registered)
    assert sr.get_compatibility() in ("BACKWARD", "BACKWARD_TRANSITIVE")
    old = AvroSerializer(sr, ticket_schema(1), conf={"auto.register.schemas": True})
    p = Producer({"bootstrap.servers": registered.bootstrap})
    doc = routine_tickets(1, offset=5)[0]
    cid = f"v1-{os.urandom(4).hex()}"
    record = {"tenant_id": doc["tenant_id"], "subject": doc.get("subject", ""), "body": doc["body"],
              "ticket_id": None, "customer_id": None, "channel": None}
    p.produce(IN, key=cid, value=old(record, SerializationContext(IN, MessageField.VALUE)),
              headers=[("content-type", b"avro/binary"), ("correlation_id", cid.encode())])
    assert p.flush(30) == 0
    outcome = consume(registered, terminal_topics(), {cid})
    case = AvroDeserializer(sr)(next(m for m in outcome if m.key() == cid.encode()).value(),
                                SerializationContext(RESPONSES, MessageField.VALUE))
    assert case["ticket"]["body"] == doc["body"]

    # Back: triage writes Ticket v2; a reader pinned to v1 reads it (the fields v2 added are skipped).
    sent = registered.produce([doc])
    v1_reader = AvroDeserializer(sr, ticket_schema(1))
    [m] = [m for m in consume(registered, [IN], set(sent)) if (m.key() or b"").decode() in sent]
    # The id of Ticket v2 under the subject, which is no longer its latest version: the v1 producer's
    # registration came after it (BACKWARD allows a v1 that reads v2's records).
    v2 = sr.lookup_schema(f"{IN}-value", Schema(json.dumps(json.loads(ticket_schema(2))), "AVRO"))
    assert int.from_bytes(m.value()[1:5], "big") == v2.schema_id
    read_v1 = v1_reader(m.value(), SerializationContext(IN, MessageField.VALUE))
    assert set(read_v1) == set(record) and read_v1["body"] == doc["body"]


@pytest.mark.kafka
def test_incompatible_change_stops_the_worker_at_start(registered: Stack) -> None:
    """A subject holding a Case whose correlation_id was an int: triage's Case (a string there) cannot read
    its records, which BACKWARD forbids. The worker stops before reading or writing, naming the subject."""
    sr = client(registered)
    subject = "dev.triage.Case"  # the record-name strategy's subject, free in this registry
    sr.register_schema(subject, Schema(json.dumps({
        "type": "record", "name": "Case", "namespace": "dev.triage",
        "fields": [{"name": "correlation_id", "type": "int"}]}), "AVRO"))
    # No subject-level rule: the refusal comes from the registry's global BACKWARD.
    env = {**registered.worker_env(), "TRIAGE_SUBJECT_NAME_STRATEGY": "record"}
    high = _high(registered, VALID)
    done = subprocess.run([sys.executable, "-m", "streams.cli", "worker", "ingest", "--instance", "incompatible"],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "SCHEMA_INCOMPATIBLE" in out and repr(subject) in out, out[-2000:]
    assert _high(registered, VALID) == high


def test_the_registry_itself_refuses_what_backward_forbids(schema_registry_url: str) -> None:
    """The global rule is BACKWARD (Apicurio starts with none), and it is the registry that says no: a new
    version that cannot read the last one's records is refused with 409, whoever registers it."""
    sr = SchemaRegistryClient({"url": schema_registry_url})
    assert sr.get_compatibility() == "BACKWARD"
    subject = f"refusal-{os.urandom(4).hex()}-value"
    record = {"type": "record", "name": "Probe", "namespace": "dev.triage.test",
              "fields": [{"name": "n", "type": "int"}]}
    sr.register_schema(subject, Schema(json.dumps(record), "AVRO"))
    added = {**record, "fields": [*record["fields"], {"name": "note", "type": "string", "default": ""}]}
    sr.register_schema(subject, Schema(json.dumps(added), "AVRO"))  # a field with a default: allowed
    retyped = {**record, "fields": [{"name": "n", "type": "string"}]}
    with pytest.raises(SchemaRegistryError) as refused:
        sr.register_schema(subject, Schema(json.dumps(retyped), "AVRO"))
    assert refused.value.http_status_code == 409, refused.value
    assert len(sr.get_versions(subject)) == 2


def test_workers_starting_together_all_find_their_subject(schema_registry_url: str) -> None:
    """Workers of the steps that write one topic start together and register its subject at the same moment,
    after `triage up` registered it once (stack.register_schemas): every one of them gets the same id.

    Not first registrations at once: Apicurio 2.1.5's SQL storage loses that race and the subject stays broken
    (409 'already exists', then 404 for ever; or 500 'Expected only one result but got multiple' on every
    retry, seen in two CI runs under load), which is why triage registers every subject from one process
    before any worker starts."""
    from concurrent.futures import ThreadPoolExecutor

    from streams.schema_registry import RemoteRegistry
    topic = f"race-{os.urandom(4).hex()}"
    first = RemoteRegistry.connect(schema_registry_url).register(topic, "dev.triage.Case")
    registries = [RemoteRegistry.connect(schema_registry_url) for _ in range(8)]
    with ThreadPoolExecutor(len(registries)) as pool:
        ids = list(pool.map(lambda r: r.register(topic, "dev.triage.Case"), registries))
    assert set(ids) == {first}, ids


def _high(stack: Stack, topic: str) -> int:
    c = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "plain-high"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(stack.settings.partitions))
    finally:
        c.close()


@pytest.mark.kafka
def test_status_lists_the_registry(registered: Stack, schema_registry_url: str) -> None:
    from streams import status
    doc = status.collect(registered.settings, interval=0.1)
    assert doc["schema_registry"] == {"kind": "external", "url": schema_registry_url}


