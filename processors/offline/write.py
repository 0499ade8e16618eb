"""The offline reply writer: grounded only in the documents it is given.

It picks the most relevant documents by overlap with the ticket (shared cross-lingual topics first,
then shared word stems), quotes their key sentences verbatim and cites each as ``[doc_id]``. Greeting,
intro and closing are fixed phrases in the ticket's language; quotes stay in the document's language.
The weak writer quotes one sentence of one document and never apologises; the strong writer quotes up
to two sentences of up to two documents and apologises to angry customers. Deterministic.
"""
from __future__ import annotations

import re
from typing import Any

from processors.offline import lexicon
from processors.offline.matching import TermMatcher, normalise

_TOPICS = TermMatcher(lexicon.TOPICS)
_WORD = re.compile(r"[^\W\d_]{3,}")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
_ALL_STOPWORDS = frozenset().union(*lexicon.STOPWORDS.values())
_STEM = 5  # a crude stem, enough for refund/refunds/refunded, charge/charged, invoice/invoices
_TOPIC_WEIGHT = 3.0  # a shared concept says more than a shared word


def language_of(ticket: dict[str, Any]) -> str:
    """The ticket's language if we have phrases for it, else English."""
    lang = ticket.get("language")
    return lang if lang in lexicon.GREETINGS else "en"


def _features(text: str) -> tuple[set[str], set[str]]:
    norm = normalise(text)
    stems = {w[:_STEM] for w in _WORD.findall(norm) if w not in _ALL_STOPWORDS}
    return _TOPICS.hits(norm), stems


def _overlap(query: tuple[set[str], set[str]], text: str) -> float:
    topics, stems = _features(text)
    return _TOPIC_WEIGHT * len(query[0] & topics) + len(query[1] & stems)


def _sentences(body: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(body.strip()) if s.strip()]


def _key_sentences(query: tuple[set[str], set[str]], body: str, limit: int) -> list[str]:
    """The ``limit`` most relevant sentences, in document order; earlier sentences win ties."""
    sentences = _sentences(body)
    ranked = sorted(range(len(sentences)), key=lambda i: (-_overlap(query, sentences[i]), i))
    return [sentences[i] for i in sorted(ranked[:limit])]


def _rank(query: tuple[set[str], set[str]], documents: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """Documents by relevance; the caller's order (retrieval rank) breaks ties."""
    scored = [(_overlap(query, f"{d.get('title', '')}\n{d.get('body', '')}"), i, d)
              for i, d in enumerate(documents) if d.get("doc_id") and d.get("body")]
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [(score, doc) for score, _, doc in scored]


def write_reply(ticket: dict[str, Any], documents: list[dict[str, Any]], *, strong: bool) -> dict[str, Any]:
    """A reply to ``ticket`` grounded only in ``documents`` (already the tenant's own).

    ``ticket`` needs subject, body and language; sentiment matters to the strong writer. Each document
    needs doc_id and body (title optional). Returns ``{"reply": str, "citations": [doc_id, ...]}``;
    with no usable documents the reply is a short acknowledgement and citations is empty.
    """
    lang = language_of(ticket)
    parts = [lexicon.GREETINGS[lang]]
    if strong and ticket.get("sentiment") == "angry":
        parts.append(lexicon.APOLOGIES[lang])
    query = _features(f"{ticket.get('subject', '')}\n{ticket.get('body', '')}")
    ranked = _rank(query, documents)
    citations: list[str] = []
    if ranked:
        top_score = ranked[0][0]
        picked = [ranked[0][1]]
        # The strong writer adds a second document only when it is nearly as relevant as the first.
        if strong and len(ranked) > 1 and ranked[1][0] > 0 and ranked[1][0] >= 0.75 * top_score:
            picked.append(ranked[1][1])
        parts.append(lexicon.INTROS[lang])
        for doc in picked:
            quote = " ".join(_key_sentences(query, doc["body"], 2 if strong else 1))
            parts.append(f"- {quote} [{doc['doc_id']}]")
            citations.append(doc["doc_id"])
    else:
        parts.append(lexicon.NO_DOCS[lang])
    parts.append(lexicon.CLOSINGS[lang])
    return {"reply": "\n\n".join(parts), "citations": citations}
