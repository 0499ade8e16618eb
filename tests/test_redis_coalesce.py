"""The coalescing Redis client, against a real redis-server: batches per loop turn, one reply per caller."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from streams.redis_coalesce import CoalescingRedis
from streams.services import redis_server as rs
from streams.errors import StateError
from streams.tenant_state import TenantStore, connect
from tests.harness import free_port

pytestmark = pytest.mark.kafka  # needs the project's redis-server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home: Path = tmp_path_factory.mktemp("redis-home")
    port = free_port()
    rs.start_redis(home, port=port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        rs.stop_redis(home)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[CoalescingRedis]:
    r = connect(redis_url)
    assert isinstance(r, CoalescingRedis)
    batches: list[int] = []
    send = r._send

    async def counted(batch: list[Any]) -> None:
        batches.append(len(batch))
        await send(batch)

    r._send = counted  # type: ignore[method-assign]
    r.batches = batches  # type: ignore[attr-defined]
    await r.flushdb()
    batches.clear()
    try:
        yield r
    finally:
        await r.aclose()


async def test_commands_of_one_turn_go_out_together_and_each_caller_gets_its_own_reply(client: Any) -> None:
    await asyncio.gather(*(client.set(f"k{i}", f"v{i}", ex=60) for i in range(200)))
    got = await asyncio.gather(*(client.get(f"k{i}") for i in range(200)), client.get("missing"))
    assert got == [f"v{i}".encode() for i in range(200)] + [None]
    assert client.batches == [200, 201], "each gather's commands are issued in one turn and sent as one batch"
    assert await client.ttl("k7") > 0, "options (ex=) reach the server"


async def test_a_turn_larger_than_max_batch_is_split(client: Any) -> None:
    n = client.max_batch * 2 + 5
    got = await asyncio.gather(*(client.incr("counter") for _ in range(n)))
    assert sorted(got) == list(range(1, n + 1))
    assert client.batches == [client.max_batch, client.max_batch, 5]


async def test_a_failing_command_fails_only_its_caller(client: Any) -> None:
    await client.set("text", "not a number")
    results = await asyncio.gather(client.incr("text"), client.incr("n"), client.get("text"),
                                   return_exceptions=True)
    assert isinstance(results[0], ResponseError) and not isinstance(results[0], NoScriptError)
    assert results[1:] == [1, b"not a number"]
    assert client.batches[-1] == 3


async def test_a_script_missing_from_the_server_is_loaded_again(client: Any) -> None:
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    # Never loaded yet: the batch's three EVALSHA all answer NOSCRIPT, and each caller loads and retries.
    assert sorted(await asyncio.gather(*(script(keys=["s"], args=[2]) for _ in range(3)))) == [2, 4, 6]
    assert int(await client.get("s")) == 6
    await client.script_flush()  # as after a Redis restart: NOSCRIPT, then the client's load-and-retry
    assert await script(keys=["s"], args=[1]) == 7


async def test_a_cancelled_caller_does_not_disturb_the_others(client: Any) -> None:
    tasks = [asyncio.ensure_future(client.incr("c")) for _ in range(10)]
    await asyncio.sleep(0)  # every task has issued its command; the batch has not been sent yet
    tasks[3].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    # The batch runs in the order the commands were issued; the cancelled caller's INCR was the fourth.
    assert [d for i, d in enumerate(done) if i != 3] == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert int(await client.get("c")) == 10, "a command already queued still runs"


async def test_a_dead_server_fails_every_caller_of_the_batch_with_a_state_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    r = connect(f"redis://127.0.0.1:{port}/0")
    try:
        stores = [TenantStore(r, "acme") for _ in range(5)]
        results = await asyncio.gather(*(s.memo_get("classify-intent", f"cid-{i}", 1, "d")
                                         for i, s in enumerate(stores)), return_exceptions=True)
    finally:
        await r.aclose()
    assert all(isinstance(x, StateError) and "memo read failed" in str(x) for x in results), results


async def test_a_shutdown_that_cancels_a_send_still_answers_its_callers(client: Any, redis_url: str) -> None:
    """aclose() under a deadline cancels the batches in flight; their callers must hear of it, not hang."""
    admin = aioredis.Redis.from_url(redis_url)
    try:
        for n in (1, 3):  # the plain-command path and the pipeline path
            await client.ping()
            await admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")  # replies wait a second
            callers = [asyncio.ensure_future(client.get("k")) for _ in range(n)]
            deadline = time.monotonic() + 5
            while not client._sending:  # the batch is on its way
                assert time.monotonic() < deadline, "the batch was never sent"
                await asyncio.sleep(0)  # a turn of the loop, not a wait
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.aclose(), 0.1)
            done, pending = await asyncio.wait(callers, timeout=5)
            assert not pending, f"a batch of {n}: callers left waiting"
            assert all(isinstance(t.exception(), RedisConnectionError) for t in done)
            await admin.execute_command("CLIENT", "UNPAUSE")
    finally:
        await admin.aclose()


async def test_connection_state_commands_are_not_batched(client: Any) -> None:
    """WATCH in a pipeline runs at once and is never read back, which would shift every later reply."""
    await client.set("a", "A")
    client.batches.clear()
    got = await asyncio.gather(client.get("a"), client.execute_command("WATCH", "a"), client.get("a"))
    assert got == [b"A", True, b"A"]
    assert client.batches == [2], "the two GETs went out together, WATCH on its own"
