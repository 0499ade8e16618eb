"""Adding a classifier to support is one declaration (its labels and its offline model): no schema, deploy or
topology edit. Here a fifth one, ``product_area``, runs on the real broker beside the four, through the join to
every ticket's outcome; its step, group, model chain, offline model and the join's wait all follow from it."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from processors.support import CLASSIFIERS, Classifier, declare
from tests.harness import Stack, running, sample_tickets, value

SPEC = "tests.test_fifth_classifier:PIPELINE"
AREAS = ("payments", "devices", "accounts", "other")
_WORDS = {
    "payments": r"invoice|refund|charge|charged|payment|billing|card|factura|rechnung|facture|paiement|請求",
    "accounts": r"password|login|log in|account|sign in|konto|compte|cuenta|パスワード",
    "devices": r"app|phone|device|laptop|install|crash|gerät|appareil|dispositivo|アプリ",
}


def product_area(subject: str, body: str) -> tuple[str, float]:
    """The fifth classifier's offline model: which part of the product a ticket is about."""
    text = f"{subject} {body}".lower()
    for area, words in _WORDS.items():
        if re.search(words, text):
            return area, 0.8
    return "other", 0.5


PRODUCT_AREA = Classifier("product_area", AREAS, product_area)
PIPELINE = declare((*CLASSIFIERS, PRODUCT_AREA))


def test_the_declaration_gives_the_fifth_classifier_everything() -> None:
    assert "classify-product_area" in PIPELINE.step_names
    assert PIPELINE.group_id("classify-product_area") == "triage.classify-product_area"
    assert PIPELINE.dlq_topic("classify-product_area") in PIPELINE.terminal_topics()
    assert PIPELINE.models["classify-product_area"].offline == ("offline-product_area",)
    assert PIPELINE.extras["classifiers"][-1] == "product_area"
    assert PIPELINE.problems() == []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running(Path(tmp_path_factory.mktemp("fifth")), SPEC) as s:
        yield s


def test_a_fifth_classifier_runs_through_the_join_to_every_outcome(stack: Stack) -> None:
    tickets = sample_tickets(40)
    sent = stack.produce(tickets)
    outcomes = stack.outcomes(set(sent), timeout=300)
    assert set(outcomes) == set(sent), f"{len(set(sent) - set(outcomes))} tickets without an outcome"
    assert all(len(outs) == 1 for outs in outcomes.values()), "a ticket with two outcomes"
    cases = [value(outs[0]) for outs in outcomes.values()
             if outs[0].topic in ("tickets.responses", "tickets.escalations")]
    assert len(cases) >= 35, [outs[0].topic for outs in outcomes.values()]
    for case in cases:
        assert set(case["labels"]) == {"intent", "language", "priority", "sentiment", "product_area"}, case["labels"]
        assert case["labels"]["product_area"]["label"] in AREAS
        assert case["labels"]["product_area"]["model"] == "offline-product_area"
    assert {c["labels"]["product_area"]["label"] for c in cases} - {"other"}, "the classifier never matched"
