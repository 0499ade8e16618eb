"""The Docker Compose file of a pipeline: Kafka (one KRaft node), Redis, its topics, its model server and setup
commands if it declares them, and one service per step running ``triage worker <step>``."""
from __future__ import annotations

import os
import shlex

from streams.render.plan import APP, Plan
from streams.render.yaml_text import comment, flow, header, mapping, scalar

FILE = "docker-compose.yml"
KAFKA_IMAGE = "apache/kafka:4.1.1"
HOST_PORT = 29092
WIDTH = 112


def render(plan: Plan, location: str) -> dict[str, str]:
    """``{file name: text}``; ``location`` is where the file goes, relative to the build context (the
    directory `triage render` runs in, whose ``deploy/Dockerfile`` builds the image)."""
    p = plan.pipeline
    path = f"{location}/{FILE}"
    first = p.step_names[0]
    sample = f"/opt/{APP}/sample/{plan.sample}" if plan.sample else "FILE"
    parts = ["Kafka (KRaft, one combined node)", "Redis"]
    if plan.models:
        parts.append("the offline model server")
    parts.append("the topics")
    parts += [f"the one-shot {s.name}" for s in plan.setup]
    lines = header(f"triage render compose{plan.command}", plan.pipeline.name)
    lines += comment(f"""
{APP} on Docker Compose, the pipeline {p.name}: {", ".join(parts)}, and one service per step.

  docker compose -f {path} up -d --build
  docker compose -f {path} exec {first} triage produce {sample} --max 10
  docker compose -f {path} exec {first} triage tail {(p.outcomes or p.dead_letter_topics())[0]} --max 5
  docker compose -f {path} down          # workers drain and commit first (60 s)

From the host, Kafka answers on localhost:{HOST_PORT} (TRIAGE_BOOTSTRAP=localhost:{HOST_PORT} triage produce ...).

Every step's service is named after the step (`triage steps{plan.command}`) and runs `triage worker <step>
--instance <step>`. The instance name is the worker's transactional identity: do not `--scale` a step's service
(its replicas would share one identity and fence each other); copy the service under another name and --instance
instead, up to {plan.partitions} replicas per step (the partition count).""".lstrip("\n"), width=WIDTH)
    lines += [f"name: {scalar(plan.prefix)}", ""]
    lines += _anchors(plan, location)
    lines += ["services:"]
    lines += _infrastructure(plan)
    for s in p.steps:
        lines += ["", f"  {scalar(s.name)}:", "    <<: *worker",
                  f"    command: {flow(['worker', s.name, '--instance', s.name])}"]
    lines += ["", "volumes:", "  kafka-data:", "  redis-data:"]
    return {FILE: "\n".join(lines) + "\n"}


def _anchors(plan: Plan, location: str) -> list[str]:
    context = os.path.relpath(".", location).replace(os.sep, "/")
    lines = ["x-triage-image: &triage-image", f"  image: {APP}:latest", "  build:", f"    context: {scalar(context)}",
             "    dockerfile: deploy/Dockerfile", "", "x-worker: &worker", "  <<: *triage-image",
             "  restart: unless-stopped",
             "  # Workers drain in-flight records and commit their last transaction on SIGTERM.",
             "  stop_grace_period: 60s", "  environment:"]
    lines += mapping({"TRIAGE_BOOTSTRAP": "kafka:9092", "TRIAGE_REDIS_URL": "redis://redis:6379/0",
                      "TRIAGE_PIPELINE": plan.spec, "TRIAGE_PARTITIONS": str(plan.partitions),
                      "TRIAGE_TENANTS": ",".join(plan.tenants)}, 4)
    if plan.models:
        lines += comment("""
The offline model server below. For real models replace this with your OpenAI-compatible endpoint, put
OPENAI_API_KEY in .env beside this file (or a secret manager; never in this file), and delete the TRIAGE_MODEL_*
lines so each step uses its default remote models.""".lstrip("\n"), 4, width=WIDTH)
        lines += [f"    OPENAI_BASE_URL: http://models:{plan.models.port}/v1"]
    else:
        lines += comment("Your OpenAI-compatible endpoint, if a step calls models (the key in .env beside this file).", 4)
    lines += ["    OPENAI_API_KEY: ${OPENAI_API_KEY:-}"]
    if plan.models and plan.models.env:
        lines += comment("With OPENAI_BASE_URL set, triage defaults to remote model names; the offline server "
                         "serves these.", 4)
        lines += mapping(plan.models.env, 4)
    lines += ["  depends_on:"]
    deps = [("kafka", "service_healthy"), ("topics", "service_completed_successfully"), ("redis",
"service_healthy")]
    if plan.models:
        deps.append(("models", "service_healthy"))
    deps += [(s.name, "service_completed_successfully") for s in plan.setup]
    for name, condition in deps:
        lines += [f"    {scalar(name)}:", f"      condition: {condition}"]
    return lines + [""]


