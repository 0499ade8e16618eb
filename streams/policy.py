"""Failure-handling policies as values: what a step does when a model is slow, down, or wrong."""
from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one model of a chain is retried."""

    attempts: int = 3
    """Calls per model before the next model of the fallback chain is tried (1 = no retry)."""
    initial_s: float = 0.2
    """Backoff before the first retry."""
    multiplier: float = 2.0
    """Growth of the backoff per retry."""
    max_s: float = 5.0
    """Ceiling of one backoff (a 429's retry-after may ask for more and is honoured up to max_retry_after_s)."""
    jitter: float = 0.5
    """Fraction of each backoff drawn at random, so replicas do not retry in lockstep."""
    max_retry_after_s: float = 30.0
    """Longest retry-after we honour; a server asking for longer is treated as down."""

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** (retry - 1))
        r = (rng or random).random()
        return base * (1 - self.jitter) + base * self.jitter * r


@dataclass(frozen=True)
class StepPolicy:
    """Timeout, retries and fallback chain of one step's model calls."""

    models: tuple[str, ...]
    """The fallback chain: the first model serves; the next ones only after it failed all its retries."""
    timeout_s: float = 10.0
    """Deadline of one model call."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Retries per model of the chain."""
    deadline_s: float = 60.0
    """Deadline of one record in this step, all calls included; past it the record is dead-lettered
    (STEP_TIMEOUT), which also bounds how long one slow record holds its partition's commits back."""
