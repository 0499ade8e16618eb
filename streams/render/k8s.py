"""The Kubernetes manifests of a pipeline: a Strimzi ``KafkaTopic`` per topic, a Deployment per step, a KEDA
``ScaledObject`` per step's consumer group, its settings, and its model server if it declares one.

Everything goes in the namespace ``triage``, beside the Strimzi Kafka cluster ``triage`` (Strimzi's topic
operator reconciles only the KafkaTopics of its cluster's namespace); a pipeline's objects are named with its
prefix (see ``streams.render.plan``), so two pipelines' manifests apply side by side.
"""
from __future__ import annotations

import re

from streams.pipeline import StepSpec
from streams.render import k8s_readme
from streams.render.plan import APP, BOOTSTRAP, CLUSTER, LAG_PER_REPLICA, NAMESPACE, REPLICAS, Plan, k8s_name
from streams.render.yaml_text import comment, flow, header, mapping, scalar

WIDTH = 112
IMAGE_LINE = f"image: {APP}:latest   # build with deploy/Dockerfile and push to your registry"
POD_SECURITY = """securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  seccompProfile:
    type: RuntimeDefault"""
CONTAINER_SECURITY = """securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]"""


def render(plan: Plan, location: str) -> dict[str, str]:
    """``{file name: text}``; ``location`` is where the files go, relative to where `kubectl` runs."""
    command = f"triage render k8s{plan.command}"
    files = {"namespace.yaml": _namespace(plan), "config.yaml": _config(plan), "topics.yaml": _topics(plan),
             "workers.yaml": _workers(plan), "autoscaling.yaml": _autoscaling(plan)}
    if plan.models:
        files["models.yaml"] = _models(plan)
    out = {name: "\n".join([*header(command, plan.pipeline.name), *lines]) + "\n" for name, lines in files.items()}
    out["README.md"] = k8s_readme.render(plan, location, command, sorted(out))
    return out


def _indent(text: str, n: int) -> list[str]:
    return [" " * n + line for line in text.splitlines()]


def _metadata(name: str, labels: dict[str, str], namespaced: bool = True) -> list[str]:
    lines = ["metadata:", f"  name: {scalar(name)}"]
    if namespaced:
        lines.append(f"  namespace: {NAMESPACE}")
    return lines + ["  labels:", *mapping(labels, 4)]


def _namespace(plan: Plan) -> list[str]:
    return [*comment(f"""
Everything {APP} runs lives in this namespace, together with the Strimzi Kafka cluster `{CLUSTER}` (Strimzi's
topic operator only reconciles KafkaTopics in its cluster's namespace). Every pipeline's manifests name it;
applying it again changes nothing.""".lstrip("\n"), width=WIDTH),
            "apiVersion: v1", "kind: Namespace", *_metadata(NAMESPACE, {"app.kubernetes.io/name": APP}, False)]


def _config(plan: Plan) -> list[str]:
    p = plan.pipeline
    lines = comment(f"Settings of every {APP} process of the pipeline {p.name} (streams/config.py reads them "
                    f"from the environment).", width=WIDTH)
    lines += ["apiVersion: v1", "kind: ConfigMap", *_metadata(plan.name("config"), plan.labels()), "data:"]
    lines += comment(f"The plain listener of the Strimzi cluster `{CLUSTER}` (the bootstrap Service Strimzi "
                     f"creates).", 2)
    lines += mapping({"TRIAGE_BOOTSTRAP": BOOTSTRAP}, 2)
    lines += comment("A Redis you provide (a managed one, or a Helm chart); tenants' state lives here.", 2)
    lines += mapping({"TRIAGE_REDIS_URL": f"redis://{APP}-redis.{NAMESPACE}.svc:6379/0"}, 2)
    lines += comment("How a worker finds the pipeline in the image: a shipped name, module:attribute or a "
                     "file.", 2)
    lines += mapping({"TRIAGE_PIPELINE": plan.spec, "TRIAGE_PARTITIONS": str(plan.partitions),
                      "TRIAGE_TENANTS": ",".join(plan.tenants), "TRIAGE_MAX_IN_FLIGHT": "256",
                      "TRIAGE_MODEL_TIMEOUT_S": "10", "TRIAGE_RETRIES": "3", "TRIAGE_BACKOFF_S": "0.2",
                      "TRIAGE_STEP_DEADLINE_S": "60", "TRIAGE_JOIN_TIMEOUT_S": "120", "TRIAGE_HOME": "/tmp/triage",
                      **plan.settings}, 2)
    if plan.models:
        lines += comment(f"""
The offline model server of models.yaml. For real models replace this with your OpenAI-compatible endpoint, put
the key in the Secret below, and delete the TRIAGE_MODEL_* entries so every step uses its default remote
models.""".lstrip("\n"), 2, width=WIDTH)
        lines += mapping({"OPENAI_BASE_URL": f"http://{plan.name('models')}.{NAMESPACE}.svc:{plan.models.port}/v1"}, 2)
        if plan.models.env:
            lines += comment("With OPENAI_BASE_URL set, triage defaults to remote model names; the offline server "
                             "serves these.", 2)
            lines += mapping(plan.models.env, 2)
    else:
        lines += comment("Your OpenAI-compatible endpoint, if a step calls models (the key goes in the Secret "
                         "below):", 2)
        lines += comment("OPENAI_BASE_URL: https://api.openai.com/v1", 2)
    lines += ["---", *comment(f"""
A template: never commit a real key. Create the real Secret out of band instead of applying this one:
  kubectl -n {NAMESPACE} create secret generic {plan.name('openai')} --from-literal=OPENAI_API_KEY="$OPENAI_API_KEY"
(or with External Secrets / Sealed Secrets).{' The offline model server ignores the key.' if plan.models else ''}""".lstrip("\n"))]
    lines += ["apiVersion: v1", "kind: Secret", *_metadata(plan.name("openai"), plan.labels()), "type: Opaque",
              "stringData:", "  OPENAI_API_KEY: REPLACE_ME"]
    return lines


