"""Deploy files rendered from a pipeline's declaration, never kept by hand: ``triage render compose|k8s``.

    compose   docker-compose.yml: Kafka, Redis, the topics, the pipeline's model server and setup, a service per step
    k8s       Strimzi KafkaTopics, a Deployment and a KEDA ScaledObject per step, ConfigMap, Secret template,
              the model server, and a README saying what to apply in which order

What a pipeline adds beyond its steps and topics (its model server, setup commands, settings) is declared in
its ``extras["deploy"]``; see ``streams.render.plan``. The files under ``deploy/`` are this output for the
``support`` pipeline, which a test checks byte for byte.
"""
from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

from streams.pipeline import Pipeline
from streams.pipelines import DEFAULT
from streams.render import compose, k8s
from streams.render.plan import plan


class Target(str, Enum):
    compose = "compose"
    k8s = "k8s"


def default_out(target: Target, pipeline: Pipeline) -> Path:
    """``deploy/compose`` and ``deploy/k8s`` for the support pipeline, ``deploy/<name>/<target>`` for another."""
    target = Target(target)
    if pipeline.name == DEFAULT:
        return Path("deploy") / target.value
    return Path("deploy") / pipeline.name / target.value


def render(target: Target, pipeline: Pipeline, *, spec: str | None = None, partitions: int = 6,
           tenants: tuple[str, ...] = ("acme", "globex"), location: str | None = None) -> dict[str, str]:
    """``{file name: text}`` of ``target`` for ``pipeline``.

    ``spec`` is how a worker in the image finds the pipeline (``TRIAGE_PIPELINE``; default: its name);
    ``location`` is the output folder relative to the directory the files' paths are relative to (the build
    context of the image, where `kubectl` and `docker compose` run); default: :func:`default_out`.
    Raises PipelineError when the pipeline's ``extras["deploy"]`` is malformed.
    """
    target = Target(target)
    the_plan = plan(pipeline, spec or pipeline.name, partitions, tenants)
    where = location or default_out(target, pipeline).as_posix()
    return (compose if target is Target.compose else k8s).render(the_plan, where)


def write(target: Target, pipeline: Pipeline, out: Path | None = None, *, spec: str | None = None,
          partitions: int = 6, tenants: tuple[str, ...] = ("acme", "globex")) -> list[Path]:
    """Render ``target`` into ``out`` (default: :func:`default_out`, under the current directory). Returns the
    files written; paths inside them are relative to the current directory."""
    out = Path(out) if out is not None else default_out(target, pipeline)
    location = Path(os.path.relpath(out.resolve(), Path.cwd())).as_posix()
    files = render(target, pipeline, spec=spec, partitions=partitions, tenants=tenants, location=location)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
