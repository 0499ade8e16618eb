"""triage read and written by Kafka clients nobody here wrote: kcat (Debian's package) and Kafka's own
command-line tools, run from the project's jars (deploy/kafka/pom.xml resolves kafka-tools beside the broker).
No triage code produces or reads in these tests, except to wait for the outcomes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from processors.topology import IN, RESPONSES, STEPS, dlq_topic, group_id, terminal_topics
from tests.harness import Stack, routine_tickets

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack.create(tmp_path_factory.mktemp("triage-interop"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


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


# --------------------------------------------------------------------------- kcat

def kcat() -> str:
    found = shutil.which("kcat")
    assert found, "kcat is not installed: .ci/deps --browser installs Debian's package"
    return found


def test_kcat_produces_json_tickets_and_reads_the_responses(stack: Stack) -> None:
    doc = routine_tickets(1, offset=6)[0]
    cid = f"kcat-{os.urandom(4).hex()}"
    line = json.dumps({k: doc[k] for k in ("tenant_id", "subject", "body") if k in doc})
    subprocess.run([kcat(), "-P", "-b", stack.bootstrap, "-t", IN, "-k", cid,
                    "-H", "content-type=application/json", "-H", f"correlation_id={cid}"],
                   input=line + "\n", text=True, check=True, timeout=60)
    consume(stack, terminal_topics(), {cid})
    out = subprocess.run([kcat(), "-C", "-b", stack.bootstrap, "-t", RESPONSES, "-e", "-o", "beginning",
                          "-X", "isolation.level=read_committed", "-f", "%k\t%h\n"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert any(row.startswith(cid + "\t") for row in out.splitlines()), out[-2000:]
    if stack.settings.registry_url and "avro" in subprocess.run([kcat(), "-V"], capture_output=True,
                                                                 text=True).stdout.lower():
        decoded = subprocess.run([kcat(), "-C", "-b", stack.bootstrap, "-t", RESPONSES, "-e", "-o", "beginning",
                                  "-s", "value=avro", "-r", stack.settings.registry_url, "-f", "%k\t%s\n"],
                                 capture_output=True, text=True, check=True, timeout=120).stdout
        row = next(r for r in decoded.splitlines() if r.startswith(cid + "\t"))
        assert json.loads(row.split("\t", 1)[1])["correlation_id"] == cid


# --------------------------------------------------------------------------- Kafka's own tools

def kafka_tool(stack: Stack, main: str, *args: str, timeout: float = 120) -> str:
    libs = Path(stack.settings.home) / "kafka" / "libs"
    done = subprocess.run(["java", "-cp", f"{libs}/*", main, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_kafka_consumer_groups_describes_every_step(stack: Stack) -> None:
    out = kafka_tool(stack, "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                     "--bootstrap-server", stack.bootstrap, "--describe", "--all-groups")
    for step in STEPS:
        assert group_id(step) in out, f"{group_id(step)} not in:\n{out[-3000:]}"
    assert "LAG" in out


def test_kafka_console_consumer_reads_a_dead_letter_with_its_headers(stack: Stack) -> None:
    bad = stack.produce([{"tenant_id": "nobody", "body": "for the console consumer"}], as_json=True)
    consume(stack, [dlq_topic("ingest")], set(bad))
    out = kafka_tool(stack, "org.apache.kafka.tools.consumer.ConsoleConsumer",
                     "--bootstrap-server", stack.bootstrap, "--topic", dlq_topic("ingest"),
                     "--from-beginning", "--timeout-ms", "10000", "--isolation-level", "read_committed",
                     "--property", "print.headers=true", "--property", "print.key=true")
    row = next(r for r in out.splitlines() if next(iter(bad)) in r)
    assert "dlq.reason:UNKNOWN_TENANT" in row, row
