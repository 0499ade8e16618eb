"""Compiles a weighted term lexicon into one regex and scores text against it.

Term syntax (see :mod:`processors.offline.lexicon`): lowercase; a Latin term matches at the start of a
word and as a prefix ("refund" also hits "refunds", "refunded"); a trailing ``$`` makes it a whole word;
a term with CJK characters or no letters at all matches anywhere, since CJK has no spaces between words.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Iterable

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")


def normalise(text: str) -> str:
    """NFKC + lowercase: full-width forms, composed accents and case all compare equal."""
    return unicodedata.normalize("NFKC", text).lower()


def _trie_pattern(terms: dict[str, bool]) -> str:
    """One regex for many literal terms, shaped as a trie so matching cost barely grows with their count.

    ``terms`` maps each term to whether it must end at a word boundary. Longer continuations are tried
    before a term's own end, so the longest term wins at any position.
    """
    root: dict = {}
    for term, whole in terms.items():
        node = root
        for ch in term:
            node = node.setdefault(ch, {})
        node[""] = whole  # the end marker; "" never collides with a character

    def build(node: dict) -> str:
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch != ""]
        if "" in node:
            alts.append(r"(?!\w)" if node[""] else "")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return build(root)


class TermMatcher:
    """Scores text with a lexicon of ``{label: {term: weight}}``; immutable, so safe to share.

    Overlapping terms are resolved leftmost-longest and each stretch of text counts once: that is
    how a neutralising phrase ("would be great", weight 0) hides the word it contains ("great").
    """

    def __init__(self, lexicon: Mapping[str, Mapping[str, float]]) -> None:
        self._entries: dict[str, tuple[str, float]] = {}
        at_word_start: dict[str, bool] = {}
        anywhere: dict[str, bool] = {}
        for label, terms in lexicon.items():
            for raw, weight in terms.items():
                whole = raw.endswith("$")
                term = normalise(raw[:-1] if whole else raw)
                if term in self._entries:
                    raise ValueError(f"term {term!r} listed twice in the lexicon")
                self._entries[term] = (label, float(weight))
                latin = not _CJK.search(term) and re.search(r"\w", term)
                (at_word_start if latin else anywhere)[term] = whole
        branches = []
        if at_word_start:
            branches.append(r"(?<!\w)" + _trie_pattern(at_word_start))
        if anywhere:
            branches.append(_trie_pattern(anywhere))
        self._regex = re.compile("|".join(branches)) if branches else None

    def scores(self, text: str, labels: Iterable[str] = ()) -> dict[str, float]:
        """Summed weights per label over every hit in ``text`` (already normalised)."""
        out = {label: 0.0 for label in labels}
        if self._regex is None:
            return out
        for match in self._regex.finditer(text):
            label, weight = self._entries[match.group(0)]
            out[label] = out.get(label, 0.0) + weight
        return out

    def hits(self, text: str) -> set[str]:
        """The labels with at least one non-zero-weight hit in ``text`` (already normalised)."""
        return {label for label, score in self.scores(text).items() if score > 0}
