"""The shipped text models: linear scores over :mod:`processors.offline.features`, read from one JSON file.

The file (``model/tickets.json``, written by ``python -m processors.offline.train``) holds, per task, the
labels, a bias and a weight row per feature, a temperature fitted on the corpus's dev split (so that a
confidence of 0.9 is right about nine times in ten) and, for priority, the probability from which a ticket
is called ``critical`` even when another label is likelier: a missed outage costs far more than a ``high``
read as ``critical``. Reading it needs no scikit-learn and no pickle: plain numbers, the same on any version.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

MODEL_FILE = Path(__file__).resolve().parent / "model" / "tickets.json"


@dataclass(frozen=True)
class LinearTask:
    """One task's model: ``softmax((bias + x·W) / temperature)``."""

    labels: tuple[str, ...]
    bias: tuple[float, ...]
    weights: Mapping[str, tuple[float, ...]]
    temperature: float
    # label -> probability from which that label wins outright (priority: critical); empty for argmax only
    floors: Mapping[str, float]

    def probabilities(self, feats: Mapping[str, float]) -> list[float]:
        scores = list(self.bias)
        for name, value in feats.items():
            row = self.weights.get(name)
            if row is not None:
                for i, w in enumerate(row):
                    scores[i] += value * w
        top = max(scores)
        exps = [math.exp((s - top) / self.temperature) for s in scores]
        total = sum(exps)
        return [e / total for e in exps]

    def decide(self, feats: Mapping[str, float]) -> tuple[str, float]:
        """The label and its probability; a label with a floor wins once its probability reaches it."""
        probs = self.probabilities(feats)
        for label, floor in self.floors.items():
            p = probs[self.labels.index(label)]
            if p >= floor:
                return label, round(p, 3)
        best = max(range(len(probs)), key=lambda i: (probs[i], -i))
        return self.labels[best], round(probs[best], 3)


def parse(data: dict) -> dict[str, LinearTask]:
    """The tasks of a model file's JSON; raises ValueError for a format this code does not read."""
    if data.get("format") != 1:
        raise ValueError(f"model file format {data.get('format')!r}, expected 1")
    return {task: LinearTask(labels=tuple(spec["labels"]), bias=tuple(spec["bias"]),
                             weights={k: tuple(v) for k, v in spec["weights"].items()},
                             temperature=float(spec["temperature"]), floors=dict(spec.get("floors", {})))
            for task, spec in data["tasks"].items()}


@lru_cache(maxsize=1)
def load(path: Path = MODEL_FILE) -> dict[str, LinearTask]:
    """The shipped models, read once per process."""
    return parse(json.loads(path.read_text(encoding="utf-8")))
