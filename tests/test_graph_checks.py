"""A graph is checked before anything runs, and each problem is named: a cycle (with its steps), an unknown
dependency, a task or condition that cannot be imported, two steps of one name, a step no result can be
reached from. Fast: nothing here starts Kafka."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.errors import PipelineError
from streams.graph import Graph
from streams.graph.toml_form import load_file
from streams.pipeline import Pipeline

SAMPLE = Path(__file__).resolve().parent / "graph_sample" / "pipeline.toml"
STEPS_PY = """
def ok(input, deps):
    return {}

def also_ok(input, deps, ctx):
    return {}

def yes(input, deps):
    return True

def one_arg(input):
    return {}
"""


def write(tmp_path: Path, toml: str, module: str | None = STEPS_PY, name: str = "steps_beside") -> Path:
    if module is not None:
        (tmp_path / f"{name}.py").write_text(module)
    path = tmp_path / "pipeline.toml"
    path.write_text(textwrap.dedent(toml))
    return path


def problems(path: Path) -> list[str]:
    return load_file(path).problems()


def message(path: Path) -> str:
    with pytest.raises(PipelineError) as info:
        load_file(path).compile()
    return str(info.value)


def test_a_cycle_is_named_with_its_steps(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [pipeline]
        name = "cyc"
        [steps.start]
        task = "steps_beside:ok"
        [steps.a]
        task = "steps_beside:ok"
        depends_on = ["start", "c"]
        [steps.b]
        task = "steps_beside:ok"
        depends_on = ["a"]
        [steps.c]
        task = "steps_beside:ok"
        depends_on = ["b"]
        [steps.end]
        task = "steps_beside:ok"
        depends_on = ["c"]
    """)
    assert problems(path) == ["a dependency cycle: a -> c -> b -> a (each depends on the next)"]
    assert message(path).startswith(f"pipeline 'cyc' ({path}) cannot run: a dependency cycle: a -> c -> b -> a")


def test_a_step_depending_on_itself_is_a_cycle(tmp_path: Path) -> None:
    g = Graph("selfish").step("a", lambda i, d: {}, depends_on=["a"])
    assert "a dependency cycle: a -> a (each depends on the next)" in g.problems()


def test_a_missing_module_names_where_it_was_looked_for(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [pipeline]
        name = "mm"
        [steps.a]
        task = "no_such_steps:classify"
    """)
    assert problems(path) == [f"step 'a': task 'no_such_steps:classify' cannot be imported: no module named "
                              f"'no_such_steps' beside the file ({tmp_path}) or on sys.path"]


def test_a_missing_function_and_a_missing_condition(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [pipeline]
        name = "mf"
        [steps.a]
        task = "steps_beside:classfy"
        [steps.b]
        task = "steps_beside:ok"
        depends_on = ["a"]
        condition = "steps_beside:needs_it"
    """)
    assert problems(path) == [
        "step 'a': task 'steps_beside:classfy' cannot be imported: module 'steps_beside' has no attribute 'classfy'",
        "step 'b': condition 'steps_beside:needs_it' cannot be imported: module 'steps_beside' has no attribute "
        "'needs_it'"]


def test_a_function_that_cannot_take_its_arguments(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [pipeline]
        name = "sig"
        [steps.a]
        task = "steps_beside:one_arg"
        [steps.b]
        task = "steps_beside:also_ok"
        depends_on = ["a"]
        condition = "steps_beside:also_ok"
        fallback = "steps_beside:ok"
    """)
    assert problems(path) == [
        "step 'a': task 'steps_beside:one_arg' must take (input, deps) or (input, deps, ctx)",
        "step 'b': condition 'steps_beside:also_ok' must take (input, deps)"]


def test_an_unknown_dependency(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [pipeline]
        name = "ud"
        [steps.retrieve]
        task = "steps_beside:ok"
        [steps.answer]
        task = "steps_beside:ok"
        depends_on = ["retreive"]
        [steps.other]
        task = "steps_beside:ok"
        depends_on = ["zzz"]
    """)
    assert problems(path) == [
        "step 'answer' depends on 'retreive', which is not a step (did you mean 'retrieve'?)",
        "step 'other' depends on 'zzz', which is not a step (steps: retrieve, answer, other)"]


