"""The fake model server (tests/fake_openai.py) over real HTTP, through the real ``openai`` client: each
mode does what it says, counts revert, routing and the log work. One server process for the module."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import AsyncIterator, Iterator

import openai
import pytest

from processors.offline import LABELS, classify
from tests.fake_openai import REPO_ROOT, FakeModels, parse_mode

INTENTS = set(LABELS["intent"])
TICKET = {"subject": "Charged twice", "body": "I was charged twice for my invoice this month, please refund."}
ACME_DOCS = [
    {"doc_id": "acme-refunds", "title": "Refund policy",
     "body": "Acme refunds duplicate charges within 30 days. Duplicate charges are refunded to the card."},
    {"doc_id": "acme-trial", "title": "Trial cancellations", "body": "Acme trials last 21 days."},
]
WRITER_REQUEST = {"ticket": {**TICKET, "tenant_id": "acme", "language": "en", "sentiment": "neutral"},
                  "documents": ACME_DOCS}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModels]:
    with FakeModels.start() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeModels) -> None:
    fake.reset()


@pytest.fixture
async def client(fake: FakeModels) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
    try:
        yield c
    finally:
        await c.close()


async def ask(client: openai.AsyncOpenAI, model: str, payload: dict | None = None, **kwargs) -> str:
    """The raw content of one answer."""
    resp = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": json.dumps(payload or TICKET)}], **kwargs)
    assert resp.model == model
    return resp.choices[0].message.content


async def test_ok_is_the_offline_answer(client: openai.AsyncOpenAI) -> None:
    answer = json.loads(await ask(client, "fake-intent"))
    assert answer["label"] in INTENTS
    assert (answer["label"], answer["confidence"]) == classify("intent", TICKET["subject"], TICKET["body"])
    # Aliases and offline ids route to the offline models.
    writer_b = json.loads(await ask(client, "fake-writer-b", WRITER_REQUEST))
    assert writer_b == json.loads(await ask(client, "offline-writer", WRITER_REQUEST))
    assert set(writer_b["citations"]) <= {"acme-refunds", "acme-trial"}


async def test_models_and_unknown_model(client: openai.AsyncOpenAI) -> None:
    listed = {m.id for m in (await client.models.list()).data}
    assert {"fake-intent", "fake-writer-b", "fake-judge", "offline-intent"} <= listed
    with pytest.raises(openai.NotFoundError) as exc:
        await ask(client, "gpt-nope")
    assert exc.value.code == "model_not_found"
    # A request the offline provider rejects is still rejected.
    with pytest.raises(openai.BadRequestError):
        await ask(client, "fake-writer", TICKET)


async def test_slow_times_out_the_client(fake: FakeModels, client: openai.AsyncOpenAI) -> None:
    fake.set("fake-intent", "slow:2")
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await ask(client, "fake-intent", timeout=0.5)
    assert time.monotonic() - started < 1.5
    fake.set("fake-intent", "slow:0.2")
    started = time.monotonic()
    assert json.loads(await ask(client, "fake-intent"))["label"] in INTENTS
    assert time.monotonic() - started >= 0.2


async def test_error_statuses(fake: FakeModels, client: openai.AsyncOpenAI) -> None:
    fake.set("fake-intent", "error:500")
    with pytest.raises(openai.InternalServerError) as exc:
        await ask(client, "fake-intent")
    assert exc.value.status_code == 500 and exc.value.body["type"] == "server_error"
    fake.set("fake-intent", "error:503")
    with pytest.raises(openai.InternalServerError) as exc:
        await ask(client, "fake-intent")
    assert exc.value.status_code == 503
    fake.set("fake-intent", "error:400")
    with pytest.raises(openai.BadRequestError) as exc:
        await ask(client, "fake-intent")
    assert set(exc.value.body) >= {"message", "type", "code"}
    # Other models are untouched.
    assert json.loads(await ask(client, "fake-language"))["label"] == "en"


async def test_ratelimit_sends_retry_after(fake: FakeModels, client: openai.AsyncOpenAI) -> None:
    fake.set("fake-intent", "ratelimit:2")
    with pytest.raises(openai.RateLimitError) as exc:
        await ask(client, "fake-intent")
    assert exc.value.response.headers["retry-after"] == "2"
    assert exc.value.code == "rate_limit_exceeded"


async def test_garbage_and_empty(fake: FakeModels, client: openai.AsyncOpenAI) -> None:
    fake.set("fake-intent", "garbage")
    with pytest.raises(json.JSONDecodeError):
        json.loads(await ask(client, "fake-intent"))
    fake.set("fake-writer", "garbage")
    with pytest.raises(json.JSONDecodeError):
        json.loads(await ask(client, "fake-writer", WRITER_REQUEST))
    fake.set("fake-intent", "empty")
    assert await ask(client, "fake-intent") == ""


async def test_badlabel(fake: FakeModels, client: openai.AsyncOpenAI) -> None:
    fake.set("*", "badlabel")
    assert json.loads(await ask(client, "fake-intent"))["label"] not in INTENTS
    assert json.loads(await ask(client, "fake-language"))["label"] not in LABELS["language"]
    draft = json.loads(await ask(client, "fake-writer", WRITER_REQUEST))
    given = {d["doc_id"] for d in ACME_DOCS}
    foreign = [c for c in draft["citations"] if c not in given]
    assert foreign == ["globex-refunds"] and f"[{foreign[0]}]" in draft["reply"]
    # The offline judge catches the foreign citation: the fake breaks contracts the way a model would.
    fake.set("*", "ok")
    verdict = json.loads(await ask(client, "fake-judge", {**WRITER_REQUEST, "draft": draft}))
    assert verdict["checks"]["no_foreign_citation"] is False


async def test_drift(fake: FakeModels, client: openai.AsyncOpenAI) -> None:
    fake.set("fake-intent", "drift:general")
    for subject, body in [("App crashes", "The app crashes on login, an outage."),
                          ("Password reset", "I cannot log in to my account."), (TICKET["subject"], TICKET["body"])]:
        answer = json.loads(await ask(client, "fake-intent", {"subject": subject, "body": body}))
        assert answer == {"label": "general", "confidence": 0.9}
    with pytest.raises(ValueError, match="classifiers only"):
        fake.set("fake-writer", "drift:general")


async def test_count_reverts_to_ok(fake: FakeModels, client: openai.AsyncOpenAI) -> None:
    fake.set("fake-intent", "error:500", count=2)
    assert fake.modes()["fake-intent"] == {"mode": "error:500", "remaining": 2}
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await ask(client, "fake-intent")
    assert json.loads(await ask(client, "fake-intent"))["label"] in INTENTS
    assert fake.modes()["fake-intent"]["mode"] == "ok"
    # "*" with a count: the next N calls of any model, together.
    fake.set("*", "error:503", count=1)
    with pytest.raises(openai.InternalServerError):
        await ask(client, "fake-language")
    assert json.loads(await ask(client, "fake-intent"))["label"] in INTENTS


async def test_down_is_a_connection_error(fake: FakeModels, client: openai.AsyncOpenAI) -> None:
    fake.set("fake-intent", "down", count=1)
    with pytest.raises(openai.APIConnectionError) as exc:
        await ask(client, "fake-intent")
    assert not isinstance(exc.value, openai.APITimeoutError)
    assert json.loads(await ask(client, "fake-intent"))["label"] in INTENTS  # the client recovers


async def test_flaky_is_reproducible(fake: FakeModels, client: openai.AsyncOpenAI) -> None:
    async def run() -> list[bool]:
        outcomes = []
        for _ in range(16):
            try:
                await ask(client, "fake-intent")
                outcomes.append(True)
            except openai.InternalServerError:
                outcomes.append(False)
        return outcomes

    fake.set("fake-intent", "flaky:0.5")
    first = await run()
    fake.set("fake-intent", "flaky:0.5")  # setting the mode restarts its sequence
    assert await run() == first
    assert 0 < first.count(False) < 16


async def test_log_and_stats(fake: FakeModels, client: openai.AsyncOpenAI) -> None:
    await ask(client, "fake-intent")
    fake.set("fake-intent", "error:500", count=1)
    with pytest.raises(openai.InternalServerError):
        await ask(client, "fake-intent")
    fake.set("fake-sentiment", "ratelimit:1", count=1)
    with pytest.raises(openai.RateLimitError):
        await ask(client, "fake-sentiment")
    fake.set("fake-intent", "down", count=1)
    with pytest.raises(openai.APIConnectionError):
        await ask(client, "fake-intent")
    entries = fake.log()
    assert [(e["model"], e["mode"], e["status"]) for e in entries] == [
        ("fake-intent", "ok", 200), ("fake-intent", "error:500", 500),
        ("fake-sentiment", "ratelimit:1", 429), ("fake-intent", "down", "dropped")]
    assert all(abs(e["t"] - time.time()) < 60 for e in entries)
    assert fake.stats() == {"fake-intent": {"200": 1, "500": 1, "dropped": 1}, "fake-sentiment": {"429": 1}}
    fake.reset()
    assert fake.log() == [] and fake.stats() == {}


async def test_a_call_in_flight_at_a_reset_stays_out_of_the_new_log(
        fake: FakeModels, client: openai.AsyncOpenAI) -> None:
    """A slow call whose client gave up ends after the reset that begins the next test: it must not land
    in that test's log (CI once saw test_log_and_stats fail on a stray 'slow:2' entry)."""
    fake.set("fake-intent", "slow:2")
    call = asyncio.create_task(ask(client, "fake-intent", timeout=30))
    deadline = time.monotonic() + 60.0
    while fake.in_flight() == 0 and time.monotonic() < deadline:  # the server has the call
        await asyncio.sleep(0.05)
    assert fake.in_flight() == 1
    fake.reset()
    call.cancel()  # the client gives up; the server still ends the call after its sleep
    with pytest.raises(asyncio.CancelledError):
        await call
    while fake.in_flight() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert fake.in_flight() == 0
    assert fake.log() == [] and fake.stats() == {}


