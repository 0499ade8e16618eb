"""The local stack: Kafka, Redis, the offline model server and the workers, started and stopped as one.

Everything runs on loopback with state under ``settings.home``; `triage up` / `triage down` call these.
"""
from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
import time
import urllib.request
from pathlib import Path
from typing import Callable

from streams import pipelines
from streams.config import REPO_ROOT, Settings, redact_url
from streams.services import ServiceError, proc
from streams.services.kafka_broker import BrokerSpec, prepare_cluster, TopicSpec, broker_ready, ensure_topics, start_broker, stop_broker
from streams.services.redis_server import start_redis, stop_redis
from streams.services import schema_registry as registry_service
from streams.topic_config import topic_configs

Say = Callable[[str], None]
OFFLINE = "offline-models"


def cluster_file(home: Path) -> Path:
    return home / "cluster.json"


def cluster_size(home: Path) -> int:
    try:
        return int(json.loads(cluster_file(home).read_text())["brokers"])
    except (OSError, ValueError, KeyError):
        return 1


def broker_specs(settings: Settings, brokers: int) -> list[BrokerSpec]:
    """Nodes on consecutive port pairs from the first bootstrap port: 9092/9093, 9094/9095, ..."""
    base = _port(settings.bootstrap)
    voters = ",".join(f"{i}@127.0.0.1:{base + 2 * (i - 1) + 1}" for i in range(1, brokers + 1)) if brokers > 1 else ""
    return [BrokerSpec(node_id=i, port=base + 2 * (i - 1), controller_port=base + 2 * (i - 1) + 1,
                       partitions=settings.partitions, voters=voters, internal_replication=min(3, brokers),
                       heap="1g" if brokers == 1 else "768m")
            for i in range(1, brokers + 1)]


def topic_specs(settings: Settings, replication: int = 1) -> list[TopicSpec]:
    configs = topic_configs(pipelines.load(settings.pipeline or None), replication)
    return [TopicSpec(name, settings.partitions, replication, config) for name, config in configs.items()]


def _port(bootstrap: str) -> int:
    return int(bootstrap.split(",")[0].rsplit(":", 1)[1])


def _local_bootstrap(settings: Settings) -> bool:
    host = settings.bootstrap.split(",")[0].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost") and "," not in settings.bootstrap


def _formatted(home: Path) -> bool:
    """This home has run a broker: its storage is formatted."""
    return any((home / "kafka").glob("node-*/data/meta.properties"))


def _own_broker(home: Path) -> bool:
    """This home has run a broker or runs one now."""
    return _formatted(home) or any(name.startswith("kafka-") for name in proc.list_running(home))


def _joins_running_cluster(settings: Settings) -> bool:
    """A second pipeline's home beside the first: a loopback broker answers that this home did not start, so
    it is used, not started again (a start would fail on the taken port)."""
    return _local_bootstrap(settings) and not _own_broker(settings.home) and broker_ready(settings.bootstrap, 3)


