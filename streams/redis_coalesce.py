"""A Redis client that sends the commands issued in one turn of the event loop as one pipeline.

A worker handles hundreds of records at once, and each makes several small Redis calls (memo read and write,
drift observation). One command on its own costs about 50 us of the worker's CPU (pool checkout, timeout
context, a socket write and read); the same command in a pipeline of 64 costs about 11 us, and Redis itself
does less per command. Records admitted in one poll reach their Redis calls in the same loop turn, so
coalescing needs no timer and adds no wait: the batch goes out on the next turn.

Semantics stay those of single commands: each caller gets its own reply or its own exception (a command
error fails only that command; a connection error or a socket timeout fails the batch). The pipeline is not
a transaction. Commands that change the connection's state or block it (WATCH, MULTI, SUBSCRIBE, BLPOP...)
are not batched: in a pipeline they would shift the replies or hold up every other caller.
"""
from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

_Pending = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]

UNBATCHED = frozenset({
    "WATCH", "UNWATCH", "MULTI", "EXEC", "DISCARD", "SELECT", "RESET", "HELLO", "AUTH", "CLIENT", "MONITOR",
    "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
    "BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP", "XREAD", "XREADGROUP",
    "WAIT", "WAITAOF",
})
"""Sent as plain commands, never in a batch."""


class CoalescingRedis(aioredis.Redis):
    """``redis.asyncio.Redis`` whose commands are batched per loop turn. Explicit pipelines are unchanged."""

    max_batch = 512
    """Commands per pipeline; a turn that issues more sends several."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[_Pending] = []
        self._scheduled: asyncio.AbstractEventLoop | None = None
        """The loop a flush is queued on: one that stopped before running it must not strand later calls."""
        self._sending: set[asyncio.Task[None]] = set()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if str(args[0]).split(" ", 1)[0].upper() in UNBATCHED:  # redis-py sends e.g. "CLIENT SETNAME" as one
            return await super().execute_command(*args, **options)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((args, options, fut))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._scheduled is not loop:
            self._scheduled = loop
            # call_soon runs after every callback already queued for this turn, so the other records
            # woken in this turn add their commands first.
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = None
        loop = asyncio.get_running_loop()
        # Futures of a loop that has gone away have no caller left to answer.
        batch = [p for p in self._pending if p[2].get_loop() is loop]
        self._pending = []
        if not batch:
            return
        task = loop.create_task(self._send(batch))
        self._sending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:  # a pipeline of one costs more than the plain command
                args, options, _ = batch[0]
                try:
                    replies = [await super().execute_command(*args, **options)]
                except Exception as exc:  # noqa: BLE001 - handed to its caller, as if it had run the command
                    replies = [exc]
            else:
                async with self.pipeline(transaction=False) as pipe:
                    for args, options, _ in batch:
                        pipe.execute_command(*args, **options)
                    replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it, cancellation included
            failure = exc if isinstance(exc, Exception) else RedisConnectionError("redis batch cancelled")
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, fut), reply in zip(batch, replies):
            if fut.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._pending:
            self._flush()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        await super().aclose(close_connection_pool)
