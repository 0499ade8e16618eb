"""Back-pressure: a runner holding ``max_in_flight`` records stops taking more.

If a commit makes room within ``pause_after_s`` it just takes more; only a runner full for longer pauses its
partitions, which empties librdkafka's prefetch queue. Not pausing at once matters: after a resume librdkafka
took about a second to fetch again, so a busy join, full after every 100 ms of records, spent most of its time
paused. While the runner waits without polling, librdkafka's prefetch is bounded by
``queued.max.messages.kbytes``.
"""
from __future__ import annotations

import asyncio
import time

from streams.config import Settings
from streams.runtime.polling import Poller
from streams.runtime.stats import Stats
from streams.runtime.threads import KafkaThreads


class BackPressure:
    def __init__(self, settings: Settings, stats: Stats, freed: asyncio.Event, kafka: KafkaThreads,
                 poller: Poller) -> None:
        self._settings, self._stats, self._freed = settings, stats, freed
        self._kafka, self._poller = kafka, poller
        self.paused = False
        self._full_since: float | None = None

    async def room(self, in_flight: int, admit: bool) -> int | None:
        """How many records the next poll may take (0 when not ``admit``ting); None when the runner is full
        and waited for room instead of polling (up to 0.1 s, or until a commit freed records)."""
        settings = self._settings
        room = settings.max_in_flight - in_flight if admit else 0
        if admit and not self.paused and room <= 0:
            now = time.monotonic()
            if self._full_since is None:
                self._full_since = now
                self._stats.full_waits += 1
            wait = self._full_since + settings.pause_after_s - now
            if wait > 0:
                self._freed.clear()
                try:
                    await asyncio.wait_for(self._freed.wait(), min(wait, 0.1))
                except asyncio.TimeoutError:
                    pass
                return None
            await self._kafka.call(self._poller._k_pause, True)
            self.paused = True
            self._stats.pauses += 1
        elif admit and self.paused and in_flight <= settings.max_in_flight // 2:
            await self._kafka.call(self._poller._k_pause, False)
            self.paused = False
        if room > 0:
            self._full_since = None
        return room

    async def rebalanced(self) -> None:
        # Whether librdkafka keeps a partition's pause across a rebalance depends on the assignor and version;
        # a pause nobody remembers stops a step for good. Resume explicitly, and pause again next cycle if the
        # step is still full.
        await self._kafka.call(self._poller._k_pause, False)
        self.paused = False
