"""The offline provider: classifier accuracy on the sample data, grounding, judging, and the HTTP server
driven through the real ``openai`` client."""
from __future__ import annotations

import json
import os
import re
import socket
from collections import Counter
from pathlib import Path

import openai
import pytest
from aiohttp import web

from processors.offline import LABELS, TASKS, classify, judge, write_reply
from processors.offline.server import MODELS, make_app

# Floors per file and task, under what the shipped models reach (bench/results/models.json), so a model that
# got worse fails. The evaluation split is the figure to believe: written apart from the sample's templates and
# from the training corpus. On the sample only intent and language are held to a floor: its priority and
# sentiment labels follow its templates (71 angry tickets labelled low, 50 satisfied ones high), not the
# definitions of issue 17 the corpus is labelled by.
MIN_ACCURACY = {
    "eval/tickets.jsonl": {"intent": 0.80, "language": 0.97, "priority": 0.60, "sentiment": 0.84},
    "tickets.jsonl": {"intent": 0.85, "language": 0.95},
}


def _data_dir() -> Path:
    """The sample data the project ships (a copy of the shared set); TRIAGE_SAMPLE_DATA points elsewhere."""
    env = os.environ.get("TRIAGE_SAMPLE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "deploy" / "sample"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tickets() -> list[dict]:
    return _jsonl(_data_dir() / "tickets.jsonl")


@pytest.fixture(scope="module")
def kb() -> dict[str, list[dict]]:
    return {p.stem: _jsonl(p) for p in sorted((_data_dir() / "kb").glob("*.jsonl"))}


def _ticket_for_writer(t: dict, **overrides: str) -> dict:
    labels = {task: classify(task, t["subject"], t["body"])[0] for task in TASKS}
    return {"subject": t["subject"], "body": t["body"], "tenant_id": t["tenant_id"], **labels, **overrides}


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


@pytest.mark.parametrize("name,task", [(name, task) for name in MIN_ACCURACY for task in TASKS])
def test_classifier_accuracy(name: str, task: str) -> None:
    tickets = _jsonl(_data_dir() / name)
    predicted = [classify(task, t["subject"], t["body"]) for t in tickets]
    expected = [t["expected"][task] for t in tickets]
    assert all(label in LABELS[task] and 0 < conf <= 1 for label, conf in predicted)
    labels = [label for label, _ in predicted]
    accuracy = sum(p == e for p, e in zip(labels, expected)) / len(tickets)
    tp = Counter(e for p, e in zip(labels, expected) if p == e)
    n_pred, n_true = Counter(labels), Counter(expected)
    print(f"\n{task}: accuracy {accuracy:.3f}")
    for label in LABELS[task]:
        precision = tp[label] / n_pred[label] if n_pred[label] else float("nan")
        recall = tp[label] / n_true[label] if n_true[label] else float("nan")
        print(f"  {label:<10} precision {precision:.3f} recall {recall:.3f} (n={n_true[label]})")
    if task in MIN_ACCURACY[name]:
        assert accuracy >= MIN_ACCURACY[name][task]


def test_classify_is_deterministic_and_rejects_unknown_tasks() -> None:
    args = ("Remboursement", "Je veux un remboursement, c'est inacceptable !")
    assert classify("intent", *args) == classify("intent", *args) == ("billing", classify("intent", *args)[1])
    assert classify("language", *args)[0] == "fr"
    assert classify("sentiment", *args)[0] == "angry"
    with pytest.raises(ValueError):
        classify("topic", "a", "b")


def test_writer_cites_only_given_docs_and_never_leaks_the_other_tenant(tickets: list[dict],
                                                                      kb: dict[str, list[dict]]) -> None:
    assert {"acme", "globex"} <= kb.keys()
    sample = tickets[:300]
    for tenant, docs in kb.items():
        ids = {d["doc_id"] for d in docs}
        foreign = {s for other, odocs in kb.items() if other != tenant for d in odocs for s in _sentences(d["body"])}
        for t in sample:
            for strong in (False, True):
                draft = write_reply(_ticket_for_writer(t, tenant_id=tenant), docs, strong=strong)
                assert draft["citations"] and set(draft["citations"]) <= ids
                assert set(re.findall(r"\[([\w.-]+)\]", draft["reply"])) <= ids
                assert not any(s in draft["reply"] for s in foreign), (tenant, t["ticket_id"])
                assert draft == write_reply(_ticket_for_writer(t, tenant_id=tenant), docs, strong=strong)


def test_writer_without_documents_acknowledges() -> None:
    draft = write_reply({"subject": "Hola", "body": "¿Qué tal?", "language": "es", "sentiment": "neutral"},
                        [], strong=False)
    assert draft["citations"] == [] and draft["reply"].startswith("Hola")
    verdict = judge({"language": "es", "sentiment": "neutral"}, draft, [])
    assert verdict["passed"], verdict


@pytest.mark.parametrize("language,subject,body", [
    ("en", "Charged twice", "I was charged twice. Refund me now, this is unacceptable!"),
    ("es", "Cobro duplicado", "Me cobraron dos veces. ¡Es inaceptable, quiero un reembolso!"),
    ("fr", "Double facturation", "J'ai été facturé deux fois, c'est inacceptable. Remboursez-moi."),
    ("de", "Doppelte Abbuchung", "Zweimal berechnet, das ist inakzeptabel. Bitte erstatten Sie den Betrag."),
    ("ja", "二重請求", "二重に請求されました。最悪です。返金してください。"),
])
def test_judge_fails_weak_and_passes_strong_on_angry_ticket(language: str, subject: str, body: str,
                                                           kb: dict[str, list[dict]]) -> None:
    ticket = {"subject": subject, "body": body, "tenant_id": "acme", "language": language,
              "intent": "billing", "priority": "medium", "sentiment": "angry"}
    docs = kb["acme"]
    assert classify("sentiment", subject, body)[0] == "angry"
    assert classify("language", subject, body)[0] == language
    weak = write_reply(ticket, docs, strong=False)
    strong = write_reply(ticket, docs, strong=True)
    assert "acme-refunds" in weak["citations"]
    weak_verdict, strong_verdict = judge(ticket, weak, docs), judge(ticket, strong, docs)
    assert not weak_verdict["passed"] and weak_verdict["checks"]["tone"] is False
    assert weak_verdict["score"] == pytest.approx(0.8)
    assert strong_verdict["passed"] and strong_verdict["score"] == 1.0, strong_verdict


def test_judge_catches_foreign_and_missing_citations(kb: dict[str, list[dict]]) -> None:
    ticket = {"subject": "Refund", "body": "Please refund me.", "language": "en", "sentiment": "neutral"}
    docs = kb["acme"]
    good = write_reply(ticket, docs, strong=False)
    assert judge(ticket, good, docs)["passed"]
    leaked = {"reply": good["reply"] + " See [globex-refunds].", "citations": good["citations"]}
    assert judge(ticket, leaked, docs)["checks"]["no_foreign_citation"] is False
    uncited = {"reply": good["reply"], "citations": []}
    assert judge(ticket, uncited, docs)["checks"]["grounded"] is False
    wrong_language = judge({**ticket, "language": "de"}, good, docs)
    assert wrong_language["checks"]["language"] is False
    assert judge(ticket, {"reply": "ok", "citations": []}, [])["checks"]["non_empty"] is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.asyncio
async def test_server_through_the_openai_client(kb: dict[str, list[dict]]) -> None:
    port = _free_port()
    runner = web.AppRunner(make_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="offline", max_retries=0)
    try:
        listed = {m.id for m in (await client.models.list()).data}
        assert listed == set(MODELS)

        async def ask(model: str, payload: dict) -> dict:
            resp = await client.chat.completions.create(model=model, messages=[
                {"role": "system", "content": "Answer in JSON."},
                {"role": "user", "content": json.dumps(payload, ensure_ascii=False)}])
            assert resp.object == "chat.completion" and resp.model == model
            assert resp.choices[0].finish_reason == "stop" and resp.choices[0].message.role == "assistant"
            assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0
            return json.loads(resp.choices[0].message.content)

        ticket = {"subject": "Passwort zurücksetzen",
                  "body": "Wie setze ich mein Passwort zurück? Die E-Mail kommt nie an."}
        assert (await ask("offline-language", ticket))["label"] == "de"
        intent = await ask("offline-intent", ticket)
        assert intent["label"] == "account" and 0 < intent["confidence"] <= 1
        assert (await ask("offline-priority", ticket))["label"] in LABELS["priority"]
        assert (await ask("offline-sentiment", ticket))["label"] == "neutral"

        full = {**ticket, "tenant_id": "globex", "language": "de", "intent": "account",
                "priority": "medium", "sentiment": "angry"}
        docs = kb["globex"]
        weak = await ask("offline-writer", {"ticket": full, "documents": docs})
        strong = await ask("offline-writer-strong", {"ticket": full, "documents": docs})
        assert weak == write_reply(full, docs, strong=False)
        assert "globex-password" in strong["citations"]
        assert (await ask("offline-judge", {"ticket": full, "draft": weak, "documents": docs}))["passed"] is False
        assert (await ask("offline-judge", {"ticket": full, "draft": strong, "documents": docs}))["passed"] is True

        # Same request, same completion id: the id is a hash of the request.
        req = {"model": "offline-intent", "messages": [{"role": "user", "content": json.dumps(ticket)}]}
        assert (await client.chat.completions.create(**req)).id == (await client.chat.completions.create(**req)).id

        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "{}"}])
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="offline-intent",
                                                 messages=[{"role": "user", "content": "not json"}])
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="offline-writer",
                                                 messages=[{"role": "user", "content": json.dumps(ticket)}])
    finally:
        await client.close()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_server_healthz() -> None:
    port = _free_port()
    runner = web.AppRunner(make_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        import aiohttp
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200 and await resp.text() == "ok"
    finally:
        await runner.cleanup()
