"""What the offline text models see of a ticket: sparse n-gram features, the same at training and at inference.

One function, :func:`features`, turns a subject and a body into ``{feature: weight}``, L2-normalised. The
training script (:mod:`processors.offline.train`) and the model that reads the shipped weights
(:mod:`processors.offline.linear`) both call it, so what the model learned is exactly what it is shown; no
scikit-learn vectoriser sits between them that could change with a library version.

Why these features: character n-grams inside words carry stems, inflections and typos across five languages
("rembours", "reembols", "erstatt", "返金"), so a word nobody wrote in the corpus still shares most of its
grams with one somebody did; word unigrams and bigrams carry the phrases ("not working", "charged twice");
a few shape features carry what words do not (shouting, a run of exclamation marks, emoji).
"""
from __future__ import annotations

import math
import re
import unicodedata

from processors.offline.matching import normalise

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_DIGITS = re.compile(r"\d")
_LATIN_ACCENTS = re.compile(r"(?<=[a-z])[\u0300-\u036f]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff66-\uff9f]")
_LETTER = re.compile(r"[^\W\d_]")
_CHAR_GRAMS = (2, 3, 4)
_CJK_GRAMS = (1, 2, 3)
# Character n-grams outnumber words about ten to one; scaled down, so a phrase is not drowned by its letters.
GROUP_SCALE = {"c": 0.5}


def fold(text: str) -> str:
    """NFKC, lowercase, accents off Latin letters (customers often type "facturacion", "geloscht"), digits as 0.

    Only combining marks after a Latin letter go: a Japanese voiced mark is part of the letter (が is not か).
    """
    text = unicodedata.normalize("NFD", normalise(text))
    text = unicodedata.normalize("NFC", _LATIN_ACCENTS.sub("", text))
    return _DIGITS.sub("0", text)


def _shape(raw: str) -> list[str]:
    """Features of how the ticket is written rather than which words it uses."""
    out = []
    letters = _LETTER.findall(raw)
    if len(letters) >= 8:
        upper = sum(1 for ch in letters if ch.isupper())
        share = upper / len(letters)
        if share > 0.6:
            out.append("shape:shouting")
        elif share > 0.25:
            out.append("shape:loud")
    bangs = raw.count("!") + raw.count("！")
    out.append(f"shape:bang{min(bangs, 3)}")
    if "??" in raw or "？？" in raw or "?!" in raw:
        out.append("shape:qq")
    for ch in raw:
        if unicodedata.category(ch) == "So":  # emoji and other symbols: 😡 and 🙏 say different things
            out.append(f"sym:{ch}")
    words = len(_TOKEN.findall(raw)) + len(_CJK.findall(raw)) // 2
    out.append("len:" + ("1" if words <= 4 else "2" if words <= 12 else "3" if words <= 40 else "4"))
    return out


def features(subject: str, body: str) -> dict[str, float]:
    """The ticket as ``{feature: weight}``: counts damped by log, the whole vector of unit length.

    Subject words get their own unigram features besides the shared n-grams, because a subject is the
    customer's own summary. Pure and deterministic.
    """
    raw = f"{subject or ''}\n{body or ''}"
    counts: dict[str, float] = {}

    def add(name: str) -> None:
        counts[name] = counts.get(name, 0.0) + 1.0

    tokens = _TOKEN.findall(fold(raw))
    for i, tok in enumerate(tokens):
        add("w:" + tok)
        if i:
            add("b:" + tokens[i - 1] + " " + tok)
        cjk = bool(_CJK.search(tok))
        padded = tok if cjk else f" {tok} "
        for n in _CJK_GRAMS if cjk else _CHAR_GRAMS:
            for j in range(len(padded) - n + 1):
                add("c:" + padded[j:j + n])
    for tok in _TOKEN.findall(fold(subject or "")):
        add("s:" + tok)
    for name in _shape(raw):
        add(name)
    weights = {name: (1.0 + math.log(count)) * GROUP_SCALE.get(name[0], 1.0) for name, count in counts.items()}
    norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
    return {name: w / norm for name, w in weights.items()}
