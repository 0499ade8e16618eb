"""A ticket in a language the deployment does not serve gets its own outcome, never a confident wrong label:
the language classifier answers "not one of ours" (the offline lexicon, or a real model saying ``it``, ``zh``,
``other``), that answer is a valid classification, and the router escalates it as LANGUAGE_UNSUPPORTED, on the
real broker with the offline models and with a fake model over real HTTP."""
from __future__ import annotations

from typing import Iterator

import pytest

from processors import prompts
from processors.classify import label_validator
from processors.offline import classify
from streams.errors import InvalidModelOutput
from processors.topology import ESCALATIONS
from tests.fake_openai import FakeModels
from tests.harness import Stack, fake_models_env, routine_tickets, value

SERVED_LANGUAGES = prompts.LABELS["language"]
# Tickets as customers write them: billing, login, bugs, in languages we do not serve, and mixed ones.
UNSERVED = {
    "it": [("Rimborso", "Buongiorno, mi è stato addebitato due volte il mio abbonamento questo mese. "
                        "Vorrei un rimborso per favore, grazie."),
           ("Problema con la fattura", "Non riesco a scaricare la fattura di ottobre, il sito mi dà sempre un "
                                       "errore. Potete aiutarmi? Ho bisogno della fattura per la contabilità.")],
    "pt": [("Reembolso", "Olá, fui cobrado duas vezes pela minha assinatura este mês. Gostaria de um reembolso, "
                         "obrigado."),
           ("Senha", "Não consigo acessar a minha conta depois de redefinir a senha. O que devo fazer? "
                     "Já tentei duas vezes.")],
    "zh": [("退款", "您好，我这个月的订阅被扣了两次费用，请帮我退款。谢谢！"),
           ("无法登录", "我重置密码后无法登录账户，请尽快帮忙处理。我们的团队都在等。")],
    "ru": [("Возврат", "Здравствуйте, с меня дважды списали оплату за подписку в этом месяце. Прошу вернуть деньги."),
           ("Не могу войти", "После сброса пароля я не могу войти в свой аккаунт. Помогите, пожалуйста.")],
    "mixed": [("Refund / Reembolso", "I was charged twice for my subscription this month and I would like a refund. "
                                     "Me cobraron dos veces la suscripción este mes y quiero un reembolso."),
              ("Invoice", "Please send me the invoice for October, our finance team needs it for the audit. "
                          "请把十月份的发票发给我，我们财务部门需要。")],
}


def _unserved_docs() -> list[dict]:
    return [{"tenant_id": "acme" if i % 2 else "globex", "subject": s, "body": b, "ticket_id": f"LANG-{lang}-{i}",
             "lang": lang} for lang, rows in UNSERVED.items() for i, (s, b) in enumerate(rows)]


@pytest.mark.parametrize("lang,subject,body", [(lang, s, b) for lang, rows in UNSERVED.items() for s, b in rows])
def test_the_offline_classifier_says_none_of_ours(lang: str, subject: str, body: str) -> None:
    label, confidence = classify("language", subject, body)
    assert label not in SERVED_LANGUAGES, f"{lang} ticket labelled {label} ({confidence})"
    assert 0 < confidence <= 1


def test_an_unserved_language_is_a_valid_answer_and_a_made_up_one_is_not() -> None:
    check = label_validator("language")
    assert check({"label": "it", "confidence": 0.9}) == ("it", 0.9)
    assert check({"label": "Other", "confidence": 0.8}) == ("other", 0.8)
    assert check({"label": "zh-Hans", "confidence": 0.7}) == ("zh-hans", 0.7)
    assert check({"label": "mixed", "confidence": 0.6}) == ("mixed", 0.6)
    assert check({"label": "en-GB", "confidence": 0.9}) == ("en", 0.9)  # a served language however spelled
    assert check({"label": "eng", "confidence": 0.9}) == ("en", 0.9)
    for bad in ("klingon", "", "e n", None, 3):
        with pytest.raises(InvalidModelOutput):
            check({"label": bad, "confidence": 0.9})
    with pytest.raises(InvalidModelOutput):
        label_validator("priority")({"label": "it", "confidence": 0.9})  # only language takes codes


def _assert_unsupported(stack: Stack, docs: list[dict], prefix: str) -> dict:
    sent = stack.produce([{k: v for k, v in d.items() if k != "lang"} for d in docs], prefix=prefix)
    outcomes = stack.outcomes(set(sent), timeout=300)
    assert set(outcomes) == set(sent) and all(len(v) == 1 for v in outcomes.values()), "one outcome per ticket"
    out = {}
    for cid, (o,) in outcomes.items():
        case = value(o)
        language = case["labels"].get("language", {}).get("label")  # None: the classification failed
        out[sent[cid]["ticket_id"]] = (o.topic, case["escalation_reason"], language)
    return out


@pytest.mark.kafka
def test_unserved_languages_escalate_with_the_offline_models(pipeline: Stack) -> None:
    results = _assert_unsupported(pipeline, _unserved_docs(), "lang-offline-")
    wrong = {tid: r for tid, r in results.items() if r[:2] != (ESCALATIONS, "LANGUAGE_UNSUPPORTED")}
    assert not wrong, f"tickets in an unserved language that did not escalate as unsupported: {wrong}"
    assert all(lang is not None and lang not in SERVED_LANGUAGES for _, _, lang in results.values())


@pytest.fixture(scope="module")
def faked(tmp_path_factory: pytest.TempPathFactory, fake: FakeModels) -> Iterator[Stack]:
    s = Stack.create(tmp_path_factory.mktemp("lang-home"), **fake_models_env(
        fake.base_url, TRIAGE_RETRIES="2", TRIAGE_BACKOFF_S="0.05", TRIAGE_MODEL_TIMEOUT_S="5",
        TRIAGE_DRIFT_CLASSIFIERS="intent"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.mark.kafka
@pytest.mark.parametrize("answer", ["it", "zh-Hans", "other", "mixed"])
def test_a_model_that_answers_an_unserved_language_escalates(faked: Stack, fake: FakeModels, answer: str) -> None:
    """Routine tickets that would get a reply; the language model (real HTTP) says they are in a language we do
    not serve: the classification is valid (not retried, not a failure) and no reply is written."""
    fake.reset()
    fake.set("fake-language", f"drift:{answer}")
    docs = [{**d, "lang": answer} for d in routine_tickets(6, 40)]
    results = _assert_unsupported(faked, docs, f"lang-fake-{answer}-")
    expected = answer.lower()
    for tid, (topic, reason, language) in results.items():
        assert (topic, reason, language) == (ESCALATIONS, "LANGUAGE_UNSUPPORTED", expected), tid
    assert not any(r["model"] in ("fake-writer", "fake-writer-b") for r in fake.log()), "no reply may be written"
    assert all(r["status"] == 200 for r in fake.log() if r["model"] == "fake-language")
    assert sum(1 for r in fake.log() if r["model"] == "fake-language") == len(docs)  # valid: asked once each


@pytest.mark.kafka
def test_served_languages_still_get_replies(faked: Stack, fake: FakeModels) -> None:
    """The control: the same tickets with the model answering as usual are not escalated as unsupported."""
    fake.reset()
    results = _assert_unsupported(faked, [{**d, "lang": "x"} for d in routine_tickets(6, 40)], "lang-served-")
    assert all(reason != "LANGUAGE_UNSUPPORTED" and lang in SERVED_LANGUAGES for _, reason, lang in results.values())
