"""A bounded loop and a join's partial timeout, in process (the broker run is test_graph_partial_e2e.py).

The loop runs its task again with the previous output until ``until`` holds, never more than ``rounds``
times; the join stops waiting for a dependency that has moved on past an input (``join_timeout_s``) or that
delivers nothing (``join_give_up_s``), goes on with it named in ``missing``, and drops its late record so
the input never ends twice, even across a restore of its state."""
from __future__ import annotations

import json
from typing import Any

import pytest

from streams import config
from streams.graph import Graph
from streams.graph.envelope import Envelope, decode
from streams.graph.join_step import StepJoin
from streams.records import Emit, Record
from tests.test_graph_steps import handle, record


def refine(input: dict[str, Any], deps: dict[str, Any], ctx: Any) -> dict[str, Any]:
    before = deps.get("refine") or {"score": 0, "rounds": []}
    return {"score": before["score"] + 1, "rounds": before["rounds"] + [ctx.round]}


def loop_graph(rounds: int) -> Graph:
    return Graph("loop").step("refine", refine, rounds=rounds, until=lambda i, d: d["refine"]["score"] >= i["target"])


async def test_the_loop_ends_when_until_holds() -> None:
    env = await handle(loop_graph(5), "refine", record({"target": 3}, topic="loop.in"))
    assert env.steps["refine"] == {"score": 3, "rounds": [1, 2, 3]}


async def test_the_loop_never_runs_more_than_its_rounds() -> None:
    env = await handle(loop_graph(2), "refine", record({"target": 99}, topic="loop.in"))
    assert env.steps["refine"] == {"score": 2, "rounds": [1, 2]}


async def test_an_until_that_raises_fails_the_step_with_its_reason() -> None:
    g = Graph("loop").step("refine", refine, rounds=3, until=lambda i, d: 1 / 0)
    env = await handle(g, "refine", record({"target": 3}, topic="loop.in"))
    assert env.failed is not None and env.failed.reason == "CONDITION_ERROR", env
    assert "ZeroDivisionError" in env.failed.error


@pytest.mark.parametrize("kw, says", [
    ({"rounds": 3}, "needs until"),
    ({"rounds": 11, "until": lambda i, d: True}, "from 1 to 10"),
    ({"until": lambda i, d: True}, "until needs rounds above 1"),
    ({"join_timeout_s": 5}, "is for a step with several dependencies"),
])
def test_loops_and_join_timeouts_are_checked(kw: dict[str, Any], says: str) -> None:
    g = Graph("bad").step("a", refine).step("b", refine, depends_on=["a"], **kw)
    assert any(says in p for p in g.problems()), g.problems()


def test_a_give_up_below_the_timeout_is_refused() -> None:
    g = Graph("bad").step("a", refine).step("b", refine).step("c", refine, depends_on=["a", "b"],
                                                             join_timeout_s=5, join_give_up_s=1)
    assert any("must not be below join_timeout_s" in p for p in g.problems()), g.problems()


# ---- the join's partial timeout -------------------------------------------------------------------------
DEPS = ("a", "b", "c")


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def join(timeout_s: float = 1.0, give_up_s: float = 10.0) -> tuple[StepJoin, Clock]:
    j = StepJoin("join.m", target="m", output="p.joined.m", inputs=tuple(f"p.out.{d}" for d in DEPS), deps=DEPS,
                 changelog="p.changelog.join.m", max_value_bytes=1 << 20, timeout_s=timeout_s, give_up_s=give_up_s)
    clock = Clock()
    j.clock_ms = clock
    return j, clock


def dep_record(dep: str, origin: str, offset: int) -> Record:
    env = Envelope(f"cid-{origin}", 1, origin, {"x": origin}, {dep: {"from": dep}})
    return Record(topic=f"p.out.{dep}", partition=0, offset=offset, key=env.correlation_id, raw=env.encode(),
                  headers={}, timestamp_ms=0)


async def feed(j: StepJoin, dep: str, origin: str, offset: int = 0) -> list[Emit]:
    return await j.handle(dep_record(dep, origin, offset), None)  # type: ignore[arg-type]


def joined(emits: list[Emit]) -> list[Envelope]:
    return [decode(e.value) for e in emits if e.topic == "p.joined.m"]


