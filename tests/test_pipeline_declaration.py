"""A pipeline declaration (streams.pipeline) and how one is found (streams.pipelines), without a broker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest

from processors.support import PIPELINE as SUPPORT
from processors.topology import STEPS
from streams import pipelines
from streams.errors import PipelineError
from streams.pipeline import Pipeline, StepSpec
from tests.harness import REPO_ROOT


def _step(name: str, consumes: tuple[str, ...], emits: tuple[str, ...]) -> StepSpec:
    return StepSpec(name, lambda settings: SimpleNamespace(name=name, inputs=consumes), consumes, emits)


def _pipeline(*steps: StepSpec, outcomes: tuple[str, ...] = ("x.out",)) -> Pipeline:
    return Pipeline(name="x", input="x.in", steps=steps, outcomes=outcomes)


# Declared at module level so `module:attribute` can name them.
TWO_STEPS = _pipeline(_step("a", ("x.in",), ("x.mid",)), _step("b", ("x.mid",), ("x.out",)))
NOT_A_PIPELINE = 42


def test_support_is_declared_once_and_checks() -> None:
    assert SUPPORT.problems() == []
    assert SUPPORT.step_names == STEPS
    assert SUPPORT.dlq_topic("join") == "tickets.dlq.join" and SUPPORT.group_id("join") == "triage.join"
    assert SUPPORT.replay_topic == "triage.dlq.replays"
    assert set(SUPPORT.terminal_topics()) == {"tickets.responses", "tickets.escalations",
                                              *(f"tickets.dlq.{s}" for s in STEPS)}
    assert SUPPORT.topic("triage.join.state").compacted and SUPPORT.topic("tickets.in").big
    assert SUPPORT.schema_of("tickets.classified") == "dev.triage.Classification"
    assert SUPPORT.schema_of("tickets.in") is None  # ingest decodes JSON or Avro itself


def test_naming_follows_the_pipeline_name_by_default() -> None:
    assert TWO_STEPS.problems() == []
    assert TWO_STEPS.dlq_topic("a") == "x.dlq.a" and TWO_STEPS.group_id("a") == "x.a"
    assert TWO_STEPS.replay_topic == "x.dlq.replays"
    assert TWO_STEPS.all_topics() == ["x.in", "x.mid", "x.out", "x.dlq.a", "x.dlq.b", "x.dlq.replays"]


@pytest.mark.parametrize("steps, outcomes, message", [
    ((_step("a", ("x.in",), ("x.out",)), _step("a", ("x.in",), ("x.out",))), ("x.out",), "two steps are called 'a'"),
    ((_step("a", ("x.in",), ("x.out",)), _step("b", ("x.nowhere",), ("x.out",))), ("x.out",),
     "step 'b' consumes 'x.nowhere', which no step produces"),
    ((_step("a", ("x.in",), ("x.out", "x.side")), _step("b", ("x.side",), ("x.sink",))), ("x.out",),
     "no result can be reached from step 'b'"),
    ((_step("a", ("x.mid",), ("x.out",)), _step("b", ("x.out",), ("x.mid",))), ("x.out",),
     "no step consumes the input topic 'x.in'"),
    ((_step("a", ("x.in",), ("x.mid",)),), ("x.out",), "no step produces the outcome topic 'x.out'"),
    ((), ("x.out",), "the pipeline has no step"),
])
def test_a_declaration_that_cannot_run_is_refused_naming_the_problem(
        steps: tuple[StepSpec, ...], outcomes: tuple[str, ...], message: str) -> None:
    p = _pipeline(*steps, outcomes=outcomes)
    assert any(message in m for m in p.problems()), p.problems()
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        p.check()


def test_a_step_object_that_reads_other_topics_than_declared_is_refused() -> None:
    wrong = replace(TWO_STEPS, steps=(StepSpec("a", lambda s: SimpleNamespace(name="a", inputs=("x.other",)),
                                               ("x.in",), ("x.mid",)), TWO_STEPS.steps[1]))
    with pytest.raises(PipelineError, match="declared to read x.in but its object 'a' reads x.other"):
        wrong.build("a", None)
    with pytest.raises(KeyError, match="no step 'c' in pipeline 'x'; steps: a, b"):
        TWO_STEPS.step("c")


def test_support_is_found_by_name_as_an_entry_point() -> None:
    assert pipelines.shipped()["support"] == "processors.support:PIPELINE"
    assert pipelines.load("support") is SUPPORT and pipelines.load(None) is SUPPORT


@pytest.mark.parametrize("spec, message", [
    ("nope", "no pipeline 'nope': shipped pipelines are moderation, recommend, support"),
    ("tests.no_such_module:X", "cannot import module 'tests.no_such_module'"),
    ("tests.test_pipeline_declaration:MISSING", "has no attribute 'MISSING'"),
    ("tests.test_pipeline_declaration:NOT_A_PIPELINE", "names a int, not a pipeline"),
])
def test_a_pipeline_that_cannot_be_found_says_why(spec: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        pipelines.load(spec)


def test_module_attribute_finds_a_pipeline() -> None:
    assert pipelines.load("tests.test_pipeline_declaration:TWO_STEPS").step_names == ("a", "b")


def _triage(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, env={**__import__("os").environ, **(env or {})})


def test_the_commands_take_a_pipeline() -> None:
    listed = _triage("pipelines", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"support", "moderation", "recommend"}
    assert rows["support"]["input"] == "tickets.in" and rows["support"]["steps"] == list(STEPS)
    assert rows["moderation"]["outcomes"] == ["moderation.published", "moderation.held"]
    steps = _triage("steps", "--pipeline", "tests.test_pipeline_declaration:TWO_STEPS")
    assert steps.returncode == 0 and steps.stdout.split() == ["a", "b"], steps.stderr
    from_env = _triage("steps", env={"TRIAGE_PIPELINE": "tests.test_pipeline_declaration:TWO_STEPS"})
    assert from_env.stdout.split() == ["a", "b"], from_env.stderr
    ok = _triage("check", "support")
    assert ok.returncode == 0 and "support: 10 steps" in ok.stdout
    bad = _triage("check", "nope")
    assert bad.returncode == 2 and "no pipeline 'nope'" in bad.stderr
    unknown_step = _triage("worker", "classify-mood")
    assert unknown_step.returncode == 2 and "unknown step(s) classify-mood" in unknown_step.stderr


def test_checking_a_pipeline_does_not_make_it_the_process_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """`triage check` only loads: run in-process it must not leave TRIAGE_PIPELINE behind (a later stack in the
    same process then created moderation's topics for support)."""
    from typer.testing import CliRunner

    from streams.cli import app
    monkeypatch.delenv(pipelines.ENV, raising=False)
    result = CliRunner().invoke(app, ["check", "moderation"])
    assert result.exit_code == 0, result.output
    assert pipelines.ENV not in os.environ


def test_the_stack_creates_the_topics_of_its_settings_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams import config, stack
    monkeypatch.setenv(pipelines.ENV, "moderation")  # what this process works on is not what the stack was given
    support = {t.name for t in stack.topic_specs(config.load({"TRIAGE_HOME": "/nonexistent"}))}
    assert "tickets.in" in support and "moderation.in" not in support
    moderation = {t.name for t in stack.topic_specs(config.load({"TRIAGE_HOME": "/nonexistent",
                                                                 pipelines.ENV: "moderation"}))}
    assert "moderation.in" in moderation and "tickets.in" not in moderation