def test_two_steps_of_one_name(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [pipeline]
        name = "dup"
        [steps.a]
        task = "steps_beside:ok"
        [steps.b]
        task = "steps_beside:ok"
        [steps.a]
        task = "steps_beside:also_ok"
    """)
    assert problems(path) == ["two steps are called 'a' (lines 4, 8)"]
    g = Graph("dup").step("x", lambda i, d: {}).step("x", lambda i, d: {})
    assert g.problems() == ["two steps are called 'x'"]


def test_a_step_no_result_can_be_reached_from(tmp_path: Path) -> None:
    # Every step nothing depends on feeds the result; a and b only lead into each other (named by the cycle), and
    # start only to them.
    g = (Graph("stuck").step("start", lambda i, d: {})
         .step("a", lambda i, d: {}, depends_on=["start", "b"]).step("b", lambda i, d: {}, depends_on=["a"]))
    assert g.problems() == [
        "a dependency cycle: a -> b -> a (each depends on the next)",
        "no result can be reached from step 'start': every step that depends on it leads back into a dependency "
        "cycle"]


def test_every_problem_is_said_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [pipeline]
        name = "many"
        [steps.a]
        task = "steps_beside:ok"
        tmeout_s = 3
        retries = -1
        [steps.collect]
        task = "nope:x"
        depends_on = ["a", "b"]
    """)
    assert problems(path) == [
        "[steps.a] has an unknown key 'tmeout_s' (did you mean 'timeout_s'?)",
        "step 'a': retries must be a whole number, 0 or more, not -1",
        "step name 'collect' is reserved: the step that writes the results has it",
        "step 'collect' depends on 'b', which is not a step (steps: a, collect)",
        f"step 'collect': task 'nope:x' cannot be imported: no module named 'nope' beside the file ({tmp_path}) "
        f"or on sys.path"]


def test_not_toml_and_no_pipeline_table(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[pipeline\nname = 1\n")
    with pytest.raises(PipelineError, match=r"is not valid TOML"):
        load_file(bad)
    path = write(tmp_path, """
        [steps.a]
        task = "steps_beside:ok"
    """)
    assert problems(path)[0] == 'the file has no [pipeline] table with a name (name = "faq")'


def test_modules_are_found_beside_the_file_first_then_on_sys_path(tmp_path: Path) -> None:
    # Two folders with a steps.py each: each file gets its own, whatever was imported first.
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    for folder, label in ((one, "one"), (two, "two")):
        write(folder, """
            [pipeline]
            name = "beside"
            [steps.a]
            task = "steps:which"
            [steps.b]
            task = "tests.graph_sample.sample_steps:sentiment"
            depends_on = ["a"]
        """, module=f"def which(input, deps):\n    return {{'folder': {label!r}}}\n", name="steps")
    got = []
    for folder in (one, two):
        graph = load_file(folder / "pipeline.toml")
        pipeline = graph.compile()
        assert isinstance(pipeline, Pipeline)
        from streams.graph.refs import resolve
        got.append(resolve(graph.steps[0].task, graph.base).fn({}, {}))  # type: ignore[misc]
    assert got == [{"folder": "one"}, {"folder": "two"}]


def test_the_python_api_compiles_to_the_runtimes_pipeline() -> None:
    g = Graph("faq")
    g.step("classify", lambda i, d: {"label": "x"}, timeout_s=5, retries=2)
    g.step("retrieve", lambda i, d: {}, depends_on=["classify"], condition=lambda i, d: True)
    g.step("answer", lambda i, d, ctx: {}, depends_on=["classify", "retrieve"], fallback=lambda i, d: {},
           models=["gpt-4o-mini", "gpt-4o"])
    p = g.compile()
    assert p.input == "faq.in" and p.outcomes == ("faq.results",)
    assert p.step_names == ("classify", "retrieve", "join.answer", "answer", "collect")
    assert p.step("join.answer").consumes == ("faq.out.classify", "faq.out.retrieve")
    assert p.step("join.answer").changelog == "faq.state.join.answer"
    assert p.step("answer").consumes == ("faq.joined.answer",)
    assert p.step("collect").consumes == ("faq.out.answer",)
    assert p.dlq_topic("retrieve") == "faq.dlq.retrieve"
    assert p.check() is p


@pytest.mark.parametrize("kind", ["cycle", "module", "dependency"])
def test_triage_check_exits_2_naming_the_problem(tmp_path: Path, kind: str) -> None:
    body = {"cycle": 'depends_on = ["b"]\n[steps.b]\ntask = "steps_beside:ok"\ndepends_on = ["a"]',
            "module": 'task = "gone_module:f"',
            "dependency": 'depends_on = ["nowhere"]'}[kind]
    path = write(tmp_path, f'[pipeline]\nname = "chk"\n[steps.a]\ntask = "steps_beside:ok"\n{body}\n')
    text = path.read_text().replace('task = "steps_beside:ok"\ntask = "gone_module:f"', 'task = "gone_module:f"')
    path.write_text(text)
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 2, result.output
    want = {"cycle": "a dependency cycle: a -> b -> a", "module": "no module named 'gone_module'",
            "dependency": "step 'a' depends on 'nowhere', which is not a step"}[kind]
    assert want in " ".join(result.output.split()), result.output  # the console wraps long lines


def test_triage_check_passes_the_sample() -> None:
    result = CliRunner().invoke(app, ["check", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    assert "gsample: 8 steps, input gsample.in, outcomes gsample.results; OK" in result.output


def test_the_readme_example_passes_the_check() -> None:
    faq = SAMPLE.parents[2] / "deploy" / "sample" / "faq" / "faq.toml"
    result = CliRunner().invoke(app, ["check", str(faq)])
    assert result.exit_code == 0, result.output
    assert "faq: 5 steps, input faq.in, outcomes faq.results; OK" in result.output
