"""The moderation pipeline, declared as a graph: four checks in parallel, a decision, two outcome topics."""
from __future__ import annotations

from processors.moderation import steps
from streams.graph import Graph


def declare() -> Graph:
    g = Graph("moderation", outcomes=("published", "held"), route=steps.outcome,
              extras={"sample": "moderation/posts.jsonl"},  # the demo's input, under the data dir
              describe="Content moderation: toxicity, link reputation, image and transcript checks in parallel; "
                       "published only if every check passes, else held naming the failing checks.")
    g.step("toxicity", steps.toxicity, timeout_s=5, retries=2, fallback=steps.cannot_answer)
    g.step("links", steps.links, timeout_s=5, retries=2, fallback=steps.cannot_answer)
    g.step("image", steps.image, condition=steps.has_image, timeout_s=5, retries=2, fallback=steps.cannot_answer)
    g.step("transcript", steps.transcript, condition=steps.has_transcript, timeout_s=5, retries=2,
           fallback=steps.cannot_answer)
    g.step("decide", steps.decide, depends_on=steps.CHECKS, timeout_s=5)
    return g


PIPELINE = declare()