def _topics(plan: Plan) -> list[str]:
    configs = plan.topic_configs(replication=REPLICAS)
    lines = comment(f"""
One Strimzi KafkaTopic per topic of the pipeline {plan.pipeline.name}, configured as the local stack creates
them (streams/topic_config.py): {plan.topic_summary()}. Three replicas, two in sync: a committed transaction
survives the loss of one broker.""".lstrip("\n"), width=WIDTH)
    for name, config in configs.items():
        lines += ["---", "apiVersion: kafka.strimzi.io/v1beta2", "kind: KafkaTopic",
                  *_metadata(k8s_name(name), {"strimzi.io/cluster": CLUSTER}), "spec:",
                  f"  topicName: {scalar(name)}", f"  partitions: {plan.partitions}", f"  replicas: {REPLICAS}",
                  "  config:", *mapping({k: int(v) if v.isdigit() else v for k, v in config.items()}, 4)]
    return lines


def _stateful_note(plan: Plan, step: StepSpec) -> str:
    return (f"{step.name} is stateful: its pending records live in the compacted topic {step.changelog}, written "
            f"in the same transaction as its outputs. A replica restores the state of the partitions it is "
            f"assigned from that topic, so it scales like the other steps, up to the partition count "
            f"({plan.partitions}), with a short restore on each rebalance.")


def _workers(plan: Plan) -> list[str]:
    lines = comment(f"""
One Deployment per step of the pipeline {plan.pipeline.name} (`triage steps{plan.command}`), each running
`triage worker <step>`. TRIAGE_INSTANCE (the worker's transactional identity) is the pod's name. On SIGTERM a
worker stops fetching, finishes its in-flight records and commits them in one last transaction: give it 60 s.
Replicas are managed by KEDA (autoscaling.yaml), between 1 and {plan.partitions} (the partition count) per
step.""".lstrip("\n"), width=WIDTH)
    for step in plan.pipeline.steps:
        labels = plan.labels(**{"app.kubernetes.io/component": "worker", "triage/step": _label(step.name)})
        # State in memory: a stateful step holds every pending record of its partitions.
        memory = ("512Mi", "1Gi") if step.changelog else ("256Mi", "512Mi")
        lines += ["---", *(_wrap(_stateful_note(plan, step)) if step.changelog else []),
                  "apiVersion: apps/v1", "kind: Deployment", *_metadata(plan.name(step.name), labels), "spec:",
                  "  replicas: 1", "  selector:", "    matchLabels:", *mapping(labels, 6), "  template:",
                  "    metadata:", "      labels:", *mapping(labels, 8), "    spec:",
                  "      terminationGracePeriodSeconds: 60", *_indent(POD_SECURITY, 6), "      containers:",
                  "        - name: worker", f"          {IMAGE_LINE}", "          imagePullPolicy: IfNotPresent",
                  f"          command: {flow(['triage', 'worker', step.name])}", "          envFrom:",
                  "            - configMapRef:", f"                name: {plan.name('config')}",
                  "            - secretRef:", f"                name: {plan.name('openai')}", "          env:",
                  "            - name: TRIAGE_INSTANCE", "              valueFrom:", "                fieldRef:",
                  "                  fieldPath: metadata.name", "          resources:", "            requests:",
                  "              cpu: 100m", f"              memory: {memory[0]}", "            limits:",
                  '              cpu: "1"', f"              memory: {memory[1]}", *_indent(CONTAINER_SECURITY, 10),
                  "          volumeMounts:", "            - name: tmp", "              mountPath: /tmp",
                  "      volumes:", "        - name: tmp", "          emptyDir: {}"]
    return lines


