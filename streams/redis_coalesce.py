"""A Redis client that sends the commands issued in one turn of the event loop as one pipeline.

A worker handles hundreds of records at once, and each makes several small Redis calls (memo read and write,
drift observation). One command on its own costs about 50 us of the worker's CPU (pool checkout, timeout
context, a socket write and read); the same command in a pipeline of 64 costs about 11 us, and Redis itself
does less per command. Records admitted in one poll reach their Redis calls in the same loop turn, so
coalescing needs no timer and adds no wait: the batch goes out on the next turn.

Semantics stay those of single commands: each caller gets its own reply or its own exception (a command
error fails only that command; a connection error fails the batch). The pipeline is not a transaction.
"""
from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

_Pending = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class CoalescingRedis(aioredis.Redis):
    """``redis.asyncio.Redis`` whose commands are batched per loop turn. Explicit pipelines are unchanged.

    Blocking commands (BLPOP and the like) must not go through it: one would hold up its whole batch.
    """

    max_batch = 512
    """Commands per pipeline; a turn that issues more sends several."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((args, options, fut))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            # call_soon runs after every callback already queued for this turn, so the other records
            # woken in this turn add their commands first.
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:  # a pipeline of one costs more than the plain command
            args, options, fut = batch[0]
            try:
                reply = await super().execute_command(*args, **options)
            except Exception as exc:  # noqa: BLE001 - handed to the caller as if it had run the command
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(reply)
            return
        try:
            async with self.pipeline(transaction=False) as pipe:
                for args, options, _ in batch:
                    pipe.execute_command(*args, **options)
                replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it, cancellation included
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RedisConnectionError("redis batch cancelled"))
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
