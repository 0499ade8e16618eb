"""The contract between a step and the runtime.

A step is a small class: settings in ``__init__``, one ``async def handle(record, ctx) -> list[Emit]``.
It raises :mod:`streams.errors` errors; the runtime turns them into retries or a dead-letter record.
A stateful step (the join) also restores and drops per-partition state when partitions move.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis

from streams import pipelines
from streams.config import Settings
from streams.models import Memo, ModelGateway
from streams.pipeline import Pipeline
from streams.records import Emit, Record
from streams.tenant_state import TenantStore


@dataclass(frozen=True)
class StepContext:
    """What the runtime hands every step: settings and the shared adapters, nothing Kafka."""

    step: str
    settings: Settings
    models: ModelGateway
    redis: aioredis.Redis | None
    pipeline_override: Pipeline | None = None
    """The pipeline the step belongs to; None: the one this process works on (``TRIAGE_PIPELINE``)."""

    @property
    def pipeline(self) -> Pipeline:
        return self.pipeline_override if self.pipeline_override is not None else pipelines.active()

    def store(self, tenant: str) -> TenantStore | None:
        """The tenant-scoped door to Redis, or None when the step runs without Redis."""
        return TenantStore(self.redis, tenant) if self.redis is not None else None

    def memo(self, record: Record, tenant: str | None = None) -> Memo:
        tenant = tenant or record.tenant_id
        return Memo(self.store(tenant) if tenant else None, self.step, record.correlation_id, record.attempt)


@runtime_checkable
class Step(Protocol):
    name: str
    inputs: tuple[str, ...]
    stateful: bool

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]: ...


class BranchStep(Step, Protocol):
    """A step on one branch of a fan-out (a classifier). Its ticket goes on through the other branches, so a
    dead letter here would be the ticket's second outcome, beside the one the rest of the pipeline gives it."""

    def on_failure(self, record: Record, code: str, reason: str) -> list[Emit] | None:
        """The outputs that stand for a record this step failed on, instead of a dead letter; None to
        dead-letter it after all (e.g. no ticket identity in the record)."""


class StatefulStep(Step, Protocol):
    """A step whose state lives in a changelog topic written in the same transaction as its outputs."""

    def restore(self, partitions: list[int], read_changelog: Any) -> None:
        """Rebuild the state of ``partitions`` from ``read_changelog(partition) -> iterable[(key, value)]``."""

    def drop(self, partitions: list[int]) -> None: ...

    def tick(self, now_ms: int) -> list[Emit]:
        """Outputs due without a new input (e.g. a join that timed out)."""
