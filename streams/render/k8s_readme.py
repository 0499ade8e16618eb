"""The README beside a pipeline's Kubernetes manifests: what must exist first, the apply order, each file."""
from __future__ import annotations

import textwrap

from streams.render.plan import APP, BOOTSTRAP, CLUSTER, LAG_PER_REPLICA, NAMESPACE, REPLICAS, Plan
from streams.render.yaml_text import header

WIDTH = 110


def render(plan: Plan, location: str, command: str, files: list[str]) -> str:
    p = plan.pipeline
    n = plan.partitions
    each = f"{plan.prefix}-<step>"
    selector = "app.kubernetes.io/component=worker" + (
        f",app.kubernetes.io/instance={plan.prefix}" if "app.kubernetes.io/instance" in plan.labels() else "")
    image_files = " and ".join(f"`{f}`" for f in ("workers.yaml", "models.yaml") if f in files)

    apply = [f"kubectl apply -f {location}/namespace.yaml",
             f"kubectl apply -f {location}/config.yaml          # ConfigMap + the Secret *template* (see below)",
             f"kubectl apply -f {location}/topics.yaml          # KafkaTopics; wait until they are Ready:",
             f"kubectl -n {NAMESPACE} wait kafkatopic --all --for=condition=Ready --timeout=120s"]
    if plan.models:
        apply.append(f"kubectl apply -f {location}/models.yaml          # only while OPENAI_BASE_URL points at the "
                     f"offline server")
    apply += [f"kubectl apply -f {location}/workers.yaml         # one Deployment per step: {each}",
              f"kubectl apply -f {location}/autoscaling.yaml     # one KEDA ScaledObject per step"]
    for s in plan.setup:
        apply += [f"# {s.about}" if s.about else f"# setup: {s.name}",
                  f"kubectl -n {NAMESPACE} exec deploy/{plan.name(p.step_names[0])} -- triage {' '.join(s.command)}"]

    rows = [("namespace.yaml", f"the `{NAMESPACE}` namespace (every pipeline's manifests name it)"),
            ("config.yaml", f"ConfigMap `{plan.name('config')}` (every `TRIAGE_*` setting, `TRIAGE_PIPELINE`"
                            f"{', `OPENAI_BASE_URL`' if plan.models else ''}) and Secret `{plan.name('openai')}`"),
            ("topics.yaml", f"a Strimzi `KafkaTopic` per topic: {n} partitions, {REPLICAS} replicas, "
                            f"`min.insync.replicas: 2`; {_code(plan.topic_summary())}"),
            ("workers.yaml", f"Deployment `{each}` per step, running `triage worker <step>`; `TRIAGE_INSTANCE` is "
                             f"the pod name; 60 s to drain and commit on SIGTERM"),
            ("autoscaling.yaml", f"KEDA `ScaledObject` per step: lag of consumer group `{p.group_id('<step>')}` on "
                                 f"its input topic, {LAG_PER_REPLICA} records per replica, 1 to {n} replicas")]
    if plan.models:
        rows.append(("models.yaml", f"Deployment + Service `{plan.name('models')}`: the offline OpenAI-compatible "
                                    f"model server"))

    real = (f"then set `OPENAI_BASE_URL` in `config.yaml` to your endpoint, delete its `TRIAGE_MODEL_*` entries "
            f"(they name the offline models), and restart the workers" if plan.models else
            "then set `OPENAI_BASE_URL` in `config.yaml` if a step calls models, and restart the workers")
    scaling = [f"Each step scales on its own consumer group's lag, up to {n} replicas: the partition count, since "
               f"one more consumer would sit idle."]
    for s in plan.stateful():
        scaling.append(f"`{s.name}` is stateful: each replica restores the state of the partitions it is assigned "
                       f"from the compacted topic `{s.changelog}`, so it scales the same way, with a short restore "
                       f"on every rebalance"
                       + (f"; its lag is measured on `{plan.lag_topic(s)}`." if len(s.consumes) > 1 else "."))
    scaling.append(f"To go past {n} replicas, render again with more partitions (`TRIAGE_PARTITIONS=12 {command}`: "
                   f"the topics, `TRIAGE_PARTITIONS` and every `maxReplicaCount` follow; Strimzi can only increase "
                   f"partitions), and apply it only with the pipeline drained: more partitions move keys"
                   + (", and a stateful step needs an input's records and its state on the same partition number."
                      if plan.stateful() else "."))

    text = [*(f"<!-- {line[2:]} -->" for line in header(command, plan.pipeline.name)[:2]), "",
            f"# {APP} on Kubernetes: the pipeline `{p.name}`", "",
            *_para(f"Plain manifests, applied with `kubectl`. Everything lives in the namespace `{NAMESPACE}`; this "
                   f"pipeline's objects are named `{plan.prefix}-...`, so another pipeline's manifests apply "
                   f"beside them."), "",
            "## Assumed to be there already", "",
            *_para(f"- **Strimzi** (its Cluster Operator and Topic Operator) with a Kafka cluster named "
                   f"**`{CLUSTER}`** in the namespace `{NAMESPACE}`, at least 3 brokers, a plain listener on port "
                   f"9092 (bootstrap Service `{BOOTSTRAP.split('.')[0]}`), and `auto.create.topics.enable: false`. "
                   f"Exactly-once needs the transaction log replicated: "
                   f"`transaction.state.log.replication.factor: 3`, `transaction.state.log.min.isr: 2`, "
                   f"`offsets.topic.replication.factor: 3`."),
            *_para("- **KEDA** 2.x (it watches `ScaledObject`s in every namespace)."),
            *_para(f"- **Redis** at `redis://{APP}-redis.{NAMESPACE}.svc:6379/0` (any Redis 6+: a managed one or a "
                   f"Helm chart). Change `TRIAGE_REDIS_URL` in `config.yaml` to use another."),
            *_para(f"- The image built from `deploy/Dockerfile` (`docker build -f deploy/Dockerfile -t "
                   f"<registry>/{APP}:<tag> .` from the repository root) and pushed where the cluster can pull "
                   f"it; replace `{APP}:latest` in {image_files} with it. The image must hold the pipeline: "
                   f"`TRIAGE_PIPELINE` in `config.yaml` says `{plan.spec}`."), "",
            "## Apply order", "", "```bash", *apply, "```", "",
            *_para("Workers need their topics before they start; the KEDA objects need the Deployments they "
                   "scale."), "",
            "## Files", "", "| file | what |", "|---|---|", *(f"| `{f}` | {what} |" for f, what in rows), "",
            "## Secrets and real models", "",
            *_para("The Secret in `config.yaml` holds the placeholder `REPLACE_ME`, never a key. Create the real "
                   "one out of band:"), "",
            "```bash",
            f"kubectl -n {NAMESPACE} create secret generic {plan.name('openai')} "
            f"--from-literal=OPENAI_API_KEY=\"$OPENAI_API_KEY\" \\",
            "  --dry-run=client -o yaml | kubectl apply -f -", "```", "",
            *_para(f"{real} (`kubectl -n {NAMESPACE} rollout restart deploy -l {selector}`)."), "",
            "## Scaling", "", *_para(" ".join(scaling))]
    return "\n".join(text) + "\n"


def _para(text: str) -> list[str]:
    """A paragraph (or a list item, continued two spaces in) over lines of at most WIDTH characters."""
    return textwrap.wrap(text, WIDTH, subsequent_indent="  " if text.startswith("- ") else "",
                         break_long_words=False, break_on_hyphens=False)


def _code(text: str) -> str:
    """Topic names (words with a dot) as code, for a table cell."""
    words = []
    for w in text.split(" "):
        core = w.rstrip(";,")
        words.append(f"`{core}`{w[len(core):]}" if "." in core.strip(".") else w)
    return " ".join(words)
