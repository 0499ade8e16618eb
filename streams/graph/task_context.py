"""What a task's third argument gives it: the model gateway with the step's chain, and tenant-scoped state."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from streams.errors import ModelError, TriageError
from streams.models import ModelGateway
from streams.policy import RetryPolicy, StepPolicy
from streams.tenant_state import TenantStore


@dataclass(frozen=True)
class Reply:
    text: str
    model: str
    tokens: int


@dataclass(frozen=True)
class TaskContext:
    step: str
    correlation_id: str
    attempt: int
    tenant_id: str
    models: tuple[str, ...]
    timeout_s: float
    gateway: ModelGateway | None
    state: TenantStore | None
    """The tenant's keys in Redis (None when the worker runs without Redis)."""
    missing: tuple[str, ...] = ()
    """Dependencies a join stopped waiting for (``join_timeout_s``): their outputs in ``deps`` are None."""
    round: int = 1
    """Of a step with ``rounds``: which run of its loop this is (its previous output is ``deps[<step>]``)."""

    async def chat(self, messages: Sequence[dict[str, Any]]) -> Reply:
        """The first answer of the step's model chain: each model is asked once (the step's ``retries`` retry
        the whole task); the next model only when one could not answer. Raises the last ModelError."""
        if not self.models or self.gateway is None:
            raise TriageError(f"step {self.step!r} declares no models", code="NO_MODEL")
        policy = StepPolicy(models=self.models, timeout_s=self.timeout_s, retry=RetryPolicy(attempts=1))
        last: ModelError | None = None
        for model in self.models:
            try:
                message, _, tokens = await self.gateway.chat(policy, model, messages)
            except ModelError as exc:
                last = exc
                continue
            return Reply(message.content or "", model, tokens)
        assert last is not None
        raise last
