"""A worker process: runs one or more steps until SIGTERM/SIGINT, then drains and exits.

This is what `triage worker STEP...` runs, what a container or a systemd unit runs, and what `triage up`
starts once per step. Signals are handled here, once, at the top.
"""
from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import os
import signal
import socket
from contextlib import AsyncExitStack

from confluent_kafka import KafkaException

from typing import TYPE_CHECKING

from streams import avro, tracing
from streams.config import Settings, redact_url

if TYPE_CHECKING:
    from streams.schema_registry import RemoteRegistry
from streams.models import ModelGateway
from streams.kafka_io import KafkaFailure
from streams.runtime import KafkaStuck, StepRunner
from streams.step import StepContext
from streams.tenant_state import connect

log = logging.getLogger("triage.worker")
EXIT_STUCK = 75  # EX_TEMPFAIL: "try again", which is what a supervisor does


def default_instance() -> str:
    """A transactional identity for this process: TRIAGE_INSTANCE, else host and pid (unique, not stable)."""
    return os.environ.get("TRIAGE_INSTANCE") or f"{socket.gethostname()}-{os.getpid()}"


async def run_steps(settings: Settings, steps: list[str], *, instance: str | None = None,
                    stop: asyncio.Event | None = None) -> None:
    """Run ``steps`` in this process until ``stop`` is set (or a signal arrives)."""
    instance = instance or default_instance()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    # `kill -USR1 <pid>` prints every thread's stack to the log: how an operator sees where a worker is stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass  # not the main thread (tests): the caller owns `stop`
    registry = use_schema_registry(settings, steps)
    if tracing.setup(f"triage-{'+'.join(steps)}"):
        log.info("exporting spans over OTLP")
    async with AsyncExitStack() as stack:
        if registry is not None:
            stack.callback(registry.close)
            stack.callback(avro.use, None)
        stack.callback(tracing.shutdown)
        gateway = ModelGateway(settings.model_base_url, settings.api_key.reveal(), outage=settings.model_outage,
                               concurrency=settings.model_concurrency)
        stack.push_async_callback(gateway.close)
        redis = connect(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        settle_gc()
        watchdog = asyncio.create_task(_heartbeat(), name="watchdog")
        stack.callback(watchdog.cancel)
        stack.callback(faulthandler.cancel_dump_traceback_later)
        tasks = [asyncio.create_task(_supervise(settings, name, StepContext(name, settings, gateway, redis), instance,
                                                stop), name=f"step-{name}") for name in steps]
        await asyncio.gather(*tasks)


def use_schema_registry(settings: Settings, steps: list[str]) -> RemoteRegistry | None:
    """With a Schema Registry configured, register the schema of every topic ``steps`` write and make the
    registry the process's (:func:`streams.avro.use`). Before any record is read: a schema the registry refuses
    (the subject's compatibility level) raises SchemaIncompatible naming the subject, and nothing is written."""
    if not settings.registry_url:
        return None
    from streams import pipelines, schema_registry  # the registry client (httpx, authlib) only where it is used
    registry = schema_registry.for_settings(settings)
    assert registry is not None
    pipeline = pipelines.active()
    writes = {t: pipeline.schema_of(t) for step in steps for t in pipeline.step(step).emits}
    try:
        ids = schema_registry.register_outputs(registry, {t: s for t, s in writes.items() if s})
    except BaseException:
        registry.close()
        raise
    avro.use(registry)
    log.info("schemas registered", extra={"fields": {"registry": redact_url(settings.registry_url or ""),
                                                     "subjects": ids}})
    return registry


def settle_gc() -> None:
    """Keep the cyclic GC off the objects that live as long as the process.

    The imported clients (openai, pydantic, OpenTelemetry, Prometheus) leave some hundred thousand objects that
    every full collection would walk again, and hundreds of records in flight allocate fast enough to trigger
    one every few seconds: CPU spent, and a pause that lands on every record in flight. Freezing them after
    start-up and collecting the young generation less often halves the time a worker spends in the GC.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 10_000), gen1, gen2)


async def _heartbeat(period_s: float = 5.0, grace_s: float = 60.0) -> None:
    """Exit the process when the event loop stops turning for ``grace_s``.

    A Kafka client call that blocks while holding the GIL (seen with librdkafka consume() during a rebalance
    after a broker restart) freezes every Python thread, so no Python-level timeout can fire. faulthandler's
    timer runs in C: it dumps every stack to the log and exits, and the supervisor starts a fresh process.
    Exactly-once holds: a process may die at any instant.
    """
    while True:
        faulthandler.dump_traceback_later(grace_s, exit=True)
        await asyncio.sleep(period_s)


async def _supervise(settings: Settings, name: str, ctx: StepContext, instance: str, stop: asyncio.Event) -> None:
    """Run one step; when its Kafka clients fail beyond repair (fenced, broker gone too long), start it afresh.

    A fresh runner re-initialises its transactional producer, which aborts whatever the old one left open,
    and resumes from the last committed offsets: nothing is lost or doubled by the restart.
    """
    failures = 0
    while not stop.is_set():
        runner = StepRunner(ctx.pipeline.build(name, settings), ctx, instance=instance)
        try:
            await runner.run(stop)
            return
        except KafkaStuck as exc:
            # The stuck call still holds the Kafka thread; exit so a supervisor starts a clean process.
            # Safe at any instant: uncommitted work is replayed from the last transaction.
            log.critical("kafka client stuck; exiting for a restart", extra={"fields": {"step": name, "error": str(exc)}})
            logging.shutdown()
            os._exit(EXIT_STUCK)
        except (KafkaFailure, KafkaException) as exc:
            failures += 1
            wait = min(30.0, 0.5 * 2 ** min(failures, 6))
            log.warning("step failed; restarting it", extra={"fields": {
                "step": name, "error": str(exc), "restart_in_s": wait, "failures": failures}})
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except asyncio.TimeoutError:
                pass
