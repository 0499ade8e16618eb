"""Each topic's Kafka configuration, from what its pipeline declares of it.

One place, read by the local stack when it creates topics and by the rendered deploy files (the compose
file's topic script, the Strimzi ``KafkaTopic`` manifests), so the three cannot drift apart.
"""
from __future__ import annotations

from streams.pipeline import Pipeline

BIG_BYTES = 8 * 1024 * 1024
"""``max.message.bytes`` of a topic carrying raw inputs: an oversized input must get in to be rejected."""


def topic_config(pipeline: Pipeline, name: str, replication: int = 1) -> dict[str, str]:
    """The non-default configs of topic ``name``, in the order the deploy files list them."""
    topic = pipeline.topic(name)
    config: dict[str, str] = {}
    if replication >= 3:
        # acks=all then needs two live replicas: one broker may die without losing a committed record.
        config["min.insync.replicas"] = "2"
    if name == pipeline.replay_topic:
        config["cleanup.policy"] = "compact"
    elif topic.compacted:  # a changelog: compacted soon, so a restore reads little more than the state
        config.update({"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "600000"})
    elif topic.big:
        # Oversized inputs must reach the first step (and its DLQ, bytes untouched) to be rejected there.
        config["max.message.bytes"] = str(BIG_BYTES)
    return config


def topic_configs(pipeline: Pipeline, replication: int = 1) -> dict[str, dict[str, str]]:
    """Every topic of ``pipeline`` (``all_topics()`` order) with its configs."""
    return {name: topic_config(pipeline, name, replication) for name in pipeline.all_topics()}
