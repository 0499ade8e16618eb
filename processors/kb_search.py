"""Lexical ranking (BM25) of one tenant's knowledge base. Pure: the documents are handed in, already the
tenant's own (read through its TenantStore), so a search can never rank another tenant's document."""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"[\w]+", re.UNICODE)
_STOP = frozenset("""a an and are as at be but by can do does for from have i if in into is it its my no not of on or
our please so that the their then there this to was we were what when where which who will with you your
me us how why any all been has had am""".split())


def tokens(text: str) -> list[str]:
    return [t for t in (w.lower() for w in _WORD.findall(text)) if t not in _STOP and len(t) > 1]


@dataclass(frozen=True)
class Index:
    docs: tuple[dict[str, Any], ...]
    tfs: tuple[Counter[str], ...]
    lengths: tuple[int, ...]
    df: dict[str, int]
    avg_len: float

    @classmethod
    def build(cls, docs: list[dict[str, Any]]) -> "Index":
        tfs = tuple(Counter(tokens(f"{d['title']} {d['title']} {d['body']}")) for d in docs)
        df: Counter[str] = Counter()
        for tf in tfs:
            df.update(tf.keys())
        lengths = tuple(sum(tf.values()) for tf in tfs)
        avg = (sum(lengths) / len(lengths)) if lengths else 1.0
        return cls(tuple(docs), tfs, lengths, dict(df), avg or 1.0)

    def search(self, query: str, k: int = 3, k1: float = 1.2, b: float = 0.75) -> list[tuple[dict[str, Any], float]]:
        n = len(self.docs)
        q = set(tokens(query))
        scored = []
        for doc, tf, length in zip(self.docs, self.tfs, self.lengths):
            s = 0.0
            for term in q:
                f = tf.get(term)
                if not f:
                    continue
                idf = math.log(1 + (n - self.df[term] + 0.5) / (self.df[term] + 0.5))
                s += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * length / self.avg_len))
            if s > 0:
                scored.append((doc, s))
        scored.sort(key=lambda x: (-x[1], x[0]["doc_id"]))
        return scored[:k]