async def test_a_dependency_that_delivers_nothing_is_given_up_on_after_give_up_s() -> None:
    j, clock = join(timeout_s=1, give_up_s=10)
    await feed(j, "a", "in/0/1")
    await feed(j, "b", "in/0/1")
    clock.ms += 9_000
    assert joined(j.tick(clock.ms)) == []  # c has delivered nothing at all: it may be down, or far behind
    clock.ms += 2_000
    out = joined(j.tick(clock.ms))
    assert len(out) == 1 and out[0].missing == ("c",) and set(out[0].steps) == {"a", "b"}
    clock.ms += 2 * 3600_000  # longer than any done input is kept after a failure
    assert joined(j.tick(clock.ms)) == []
    assert joined(await feed(j, "c", "in/0/1", offset=5)) == []  # its late record is dropped, not a new wait
    clock.ms += 100 * 3600_000
    assert joined(j.tick(clock.ms)) == [] and j.size() == 0


async def test_a_dependency_that_moved_on_past_an_input_is_given_up_on_after_join_timeout_s() -> None:
    j, clock = join(timeout_s=1, give_up_s=600)
    await feed(j, "a", "in/0/1")
    await feed(j, "b", "in/0/1")
    clock.ms += 500
    for d in DEPS:  # an input that came later completes: c is alive, just without in/0/1's record
        await feed(j, d, "in/0/2")
    clock.ms += 1_000
    assert joined(j.tick(clock.ms)) == []  # c has not yet delivered an input from a second after in/0/1
    clock.ms += 1_000
    for d in DEPS:
        await feed(j, d, "in/0/3")
    clock.ms += 1_001
    out = joined(j.tick(clock.ms))
    assert [e.origin for e in out] == ["in/0/1"] and out[0].missing == ("c",)


async def test_a_lagging_dependency_costs_nothing_before_give_up_s() -> None:
    j, clock = join(timeout_s=1, give_up_s=600)
    for origin in ("in/0/1", "in/0/2", "in/0/3"):
        await feed(j, "a", origin)
        await feed(j, "b", origin)
        clock.ms += 2_000
    assert joined(j.tick(clock.ms)) == []  # c is behind on all of them (a backlog), not past any
    out = []
    for origin in ("in/0/1", "in/0/2", "in/0/3"):
        out += joined(await feed(j, "c", origin))
    assert [e.missing for e in out] == [(), (), ()]


async def test_a_given_up_input_stays_done_across_a_restore() -> None:
    j, clock = join(timeout_s=1, give_up_s=5)
    changelog: list[Emit] = []
    changelog += await feed(j, "a", "in/0/1")
    clock.ms += 6_000
    out = j.tick(clock.ms)
    changelog += out
    assert len(joined(out)) == 1 and joined(out)[0].missing == ("b", "c")
    table = [(e.key.encode(), e.value) for e in changelog if e.topic == "p.changelog.join.m"]
    restored, clock2 = join(timeout_s=1, give_up_s=5)
    restored.restore([0], lambda p: iter(table))
    clock2.ms = clock.ms + 100 * 3600_000
    assert joined(restored.tick(clock2.ms)) == []
    assert joined(await feed(restored, "b", "in/0/1")) == [] and joined(await feed(restored, "c", "in/0/1")) == []
    assert restored.size() == 0


def test_the_result_names_what_a_join_gave_up_on() -> None:
    from streams.graph.join_step import Collector
    c = Collector("collect", results={"results": "p.results"}, all_steps=("a", "m"), dlq_topic=lambda s: s,
                  inputs=("p.out.m",), deps=("m",), changelog="p.changelog.collect", max_value_bytes=1 << 20)
    env = Envelope("cid", 1, "in/0/1", {"x": 1}, {"a": {"v": 1}, "m": {"v": 2}}, missing=("b",))
    doc = json.loads(c.complete(0, [env])[0].value)
    assert doc["missing"] == ["b"] and doc["steps"] == {"a": {"v": 1}, "m": {"v": 2}}
    assert "missing" not in json.loads(c.complete(0, [Envelope("cid", 1, "in/0/1", {}, {"a": 1, "m": 2})])[0].value)
