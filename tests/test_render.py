"""`triage render`: the files under deploy/ are its output for support, and any other pipeline renders too.

No Docker, Kafka or cluster: the command runs as a user runs it (the real CLI, in a fresh directory), its files
are compared byte for byte with the committed ones, and parsed as YAML for the pipeline declared here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from streams import pipelines
from streams.cli import app
from streams.errors import PipelineError
from streams.pipeline import Pipeline, StepSpec
from streams.render import Target, default_out, render
from streams.render.yaml_text import scalar
from streams.topic_config import topic_configs

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_ENV = ("TRIAGE_PIPELINE", "TRIAGE_PARTITIONS", "TRIAGE_TENANTS", "TRIAGE_CONFIG")


def _never_built(settings: Any) -> Any:
    raise AssertionError("rendering must not build a step")


# A pipeline of two steps, declared here: `answer` joins the input with the classification (so it has state).
TINY = Pipeline(
    name="faq",
    input="faq.in",
    steps=(StepSpec("classify", _never_built, ("faq.in",), ("faq.classified",)),
           StepSpec("answer", _never_built, ("faq.in", "faq.classified"), ("faq.results",),
                    changelog="faq.answer.state")),
    outcomes=("faq.results",),
)
TINY_SPEC = f"{__name__}:TINY"


@pytest.fixture()
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory with none of the settings that change what is rendered (restored after:
    `--pipeline` sets TRIAGE_PIPELINE for the process)."""
    monkeypatch.chdir(tmp_path)
    for name in SETTINGS_ENV:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return tmp_path


def _run(*args: str) -> list[Path]:
    r = CliRunner().invoke(app, ["render", *args])
    assert r.exit_code == 0, r.output
    written = [Path(line.removeprefix("wrote ")) for line in r.output.splitlines() if line.startswith("wrote ")]
    assert written, r.output
    return written


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


# --------------------------------------------------------------------------- support: deploy/ is the output

@pytest.mark.parametrize("target", ["compose", "k8s"])
def test_the_committed_deploy_files_are_what_render_writes(user_dir: Path, target: str) -> None:
    written = _run(target)  # the defaults: deploy/compose or deploy/k8s under the working directory
    committed = ROOT / "deploy" / target
    assert {p.name for p in written} == {p.name for p in committed.iterdir() if p.is_file()}, \
        f"deploy/{target} holds a file `triage render {target}` does not write (or the reverse)"
    for path in written:
        assert path.parent == Path("deploy") / target
        ours = (ROOT / "deploy" / target / path.name).read_text(encoding="utf-8")
        assert path.read_text(encoding="utf-8") == ours, (
            f"deploy/{target}/{path.name} differs from what `triage render {target}` writes: it is rendered "
            f"from the declaration; change that and run `triage render {target}` instead of editing the file")


def test_every_rendered_file_says_it_is_rendered(user_dir: Path) -> None:
    for path in [*_run("compose"), *_run("k8s")]:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert "Rendered by `triage render" in first and "'support'" in first, f"{path}: {first}"


def test_render_refuses_an_unknown_target(user_dir: Path) -> None:
    r = CliRunner().invoke(app, ["render", "helm"])
    assert r.exit_code == 2
    assert "compose or k8s" in r.output
    assert not (user_dir / "deploy").exists()


# --------------------------------------------------------------------------- another pipeline

