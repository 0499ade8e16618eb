"""The trained offline models: the shipped file is what the corpus gives, inference is deterministic, the corpus
is its own (never the evaluation split's texts), confidence means something and critical tickets are found."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from processors.offline import classify
from processors.offline.features import features
from processors.offline.linear import MODEL_FILE, load, parse
from processors.offline.train import CODES, build, dumps, is_dev, read_corpus

REPO = Path(__file__).resolve().parents[1]
EVAL_SPLIT = REPO / "deploy" / "sample" / "eval" / "tickets.jsonl"
SAMPLE = REPO / "deploy" / "sample" / "tickets.jsonl"
# Ten words in a row shared with an evaluation ticket would be a copy; shorter runs occur by themselves in support
# mail (a quoted "TypeError: Cannot read properties of undefined", "send me a copy of all personal data").
SHINGLE = 10
_WORDS = re.compile(r"[^\W_]+")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    return {tuple(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, str]]:
    return read_corpus()


def test_the_shipped_model_is_what_the_training_script_makes_of_the_corpus(corpus: list[dict[str, str]]) -> None:
    model, report = build(corpus)
    assert dumps(model) == MODEL_FILE.read_text(encoding="utf-8"), \
        "model/tickets.json is stale: run python -m processors.offline.train"
    assert report["dev_tickets"] > 0 and report["train_tickets"] > 4 * report["dev_tickets"] // 2


def test_inference_is_deterministic_and_reads_the_file_without_the_trainer() -> None:
    fresh = parse(json.loads(MODEL_FILE.read_text(encoding="utf-8")))
    ticket = ("Charged twice", "You took 49 EUR twice this month, please refund the second charge.")
    for task in ("intent", "priority", "sentiment"):
        once = classify(task, *ticket)
        assert once == classify(task, *ticket)
        assert fresh[task].decide(features(*ticket)) == load()[task].decide(features(*ticket))
    assert classify("intent", *ticket)[0] == "billing"


def test_the_corpus_is_hand_written_in_every_served_language_with_every_label(corpus: list[dict[str, str]]) -> None:
    for lang in ("en", "es", "fr", "de", "ja"):
        mine = [t for t in corpus if t["language"] == lang]
        assert len(mine) >= 180, f"{lang}: {len(mine)} tickets"
        for task, codes in CODES.items():
            assert {t[task] for t in mine} == set(codes.values()), f"{lang} lacks a {task} label"
        assert any(is_dev(t) for t in mine) and not all(is_dev(t) for t in mine)
    texts = [(t["subject"], t["body"]) for t in corpus]
    assert len(set(texts)) == len(texts), "a ticket written twice"


@pytest.mark.parametrize("held_out", [EVAL_SPLIT, SAMPLE], ids=["eval", "sample"])
def test_the_corpus_copies_no_ticket_of_the_evaluation_files(corpus: list[dict[str, str]], held_out: Path) -> None:
    mine = set().union(*(_shingles(f"{t['subject']} {t['body']}") for t in corpus))
    shared = [t["ticket_id"] for t in _jsonl(held_out) if _shingles(f"{t['subject']} {t['body']}") & mine]
    assert not shared, f"corpus shares {SHINGLE}-word runs with {held_out.name}: {shared[:5]}"


def test_critical_tickets_of_the_evaluation_split_are_called_critical() -> None:
    # The bar on a held-out set: 22 of 24. A missed outage answered by a template is the worst outcome.
    critical = [t for t in _jsonl(EVAL_SPLIT) if t["expected"]["priority"] == "critical"]
    called = sum(classify("priority", t["subject"], t["body"])[0] == "critical" for t in critical)
    assert called >= 22 / 24 * len(critical), f"{called} of {len(critical)}"


@pytest.mark.parametrize("task", ["intent", "language", "sentiment"])
def test_confident_answers_on_the_evaluation_split_are_right_nine_times_in_ten(task: str) -> None:
    # Priority is not here: on the evaluation split its >= 0.9 answers are right about 80% of the time (issue 17's
    # report); the temperature fitted on the corpus's dev split is still too sharp for it.
    sure = [(classify(task, t["subject"], t["body"]), t["expected"][task]) for t in _jsonl(EVAL_SPLIT)]
    sure = [label == expected for (label, confidence), expected in sure if confidence >= 0.9]
    assert len(sure) >= 100 and sum(sure) >= 0.9 * len(sure), f"{sum(sure)} right of {len(sure)}"
