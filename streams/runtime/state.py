"""A stateful step's state (the join's): restored from its changelog when partitions come, dropped when they
go, and its changes without a new input (the step's tick) made into outputs.

The changelog is written in the same transaction as the step's outputs and input offsets, so state restored
from it is never older than the offsets the consumer resumes from (see :mod:`streams.runtime.transactions`).
"""
from __future__ import annotations

from typing import Any, cast

from streams.kafka_io import read_partition
from streams.records import Emit
from streams.step import Step, StatefulStep

STATE_OVERHEAD_BYTES = 64 * 1024
"""What a changelog record may hold beyond the output limit (the join's bookkeeping beside a ticket's bytes)."""


class ChangelogState:
    def __init__(self, step: Step, bootstrap: str, changelog: str) -> None:
        self._step = cast(StatefulStep, step)
        self._bootstrap, self.changelog = bootstrap, changelog

    def _k_restore(self, partitions: list[int]) -> None:
        """On the consumer's thread, so no poll runs while the state of a partition is rebuilt."""
        def reader(partition: int) -> Any:
            return read_partition(self._bootstrap, self.changelog, partition)
        self._step.restore(partitions, reader)

    def drop(self, partitions: list[int]) -> None:
        self._step.drop(partitions)

    def tick(self, now_ms: int) -> list[Emit]:
        return self._step.tick(now_ms)
