"""The offline language identifier: the script decides what it can, lingua's shipped n-gram models the rest.

A ticket's language is its body's (the reply is written in it): an English subject over a Spanish body is
``es``; the subject only counts when the body has almost no words. The answer is a served language
(en, es, fr, de, ja) or a label that says it is none of them, so the router escalates instead of answering in
a language the customer did not write: ``it``, ``pt``, ``nl`` (Latin languages lingua tells apart from the
served ones), ``zh``/``ko`` (by script), ``other`` (another script, or a Latin language outside the list) or
``mixed`` (two languages, each a real share of the text). Never the nearest served language.

Why lingua in low-accuracy mode: its trigram models load in a quarter of a second and some 40 MB, against
seconds and hundreds of MB for the full models, and tickets are sentences, where trigrams already agree
with the full models; the few-word tickets are handled by preferring a served language when lingua itself
is unsure.
"""
from __future__ import annotations

import re
from functools import lru_cache

from lingua import Language, LanguageDetector, LanguageDetectorBuilder

SERVED = ("en", "es", "fr", "de", "ja")
KNOWN_UNSERVED = ("it", "pt", "nl")
UNSERVED = "other"
MIXED = "mixed"
LABELS = (*SERVED, *KNOWN_UNSERVED, "zh", "ko", UNSERVED, MIXED)

# The Latin-script languages lingua chooses among: the served ones, the unserved ones with a label of their
# own, and a few frequent others so that a Polish or Swedish ticket wins as itself and becomes "other".
_LATIN = (Language.ENGLISH, Language.SPANISH, Language.FRENCH, Language.GERMAN, Language.ITALIAN,
          Language.PORTUGUESE, Language.DUTCH, Language.POLISH, Language.TURKISH, Language.SWEDISH)

_KANA = re.compile(r"[\u3040-\u30ff\uff66-\uff9f]")
_KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_CJK_ANY = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff66-\uff9f]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_WORD = re.compile(r"[^\W\d_]+")
_LATIN_WORD = re.compile(r"[a-zA-Z\u00c0-\u024f\u1e00-\u1eff]+")
_SENTENCE = re.compile(r"[.!?;\n。！？]+")

_BODY_MIN_WORDS = 2       # a body with fewer words is read together with its subject
_SHORT = 4                # up to this many words lingua's answer is a guess ...
_SURE = 0.6               # ... unless its confidence reaches this
_MIXED_MIN_WORDS = 4      # a script's share counts towards "mixed" from this many words
# A Latin sentence counts towards "mixed" from this many words, and only when its language is clear: on
# fewer, trigrams are fooled ("How do I reset my password" reads as Italian).
_MIXED_SENTENCE_WORDS = 8
_MIXED_SURE = 0.9
_MIXED_SHARE = 0.3        # the second language must carry this share of the words


@lru_cache(maxsize=1)
def detector() -> LanguageDetector:
    """The Latin-script detector, built on first use (a quarter of a second) and shared by the process."""
    return LanguageDetectorBuilder.from_languages(*_LATIN).with_low_accuracy_mode() \
        .with_preloaded_language_models().build()


def _code(language: Language) -> str:
    code = language.iso_code_639_1.name.lower()
    return code if code in SERVED or code in KNOWN_UNSERVED else UNSERVED


def _latin_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if _LATIN_WORD.fullmatch(w)]


def _latin(text: str) -> tuple[str, float]:
    values = detector().compute_language_confidence_values(text)
    if not values or values[0].value <= 0:
        return "en", 0.5  # no letters lingua knows: digits, an error code; answer in the default language
    best = values[0]
    label, confidence = _code(best.language), best.value
    if label not in SERVED and len(_latin_words(text)) <= _SHORT and best.value < _SURE:
        # "hi there", "moin": too short to call a language we do not serve; the likeliest served one it is.
        served = next((v for v in values if _code(v.language) in SERVED), None)
        if served is not None:
            label, confidence = _code(served.language), served.value
    if label in SERVED and _mixed_sentences(text):
        return MIXED, 0.8
    return label, round(max(min(confidence, 0.99), 0.34), 3)


def _mixed_sentences(text: str) -> bool:
    """True when clear sentences in two different languages each carry a real share of the words."""
    words_per_label: dict[str, int] = {}
    for sentence in _SENTENCE.split(text):
        words = _latin_words(sentence)
        if len(words) < _MIXED_SENTENCE_WORDS:
            continue
        values = detector().compute_language_confidence_values(sentence)
        if values and values[0].value >= _MIXED_SURE:
            label = _code(values[0].language)
            words_per_label[label] = words_per_label.get(label, 0) + len(words)
    if len(words_per_label) < 2:
        return False
    total = sum(words_per_label.values())
    return sorted(words_per_label.values())[-2] >= _MIXED_SHARE * total


def identify(subject: str, body: str) -> tuple[str, float]:
    """The ticket's language label (see the module docstring) and a confidence in (0, 1]. Deterministic."""
    text = body or ""
    if len(_WORD.findall(text)) + len(_CJK_ANY.findall(text)) < _BODY_MIN_WORDS:
        text = f"{subject or ''}\n{text}"
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
    units = sorted({"latin": float(latin), "cjk": cjk, "cyrillic": float(cyrillic), "other": float(other)}.items(),
                   key=lambda kv: -kv[1])
    total = sum(v for _, v in units)
    if units[1][1] >= _MIXED_MIN_WORDS and units[1][1] >= _MIXED_SHARE * total:
        return MIXED, 0.8  # e.g. an English ticket with a Chinese paragraph: which language would we answer in?
    script = units[0][0]
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
