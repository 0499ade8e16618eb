"""The embedded Schema Registry: Apicurio Registry 2.1.5.Final, built from Maven Central by ``deploy/registry/pom.xml``.

No Docker and no distribution: Maven resolves the application artifact ``io.apicurio:apicurio-registry-app``
and the Quarkus Maven plugin (2.2.3.Final) packages it into ``home/registry/app/<name>-runner.jar`` with its
``lib/``, once (a marker holds the pom's sha256, like the Kafka jars). It runs on Java 17, on loopback.
The newest Apicurio versions Maven Central serves cannot be built (deploy/registry/BLOCKED.md), and the
KafkaSQL storage of 2.x is a separate artifact Central does not serve: the schemas live in the app's SQL
storage, an H2 database file under the home, so they survive restarts of the registry (not of the home).
Clients use its Confluent-compatible API, ``/apis/ccompat/v6`` (2.1 has no v7); the compatibility rule of
every subject is BACKWARD unless a subject says otherwise, as in Confluent's registry.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

from streams.services import ServiceError, proc

NAME = "schema-registry"
HOST = "127.0.0.1"
DEFAULT_PORT = 8781
_MARKER = ".pom.sha256"
_RUN_JAR = "triage-schema-registry-1-runner.jar"  # legacy-jar, as the artifact configures
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_JVM_DIRS = Path("/usr/lib/jvm")  # where Debian's and Adoptium's packages put their JDKs


def url(port: int = DEFAULT_PORT) -> str:
    """The Confluent-compatible API of the embedded registry on ``port``."""
    return f"http://{HOST}:{port}/apis/ccompat/v6"


# --------------------------------------------------------------------------- a JDK new enough

def _java_version(home: Path) -> int:
    try:
        text = (home / "release").read_text()
    except OSError:
        return 0
    m = re.search(r'^JAVA_VERSION="(\d+)', text, re.M)
    return int(m.group(1)) if m else 0


def java_home(minimum: int = 17) -> Path:
    """A JDK of version ``minimum`` or later: TRIAGE_REGISTRY_JAVA_HOME, JAVA_HOME, or the newest installed.

    Raises ServiceError naming what to install when there is none.
    """
    for var in ("TRIAGE_REGISTRY_JAVA_HOME", "JAVA_HOME"):
        given = os.environ.get(var)
        if given and _java_version(Path(given)) >= minimum:
            return Path(given)
    found = sorted(((_java_version(d), d) for d in _JVM_DIRS.glob("*") if d.is_dir()), reverse=True)
    if found and found[0][0] >= minimum:
        return found[0][1]
    raise ServiceError(f"the schema registry needs a Java {minimum}+ JDK ; install one "
                       f"(e.g. openjdk-17-jdk-headless) or set TRIAGE_REGISTRY_JAVA_HOME")


# --------------------------------------------------------------------------- build

def _pom(repo_root: Path) -> Path:
    pom = Path(repo_root) / "deploy" / "registry" / "pom.xml"
    if not pom.is_file():
        raise ServiceError(f"{pom} not found: repo_root must be the triage checkout")
    return pom


def app_dir(repo_root: Path) -> Path:
    """Where the built registry lives: ``build/registry`` of the checkout, shared by every home started from
    it (a test session's temporary homes included), because a build takes minutes and a copy is the same."""
    return Path(repo_root).resolve() / "build" / "registry"


def build(repo_root: Path, timeout: float = 1800.0) -> Path:
    """Build the registry into :func:`app_dir` with Maven (once per pom) and return that directory.

    Uses the normal local repository (~/.m2): a rebuild from a filled one is offline. The build runs in a
    staging directory swapped in whole. Raises ServiceError (with the tail of Maven's output) if Maven or a
    JDK 17+ is missing or the build fails.
    """
    pom = _pom(repo_root)
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    target = app_dir(repo_root)
    target.parent.mkdir(parents=True, exist_ok=True)
    with proc.lock(target.parent, "registry-build"):
        if _built(target, digest):
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError("Maven is required to build the schema registry: apt-get install -y maven")
        jdk = java_home()
        staging = target.parent / "registry.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        argv = [mvn, "-B", "-q", "-Dstyle.color=never", "-s", str(pom.parent / "settings.xml"), "-f", str(pom),
                "package",
                f"-Dregistry.build.dir={staging}"]
        env = {**os.environ, "JAVA_HOME": str(jdk)}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"mvn did not finish within {timeout:g}s: {' '.join(argv)}") from exc
        built = staging
        if done.returncode != 0 or not (built / _RUN_JAR).is_file():
            output = _ANSI.sub("", done.stdout + done.stderr).strip().splitlines()[-40:]
            raise ServiceError(
                f"building the schema registry failed (mvn exit {done.returncode}, JAVA_HOME={jdk}): "
                f"{' '.join(argv)}\n" + ("\n".join(output) or "(no output)"))
        (built / _MARKER).write_text(digest + "\n")
        shutil.rmtree(target, ignore_errors=True)
        built.rename(target)
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _built(target: Path, digest: str) -> bool:
    try:
        return (target / _RUN_JAR).is_file() and (target / _MARKER).read_text().strip() == digest
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- run