def offline_ready(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.offline_port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def start_offline_models(settings: Settings) -> int | None:
    if not settings.offline:
        return None
    pid = proc.read_pid(settings.home, OFFLINE)
    if pid is not None and proc.is_alive(pid) and offline_ready(settings):
        return pid
    if offline_ready(settings):
        return None  # another home's server (a second pipeline beside the first): stateless, so shared
    pid = proc.spawn(OFFLINE, [sys.executable, "-m", "processors.offline.server", "--port",
                               str(settings.offline_port)], settings.home, cwd=REPO_ROOT)
    # It loads its models before it listens: about a second here, many on a busy machine (40 s seen at load 20).
    proc.wait_until(lambda: offline_ready(settings) or not proc.is_alive(pid), 120, what="the offline model server")
    if not proc.is_alive(pid):
        raise ServiceError("the offline model server exited:\n" + proc.log_tail(settings.home, OFFLINE))
    return pid


def start_services(settings: Settings, say: Say = lambda _: None, brokers: int | None = None) -> None:
    """Kafka (unless TRIAGE_BOOTSTRAP names a remote cluster; ``brokers`` nodes on loopback), Redis (unless
    TRIAGE_REDIS_URL), the offline model server (unless OPENAI_BASE_URL), and every topic. Idempotent."""
    settings.home.mkdir(parents=True, exist_ok=True)
    size = brokers or cluster_size(settings.home)
    if size != cluster_size(settings.home) and _formatted(settings.home):
        raise ServiceError(f"{settings.home} holds a {cluster_size(settings.home)}-node cluster; `triage down` and "
                           f"remove {settings.home / 'kafka'} to start one of {size}")
    if _joins_running_cluster(settings):
        say(f"kafka      joined the cluster already running at {settings.bootstrap} "
            f"(started elsewhere: `triage down` here leaves it running)")
    elif _local_bootstrap(settings) or size > 1:
        specs = broker_specs(settings, size)
        t = time.monotonic()
        cluster_file(settings.home).write_text(json.dumps(
            {"brokers": size, "bootstrap": ",".join(sp.bootstrap for sp in specs)}))
        prepare_cluster(settings.home, REPO_ROOT)
        # All nodes at once: a KRaft quorum is not ready until a majority of its voters runs.
        with ThreadPoolExecutor(len(specs)) as pool:
            list(pool.map(lambda sp: start_broker(settings.home, REPO_ROOT, sp), specs))
        say(f"kafka      {size} node(s) ready on {', '.join(sp.bootstrap for sp in specs)} ({time.monotonic() - t:.1f}s)")
    elif not broker_ready(settings.bootstrap, 15):
        raise ServiceError(f"no Kafka broker answers at {settings.bootstrap}")
    if settings.manage_redis:
        start_redis(settings.home, settings.redis_port)
        say(f"redis      ready on 127.0.0.1:{settings.redis_port}")
    if start_offline_models(settings):
        say(f"models     offline provider on 127.0.0.1:{settings.offline_port}")
    else:
        say(f"models     {settings.model_base_url}")
    created = ensure_topics(settings.bootstrap, topic_specs(settings, replication=min(3, size)))
    say(f"topics     {len(pipelines.load(settings.pipeline or None).all_topics())} ready ({len(created)} created)")
    start_schema_registry(settings, say)
    register_schemas(settings, say)


def register_schemas(settings: Settings, say: Say = lambda _: None) -> None:
    """With a registry, register the schema of every topic the pipeline's steps write, one after another,
    before any worker starts. Apicurio 2.1 (SQL storage) loses first registrations made at the same moment by
    the workers starting together: the losers get 409 'artifact already exists' and the subject is then
    found by no one (404), for ever. Registered here, the workers' own registrations only find them.
    Raises SchemaIncompatible naming the subject the registry refuses."""
    if not settings.registry_url:
        return
    from streams import schema_registry
    registry = schema_registry.for_settings(settings)
    assert registry is not None
    pipeline = pipelines.load(settings.pipeline or None)
    writes = {t: pipeline.schema_of(t) for step in pipeline.step_names for t in pipeline.step(step).emits}
    try:
        ids = schema_registry.register_outputs(registry, {t: s for t, s in writes.items() if s})
    finally:
        registry.close()
    say(f"schemas    {len(ids)} subjects registered")


def start_schema_registry(settings: Settings, say: Say = lambda _: None) -> int | None:
    """The embedded registry when the settings want it (TRIAGE_SCHEMA_REGISTRY=embedded and no URL); an
    external one (TRIAGE_SCHEMA_REGISTRY_URL) is only named. Returns the pid of the one started, if any."""
    if settings.schema_registry_url:
        say(f"registry   external {redact_url(settings.schema_registry_url)}")
        return None
    if not settings.manage_schema_registry:
        return None
    t = time.monotonic()
    pid = registry_service.start_registry(settings.home, REPO_ROOT, settings.bootstrap, settings.schema_registry_port)
    say(f"registry   ready on {registry_service.url(settings.schema_registry_port)} ({time.monotonic() - t:.1f}s)")
    return pid


def start_workers(settings: Settings, steps: tuple[str, ...] | None = None, replicas: int = 1,
                  say: Say = lambda _: None) -> int:
    """Start the supervisor, which keeps ``replicas`` worker processes per step alive. Returns its pid."""
    from streams import supervisor
    steps = pipelines.load(settings.pipeline or None).step_names if steps is None else steps
    wanted = supervisor.desired_slots(settings.home)
    wanted.update({step: max(wanted.get(step, 0), replicas) for step in steps})
    wanted[supervisor.INSIGHTS] = _insights_slot(settings, say)
    _check_metrics_ports(settings, {s: n for s, n in wanted.items() if s != supervisor.INSIGHTS})
    supervisor.write_slots(settings.home, wanted)
    pid = proc.read_pid(settings.home, supervisor.NAME)
    if pid is None or not proc.is_alive(pid):
        pid = proc.spawn(supervisor.NAME, [sys.executable, "-m", "streams.cli", "supervise"], settings.home,
                         env={"TRIAGE_HOME": str(settings.home)}, cwd=REPO_ROOT)
    proc.wait_until(lambda: all(_worker_up(settings, s) for s in steps), 30, what="the workers to start")
    say(f"workers    {sum(n for s, n in wanted.items() if s != supervisor.INSIGHTS)} under the supervisor: "
        f"{', '.join(steps)}")
    if wanted.get(supervisor.INSIGHTS):
        say(f"insights   under the supervisor, on http://127.0.0.1:{_insights_port()}/insights (`triage insights`)")
    return pid


def _insights_port() -> int:
    from streams.insights import settings as insights_settings
    return insights_settings.load().port


def insights_on() -> bool:
    """Whether `triage up` runs the insights worker (TRIAGE_INSIGHTS, default on)."""
    return os.environ.get("TRIAGE_INSIGHTS", "on").strip().lower() not in ("off", "0", "false", "no")


def _insights_slot(settings: Settings, say: Say) -> int:
    """1 when this home runs the insights worker; 0 when it is off (TRIAGE_INSIGHTS=off) or another home's
    already answers on its port (one reads every pipeline's topics: a second could not bind the port, and
    would only count the same records again)."""
    from streams import supervisor
    if not insights_on():
        return 0
    port = _insights_port()
    if supervisor.INSIGHTS_NAME not in proc.list_running(settings.home) and proc.port_open("127.0.0.1", port):
        say(f"insights   already served on 127.0.0.1:{port} by another home: shared")
        return 0
    return 1


def _check_metrics_ports(settings: Settings, wanted: dict[str, int]) -> None:
    """Refuses, before any worker starts, ports another process holds: a worker that cannot bind its
    /metrics port exits, and the supervisor would restart it for ever (a second home beside the first)."""
    from streams import supervisor
    ours = workers(settings)
    taken = []
    for step, n in wanted.items():
        for i in range(n):
            port = supervisor.metrics_port(step, i)
            if f"worker-{step}-{i}" not in ours and proc.port_open("127.0.0.1", port):
                taken.append(port)
    if taken:
        raise ServiceError(f"metrics port(s) {', '.join(map(str, taken))} are taken by processes this home did "
                           f"not start (another pipeline's workers?): set TRIAGE_METRICS_BASE_PORT to a free "
                           f"range of {10 * len(wanted)} ports")


def _worker_up(settings: Settings, step: str) -> bool:
    pid = proc.read_pid(settings.home, f"worker-{step}-0")
    return pid is not None and proc.is_alive(pid)


def workers(settings: Settings) -> dict[str, int]:
    return {n: p for n, p in proc.list_running(settings.home).items() if n.startswith("worker-")}


def down(settings: Settings, say: Say = lambda _: None) -> list[str]:
    """Stop workers first (they drain and commit), then the model server, the schema registry, Redis and Kafka."""
    from streams import supervisor
    stopped = []
    if proc.stop(settings.home, supervisor.NAME, timeout=60):
        stopped.append(supervisor.NAME)
    supervisor.write_slots(settings.home, {})
    for name in [*sorted(workers(settings)), supervisor.INSIGHTS_NAME]:
        if proc.stop(settings.home, name, timeout=20):
            stopped.append(name)
    if proc.stop(settings.home, OFFLINE):
        stopped.append(OFFLINE)
    if registry_service.stop_registry(settings.home):
        stopped.append(registry_service.NAME)
    if stop_redis(settings.home):
        stopped.append("redis")
    for name in sorted(proc.list_running(settings.home)):
        if name.startswith("kafka-") and stop_broker(settings.home, int(name.split("-")[1])):
            stopped.append(name)
    for name in stopped:
        say(f"stopped    {name}")
    return stopped


def load_knowledge_bases(settings: Settings, kb_dir: Path | None = None) -> dict[str, int]:
    """Load ``<tenant>.jsonl`` files into Redis, each through its tenant's store. Returns docs per tenant."""
    import asyncio

    from streams.tenant_state import TenantStore, connect

    kb_dir = kb_dir or settings.data_dir / "kb"
    files = sorted(kb_dir.glob("*.jsonl"))
    if not files:
        raise ServiceError(f"no knowledge base files (*.jsonl) in {kb_dir}")

    async def load() -> dict[str, int]:
        client = connect(settings.redis_url)
        try:
            out = {}
            for f in files:
                docs = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
                tenant = f.stem
                out[tenant] = await TenantStore(client, tenant).kb_replace(docs)
            return out
        finally:
            await client.aclose()

    return asyncio.run(load())
