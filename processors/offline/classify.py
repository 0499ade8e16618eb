"""The offline classifiers: small trained models, deterministic, well under a millisecond per call.

``classify(task, subject, body)`` returns ``(label, confidence)``. Language comes from
:mod:`processors.offline.language` (the script, then lingua's shipped models); intent, priority and
sentiment from the linear models of :mod:`processors.offline.linear`, trained on the hand-written corpus by
``python -m processors.offline.train``. Confidence is the model's probability for the label, calibrated on
the corpus's dev split: among answers given with 0.9, about nine in ten are right.
"""
from __future__ import annotations

from functools import lru_cache

from processors.offline import language
from processors.offline.features import features
from processors.offline.linear import load

TASKS = ("intent", "language", "priority", "sentiment")

# Language labels that mean "none of the served languages" (the router escalates them: LANGUAGE_UNSUPPORTED).
UNSERVED = language.UNSERVED
MIXED = language.MIXED

LABELS: dict[str, tuple[str, ...]] = {
    "intent": ("billing", "technical", "account", "general"),
    # The served languages, then the labels that say "none of them" (see processors.offline.language).
    "language": language.LABELS,
    "priority": ("low", "medium", "high", "critical"),
    "sentiment": ("angry", "neutral", "satisfied"),
}


@lru_cache(maxsize=1024)
def _features(subject: str, body: str) -> dict[str, float]:
    # The server asks the three text tasks about the same ticket one after the other: extract once.
    return features(subject, body)


@lru_cache(maxsize=8192)
def _decide(task: str, subject: str, body: str) -> tuple[str, float]:
    # Pure, so a retried call (the caller timed out on a busy server) costs a lookup, not the model again.
    if task == "language":
        return language.identify(subject, body)
    label, confidence = load()[task].decide(_features(subject, body))
    return label, max(confidence, 0.001)


def warm() -> None:
    """Reads the model file and builds the language detector now rather than on the first ticket.

    Together about a second, longer on a busy machine: a server that did it on its first request held every
    request of the first burst past the callers' time-out, and their retries kept it behind (every intent
    call of a 300-ticket burst timed out in the guards test). Servers call this before they listen.
    """
    load()
    language.detector()
    classify("intent", "warm", "up")


def classify(task: str, subject: str, body: str) -> tuple[str, float]:
    """Labels one ticket for ``task`` (intent, language, priority or sentiment).

    Returns ``(label, confidence)`` with the label from :data:`LABELS` and confidence in (0, 1].
    Raises ``ValueError`` for an unknown task. Pure and deterministic.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return _decide(task, subject or "", body or "")
