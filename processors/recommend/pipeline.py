"""The recommend pipeline, declared as a graph: four recommenders in parallel, the most confident answer, and a
popularity recommender when none is confident enough."""
from __future__ import annotations

from processors.recommend import recommenders as r
from streams.graph import Graph


def declare() -> Graph:
    g = Graph("recommend", extras={"sample": "recommend/requests.jsonl"},  # the demo's input, under the data dir
              describe="Recommendations: four recommenders in parallel; the most confident answer wins; a "
                       "popularity recommender answers when none is confident enough.")
    for name in r.RECOMMENDERS:
        g.step(name, getattr(r, name), timeout_s=2, retries=1, fallback=r.unavailable)
    g.step("pick", r.pick, depends_on=r.RECOMMENDERS, timeout_s=2)
    g.step("popular", r.popular, depends_on=["pick"], condition=r.nobody_confident, timeout_s=2)
    g.step("answer", r.answer, depends_on=["pick", "popular"], timeout_s=2)
    return g


PIPELINE = declare()
