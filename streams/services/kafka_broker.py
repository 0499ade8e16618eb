"""A real Apache Kafka broker (KRaft, combined broker+controller) run from Maven-resolved jars.

No Docker and no Kafka distribution: ``deploy/kafka/pom.xml`` pins the version, Maven copies the
jars to ``home/kafka/libs`` once, and ``kafka.Kafka`` runs on the machine's Java 17 with loopback
listeners only. One node today; :class:`BrokerSpec` carries everything node-specific (ids, ports,
quorum voters, internal replication) so a 3-node quorum is three specs sharing ``voters``.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.kafka_io import base_config
from streams.services import ServiceError, proc

READY_MESSAGE = "Kafka Server started"
_KAFKA_JAR_GLOB = "kafka_2.13-*.jar"
_MARKER = ".pom.sha256"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Maven 3.8 colours some lines even in batch mode


@dataclass(frozen=True)
class BrokerSpec:
    """One KRaft node. Defaults give the single-node dev broker on 127.0.0.1:9092.

    ``voters`` is the ``controller.quorum.voters`` value; empty means "just this node". For a
    multi-node quorum give every spec the same voters string and set ``internal_replication``.
    ``log_dir`` defaults to ``home/kafka/node-<id>/data`` (see :meth:`data_dir`).
    """

    node_id: int = 1
    port: int = 9092
    controller_port: int = 9093
    host: str = "127.0.0.1"
    partitions: int = 6
    log_dir: Path | None = None
    voters: str = ""
    internal_replication: int = 1
    heap: str = "1g"
    overrides: tuple[tuple[str, str], ...] = field(default=())

    @property
    def name(self) -> str:
        """Service name used for the pid and log files."""
        return f"kafka-{self.node_id}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def quorum_voters(self) -> str:
        return self.voters or f"{self.node_id}@{self.host}:{self.controller_port}"

    def node_dir(self, home: Path) -> Path:
        return Path(home) / "kafka" / f"node-{self.node_id}"

    def data_dir(self, home: Path) -> Path:
        return Path(self.log_dir) if self.log_dir else self.node_dir(home) / "data"

    def properties(self, home: Path) -> dict[str, str]:
        """The server.properties content for this node, in file order."""
        rf = self.internal_replication
        # With RF 1 the only possible ISR is 1; with more replicas keep one spare for availability.
        min_isr = 1 if rf == 1 else rf - 1
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum_voters,
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir(home)),
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": str(rf),
            # 12 instead of 50: each internal partition is created at first use and slows start-up.
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "12",
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "group.initial.rebalance.delay.ms": "0",
        }
        props.update(dict(self.overrides))
        return props


@dataclass(frozen=True)
class TopicSpec:
    """A topic :func:`ensure_topics` creates if missing (existing topics are not altered)."""

    name: str
    partitions: int
    replication: int = 1
    config: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- jars

def _pom(repo_root: Path) -> Path:
    pom = Path(repo_root) / "deploy" / "kafka" / "pom.xml"
    if not pom.is_file():
        raise ServiceError(f"{pom} not found: repo_root must be the triage checkout")
    return pom


def resolve_jars(home: Path, repo_root: Path) -> Path:
    """Copy the broker's jars to ``home/kafka/libs`` with Maven and return that directory.

    Runs Maven only when the directory lacks ``kafka_2.13-*.jar`` or was filled from a different
    pom (a marker file holds the pom's sha256). Jars are copied to a staging directory and swapped
    in whole, so a pom change never leaves two Kafka versions on the classpath. Uses the normal
    local repository (~/.m2), so repeated resolutions are offline and take ~2 s.
    Raises ServiceError if ``mvn`` is missing or fails (with the tail of Maven's output).
    """
    home = Path(home).resolve()
    pom = _pom(repo_root)
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    kafka_dir = Path(home) / "kafka"
    libs = kafka_dir / "libs"
    with proc.lock(home, "kafka-libs"):
        if _libs_current(libs, digest):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError("Maven is required to fetch the Kafka jars: apt-get install -y maven")
        staging = kafka_dir / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        argv = [mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom),
                "dependency:copy-dependencies", f"-Dlibs.dir={staging}"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"mvn did not finish within 30 min: {' '.join(argv)}") from exc
        if done.returncode != 0 or not any(staging.glob(_KAFKA_JAR_GLOB)):
            output = _ANSI.sub("", done.stdout + done.stderr).strip().splitlines()[-40:]
            shutil.rmtree(staging, ignore_errors=True)
            raise ServiceError(
                f"resolving the Kafka jars failed (mvn exit {done.returncode}): {' '.join(argv)}\n"
                + ("\n".join(output) or "(no output; is deploy/kafka/pom.xml valid?)")
            )
        (staging / _MARKER).write_text(digest + "\n")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
    return libs


def _libs_current(libs: Path, digest: str) -> bool:
    try:
        return any(libs.glob(_KAFKA_JAR_GLOB)) and (libs / _MARKER).read_text().strip() == digest
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- broker

def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError("Java 17+ is required to run Kafka: apt-get install -y openjdk-17-jre-headless")
    return java


def _run_tool(java: str, libs: Path, args: list[str]) -> str:
    argv = [java, "-cp", f"{libs}/*", "kafka.tools.StorageTool", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        raise ServiceError(f"Kafka storage tool failed (exit {done.returncode}): {' '.join(argv)}\n"
                           + "\n".join(output[:5] + ["..."] + output[-10:] if len(output) > 20 else output))
    return done.stdout


def _cluster_id(home: Path, java: str, libs: Path) -> str:
    # Shared by every node under this home: all members of one quorum must be formatted with it.
    path = Path(home) / "kafka" / "cluster.id"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    lines = [ln.strip() for ln in _run_tool(java, libs, ["random-uuid"]).splitlines() if ln.strip()]
    if not lines:
        raise ServiceError("kafka.tools.StorageTool random-uuid printed nothing")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(lines[-1] + "\n")
    return lines[-1]


def prepare_cluster(home: Path, repo_root: Path) -> str:
    """Resolve the jars and fix the cluster id once, before the nodes of a quorum start side by side."""
    return _cluster_id(Path(home).resolve(), _java(), resolve_jars(Path(home).resolve(), Path(repo_root).resolve()))


def write_config(home: Path, spec: BrokerSpec) -> Path:
    """Write ``home/kafka/node-<id>/server.properties`` for ``spec`` and return its path."""
    node = spec.node_dir(home)
    node.mkdir(parents=True, exist_ok=True)
    path = node / "server.properties"
    body = "".join(f"{k}={v}\n" for k, v in spec.properties(home).items())
    path.write_text(f"# generated by triage (streams.services.kafka_broker); edits are overwritten\n{body}")
    return path


def _format_storage(home: Path, spec: BrokerSpec, java: str, libs: Path, config: Path) -> None:
    if (spec.data_dir(home) / "meta.properties").is_file():
        return
    cluster_id = _cluster_id(home, java, libs)
    # Static controller.quorum.voters: Kafka 4.x rejects --standalone/--initial-controllers here.
    _run_tool(java, libs, ["format", "-t", cluster_id, "-c", str(config)])


def broker_ready(bootstrap: str, timeout: float) -> bool:
    """True if a broker at ``bootstrap`` answers a metadata request within ``timeout`` seconds.

    Never raises for connection problems; a closed port returns False at once.
    """
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not proc.port_open(host.strip("[]") or "127.0.0.1", int(port), timeout=min(timeout, 1.0)):
        return False
    admin = AdminClient({**base_config(bootstrap), "log_level": 0,
                         "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000))})
    try:
        return len(admin.list_topics(timeout=timeout).brokers) > 0
    except KafkaException:
        return False


def start_broker(home: Path, repo_root: Path, spec: BrokerSpec = BrokerSpec(),
                 timeout: float = 90.0) -> int:
    """Start the broker described by ``spec`` (or find it running) and return its pid.

    Idempotent: if the recorded process is alive it is waited for and returned instead of
    starting a second one. On first start the storage is formatted (once; ``meta.properties``
    marks it). Returns only when the admin API answers and the log says "Kafka Server started".
    Raises ServiceError (with the log tail) if Java/Maven are missing, the ports are taken by
    something else, the process dies, or it is not ready within ``timeout`` (it is then stopped).
    """
    # Absolute paths: the JVM runs in the node directory, and the config must not depend on our cwd.
    home, repo_root = Path(home).resolve(), Path(repo_root).resolve()
    name = spec.name
    with proc.lock(home, name):
        pid = proc.read_pid(home, name)
        if pid is not None and proc.is_alive(pid):
            _wait_ready(home, spec, pid, since=None, timeout=timeout)
            return pid
        for port in (spec.port, spec.controller_port):
            if proc.port_open(spec.host, port):
                raise ServiceError(
                    f"{spec.host}:{port} is already in use by a process triage did not start "
                    f"(no live {proc.pid_path(home, name)}); stop it or use other ports")
        java = _java()
        libs = resolve_jars(home, repo_root)
        log4j = Path(repo_root) / "deploy" / "kafka" / "log4j2.properties"
        if not log4j.is_file():
            raise ServiceError(f"{log4j} not found: the broker would log nothing we can wait for")
        config = write_config(home, spec)
        _format_storage(home, spec, java, libs, config)
        log = proc.log_path(home, name)
        since = log.stat().st_size if log.exists() else 0
        argv = [java, "-Xms256m", f"-Xmx{spec.heap}", "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
                "-cp", f"{libs}/*", "kafka.Kafka", str(config)]
        pid = proc.spawn(name, argv, home, cwd=spec.node_dir(home))
        if since > (log.stat().st_size if log.exists() else 0):
            since = 0  # spawn rotated the log
        try:
            _wait_ready(home, spec, pid, since=since, timeout=timeout)
        except ServiceError:
            proc.stop(home, name, timeout=10)
            raise
        return pid


def _wait_ready(home: Path, spec: BrokerSpec, pid: int, since: int | None, timeout: float) -> None:
    """Wait for ``READY_MESSAGE`` in the log after byte ``since`` (None: skip) and for the admin API."""
    log = proc.log_path(home, spec.name)

    def ready() -> bool:
        if not proc.is_alive(pid):
            raise ServiceError(f"Kafka node {spec.node_id} (pid {pid}) exited during start-up; "
                               f"log {log}:\n{proc.log_tail(home, spec.name, since=since or 0)}")
        if since is not None and not _log_has(log, since, READY_MESSAGE):
            return False
        return broker_ready(spec.bootstrap, timeout=2.0)

    try:
        proc.wait_until(ready, timeout, interval=0.2, what=f"Kafka node {spec.node_id} on {spec.bootstrap}")
    except TimeoutError as exc:
        raise ServiceError(f"{exc}; log {log}:\n{proc.log_tail(home, spec.name, since=since or 0)}") from exc


def _log_has(log: Path, since: int, needle: str) -> bool:
    try:
        with log.open("rb") as fh:
            fh.seek(since)
            return needle.encode() in fh.read()
    except FileNotFoundError:
        return False


def stop_broker(home: Path, node_id: int = 1, timeout: float = 30.0) -> bool:
    """Stop node ``node_id`` (controlled shutdown, SIGKILL after ``timeout``). True if it was running."""
    # No lock: stopping must work while a start_broker elsewhere is still waiting for readiness.
    return proc.stop(home, BrokerSpec(node_id=node_id).name, timeout=timeout)


# --------------------------------------------------------------------------- topics

def ensure_topics(bootstrap: str, topics: list[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created (in ``topics`` order).

    Existing topics are left as they are (partition count and config are not reconciled); losing
    a creation race (TOPIC_ALREADY_EXISTS) is not an error. Returns only once metadata shows every
    topic with all partitions led. Raises ServiceError on any other creation error or timeout.
    """
    if not topics:
        return []
    admin = AdminClient({**base_config(bootstrap), "log_level": 0})
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise ServiceError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    missing = [t for t in topics if t.name not in existing]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [NewTopic(t.name, num_partitions=t.partitions, replication_factor=t.replication,
                      config=dict(t.config)) for t in missing],
            operation_timeout=timeout, request_timeout=timeout)
        for t in missing:
            try:
                futures[t.name].result(timeout=timeout + 5)
                created.append(t.name)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise ServiceError(f"creating topic {t.name!r} ({t.partitions} partitions, "
                                   f"rf {t.replication}, config {t.config}) failed: {exc}") from exc
    expected = {t.name: (t.partitions if t.name in created else 1) for t in topics}
    _wait_led(admin, expected, timeout)
    return created


def _wait_led(admin: AdminClient, expected: dict[str, int], timeout: float) -> None:
    def all_led() -> bool:
        try:
            md = admin.list_topics(timeout=5)
        except KafkaException:
            return False  # transient (e.g. leader election); the deadline bounds the retries
        for name, min_partitions in expected.items():
            topic = md.topics.get(name)
            if topic is None or topic.error is not None or len(topic.partitions) < min_partitions:
                return False
            if any(p.leader < 0 or p.error is not None for p in topic.partitions.values()):
                return False
        return True

    started = time.monotonic()
    try:
        proc.wait_until(all_led, timeout, interval=0.2, what=f"leaders for topics {sorted(expected)}")
    except TimeoutError as exc:
        raise ServiceError(f"{exc} (waited {time.monotonic() - started:.1f}s)") from exc