def _infrastructure(plan: Plan) -> list[str]:
    lines = f"""  kafka:
    image: {KAFKA_IMAGE}
    restart: unless-stopped
    ports:
      - "{HOST_PORT}:{HOST_PORT}"
    environment:
      KAFKA_NODE_ID: 1
      KAFKA_PROCESS_ROLES: broker,controller
      KAFKA_LISTENERS: PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:{HOST_PORT}
      KAFKA_ADVERTISED_LISTENERS: PLAINTEXT://kafka:9092,HOST://localhost:{HOST_PORT}
      KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,HOST:PLAINTEXT
      KAFKA_CONTROLLER_LISTENER_NAMES: CONTROLLER
      KAFKA_INTER_BROKER_LISTENER_NAME: PLAINTEXT
      KAFKA_CONTROLLER_QUORUM_VOTERS: 1@kafka:9093
      KAFKA_LOG_DIRS: /var/lib/kafka/data
      KAFKA_NUM_PARTITIONS: {plan.partitions}
      KAFKA_AUTO_CREATE_TOPICS_ENABLE: "false"
      KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: 1
      KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: 1
      KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: 1
      KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR: 1
      KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR: 1
      KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: 0
    volumes:
      - kafka-data:/var/lib/kafka/data
    healthcheck:
      test: ["CMD-SHELL", "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server kafka:9092 > /dev/null
2>&1"]
      interval: 10s
      timeout: 20s
      retries: 12
      start_period: 20s

  redis:
    image: redis:7
    restart: unless-stopped
    command: ["redis-server", "--appendonly", "yes"]
    volumes:
      - redis-data:/data
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 5s
      timeout: 3s
      retries: 20
""".splitlines()
    lines += ["", *_topics(plan)]
    if plan.models:
        m = plan.models
        probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{m.port}/healthz', timeout=2)"
        lines += ["", "  models:", "    <<: *triage-image", "    restart: unless-stopped",
                  f"    entrypoint: {flow(['python', '-m', m.module])}",
                  f"    command: {flow(['--host', '0.0.0.0', '--port', str(m.port)])}",
                  "    healthcheck:", f"      test: {flow(['CMD', 'python', '-c', probe])}",
                  "      interval: 5s", "      timeout: 5s", "      retries: 20"]
    for s in plan.setup:
        lines += ["", *comment(f"One-shot: {s.about or '`triage ' + ' '.join(s.command) + '`'}.", 2),
                  f"  {scalar(s.name)}:", "    <<: *triage-image", '    restart: "no"',
                  f"    command: {flow(s.command)}", "    environment:"]
        env = {"TRIAGE_PIPELINE": plan.spec}
        if "kafka" in s.needs:
            env["TRIAGE_BOOTSTRAP"] = "kafka:9092"
        if "redis" in s.needs:
            env["TRIAGE_REDIS_URL"] = "redis://redis:6379/0"
        lines += mapping(env, 6)
        lines += ["    depends_on:"]
        if "kafka" in s.needs:
            lines += ["      topics:", "        condition: service_completed_successfully"]
        if "redis" in s.needs:
            lines += ["      redis:", "        condition: service_healthy"]
    return lines


def _topics(plan: Plan) -> list[str]:
    configs = plan.topic_configs(replication=1)
    lines = comment(f"""
One-shot: every topic of the pipeline, partitions and configs as the local stack creates them
(streams/topic_config.py): {plan.topic_summary()}.""".lstrip("\n"), 2, width=WIDTH)
    lines += ["  topics:", f"    image: {KAFKA_IMAGE}", '    restart: "no"', "    depends_on:", "      kafka:",
              "        condition: service_healthy", '    entrypoint: ["/bin/sh", "-c"]', "    command:", "      - |",
              "        set -e",
              '        KT="/opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:9092 --create --if-not-exists '
              '--replication-factor 1"']
    for name, config in configs.items():
        # $$: Compose reads a lone $ as its own variable; the shell sees one.
        words = ["$$KT", "--topic", shlex.quote(name), "--partitions", str(plan.partitions)]
        for k, v in config.items():
            words += ["--config", shlex.quote(f"{k}={v}")]
        lines.append("        " + " ".join(words))
    lines.append('        echo "topics ready"')
    return lines

