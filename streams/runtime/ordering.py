"""In-order completion: records are handled concurrently, but committed per partition in offset order.

A record's outputs are *held* until every earlier record of its partition is done; then the outputs of that
contiguous prefix and the offset after it go into one transaction, so a crash replays exactly the records
whose outputs were not committed.
"""
from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field

from confluent_kafka import TopicPartition

from streams.records import Record
from streams.transact import Output
Taken = tuple[list[Output], list[TopicPartition], list[tuple["Partition", int]]]
"""What one commit carries: the outputs, the input offsets, and each partition with the offset it reaches."""


@dataclass(eq=False)
class Slot:
    offset: int
    record: Record | None = None
    done: bool = False
    dropped: bool = False
    outputs: list[Output] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    seq: int = 0
    """When it finished, in the runner's order of outputs (see InOrder._seq)."""


@dataclass(eq=False)
class Partition:
    committed: int
    """Offset after the last committed record: where a rewind seeks to."""
    queue: deque[Slot] = field(default_factory=deque)
    last: asyncio.Task[None] | None = None
    """The newest handler task, for partition-serial mode."""


class InOrder:
    """The records a runner holds, per input partition in offset order, and the outputs not of a record."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, int], Partition] = {}
        self.extra: list[tuple[int, list[Output]]] = []
        """Outputs not of a record (the join's tick), each run with the sequence number it was made at."""
        self._seq = itertools.count(1)
        """Orders every run of outputs as it was made. A stateful step's changelog must end, per key, with the
        state's last value: a tick's deletion of a key made before a later record wrote that key again must not be
        produced after it, or a restore would lose the entry (and its ticket would never finish)."""
        self.ready = asyncio.Event()
        """Set when a record finishes (or the join has state to write): wakes the committer."""
        self.freed = asyncio.Event()
        """Set when a commit (or a rewind, or a revocation) released records: a full runner has room again."""

    @property
    def in_flight(self) -> int:
        return sum(len(p.queue) for p in self.parts.values())

    def admit(self, topic: str, partition: int, offset: int) -> tuple[Partition, Slot]:
        """A slot for the record at ``offset``, behind every record of its partition held now."""
        part = self.parts.get((topic, partition))
        if part is None:
            part = self.parts[(topic, partition)] = Partition(committed=offset)
        slot = Slot(offset=offset)
        part.queue.append(slot)
        return part, slot

    def finish(self, slot: Slot, outputs: list[Output]) -> None:
        if slot.dropped:
            return
        slot.outputs = outputs
        slot.seq = next(self._seq)
        slot.done = True
        self.ready.set()

    def add(self, outputs: list[Output]) -> None:
        """Outputs of no record, committed with the next transaction in the order they were made."""
        self.extra.append((next(self._seq), outputs))
        self.ready.set()

    def take(self, in_order_made: bool) -> Taken | None:
        """The done prefix of every partition and the extra outputs, out of the holding; None if there is
        nothing. ``in_order_made``: outputs in the order they were made rather than partition by partition (a
        stateful step's, whose records are handled inline and ticks between them: the producer keeps that order
        per partition, so each key's last changelog record is its last state)."""
        runs: list[tuple[int, list[Output]]] = []
        offsets: list[TopicPartition] = []
        advanced: list[tuple[Partition, int]] = []
        for (topic, partition), part in self.parts.items():
            last = None
            while part.queue and part.queue[0].done:
                slot = part.queue.popleft()
                runs.append((slot.seq, slot.outputs))
                last = slot.offset
            if last is not None:
                offsets.append(TopicPartition(topic, partition, last + 1))
                advanced.append((part, last + 1))
        runs.extend(self.extra)
        if in_order_made:
            runs.sort(key=lambda run: run[0])
        outputs = [o for _, run in runs for o in run]
        if not outputs and not offsets:
            return None
        self.extra = []
        return outputs, offsets, advanced

    def committed(self, advanced: list[tuple[Partition, int]]) -> None:
        for part, nxt in advanced:
            part.committed = nxt
        self.freed.set()

    def revoked(self, tps: list[tuple[str, int]]) -> None:
        for tp in tps:
            part = self.parts.pop(tp, None)
            if part is not None:
                self._drop_queue(part)

    def rewound(self) -> list[TopicPartition]:
        """Forget everything uncommitted; the last committed offset of every partition, to seek to."""
        positions = [TopicPartition(t, p, part.committed) for (t, p), part in self.parts.items()]
        for part in self.parts.values():
            self._drop_queue(part)
        self.parts.clear()
        self.extra.clear()
        return positions

    def close(self) -> None:
        for part in self.parts.values():
            self._drop_queue(part)

    def _drop_queue(self, part: Partition) -> None:
        self.freed.set()
        for slot in part.queue:
            slot.dropped = True
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
        part.queue.clear()
