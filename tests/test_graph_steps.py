"""One compiled task step, handled in-process (no Kafka: the broker tests are test_graph_e2e/test_graph_chaos):
its model chain goes through the gateway over real HTTP to the fake model server, the next model answering
when the first is down; attempts, timeouts and the fallback make the one record it writes."""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest

from streams import config
from streams.graph import Graph, TaskContext
from streams.graph.envelope import decode
from streams.models import ModelGateway
from streams.records import Record
from streams.step import StepContext
from tests.fake_openai import FakeModels


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModels]:
    with FakeModels.start(routes={"lang-primary": "offline-language", "lang-backup": "offline-language"}) as f:
        yield f


async def detect(input: dict[str, Any], deps: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    reply = await ctx.chat([{"role": "user", "content": json.dumps({"subject": "", "body": input["text"]})}])
    return {"language": json.loads(reply.text)["label"], "model": reply.model}


def record(doc: Any, offset: int = 0, topic: str = "lang.in") -> Record:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return Record(topic=topic, partition=0, offset=offset, key=f"cid-{offset}", raw=raw, headers={},
                  timestamp_ms=0)


async def handle(graph: Graph, step: str, rec: Record, base_url: str = "http://127.0.0.1:9/v1") -> Any:
    settings = config.load({"TRIAGE_HOME": "/nonexistent-home"})
    gateway = ModelGateway(base_url, "test-key")
    try:
        built = graph.compile().build(step, settings)
        emits = await built.handle(rec, StepContext(step, settings, gateway, None))
    finally:
        await gateway.close()
    assert len(emits) == 1 and emits[0].topic == f"{graph.name}.out.{step}"
    return decode(emits[0].value)


async def test_the_next_model_of_the_chain_answers_when_the_first_is_down(fake: FakeModels) -> None:
    fake.set("lang-primary", "down")
    g = Graph("lang").step("detect", detect, models=["lang-primary", "lang-backup"], timeout_s=10)
    env = await handle(g, "detect", record({"text": "Guten Tag, meine Rechnung ist falsch und ich bitte um Hilfe."}),
                       fake.base_url)
    assert env.failed is None
    assert env.steps["detect"] == {"language": "de", "model": "lang-backup"}
    calls = [c["model"] for c in fake.log()]
    assert calls[-2:] == ["lang-primary", "lang-backup"], calls


async def test_attempts_backoff_and_the_fallback() -> None:
    calls: list[float] = []

    def flaky(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
        calls.append(time.monotonic())
        raise ConnectionError("not now")

    g = Graph("pol").step("s", flaky, retries=2, fallback=lambda i, d: {"canned": True})
    env = await handle(g, "s", record({"x": 1}))
    assert env.steps["s"] == {"canned": True}
    assert len(calls) == 3  # 1 + retries
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps  # backoffs of 0.2 s, then 0.4 s, each at most half jittered


async def test_a_sync_task_past_its_timeout_on_every_attempt_is_a_step_timeout() -> None:
    g = Graph("tmo").step("s", lambda i, d: time.sleep(3.0) or {}, timeout_s=0.2, retries=1)
    started = time.monotonic()
    env = await handle(g, "s", record({"x": 1}, offset=7, topic="tmo.in"))
    assert time.monotonic() - started < 3.0  # each attempt given up at its timeout: none was waited out
    f = env.failed
    assert f is not None and (f.step, f.reason, f.attempts) == ("s", "STEP_TIMEOUT", 2)
    assert f.source == "tmo.in/0/7" and json.loads(f.consumed) == {"x": 1}
    assert "attempt 2 not done within 0.2s" in f.error


async def test_a_condition_false_skips_and_a_bad_output_fails() -> None:
    g = (Graph("cond").step("a", lambda i, d: {"n": i["n"]})
         .step("b", lambda i, d: {"never": True}, depends_on=["a"], condition=lambda i, d: d["a"]["n"] > 5)
         .step("c", lambda i, d: ["not", "a", "dict"], depends_on=["a"]))
    first = await handle(g, "a", record({"n": 1}))
    upstream = Record(topic="cond.out.a", partition=0, offset=3, key=first.correlation_id, raw=first.encode(),
                      headers={}, timestamp_ms=0)
    skipped = await handle(g, "b", upstream)
    assert skipped.failed is None and skipped.steps == {"a": {"n": 1}, "b": None}
    bad = await handle(g, "c", upstream)
    assert bad.failed is not None and bad.failed.reason == "INVALID_OUTPUT"
    assert bad.failed.consumed == first.encode().decode()  # the dead letter will carry what c read


async def test_bad_input_is_dead_lettered_by_the_first_root_only() -> None:
    from streams.errors import MalformedInput
    g = Graph("two").step("r1", lambda i, d: {}).step("r2", lambda i, d: {})
    settings = config.load({"TRIAGE_HOME": "/nonexistent-home"})
    pipeline = g.compile()
    r1, r2 = pipeline.build("r1", settings), pipeline.build("r2", settings)
    ctx = StepContext("r1", settings, None, None)  # type: ignore[arg-type]
    with pytest.raises(MalformedInput):
        await r1.handle(record(b"{nope"), ctx)
    assert r1.on_failure(record(b"{nope"), "MALFORMED", "x") is None  # the runtime dead-letters the bytes
    assert await r2.handle(record(b"{nope"), ctx) == []


async def test_a_join_restored_from_its_changelog_ends_each_input_once() -> None:
    """What a worker killed between two records of one input leaves: the changelog records it committed. A
    fresh join restored from them completes the input on its last dependency, and a failure marker that ended
    an input early still drops the input's later records after a restore."""
    from streams.graph.envelope import Envelope, Failure

    g = (Graph("j").step("a", lambda i, d: {}).step("b", lambda i, d: {}).step("c", lambda i, d: {})
         .step("s", lambda i, d: {}, depends_on=["a", "b", "c"]))
    settings = config.load({"TRIAGE_HOME": "/nonexistent-home"})
    ctx = StepContext("join.s", settings, None, None)  # type: ignore[arg-type]
    changelog: list[tuple[bytes, bytes | None]] = []

    def out(dep: str, origin: str, failed: bool = False) -> Record:
        env = Envelope("cid", 1, origin, {"q": origin}, {dep: {"from": dep}})
        if failed:
            env = env.failing(Failure(dep, "TASK_ERROR", "x", 1, "j.in/0/0", "{}"))
        return Record(topic=f"j.out.{dep}", partition=0, offset=len(changelog), key="cid", raw=env.encode(),
                      headers={}, timestamp_ms=0)

    async def feed(join: Any, rec: Record) -> list[Any]:
        emits = await join.handle(rec, ctx)
        changelog.extend((e.key.encode(), e.value) for e in emits if e.topic == "j.state.join.s")
        return [e for e in emits if e.topic != "j.state.join.s"]

    def fresh() -> Any:
        join = g.compile().build("join.s", settings)
        join.restore([0], lambda p: list(changelog))
        return join

    first = fresh()
    assert await feed(first, out("a", "in/0/1")) == [] and await feed(first, out("b", "in/0/1")) == []
    assert await feed(first, out("b", "in/0/2", failed=True)) != []  # input 2 ends at once, as a failure
    second = fresh()  # the first was killed: only its changelog is left
    done = await feed(second, out("c", "in/0/1"))
    assert len(done) == 1 and done[0].topic == "j.joined.s"
    assert decode(done[0].value).steps == {"a": {"from": "a"}, "b": {"from": "b"}, "c": {"from": "c"}}
    third = fresh()
    assert await feed(third, out("a", "in/0/2")) == [] and await feed(third, out("c", "in/0/2")) == []
    assert third.size() == 0  # every dependency of both inputs has delivered: nothing left in memory
    assert fresh().size() == 0  # nor in the changelog