def _autoscaling(plan: Plan) -> list[str]:
    p = plan.pipeline
    lines = comment(f"""
One KEDA ScaledObject per step: scale the step's Deployment on the lag of its consumer group
({p.group_id('<step>')}) on its input topic, {LAG_PER_REPLICA} records per replica, from 1 to {plan.partitions}
replicas (the partition count: one more consumer would get no partition). Scale-down waits 5 minutes, since
every change rebalances.""".lstrip("\n"), width=WIDTH)
    for step in p.steps:
        topic = plan.lag_topic(step)
        notes = []
        if len(step.consumes) > 1:
            writers = len(plan.producers(topic))
            notes.append(f"{step.name} reads {' and '.join(step.consumes)}; {topic} carries the most records per "
                         f"input ({writers} step{' writes' if writers == 1 else 's write'} it) and is the one its lag "
                         f"is measured on.")
        if step.changelog:
            notes.append(f"{step.name} is stateful: its replicas scale up to the partition count and each restores "
                         f"the state of its partitions from {step.changelog} on assignment.")
        lines += ["---", *_wrap(" ".join(notes)), "apiVersion: keda.sh/v1alpha1", "kind: ScaledObject",
                  *_metadata(plan.name(step.name), plan.labels(**{"triage/step": _label(step.name)})), "spec:",
                  "  scaleTargetRef:", f"    name: {scalar(plan.name(step.name))}", "  pollingInterval: 15",
                  "  cooldownPeriod: 300", "  minReplicaCount: 1", f"  maxReplicaCount: {plan.partitions}",
                  "  advanced:", "    horizontalPodAutoscalerConfig:", "      behavior:", "        scaleDown:",
                  "          stabilizationWindowSeconds: 300", "  triggers:", "    - type: kafka", "      metadata:",
                  *mapping({"bootstrapServers": BOOTSTRAP, "consumerGroup": p.group_id(step.name), "topic": topic,
                            "lagThreshold": str(LAG_PER_REPLICA)}, 8)]
    return lines


def _models(plan: Plan) -> list[str]:
    assert plan.models is not None
    m = plan.models
    labels = plan.labels(**{"app.kubernetes.io/component": "models"})
    name = plan.name("models")
    return [*comment("""
The offline model server: an OpenAI-compatible endpoint with deterministic models, from the triage image. Not
needed once OPENAI_BASE_URL (config.yaml) points at a real endpoint.""".lstrip("\n"), width=WIDTH),
            "apiVersion: apps/v1", "kind: Deployment", *_metadata(name, labels), "spec:", "  replicas: 2",
            "  selector:", "    matchLabels:", *mapping(labels, 6), "  template:", "    metadata:", "      labels:",
            *mapping(labels, 8), "    spec:", *_indent(POD_SECURITY, 6), "      containers:",
            "        - name: models", f"          {IMAGE_LINE}", "          imagePullPolicy: IfNotPresent",
            f"          command: {flow(['python', '-m', m.module, '--host', '0.0.0.0', '--port', str(m.port)])}",
            "          ports:", "            - name: http", f"              containerPort: {m.port}",
            "          readinessProbe:", "            httpGet:", "              path: /healthz",
            "              port: http", "            periodSeconds: 5", "          livenessProbe:",
            "            httpGet:", "              path: /healthz", "              port: http",
            "            initialDelaySeconds: 10", "            periodSeconds: 20", "          resources:",
            "            requests:", "              cpu: 100m", "              memory: 128Mi", "            limits:",
            '              cpu: "1"', "              memory: 256Mi", *_indent(CONTAINER_SECURITY, 10),
            "---", "apiVersion: v1", "kind: Service", *_metadata(name, labels), "spec:", "  selector:",
            *mapping(labels, 4), "  ports:", "    - name: http", f"      port: {m.port}", "      targetPort: http"]


def _label(text: str) -> str:
    """``text`` as a label value (at most 63 of letters, digits, '-', '_', '.')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.") or "x"


def _wrap(text: str) -> list[str]:
    return comment(text, width=WIDTH) if text else []