def test_control_validation(fake: FakeModels) -> None:
    for model, mode in [("fake-intent", "sideways"), ("fake-intent", "slow:soon"), ("fake-intent", "error:200"),
                        ("fake-intent", "flaky:2"), ("no-such-model", "ok")]:
        with pytest.raises(ValueError):
            fake.set(model, mode)
    with pytest.raises(ValueError):
        fake.set("fake-intent", "ok", count=0)
    assert parse_mode("ratelimit:2.0").text == "ratelimit:2"


def test_cli_help() -> None:
    out = subprocess.run([sys.executable, "-m", "tests.fake_openai", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--port" in out.stdout


def test_a_control_call_that_times_out_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control calls are idempotent: one unanswered past its socket time-out (the server's loop busy with a
    cluster's model calls) is sent again instead of failing the test that made it; a refusal is not."""
    import urllib.request

    import tests.fake_openai as fo

    with fo.FakeModels.start() as f:
        real, timeouts = f._call_once, [TimeoutError("timed out"), TimeoutError("timed out")]

        def flaky(req: urllib.request.Request) -> object:
            if timeouts:
                raise timeouts.pop()
            return real(req)
        monkeypatch.setattr(f, "_call_once", flaky)
        f.set("*", "down")
        assert not timeouts and f.modes()["*"]["mode"] == "down"
        with pytest.raises(ValueError):
            f.set("*", "no-such-mode")
        monkeypatch.setattr(fo, "CONTROL_BUDGET_S", 0.0)
        timeouts.append(TimeoutError("timed out"))
        with pytest.raises(TimeoutError):
            f.reset()
