"""The runner's two Kafka threads, and the one way to call a client on them: with a deadline.

The clients are synchronous, so the consumer runs on one thread and the transactional producer on another;
handlers run on the asyncio loop. Two threads, because a hop's latency is the sum of what waits: a record
must not wait for a poll to time out before its transaction starts, nor for a transaction to finish before
the next record is fetched.

In this package a method named ``_k_*`` runs on one of these threads, and is only ever called through
:meth:`KafkaThreads.call` (its name is what a stuck call reports).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from streams.kafka_io import KafkaFailure


class KafkaStuck(KafkaFailure):
    """A Kafka client call did not return; only a new process gets fresh clients."""

    def __init__(self, message: str) -> None:
        super().__init__(message, abortable=False, fatal=True, retriable=False)


class KafkaThreads:
    """One thread for the consumer, one for the producer, and whether a call on them never came back."""

    def __init__(self, name: str) -> None:
        self.cpool = ThreadPoolExecutor(1, thread_name_prefix=f"consumer-{name}")
        self.ppool = ThreadPoolExecutor(1, thread_name_prefix=f"producer-{name}")
        self.stuck = False
        """Set when a call outlived its deadline: its thread is still in librdkafka, so nothing may close the
        clients (a close would wait on that call); the process exits instead."""
        self.broken: asyncio.Future[BaseException] | None = None
        """Resolved with the committer's error when it fails: ends every Kafka wait of the loop at once. Without
        it a poll whose revocation callback waits for the stuck transaction would hold the loop until its own
        deadline (180 s) before anyone read the committer's error."""

    async def call(self, fn: Callable[..., Any], *args: Any, deadline: float = 180.0, producer: bool = False,
                   where: Callable[[], str] | None = None) -> Any:
        """Run a Kafka client call on the consumer's thread (or the producer's). librdkafka can block past its
        own timeouts (e.g. send_offsets_to_transaction after a coordinator restart, librdkafka #5456/#5511);
        a call past ``deadline`` cannot be interrupted, so the runner declares itself stuck (KafkaStuck, naming
        ``where()`` it was, for a bug report) and the process restarts."""
        fut = asyncio.get_running_loop().run_in_executor(self.ppool if producer else self.cpool, fn, *args)
        waits: tuple[asyncio.Future[Any], ...] = (fut,) if self.broken is None else (fut, self.broken)
        await asyncio.wait(waits, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
        if fut.done():
            return fut.result()
        if self.broken is not None and self.broken.done():
            raise self.broken.result()
        self.stuck = True
        at = f" in {where()}" if where is not None else ""
        raise KafkaStuck(f"{getattr(fn, '__name__', fn)} blocked{at} for more than {deadline:.0f}s")

    def break_with(self, task: asyncio.Task[None]) -> None:
        """From now on, ``task`` failing ends every call in progress with its error."""
        self.broken = asyncio.get_running_loop().create_future()
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self.broken and not self.broken.done():
            self.broken.set_result(task.exception())  # type: ignore[arg-type]

    def shutdown(self) -> None:
        self.cpool.shutdown(wait=False)
        self.ppool.shutdown(wait=False)