def test_another_pipeline_renders_compose_with_its_steps_and_topics(user_dir: Path) -> None:
    (path,) = _run("compose", "--pipeline", TINY_SPEC, "--out", "out/compose")
    assert path == Path("out/compose/docker-compose.yml")
    assert path.read_text().startswith(f"# Rendered by `triage render compose --pipeline {TINY_SPEC}`")
    (doc,) = _docs(path)
    assert doc["name"] == "faq"
    services = doc["services"]
    workers = {n: s for n, s in services.items() if s.get("command", [None])[0] == "worker"}
    assert {n: s["command"] for n, s in workers.items()} == {
        "classify": ["worker", "classify", "--instance", "classify"],
        "answer": ["worker", "answer", "--instance", "answer"]}
    for s in workers.values():
        assert s["environment"]["TRIAGE_PIPELINE"] == TINY_SPEC
        assert set(s["depends_on"]) == {"kafka", "topics", "redis"}  # no model server, no setup declared
    assert set(services) == {"kafka", "redis", "topics", "classify", "answer"}
    assert doc["x-triage-image"]["build"]["context"] == "../.."  # out/compose is two folders down
    script = services["topics"]["command"][0]
    created = {}
    for line in script.splitlines():
        words = line.split()
        if "--topic" in words:
            created[words[words.index("--topic") + 1]] = dict(
                words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--config")
    assert created == topic_configs(TINY, 1)
    assert set(created) == {"faq.in", "faq.classified", "faq.results", "faq.dlq.classify", "faq.dlq.answer",
                            "faq.answer.state", "faq.dlq.replays"}


def test_another_pipeline_renders_k8s_with_its_own_names_groups_and_topics(user_dir: Path) -> None:
    written = _run("k8s", "--pipeline", TINY_SPEC, "--out", "out/k8s")
    assert "models.yaml" not in {p.name for p in written}  # it declares no model server
    docs = [d for p in written if p.suffix == ".yaml" for d in _docs(p)]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        assert d["metadata"].get("namespace", "triage") == "triage"
        by_kind.setdefault(d["kind"], []).append(d)

    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    assert set(deployments) == {"faq-classify", "faq-answer"}
    for step in ("classify", "answer"):
        (c,) = deployments[f"faq-{step}"]["spec"]["template"]["spec"]["containers"]
        assert c["command"] == ["triage", "worker", step]
        assert {k: v["name"] for e in c["envFrom"] for k, v in e.items()} == {
            "configMapRef": "faq-config", "secretRef": "faq-openai"}
    assert deployments["faq-answer"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "memory"] == "1Gi"  # the stateful step holds its pending records

    (cm,) = by_kind["ConfigMap"]
    assert cm["metadata"]["name"] == "faq-config" and cm["data"]["TRIAGE_PIPELINE"] == TINY_SPEC
    scaled = {so["spec"]["scaleTargetRef"]["name"]: so["spec"]["triggers"][0]["metadata"]
              for so in by_kind["ScaledObject"]}
    assert {n: (m["consumerGroup"], m["topic"], m["lagThreshold"]) for n, m in scaled.items()} == {
        "faq-classify": ("faq.classify", "faq.in", "50"),
        "faq-answer": ("faq.answer", "faq.classified", "50")}  # the input a step writes to, not the raw one
    topics = {t["spec"]["topicName"]: t["spec"] for t in by_kind["KafkaTopic"]}
    assert set(topics) == set(TINY.all_topics())
    for name, config in topic_configs(TINY, 3).items():
        assert {k: str(v) for k, v in topics[name]["config"].items()} == config, name
    readme = (Path("out/k8s") / "README.md").read_text()
    assert "kubectl apply -f out/k8s/workers.yaml" in readme and "faq-<step>" in readme


def test_two_pipelines_manifests_do_not_collide(tmp_path: Path) -> None:
    support = pipelines.load("support")

    def objects(p: Pipeline) -> list[dict[str, Any]]:
        files = render(Target.k8s, p, spec=p.name)
        return [d for name, text in files.items() if name.endswith(".yaml")
                for d in yaml.safe_load_all(text) if d is not None]

    ours, theirs = objects(support), objects(TINY)
    names = lambda docs: {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] != "Namespace"}
    assert not names(ours) & names(theirs)
    pods = lambda docs: [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"]
    for a, b in ((ours, theirs), (theirs, ours)):
        for d in (d for d in a if d["kind"] == "Deployment"):
            selector = d["spec"]["selector"]["matchLabels"]
            assert not [p for p in pods(b) if selector.items() <= p.items()], \
                f"{d['metadata']['name']} would select the other pipeline's pods"
    groups = lambda docs: {d["spec"]["triggers"][0]["metadata"]["consumerGroup"] for d in docs
                           if d["kind"] == "ScaledObject"}
    assert not groups(ours) & groups(theirs)


def test_default_folders() -> None:
    assert default_out(Target.compose, pipelines.load("support")) == Path("deploy/compose")
    assert default_out(Target.k8s, TINY) == Path("deploy/faq/k8s")


def test_a_malformed_deploy_declaration_is_refused_naming_the_key() -> None:
    bad = Pipeline(name=TINY.name, input=TINY.input, steps=TINY.steps, outcomes=TINY.outcomes,
                   extras={"deploy": {"models": {"module": "x"}, "sampel": "typo.jsonl"}})
    with pytest.raises(PipelineError, match="'sampel'"):
        render(Target.compose, bad)
    bad = Pipeline(name=TINY.name, input=TINY.input, steps=TINY.steps, outcomes=TINY.outcomes,
                   extras={"deploy": {"models": {"module": "x"}}})
    with pytest.raises(PipelineError, match=r"\['models'\] needs 'module' .* and 'port'"):
        render(Target.k8s, bad)


@pytest.mark.parametrize("value", ["6", "0", "1e3", "0x1F", "10:20", "yes", "No", "on", "null", "~", ".inf", "",
                                   "-", "a: b", "a #b", "x:", "redis://redis:6379/0", "${OPENAI_API_KEY:-}",
                                   "acme,globex", "../..", "[x]", "{x}", "*ref", "&a", "!tag", "@x", "é", 8700])
def test_a_scalar_reads_back_as_itself(value: str | int) -> None:
    assert yaml.safe_load(f"k: {scalar(value)}")["k"] == value
