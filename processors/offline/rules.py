"""Lexicon rules: the offline classifiers before the trained models, kept as rules, not as a model.

``classify(task, subject, body)`` returns ``(label, confidence)`` from weighted term lists
(:mod:`processors.offline.lexicon`). They no longer label tickets (:mod:`processors.offline.classify` does,
with models that generalise); :func:`processors.injection.critical_confirmed` still asks them, because a rule
that only counts situations ("outage", "data loss") cannot be talked into ``critical`` by the ticket's
wording the way a model that read "this is critical" in its training tickets might.
"""
from __future__ import annotations

import re

from processors.offline import lexicon
from processors.offline.matching import TermMatcher, normalise

TASKS = ("intent", "language", "priority", "sentiment")

# Compiled once at import: the server classifies thousands of tickets a second.
_INTENT = TermMatcher(lexicon.INTENT)
_PRIORITY = TermMatcher(lexicon.PRIORITY)
_SENTIMENT = TermMatcher(lexicon.SENTIMENT)

_KANA = re.compile(r"[\u3040-\u30ff\uff66-\uff9f]")
_KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_WORD = re.compile(r"[^\W\d_]+")
_FRENCH_ELISION = re.compile(r"(?<!\w)[cdjlmnst]['’]\w")  # j'ai, n'a, d'hier, l'app
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_CJK_ANY = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff66-\uff9f]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_LATIN_WORD = re.compile(r"[a-z\u00c0-\u024f\u1e00-\u1eff]+")
_SENTENCE = re.compile(r"[.!?;\n。！？]+")

# Language labels that mean "none of the served languages" (the router escalates them: LANGUAGE_UNSUPPORTED).
UNSERVED = "other"
MIXED = "mixed"
_STOPWORDS = {**lexicon.STOPWORDS, **lexicon.UNSERVED_STOPWORDS}
_DIACRITICS = {**lexicon.DIACRITICS, **lexicon.UNSERVED_DIACRITICS}
_LATIN_ORDER = (*(lang for lang in lexicon.LANGUAGES if lang in lexicon.STOPWORDS), *lexicon.UNSERVED_STOPWORDS)
_COVERAGE_MIN_WORDS = 8   # below this a ticket is too short to call "no known language"
_COVERAGE = 0.12          # the winner's function words must be at least this share of the words
_MIXED_MIN_WORDS = 4      # a sentence (or a script's share) counts towards "mixed" from this many words
_MIXED_MARGIN = 2.0       # ... and only when its language is clear
_MIXED_SHARE = 0.3        # the second language must carry this share of the words

LABELS: dict[str, tuple[str, ...]] = {
    "intent": ("billing", "technical", "account", "general"),
    # The served languages, then the labels that say "none of them" (see _language).
    "language": (*lexicon.LANGUAGES, *lexicon.UNSERVED_STOPWORDS, "zh", "ko", UNSERVED, MIXED),
    "priority": ("low", "medium", "high", "critical"),
    "sentiment": ("angry", "neutral", "satisfied"),
}

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


def _latin_scores(words: list[str], text: str) -> dict[str, float]:
    """Votes of function words and distinctive letters, for the served Latin languages and the unserved ones
    we know (so that Italian or Portuguese can win as themselves instead of as the nearest served language)."""
    scores = {lang: 0.0 for lang in _LATIN_ORDER}
    scores["en"] = 0.5  # the default when nothing else votes
    for word in words:
        for lang, vocabulary in _STOPWORDS.items():
            if word in vocabulary:
                scores[lang] += 1.0
    for lang, chars in _DIACRITICS.items():
        scores[lang] += 1.5 * sum(text.count(ch) for ch in chars)
    scores["fr"] += 1.5 * len(_FRENCH_ELISION.findall(text))
    return scores


def _latin(text: str) -> tuple[str, float]:
    words = [w for w in _WORD.findall(text) if _LATIN_WORD.fullmatch(w)]
    scores = _latin_scores(words, text)
    label, best, second = _pick(scores, _LATIN_ORDER)
    if label not in lexicon.LANGUAGES:
        served = max(scores[lang] for lang in _LATIN_ORDER if lang in lexicon.LANGUAGES)
        return label, _confidence(best, served)
    if len(words) >= _COVERAGE_MIN_WORDS and (best - (0.5 if label == "en" else 0.0)) < _COVERAGE * len(words):
        # Long text in which the winner's function words are rare: a language none of our lists knows
        # (Polish, Turkish, Swedish ...), not a served one that happens to lead by a word or two.
        return UNSERVED, 0.7
    mixed = _mixed_sentences(text)
    if mixed:
        return MIXED, 0.8
    return label, _confidence(best, second)


def _mixed_sentences(text: str) -> bool:
    """True when clear sentences in two different languages each carry a real share of the words."""
    words_per_label: dict[str, int] = {}
    for sentence in _SENTENCE.split(text):
        words = [w for w in _WORD.findall(sentence) if _LATIN_WORD.fullmatch(w)]
        if len(words) < _MIXED_MIN_WORDS:
            continue
        label, best, second = _pick(_latin_scores(words, sentence), _LATIN_ORDER)
        if best - second >= _MIXED_MARGIN:
            words_per_label[label] = words_per_label.get(label, 0) + len(words)
    if len(words_per_label) < 2:
        return False
    total = sum(words_per_label.values())
    return sorted(words_per_label.values())[-2] >= _MIXED_SHARE * total


def _language(text: str) -> tuple[str, float]:
    """A served language, or a label that says it is none of them: ``zh``/``ko`` (by script), ``it``, ``pt``,
    ``nl`` (known function words), ``other`` (another script, or too few of any list's function words) or
    ``mixed`` (two languages, each a real share of the text). Never the nearest served language."""
    kana = len(_KANA.findall(text))
    han = len(_KANJI.findall(text))
    hangul = len(_HANGUL.findall(text))
    words = _WORD.findall(text)
    latin = sum(1 for w in words if _LATIN_WORD.fullmatch(w))
    cyrillic = sum(1 for w in words if _CYRILLIC.match(w))
    # A CJK character carries about half a word; other scripts (Greek, Arabic, Hebrew, Thai ...) as words.
    cjk = (kana + han + hangul) / 2
    other = sum(1 for w in words if not _LATIN_WORD.fullmatch(w) and not _CYRILLIC.match(w)
                and not _CJK_ANY.search(w))
    units = {"latin": float(latin), "cjk": cjk, "cyrillic": float(cyrillic), "other": float(other)}
    ranked = sorted(units.values(), reverse=True)
    total = sum(ranked)
    if ranked[1] >= _MIXED_MIN_WORDS and ranked[1] >= _MIXED_SHARE * total:
        return MIXED, 0.8  # e.g. an English ticket with a Chinese paragraph: which language would we answer in?
    script = max(units, key=lambda k: units[k])
    if total == 0 or script == "latin":
        return _latin(text)
    if script == "cjk":
        if kana:
            letters = kana + han + len(words)
            return "ja", round(min(0.99, 0.6 + 0.39 * (kana + han) / max(letters, 1)), 3)
        # Japanese text always has kana; Han characters without any are Chinese (or a lone Japanese noun).
        if hangul > han:
            return "ko", 0.9
        return ("zh", 0.9) if han >= 2 else _latin(text)
    return UNSERVED, 0.9  # Cyrillic, Greek, Arabic, ...: no served language is written in them


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
