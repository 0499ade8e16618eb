"""Step name -> step object. The only place that knows every step."""
from __future__ import annotations

from processors.classify import Classify
from processors.generate import Generate
from processors.ingest import Ingest
from processors.join import Join
from processors.quality_gate import QualityGate
from processors.retrieve import Retrieve
from processors.route import Route
from streams.config import Settings
from streams.step import Step
from streams.topology import STEPS


def build(name: str, settings: Settings) -> Step:
    """The step called ``name``. Raises KeyError with the known names when there is none."""
    if name == "ingest":
        return Ingest()
    if name.startswith("classify-") and name in STEPS:
        return Classify(name.removeprefix("classify-"))
    if name == "join":
        return Join(settings.join_timeout_s, max_value_bytes=settings.max_value_bytes)
    if name == "route":
        return Route()
    if name == "retrieve":
        return Retrieve()
    if name == "generate":
        return Generate()
    if name == "gate":
        return QualityGate()
    raise KeyError(f"no step {name!r}; steps: {', '.join(STEPS)}")
