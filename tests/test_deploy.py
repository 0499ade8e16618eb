"""The deployment files under deploy/ agree with the code they deploy.

Docker Compose, the Kubernetes manifests and the Dockerfile are checked against the project's own truth:
the steps and topics of ``processors.topology``, the topic configs of ``streams.stack.topic_specs``, each step's
input topics, the settings of ``streams.config`` and the ``triage`` command line itself. No Docker, Kafka or
cluster is needed: the files are parsed, and every ``triage`` command line in them is parsed by the real CLI.
"""
from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer
import yaml
from typer.testing import CliRunner

from processors.offline.server import MODELS as OFFLINE_MODELS
from processors.support import PIPELINE
from streams import config, stack
from streams.cli import app
from processors.topology import CLASSIFIED, STEPS, all_topics, group_id

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
K8S = DEPLOY / "k8s"
K8S_FILES = ("namespace.yaml", "config.yaml", "topics.yaml", "workers.yaml", "autoscaling.yaml", "models.yaml")

SETTINGS = config.load({})  # the defaults: what a deployment must agree with
OFFLINE_SERVER = "processors.offline.server"
KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_-]{16,}")


# --------------------------------------------------------------------------- helpers

def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def parse_triage(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``triage <command> ...`` as the real CLI does (without running it): (command, its parameters)."""
    assert argv and argv[0] == "triage", argv
    group = typer.main.get_command(app)
    name, *rest = argv[1:]
    assert name in group.commands, f"`triage {name}` is not a command of streams.cli"
    ctx = group.commands[name].make_context(name, list(rest))  # raises on an unknown option or a missing argument
    return name, ctx.params


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, args = line.partition(" ")
            out.append((word.upper(), args.strip()))
    return out


def docker_exec_form(instruction: str) -> list[str]:
    found = [args for word, args in dockerfile() if word == instruction]
    assert found, f"deploy/Dockerfile has no {instruction}"
    value = json.loads(found[-1])  # the last one counts; exec form (a JSON array) so signals reach triage
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), value
    return value


def compose() -> dict[str, Any]:
    (doc,) = load_all(COMPOSE)
    return doc


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def uses_triage_image(service: dict[str, Any]) -> bool:
    b = service.get("build")
    if not isinstance(b, dict):
        return False
    return (COMPOSE.parent / b.get("context", ".") / b.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE.resolve()


def compose_argv(service: dict[str, Any]) -> list[str]:
    """What a compose service runs: its entrypoint (or the image's) followed by its command (or the image's)."""
    if uses_triage_image(service):
        entrypoint = as_list(service["entrypoint"]) if "entrypoint" in service else docker_exec_form("ENTRYPOINT")
        command = as_list(service["command"]) if "command" in service else docker_exec_form("CMD")
        return entrypoint + command
    return as_list(service.get("entrypoint")) + as_list(service.get("command"))


def compose_workers() -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    """Step -> (service name, service, parsed worker parameters) for every service running `triage worker`."""
    out: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
    for name, service in compose()["services"].items():
        argv = compose_argv(service)
        if argv[:2] == ["triage", "worker"]:
            _, params = parse_triage(argv)
            assert len(params["names"]) == 1, f"compose service {name} runs several steps: {params['names']}"
            step = params["names"][0]
            assert step not in out, f"two compose services run {step}: {out[step][0]} and {name}"
            out[step] = (name, service, params)
    return out


def k8s_docs() -> list[dict[str, Any]]:
    return [d for f in sorted(K8S.glob("*.yaml")) for d in load_all(f)]


def k8s(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d.get("kind") == kind]


def one(kind: str) -> dict[str, Any]:
    found = k8s(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def k8s_workers() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Step -> (Deployment, its worker container) for every Deployment running `triage worker`."""
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for d in k8s("Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            argv = as_list(c.get("command")) + as_list(c.get("args"))
            if argv[:2] == ["triage", "worker"]:
                _, params = parse_triage(argv)
                (step,) = params["names"]
                assert step not in out, f"two Deployments run {step}"
                out[step] = (d, c)
    return out


def assert_models_served_offline(env: dict[str, str]) -> None:
    """With OPENAI_BASE_URL on the offline server, every model any step may call must be one it serves."""
    s = config.load({k: str(v) for k, v in env.items()})
    for step, chain in s.models.items():
        missing = [m for m in chain if m not in OFFLINE_MODELS]
        assert not missing, f"{step} would call {missing}, which the offline server does not serve (404)"


# --------------------------------------------------------------------------- all files

def test_every_deploy_yaml_file_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert COMPOSE in files
    for name in K8S_FILES:
        assert K8S / name in files, f"deploy/k8s/{name} is missing"
    for f in files:
        docs = load_all(f)
        assert docs, f"{f.relative_to(ROOT)} holds no document"
        assert all(isinstance(d, dict) for d in docs), f"{f.relative_to(ROOT)}: a document is not a mapping"
    assert (K8S / "README.md").is_file()


def test_worker_command_exists_and_takes_an_instance() -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["worker", "--help"])
    assert r.exit_code == 0, r.output
    assert "--instance" in r.output
    r = runner.invoke(app, ["steps"])
    assert r.exit_code == 0, r.output
    assert r.output.split() == list(STEPS)


def test_no_real_key_anywhere_under_deploy() -> None:
    for f in DEPLOY.rglob("*"):
        if f.is_file() and f.suffix in {".yaml", ".yml", ".md", ".env", ""}:
            assert not KEY_LIKE.search(f.read_text(encoding="utf-8", errors="replace")), f"{f}: looks like an API key"


# --------------------------------------------------------------------------- Dockerfile

def test_dockerfile_installs_the_project_and_runs_triage_as_non_root() -> None:
    steps = dockerfile()
    assert [a for w, a in steps if w == "FROM"][-1].split()[0] == "python:3.11-slim"
    assert any(w == "RUN" and re.search(r"\bpip install \.(\s|$)", a) for w, a in steps), "no `pip install .`"
    # Every source the package is built from reaches the image, or `pip install .` fails.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]
    names = packages if isinstance(packages, list) else [p.rstrip("*") for p in packages["find"]["include"]]
    needed = {"pyproject.toml", pyproject["project"]["readme"], *(p.split(".")[0] for p in names)}
    copied = {Path(src).as_posix() for w, a in steps if w == "COPY" for src in a.split()[:-1] if not src.startswith("--")}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository (the build context)"

    entrypoint = docker_exec_form("ENTRYPOINT")
    assert entrypoint == ["triage"]
    assert "triage" in pyproject["project"]["scripts"]
    command, params = parse_triage(entrypoint + docker_exec_form("CMD"))
    assert (command, params["names"]) == ("worker", ["all"])

    users = [a for w, a in steps if w == "USER"]
    assert users, "the image runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric USER lets Kubernetes verify runAsNonRoot"


# --------------------------------------------------------------------------- Docker Compose

def test_compose_has_one_service_per_step_named_after_it() -> None:
    workers = compose_workers()
    assert set(workers) == set(STEPS)
    services = compose()["services"]
    for step, (name, service, params) in workers.items():
        assert name == step
        assert compose_argv(service)[:3] == ["triage", "worker", step]
        assert params["instance"] == step, f"{name}: --instance {params['instance']!r}"
        assert service["restart"] == "unless-stopped"
        deps = service["depends_on"]
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, cond in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert cond["condition"] in ("service_started", "service_healthy", "service_completed_successfully")
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck to wait for"
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["topics"]["condition"] == "service_completed_successfully"


def test_compose_workers_reach_kafka_redis_and_a_model_server_that_serves_their_models() -> None:
    services = compose()["services"]
    for step, (name, service, _) in compose_workers().items():
        env = service["environment"]
        assert env["TRIAGE_BOOTSTRAP"] == "kafka:9092"
        assert env["TRIAGE_REDIS_URL"] == "redis://redis:6379/0"
        assert env["OPENAI_BASE_URL"] == "http://models:8700/v1"
        assert "depends_on" in service and "models" in service["depends_on"]
        assert not KEY_LIKE.search(str(env.get("OPENAI_API_KEY", "")))
        assert_models_served_offline({k: v for k, v in env.items() if k != "OPENAI_API_KEY"})
    assert services["redis"]["image"] == "redis:7"
    models = services["models"]
    assert uses_triage_image(models)
    argv = compose_argv(models)
    assert argv[:3] == ["python", "-m", OFFLINE_SERVER]
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "8700"


def test_compose_kafka_is_a_single_kraft_node() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"] and "PLAINTEXT://:9092" in env["KAFKA_LISTENERS"]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "healthcheck" in kafka


def test_compose_topics_service_creates_every_topic_as_the_stack_does() -> None:
    topics = compose()["services"]["topics"]
    assert topics["image"] == compose()["services"]["kafka"]["image"]
    script = "\n".join(as_list(topics["command"]) if not isinstance(topics["command"], str) else [topics["command"]])
    assert "kafka-topics.sh" in script and "--create" in script and "--replication-factor 1" in script
    created: dict[str, tuple[int, dict[str, str]]] = {}
    for line in script.splitlines():
        m = re.search(r"--topic\s+(\S+)", line)
        if not m:
            continue
        partitions = int(re.search(r"--partitions\s+(\d+)", line).group(1))
        configs = dict(c.split("=", 1) for c in re.findall(r"--config\s+(\S+)", line))
        assert m.group(1) not in created, f"{m.group(1)} created twice"
        created[m.group(1)] = (partitions, configs)
    assert set(created) == set(all_topics())
    for spec in stack.topic_specs(SETTINGS):
        assert created[spec.name] == (spec.partitions, spec.config), spec.name


# --------------------------------------------------------------------------- Kubernetes

def test_k8s_every_object_is_in_the_namespace() -> None:
    ns = one("Namespace")["metadata"]["name"]
    for d in k8s_docs():
        assert {"apiVersion", "kind", "metadata"} <= set(d), d
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == ns, f"{d['kind']} {d['metadata']['name']}"


def test_k8s_config_and_secret_template() -> None:
    cm = one("ConfigMap")
    data = cm["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    assert {"TRIAGE_BOOTSTRAP", "TRIAGE_REDIS_URL", "OPENAI_BASE_URL"} <= set(data)
    assert config.load(data).partitions == SETTINGS.partitions
    secret = one("Secret")
    assert "data" not in secret, "the Secret is a template: stringData with a placeholder only"
    key = secret["stringData"]["OPENAI_API_KEY"]
    assert re.fullmatch(r"<?REPLACE[A-Z_-]*>?", key), f"OPENAI_API_KEY must be a placeholder, got {key!r}"


def test_k8s_model_server_serves_what_the_workers_ask_for() -> None:
    data = one("ConfigMap")["data"]
    url = urlsplit(data["OPENAI_BASE_URL"])
    service = next(s for s in k8s("Service") if url.hostname.split(".")[0] == s["metadata"]["name"])
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    selector = service["spec"]["selector"]
    (deploy,) = [d for d in k8s("Deployment")
                 if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    argv = as_list(container["command"]) + as_list(container.get("args"))
    assert argv[:3] == ["python", "-m", OFFLINE_SERVER]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert int(argv[argv.index("--port") + 1]) in [p.get("containerPort") for p in container["ports"]]
    assert_models_served_offline(data)


def test_k8s_one_deployment_per_step() -> None:
    workers = k8s_workers()
    assert set(workers) == set(STEPS)
    cm, secret = one("ConfigMap")["metadata"]["name"], one("Secret")["metadata"]["name"]
    for step, (d, c) in workers.items():
        assert d["metadata"]["name"] == f"triage-{step}"
        assert c["command"] == ["triage", "worker", step]
        spec = d["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        pod = spec["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 60
        refs = {(k, v["name"]) for e in c["envFrom"] for k, v in e.items()}
        assert refs == {("configMapRef", cm), ("secretRef", secret)}
        instance = {e["name"]: e for e in c["env"]}["TRIAGE_INSTANCE"]
        assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{step}: resources.{kind}"


def test_k8s_one_kafka_topic_per_topic() -> None:
    found: dict[str, dict[str, Any]] = {}
    for t in k8s("KafkaTopic"):
        assert t["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == "triage"
        name = t["spec"].get("topicName", t["metadata"]["name"])
        assert name not in found, f"two KafkaTopics for {name}"
        found[name] = t["spec"]
    assert set(found) == set(all_topics())
    for spec in stack.topic_specs(SETTINGS):
        t = found[spec.name]
        assert t["partitions"] == spec.partitions, spec.name
        assert t["replicas"] == 3
        cfg = {k: str(v) for k, v in t["config"].items()}
        assert cfg.pop("min.insync.replicas") == "2"
        assert cfg == spec.config, spec.name


def test_k8s_one_scaled_object_per_step_on_its_group_and_input() -> None:
    bootstrap = one("ConfigMap")["data"]["TRIAGE_BOOTSTRAP"]
    deployments = {d["metadata"]["name"] for d in k8s("Deployment")}
    workers = k8s_workers()
    found: dict[str, dict[str, Any]] = {}
    for so in k8s("ScaledObject"):
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        target = so["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, f"ScaledObject {so['metadata']['name']} scales unknown {target}"
        step = next(s for s, (d, _) in workers.items() if d["metadata"]["name"] == target)
        assert step not in found, f"two ScaledObjects scale {step}"
        found[step] = so["spec"]
    assert set(found) == set(STEPS)
    for step, spec in found.items():
        assert spec["minReplicaCount"] == 1
        assert spec["maxReplicaCount"] == SETTINGS.partitions
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        m = trigger["metadata"]
        assert m["consumerGroup"] == group_id(step)
        assert m["topic"] in PIPELINE.build(step, SETTINGS).inputs, f"{step} does not read {m['topic']}"
        if step == "join":
            assert m["topic"] == CLASSIFIED
        assert m["lagThreshold"] == "50"
        assert m["bootstrapServers"] == bootstrap
