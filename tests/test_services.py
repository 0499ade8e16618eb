"""Real-process tests for streams.services: a KRaft broker and Redis, on free loopback ports.

They use a temporary home and never the default ports, so a developer's running stack is left
alone. The jars come from the local Maven repository (~/.m2), so resolving them takes seconds.
"""
from __future__ import annotations

import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

from streams.services import ServiceError, proc

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_proc_spawn_and_stop(tmp_path: Path) -> None:
    pid = proc.spawn("sleeper", [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                     tmp_path)
    assert proc.read_pid(tmp_path, "sleeper") == pid
    proc.wait_until(lambda: "up" in proc.log_tail(tmp_path, "sleeper"), 10, what="sleeper output")
    assert proc.list_running(tmp_path) == {"sleeper": pid}
    assert proc.stop(tmp_path, "sleeper", timeout=5)
    assert not proc.is_alive(pid)
    assert proc.read_pid(tmp_path, "sleeper") is None
    assert not proc.stop(tmp_path, "sleeper")
    with pytest.raises(TimeoutError, match="the impossible"):
        proc.wait_until(lambda: False, 0.2, what="the impossible")


def _roundtrip(bootstrap: str, topic: str) -> None:
    """Produce one record and read it back with a fresh consumer group."""
    from confluent_kafka import Consumer, Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(topic, key=b"k1", value=b"hello")
    assert producer.flush(15) == 0

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                assert (msg.key(), msg.value()) == (b"k1", b"hello")
                return
        pytest.fail("no message consumed within 30 s")
    finally:
        consumer.close()


def _transaction(bootstrap: str, topic: str) -> None:
    """init_transactions within 10 s proves the single-node transaction-state settings (RF 1, ISR 1)."""
    from confluent_kafka import Producer

    txn = Producer({"bootstrap.servers": bootstrap, "transactional.id": "svc-test-txn"})
    txn.init_transactions(10)
    txn.begin_transaction()
    txn.produce(topic, key=b"k2", value=b"in-txn")
    txn.commit_transaction(10)


@pytest.mark.kafka
def test_kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    from streams.services import kafka_broker as kb

    home = tmp_path_factory.mktemp("home")
    libs = kb.resolve_jars(home, REPO_ROOT)
    assert any(libs.glob("kafka_2.13-*.jar"))
    assert kb.resolve_jars(home, REPO_ROOT) == libs  # second call is the cached no-op

    spec = kb.BrokerSpec(port=free_port(), controller_port=free_port())
    started = time.monotonic()
    pid = kb.start_broker(home, REPO_ROOT, spec)
    print(f"\nbroker ready in {time.monotonic() - started:.1f}s (first start, includes format)")
    try:
        assert proc.is_alive(pid)
        assert kb.start_broker(home, REPO_ROOT, spec) == pid  # idempotent
        assert kb.broker_ready(spec.bootstrap, timeout=5)

        topic = kb.TopicSpec("svc.compacted", partitions=3, config={"cleanup.policy": "compact"})
        assert kb.ensure_topics(spec.bootstrap, [topic]) == ["svc.compacted"]
        assert kb.ensure_topics(spec.bootstrap, [topic]) == []

        admin = AdminClient({"bootstrap.servers": spec.bootstrap})
        assert len(admin.list_topics(timeout=10).topics["svc.compacted"].partitions) == 3
        resource = ConfigResource(ResourceType.TOPIC, "svc.compacted")
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
        assert configs["cleanup.policy"].value == "compact"
        del admin

        _roundtrip(spec.bootstrap, "svc.compacted")
        t0 = time.monotonic()
        _transaction(spec.bootstrap, "svc.compacted")
        print(f"transaction init+commit in {time.monotonic() - t0:.1f}s")
    finally:
        t0 = time.monotonic()
        stopped = kb.stop_broker(home, spec.node_id)
        print(f"broker stopped in {time.monotonic() - t0:.1f}s")
    assert stopped
    assert not proc.is_alive(pid)
    assert proc.read_pid(home, spec.name) is None
    assert not kb.broker_ready(spec.bootstrap, timeout=1)

    # A restart reuses the formatted storage: the topic is still there.
    started = time.monotonic()
    pid = kb.start_broker(home, REPO_ROOT, spec)
    print(f"broker ready in {time.monotonic() - started:.1f}s (restart)")
    try:
        assert kb.ensure_topics(spec.bootstrap, [topic]) == []
    finally:
        assert kb.stop_broker(home, spec.node_id)
    assert not proc.is_alive(pid)


@pytest.mark.kafka
def test_broker_port_taken_is_a_clear_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    from streams.services import kafka_broker as kb

    home = tmp_path_factory.mktemp("home-busy")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        spec = kb.BrokerSpec(port=busy.getsockname()[1], controller_port=free_port())
        with pytest.raises(ServiceError, match="already in use"):
            kb.start_broker(home, REPO_ROOT, spec)


def test_redis_missing_without_root_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.services import redis_server as rs

    monkeypatch.setattr(rs, "_find_redis", lambda: None)
    monkeypatch.setattr(rs.os, "geteuid", lambda: 1000)
    with pytest.raises(ServiceError, match="apt-get install -y redis-server"):
        rs.ensure_redis_installed()


@pytest.mark.kafka
def test_redis(tmp_path_factory: pytest.TempPathFactory) -> None:
    import redis

    from streams.services import redis_server as rs

    home = tmp_path_factory.mktemp("home")
    port = free_port()
    started = time.monotonic()
    pid = rs.start_redis(home, port=port)
    print(f"\nredis ready in {time.monotonic() - started:.2f}s")
    try:
        assert rs.start_redis(home, port=port) == pid  # idempotent
        client = redis.Redis(host="127.0.0.1", port=port)
        client.set("kb:greeting", "hello")
        assert client.get("kb:greeting") == b"hello"
        client.close()
    finally:
        stopped = rs.stop_redis(home)
    assert stopped
    assert not proc.is_alive(pid)
    assert proc.read_pid(home, "redis") is None
    assert not rs.redis_ready(port)

    # The append-only file keeps data across a restart.
    pid = rs.start_redis(home, port=port)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        assert client.get("kb:greeting") == b"hello"
        client.close()
    finally:
        rs.stop_redis(home)
    assert not proc.is_alive(pid)