def registry_ready(port: int, timeout: float = 2.0) -> bool:
    """True if the registry on ``port`` answers its Confluent API (its storage caught up and serving)."""
    try:
        with urllib.request.urlopen(f"{url(port)}/subjects", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def properties(data_dir: Path, port: int) -> dict[str, str]:
    """The registry's runtime configuration (system properties): loopback, an H2 file under ``data_dir``."""
    return {
        "quarkus.http.host": HOST,
        "quarkus.http.port": str(port),
        "quarkus.http.access-log.enabled": "false",
        "quarkus.datasource.jdbc.url": f"jdbc:h2:file:{Path(data_dir) / 'registry_db'}",
        # Confluent's default: a new version must read the data of the one before it.
        "registry.rules.global.compatibility": "BACKWARD",
    }


def start_registry(home: Path, repo_root: Path, bootstrap: str, port: int = DEFAULT_PORT,
                   heap: str = "384m", timeout: float = 300.0) -> int:
    """Start the registry (building it first if needed), or find it running; return its pid.

    Returns when its Confluent API answers. Raises ServiceError (with the log tail) if the port is taken by
    a process triage did not start, the build fails, the process exits, or it is not ready within ``timeout``
    (it is then stopped).
    """
    home, repo_root = Path(home).resolve(), Path(repo_root).resolve()
    with proc.lock(home, NAME):
        pid = proc.read_pid(home, NAME)
        if pid is not None and proc.is_alive(pid):
            _wait_ready(home, pid, port, timeout)
            return pid
        for p in (port,):
            if proc.port_open(HOST, p):
                raise ServiceError(f"{HOST}:{p} is already in use by a process triage did not start "
                                   f"(no live {proc.pid_path(home, NAME)}); set TRIAGE_SCHEMA_REGISTRY_PORT")
        app = build(repo_root)
        java = java_home() / "bin" / "java"
        work = home / "registry" / "run"
        work.mkdir(parents=True, exist_ok=True)
        argv = [str(java), "-Xms64m", f"-Xmx{heap}", "-XX:+ExitOnOutOfMemoryError", "-XX:+UseSerialGC",
                "-Djava.awt.headless=true", f"-Djava.io.tmpdir={work}",
                *(f"-D{k}={v}" for k, v in properties(work, port).items()),
                "-jar", str(app / _RUN_JAR)]
        pid = proc.spawn(NAME, argv, home, cwd=work)
        try:
            _wait_ready(home, pid, port, timeout)
            set_global_compatibility(port)
        except ServiceError:
            proc.stop(home, NAME, timeout=10)
            raise
        return pid


def set_global_compatibility(port: int, level: str = "BACKWARD") -> None:
    """Make ``level`` the registry's global compatibility rule through the Confluent API (``PUT /config``).

    Apicurio 2.1 starts with no global rule (``GET /config`` answers NONE) and ignores the
    ``registry.rules.global.compatibility`` property, so without this every change would be accepted and the
    refusal the issue asks for would never be the registry's. Idempotent. Raises ServiceError if refused.
    """
    request = urllib.request.Request(f"{url(port)}/config", method="PUT",
                                     data=json.dumps({"compatibility": level}).encode(),
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            answer = json.loads(r.read() or b"{}")
    except (OSError, ValueError) as exc:
        raise ServiceError(f"setting the schema registry's global compatibility to {level} failed: {exc}") from exc
    if answer.get("compatibility", answer.get("compatibilityLevel")) != level:
        raise ServiceError(f"the schema registry answered {answer} to PUT /config {level}")


def _wait_ready(home: Path, pid: int, port: int, timeout: float) -> None:
    def ready() -> bool:
        if not proc.is_alive(pid):
            raise ServiceError(f"the schema registry (pid {pid}) exited during start-up; log "
                               f"{proc.log_path(home, NAME)}:\n{proc.log_tail(home, NAME)}")
        return registry_ready(port)

    try:
        proc.wait_until(ready, timeout, interval=0.2, what=f"the schema registry on {HOST}:{port}")
    except TimeoutError as exc:
        raise ServiceError(f"{exc}; log {proc.log_path(home, NAME)}:\n{proc.log_tail(home, NAME)}") from exc


def stop_registry(home: Path, timeout: float = 30.0) -> bool:
    """Stop the registry triage started under ``home`` (by its pid file). True if it was running."""
    return proc.stop(home, NAME, timeout=timeout)


def registry_port(home: Path) -> int | None:
    """The port the running registry was started with (read from its command line), or None."""
    pid = proc.read_pid(home, NAME)
    if pid is None or not proc.is_alive(pid):
        return None
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for a in args:
        if a.startswith(b"-Dquarkus.http.port="):
            return int(a.split(b"=", 1)[1])
    return None


if __name__ == "__main__":
    # `python -m streams.services.schema_registry`: build the registry ahead of time (make registry, CI's
    # install step), so neither `triage up` nor a test session waits minutes for Maven.
    import sys
    import time
    _t = time.monotonic()
    try:
        _dir = build(Path(__file__).resolve().parents[2])
    except ServiceError as _exc:
        sys.exit(str(_exc))
    print(f"schema registry built in {_dir} ({time.monotonic() - _t:.0f}s)")
