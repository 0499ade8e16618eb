"""The offline classifiers: lexicon scoring, deterministic, microseconds per call.

``classify(task, subject, body)`` returns ``(label, confidence)``. Confidence is in (0, 1] and reflects
the margin between the best and the second-best score: 0.5 is a coin toss, near 1 is a clear call.
"""
from __future__ import annotations

import re

from processors.offline import lexicon
from processors.offline.matching import TermMatcher, normalise

TASKS = ("intent", "language", "priority", "sentiment")
LABELS: dict[str, tuple[str, ...]] = {
    "intent": ("billing", "technical", "account", "general"),
    "language": lexicon.LANGUAGES,
    "priority": ("low", "medium", "high", "critical"),
    "sentiment": ("angry", "neutral", "satisfied"),
}

# Compiled once at import: the server classifies thousands of tickets a second.
_INTENT = TermMatcher(lexicon.INTENT)
_PRIORITY = TermMatcher(lexicon.PRIORITY)
_SENTIMENT = TermMatcher(lexicon.SENTIMENT)

_KANA = re.compile(r"[\u3040-\u30ff\uff66-\uff9f]")
_KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_WORD = re.compile(r"[^\W\d_]+")
_FRENCH_ELISION = re.compile(r"(?<!\w)[cdjlmnst]['’]\w")  # j'ai, n'a, d'hier, l'app

_ESCALATION_MIN = 2.0  # one clear cue ("outage", "urgent") escalates; a stray weak word does not
_SENTIMENT_MIN = 1.5   # politeness ("thanks") alone is neutral; praise or anger has to be said


def _confidence(best: float, second: float) -> float:
    """Maps the winning margin to (0.5, 0.99]; ties give 0.5."""
    margin = max(best - second, 0.0)
    return round(0.5 + 0.49 * margin / (margin + 1.0), 3)


def _pick(scores: dict[str, float], order: tuple[str, ...]) -> tuple[str, float, float]:
    """Best label (ties go to the earlier label of ``order``), its score and the runner-up's."""
    ranked = sorted(order, key=lambda label: (-scores.get(label, 0.0), order.index(label)))
    return ranked[0], scores.get(ranked[0], 0.0), scores.get(ranked[1], 0.0)


def _language(text: str) -> tuple[str, float]:
    kana = len(_KANA.findall(text))
    kanji = len(_KANJI.findall(text))
    # Kanji without kana could be Chinese, but Japanese is the only CJK language we serve.
    if kana or kanji >= 2:
        letters = kana + kanji + len(_WORD.findall(text))
        return "ja", round(min(0.99, 0.6 + 0.39 * (kana + kanji) / max(letters, 1)), 3)
    scores = {lang: 0.0 for lang in lexicon.LANGUAGES if lang != "ja"}
    scores["en"] = 0.5  # the default when nothing else votes
    for word in _WORD.findall(text):
        for lang, words in lexicon.STOPWORDS.items():
            if word in words:
                scores[lang] += 1.0
    for lang, chars in lexicon.DIACRITICS.items():
        scores[lang] += 1.5 * sum(text.count(ch) for ch in chars)
    scores["fr"] += 1.5 * len(_FRENCH_ELISION.findall(text))
    label, best, second = _pick(scores, ("en", "es", "fr", "de"))
    return label, _confidence(best, second)


def _intent_scores(text: str) -> dict[str, float]:
    return _INTENT.scores(text, LABELS["intent"])


def _intent(text: str) -> tuple[str, float]:
    scores = _intent_scores(text)
    if max(scores.values()) <= 0:
        return "general", 0.5  # nothing recognisable: a general enquiry, and we say we are unsure
    label, best, second = _pick(scores, LABELS["intent"])
    return label, _confidence(best, second)


def _priority(text: str) -> tuple[str, float]:
    cues = _PRIORITY.scores(text, ("critical", "high"))
    if cues["critical"] >= _ESCALATION_MIN:
        return "critical", _confidence(cues["critical"], cues["high"])
    if cues["high"] >= _ESCALATION_MIN:
        return "high", _confidence(cues["high"], _ESCALATION_MIN - 1.0)
    intent, intent_conf = _intent(text)
    # Policy: only English tickets are auto-downgraded to low. The non-English lexicon is thinner, so a
    # misread costs more there; those tickets wait in the medium queue for a human to re-rank.
    if intent == "general" and _language(text)[0] == "en":
        return "low", intent_conf
    return "medium", 0.6


def _sentiment(text: str) -> tuple[str, float]:
    scores = _SENTIMENT.scores(text, ("angry", "satisfied"))
    scores["neutral"] = _SENTIMENT_MIN
    label, best, second = _pick(scores, ("angry", "satisfied", "neutral"))
    if label != "neutral" and best < _SENTIMENT_MIN:
        label = "neutral"
    return label, _confidence(best, second)


_TASKS = {"intent": _intent, "language": _language, "priority": _priority, "sentiment": _sentiment}


def classify(task: str, subject: str, body: str) -> tuple[str, float]:
    """Labels one ticket for ``task`` (intent, language, priority or sentiment).

    Returns ``(label, confidence)`` with the label from :data:`LABELS` and confidence in (0, 1].
    Raises ``ValueError`` for an unknown task. Pure and deterministic.
    """
    try:
        fn = _TASKS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}") from None
    text = normalise(f"{subject or ''}\n{body or ''}")
    return fn(text)
