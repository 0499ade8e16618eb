"""How many calls a worker keeps in flight to one model: adapted to what the endpoint answers in time.

An endpoint that falls behind (a busy GPU, a starved offline server) answers every call late once its queue
is longer than the callers' time-out; the callers retry, the endpoint still works through the calls they
abandoned, and the queue only grows. Nothing then comes back, although the endpoint is up. So each worker
limits its concurrent calls per model, additive increase and multiplicative decrease as TCP does: a time-out
or a 429 at least halves the limit (once per time-out window, since a late batch times out all at once), and
cuts it to half the calls answered in time during the last window when that is lower: by Little's law, the
calls an endpoint answers per time-out window are as many as can wait at it without timing out, so the limit
gets there in one cut rather than one halving per window while the endpoint's queue fills. Each call
answered in time adds ``1 / limit``, so a full limit of good answers adds one. A fast endpoint never times
out and never sees a limit below the ceiling; waiting for a slot counts against the step's deadline, not the
model's time-out.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from streams import metrics

# Codes that say "too many calls for this endpoint": the limit is cut on them and on nothing else (a 500 or
# a bad answer says nothing about load).
OVERLOAD_CODES = frozenset({"MODEL_TIMEOUT", "MODEL_RATE_LIMITED"})


class CallLimit:
    """One model's limit in one worker; ``async with limit.slot():`` around each call."""

    def __init__(self, model: str, ceiling: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.model, self.ceiling, self._clock = model, ceiling, clock
        self.limit = float(ceiling)
        self.in_flight = 0
        self._cut_at = float("-inf")
        self._answers: deque[float] = deque()  # when recent calls came back in time
        self._room = asyncio.Condition()
        metrics.MODEL_CONCURRENCY.labels(model).set(ceiling)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._room:
            await self._room.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
        try:
            yield
        finally:
            async with self._room:
                self.in_flight -= 1
                self._room.notify(max(1, int(self.limit) - self.in_flight))

    def answered(self) -> None:
        """A call came back in time."""
        self._answers.append(self._clock())
        if len(self._answers) > 4 * self.ceiling:
            self._answers.popleft()
        if self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
            metrics.MODEL_CONCURRENCY.labels(self.model).set(int(self.limit))

    def failed(self, code: str, window_s: float) -> None:
        """A call failed with ``code``; an overload cuts the limit (see the module), once per ``window_s``."""
        if code not in OVERLOAD_CODES:
            return
        now = self._clock()
        if now - self._cut_at < window_s:
            return  # the rest of a batch that went late together: one cut for it
        self._cut_at = now
        while self._answers and self._answers[0] < now - window_s:
            self._answers.popleft()
        self.limit = max(1.0, min(self.limit / 2, len(self._answers) / 2))
        metrics.MODEL_CONCURRENCY.labels(self.model).set(int(self.limit))


class CallLimits:
    """The limits of one worker, one per model, made on first use."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self._by_model: dict[str, CallLimit] = {}

    def of(self, model: str) -> CallLimit:
        limit = self._by_model.get(model)
        if limit is None:
            limit = self._by_model[model] = CallLimit(model, self.ceiling)
        return limit
