"""A worker process: runs one or more steps until SIGTERM/SIGINT, then drains and exits.

This is what `triage worker STEP...` runs, what a container or a systemd unit runs, and what `triage up`
starts once per step. Signals are handled here, once, at the top.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from contextlib import AsyncExitStack

from processors.registry import build
from streams.config import Settings
from streams.models import ModelGateway
from streams.runtime import StepRunner
from streams.step import StepContext
from streams.tenant_state import connect

log = logging.getLogger("triage.worker")


def default_instance() -> str:
    """A transactional identity for this process: TRIAGE_INSTANCE, else host and pid (unique, not stable)."""
    return os.environ.get("TRIAGE_INSTANCE") or f"{socket.gethostname()}-{os.getpid()}"


async def run_steps(settings: Settings, steps: list[str], *, instance: str | None = None,
                    stop: asyncio.Event | None = None) -> None:
    """Run ``steps`` in this process until ``stop`` is set (or a signal arrives)."""
    instance = instance or default_instance()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass  # not the main thread (tests): the caller owns `stop`
    async with AsyncExitStack() as stack:
        gateway = ModelGateway(settings.model_base_url, settings.api_key.reveal())
        stack.push_async_callback(gateway.close)
        redis = connect(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        runners = [StepRunner(build(name, settings), StepContext(name, settings, gateway, redis), instance=instance)
                   for name in steps]
        tasks = [asyncio.create_task(r.run(stop), name=f"step-{r.step.name}") for r in runners]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [t for t in done if t.exception() is not None]
        if failed:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise failed[0].exception()  # type: ignore[misc]
