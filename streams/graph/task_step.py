"""A declared step at run time: reads its dependency's records (or the input), calls its task, writes one record.

Whatever happens, a record in gives exactly one record out, on ``<name>.out.<step>``: the output, a skip
(condition false: the output is null), or a failure marker once the attempts and the fallback are spent. A
marker of an upstream step is passed on without running the task. Only bad input on ``<name>.in`` is
dead-lettered here, by the first root step alone (the other roots drop it), so it too ends once.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable

from streams import metrics
from streams.dead_letter import MAX_ERROR_CHARS, dead_letter_id
from streams.errors import GuardTripped, InputError, Oversized, TriageError
from streams.graph.envelope import MARGIN_BYTES, Envelope, Failure, decode, dumps, parse_input
from streams.graph.task_context import TaskContext
from streams.policy import RetryPolicy
from streams.records import Emit, Record
from streams.step import StepContext

log = logging.getLogger("triage.graph")
THREADS = 64
"""Per step, for sync tasks. A sync task past its timeout cannot be stopped, only no longer waited for: its
thread stays busy until it returns, and a pool of the default size (cores + 4) would soon be all such threads."""


@dataclass(frozen=True)
class Call:
    fn: Callable[..., Any]
    args: int
    """Positional arguments it takes: 2 (input, deps) or 3 (input, deps, ctx)."""
    label: str


class TaskStep:
    stateful = False

    def __init__(self, name: str, *, inputs: tuple[str, ...], output: str, depends_on: tuple[str, ...],
                 task: Call, condition: Call | None, fallback: Call | None, timeout_s: float, retries: int,
                 models: tuple[str, ...], root: bool, first_root: bool, max_value_bytes: int,
                 deadline_s: float, retry: RetryPolicy | None = None, rounds: int = 1,
                 until: Call | None = None) -> None:
        self.name, self.inputs, self.output, self.depends_on = name, inputs, output, depends_on
        self.task, self.condition, self.fallback = task, condition, fallback
        self.timeout_s, self.retries, self.models = float(timeout_s), int(retries), models
        self.root, self.first_root = root, first_root
        self.limit = max(1024, max_value_bytes - MARGIN_BYTES)
        # Inside the runtime's own deadline, so that even a step out of time ends in its marker, not a dead letter.
        self.budget_s = max(1.0, deadline_s - 2.0)
        self.retry = retry or RetryPolicy()
        self.rounds, self.until = int(rounds), until
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix=f"task-{name}")

    # ---- the runtime's entry points -----------------------------------------------------------------------
    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        if self.root:
            try:
                env = self._from_input(record)
            except InputError:
                if self.first_root:
                    raise  # the runtime dead-letters the input itself, with this code as dlq.reason
                return []  # the first root step dead-letters it; a second dead letter would be a second end
        else:
            env = decode(record.raw)
            if env.failed is not None:
                return [self._emit(env)]  # an upstream step failed: the collector dead-letters it, once
        started = time.monotonic()
        deps = {d: env.steps.get(d) for d in self.depends_on}
        tenant = _tenant(record, env)
        tctx = TaskContext(self.name, env.correlation_id, env.attempt, tenant, self.models, self.timeout_s,
                           ctx.models, _store(ctx, tenant or "default"), env.missing)
        args = (env.input, deps, tctx)
        if self.condition is not None:
            try:
                go = await self._call(self.condition, args, self.timeout_s)
            except asyncio.TimeoutError:
                return [self._fail(record, env, "STEP_TIMEOUT", f"condition {self.condition.label} not done within "
                                                                f"{self.timeout_s:g}s", 1)]
            except Exception as exc:  # noqa: BLE001 - the user's function: any error is the input's outcome
                return [self._fail(record, env, "CONDITION_ERROR", _error(self.condition, exc), 1)]
            if not go:
                return [self._emit(env.with_step(self.name, None))]
        output, failure = await self._loop(args, started)
        if failure is None:
            out = env.with_step(self.name, output)
            value = out.encode()
            if len(value) > self.limit:
                return [self._fail(record, env, Oversized.code, f"output record of {len(value)} bytes is over the "
                                                                f"limit of {self.limit}", 1)]
            return [self._emit(out, value)]
        reason, error, attempts = failure
        return [self._fail(record, env, reason, error, attempts)]

    def on_failure(self, record: Record, code: str, reason: str) -> list[Emit] | None:
        """A failure of the runtime around this step (its deadline, a bug): the marker, as for the task's own.
        None (a dead letter of the record itself) for bad input, or a record that is not the graph's."""
        try:
            env = self._from_input(record) if self.root else decode(record.raw)
        except InputError:
            return None
        return [self._fail(record, env, code, reason, 1)]

    # ---- calling the user's functions ---------------------------------------------------------------------
    async def _loop(self, args: tuple[Any, ...], started: float) -> tuple[Any, tuple[str, str, int] | None]:
        """The task's rounds (one, unless the step declares a bounded loop), within one step deadline: each
        round is a full set of attempts and the fallback; ``until`` on a round's output ends the loop early."""
        input_, deps, tctx = args
        output, failure = await self._attempts(args, started)
        for round_ in range(2, self.rounds + 1):
            if failure is not None or self.until is None:
                break
            seen = {**deps, self.name: output}
            try:
                done = await self._call(self.until, (input_, seen), self.timeout_s)
            except asyncio.TimeoutError:
                return None, ("STEP_TIMEOUT", f"until {self.until.label} not done within {self.timeout_s:g}s", 1)
            except Exception as exc:  # noqa: BLE001 - the user's function: any error is the input's outcome
                return None, ("CONDITION_ERROR", _error(self.until, exc), 1)
            if done:
                break
            metrics.LOOP_ROUNDS.labels(self.name).inc()
            output, failure = await self._attempts((input_, seen, replace(tctx, round=round_)), started)
        return output, failure

    async def _attempts(self, args: tuple[Any, ...], started: float) -> tuple[Any, tuple[str, str, int] | None]:
        """(output, None), or (None, (reason, error, attempts)) once every attempt and the fallback failed."""
        deadline = started + self.budget_s
        reason, error, made = "STEP_TIMEOUT", "", 0
        for attempt in range(1, self.retries + 2):
            if attempt > 1:
                pause = self.retry.backoff(attempt - 1, random)
                if time.monotonic() + pause >= deadline:
                    error += f"; no time left for attempt {attempt} within the step deadline"
                    break
                await asyncio.sleep(pause)
            made = attempt
            timeout = min(self.timeout_s, max(0.001, deadline - time.monotonic()))
            try:
                return self._output(await self._call(self.task, args, timeout)), None
            except asyncio.TimeoutError:
                reason, error = "STEP_TIMEOUT", f"attempt {attempt} not done within {timeout:g}s"
            except TriageError as exc:
                reason, error = exc.code, str(exc)
                if not exc.retryable and exc.code != "INVALID_OUTPUT":
                    break
            except Exception as exc:  # noqa: BLE001 - the user's function: retried, then the fallback
                reason, error = "TASK_ERROR", _error(self.task, exc)
            log.info("task attempt failed", extra={"fields": {"step": self.name, "attempt": attempt,
                                                               "reason": reason, "error": error[:300]}})
        error = f"{made} attempt(s): {error}"
        if self.fallback is not None:
            timeout = min(self.timeout_s, max(0.001, deadline - time.monotonic()))
            try:
                output = self._output(await self._call(self.fallback, args, timeout))
                metrics.FALLBACKS.labels(self.name).inc()
                return output, None
            except asyncio.TimeoutError:
                error += f"; fallback {self.fallback.label} not done within {timeout:g}s"
            except Exception as exc:  # noqa: BLE001
                error += f"; fallback failed: {_error(self.fallback, exc)}"
        return None, (reason, error[:MAX_ERROR_CHARS], made)

    async def _call(self, call: Call, args: tuple[Any, ...], timeout: float) -> Any:
        args = args[:call.args]
        async with asyncio.timeout(timeout):
            if inspect.iscoroutinefunction(call.fn):
                return await call.fn(*args)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._pool, functools.partial(call.fn, *args))
            if inspect.isawaitable(result):
                result = await result
            return result

    @staticmethod
    def _output(value: Any) -> Any:
        if not isinstance(value, dict):
            raise TriageError(f"the task returned a {type(value).__name__}, not a dict", code="INVALID_OUTPUT")
        try:
            dumps(value)
        except ValueError as exc:
            raise TriageError(f"the task's output is not JSON: {exc}", code="INVALID_OUTPUT") from None
        return value

    # ---- records ------------------------------------------------------------------------------------------
    def _from_input(self, record: Record) -> Envelope:
        if record.raw is not None and len(record.raw) > self.limit:
            raise Oversized(f"input of {len(record.raw)} bytes is over the limit of {self.limit}")
        doc = parse_input(record.raw)
        return Envelope(dead_letter_id(record), record.attempt, _source(record), doc, {})

    def _fail(self, record: Record, env: Envelope, reason: str, error: str, attempts: int) -> Emit:
        metrics.STEP_FAILURES.labels(self.name, reason).inc()
        log.warning("step failed; its marker goes on to the collector",
                    extra={"fields": {"step": self.name, "reason": reason, "error": error[:300]}})
        consumed = (record.raw or b"").decode("utf-8", "replace")
        return self._emit(env.failing(Failure(self.name, reason, error, attempts, _source(record), consumed)))

    def _emit(self, env: Envelope, value: bytes | None = None) -> Emit:
        return Emit(self.output, value if value is not None else env.encode(), key=env.correlation_id,
                    headers={"correlation_id": env.correlation_id, "attempt": str(env.attempt)})


def _source(record: Record) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


def _tenant(record: Record, env: Envelope) -> str:
    t = record.tenant_id or (env.input or {}).get("tenant_id")
    return t if isinstance(t, str) else ""


def _store(ctx: StepContext, tenant: str) -> Any:
    try:
        return ctx.store(tenant)
    except GuardTripped:
        return None  # a tenant id Redis keys cannot carry: the task runs without state


def _error(call: Call, exc: BaseException) -> str:
    return f"{call.label} raised {type(exc).__name__}: {exc}"
