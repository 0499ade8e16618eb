"""The model adapter: every model call goes through :class:`ModelGateway`.

It owns the timeout, retries with backoff and jitter (a 429's retry-after honoured), the fallback chain,
output validation and the memo in Redis. ``openai`` exceptions are translated here, once, into
:mod:`streams.errors`; nothing above this module sees an ``openai`` exception.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

import aiohttp
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient

from streams import metrics, tracing
from streams.call_limit import CallLimits
from streams.context import current
from streams.errors import (OUTAGE_CODES, InvalidModelOutput, ModelError, ModelRateLimited, ModelRejected,
                            ModelTimeout, ModelUnavailable, Outage, StateError, TriageError)
from streams.policy import StepPolicy
from streams.tenant_state import TenantStore

log = logging.getLogger("triage.models")
T = TypeVar("T")
Validator = Callable[[dict[str, Any]], T]


@dataclass(frozen=True)
class ModelResult(Generic[T]):
    value: T
    """The validated output."""
    model: str
    """The model of the chain that produced it."""
    calls: int
    """Network calls made (0 on a memo hit), retries and fallbacks included."""
    tokens: int
    memo_hit: bool = False


def _dropped(exc: BaseException) -> bool:
    """A connection the server closed or refused, somewhere in the cause chain. The aiohttp transport reports
    every ``ClientConnectionError`` as a connect *timeout*; a dropped connection is an unavailable endpoint."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, aiohttp.ClientConnectionError) and not isinstance(seen, (aiohttp.ServerTimeoutError,
                                                                                    asyncio.TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _translate(exc: Exception) -> ModelError:
    if isinstance(exc, openai.APITimeoutError) and _dropped(exc):
        return ModelUnavailable(f"model endpoint unreachable: {exc.__cause__ or exc}")
    if isinstance(exc, (asyncio.TimeoutError, openai.APITimeoutError)):
        return ModelTimeout(f"model call timed out: {exc}")
    if isinstance(exc, openai.RateLimitError):
        retry_after: float | None = None
        try:
            raw = exc.response.headers.get("retry-after")
            retry_after = float(raw) if raw is not None else None
        except (TypeError, ValueError):
            retry_after = None
        return ModelRateLimited(f"rate limited: {exc.message}", retry_after=retry_after)
    if isinstance(exc, openai.APIConnectionError):
        return ModelUnavailable(f"model endpoint unreachable: {exc}")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return ModelUnavailable(f"model endpoint error {exc.status_code}: {exc.message}")
        return ModelRejected(f"model rejected the request ({exc.status_code}): {exc.message}")
    if isinstance(exc, openai.OpenAIError):
        return ModelUnavailable(f"model client error: {exc}")
    raise exc


class CircuitBreaker:
    """Per model: after ``threshold`` failures in a row, calls fail fast for ``cooldown_s`` (then one call
    probes). Spares a dead endpoint hundreds of in-flight retries, and them the wait for its timeouts."""

    def __init__(self, threshold: int = 5, cooldown_s: float = 2.0) -> None:
        self.threshold, self.cooldown_s = threshold, cooldown_s
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}
        self._last_code: dict[str, str] = {}

    def check(self, model: str) -> None:
        until = self._open_until.get(model, 0.0)
        if until and time.monotonic() < until:
            metrics.CIRCUIT_REJECTED.labels(model).inc()
            # The reason stays the model's own (timeouts, 5xx...): the circuit only spares the wait.
            raise ModelError(f"circuit open for {model} after {self._failures.get(model, 0)} failures in a row",
                             code=self._last_code.get(model, "MODEL_UNAVAILABLE"), retryable=True)

    def failure(self, model: str, code: str = "MODEL_UNAVAILABLE") -> None:
        self._last_code[model] = code
        n = self._failures.get(model, 0) + 1
        self._failures[model] = n
        if n >= self.threshold:
            self._open_until[model] = time.monotonic() + self.cooldown_s

    def success(self, model: str) -> None:
        self._failures.pop(model, None)
        self._open_until.pop(model, None)


def digest(messages: Sequence[dict[str, Any]], extra: Any = None) -> str:
    blob = json.dumps([messages, extra], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ModelGateway:
    """Calls OpenAI-compatible models with a step's policy. One per worker; safe for concurrent records."""

    def __init__(self, base_url: str, api_key: str, *, client: AsyncOpenAI | None = None,
                 rng: random.Random | None = None, outage: str = "dlq",
                 breaker: "CircuitBreaker | None" = None, concurrency: int = 256) -> None:
        # The runtime retries (with the fallback chain), so the client's own retries are off. The aiohttp
        # transport costs a third of httpx's CPU per call, and a worker makes hundreds of calls a second.
        self._client = client or AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                                             http_client=DefaultAioHttpClient())
        self._rng = rng or random.Random()
        self._outage_policy = outage
        self._breaker = breaker or CircuitBreaker()
        self._limits = CallLimits(concurrency)

    def _outage(self, err: ModelError) -> TriageError:
        """With TRIAGE_MODEL_OUTAGE=wait, an unreachable chain is an outage to wait out, not a verdict."""
        if self._outage_policy == "wait" and err.code in OUTAGE_CODES:
            out = Outage(f"models unreachable, waiting: {err}")
            out.calls = getattr(err, "calls", 0)  # type: ignore[attr-defined]
            return out
        return err

    async def close(self) -> None:
        await self._client.close()

    async def _once(self, model: str, messages: Sequence[dict[str, Any]], timeout: float,
                    tools: list[dict[str, Any]] | None) -> tuple["_Message", int]:
        body: dict[str, Any] = {"model": model, "messages": list(messages)}
        if tools:
            body["tools"] = tools
        ctx = current()
        tenant = ctx.tenant_id if ctx is not None else ""
        self._breaker.check(model)
        limit = self._limits.of(model)
        with tracing.model_span(model) as span:
            try:
                async with limit.slot():
                    started = time.monotonic()
                    try:
                        # The client's generic post, not the typed ``chat.completions.create``: the typed path
                        # spends twice the transport's CPU checking our request against TypedDicts and building
                        # pydantic models we read two fields of. Auth, base URL, timeouts and error mapping stay
                        # the client's. The outer bound is a backstop for the client's own timeout;
                        # asyncio.timeout, unlike wait_for, does not start a task per call.
                        async with asyncio.timeout(timeout + 1.0):
                            doc = await self._client.post("/chat/completions", body=body, cast_to=object,
                                                          options={"timeout": timeout})
                    finally:
                        metrics.MODEL_SECONDS.labels(model).observe(time.monotonic() - started)
            except (asyncio.TimeoutError, openai.OpenAIError) as exc:
                err = _translate(exc)
                limit.failed(err.code, timeout)
                if err.retryable:
                    self._breaker.failure(model, err.code)
                metrics.MODEL_CALLS.labels(model, tenant, err.code).inc()
                span.set_attribute("error.type", err.code)
                raise err from exc
            limit.answered()
            try:
                message, tokens = _Message.of_completion(doc)
            except InvalidModelOutput as exc:
                metrics.MODEL_CALLS.labels(model, tenant, "INVALID_OUTPUT").inc()
                raise InvalidModelOutput(f"{model} {exc}") from None
            span.set_attribute("gen_ai.usage.total_tokens", tokens)
        self._breaker.success(model)
        metrics.MODEL_CALLS.labels(model, tenant, "ok").inc()
        metrics.MODEL_TOKENS.labels(model, tenant).inc(tokens)
        return message, tokens

    async def _wait(self, policy: StepPolicy, retry: int, last: ModelError | None) -> bool:
        """Back off before retry number ``retry``; False when a 429 asks for longer than we honour."""
        wait = policy.retry.backoff(retry, self._rng)
        if isinstance(last, ModelRateLimited) and last.retry_after is not None:
            if last.retry_after > policy.retry.max_retry_after_s:
                return False
            wait = max(wait, last.retry_after)
        await asyncio.sleep(wait)
        return True

    async def chat(self, policy: StepPolicy, model: str, messages: Sequence[dict[str, Any]],
                   tools: list[dict[str, Any]] | None = None, memo: "Memo | None" = None,
                   salt: str = "") -> tuple[Any, int, int]:
        """One assistant message from ``model`` (tool calls allowed), transient errors retried with backoff.

        Returns (message, calls made, tokens). Raises the last ModelError. For the generator's tool loop,
        which validates the final answer itself: it passes a different ``salt`` per try, so a retry after an
        invalid answer asks the model again instead of reading that answer back from the memo.
        """
        key = digest(messages, [model, tools, salt])
        if memo is not None:
            hit = await memo.get(key)
            if hit is not None:
                return _Message.of(hit), 0, 0
        calls = tokens = 0
        last: ModelError | None = None
        for attempt in range(1, policy.retry.attempts + 1):
            if attempt > 1 and not await self._wait(policy, attempt - 1, last):
                break
            calls += 1
            try:
                message, used = await self._once(model, messages, policy.timeout_s, tools)
            except ModelError as exc:
                last = exc
                if not exc.retryable:
                    break
                continue
            if memo is not None:
                await memo.put(key, _Message.dump(message))
            return message, calls, tokens + used
        assert last is not None
        last.calls = calls  # type: ignore[attr-defined]
        raise self._outage(last)

    async def complete_json(self, policy: StepPolicy, messages: Sequence[dict[str, Any]], validate: Validator[T], *,
                            memo: "Memo | None" = None, chain: tuple[str, ...] | None = None) -> ModelResult[T]:
        """The validated JSON answer of the first model of the chain that gives one.

        Raises the last ModelError when every model of the chain failed all its retries; InvalidModelOutput
        when the answers were never valid. A memo hit returns the earlier answer without a call.
        """
        models = chain or policy.models
        key = digest(messages, models)
        if memo is not None:
            hit = await memo.get(key)
            if hit is not None:
                try:
                    result = ModelResult(validate(hit["content"]), hit["model"], 0, 0, memo_hit=True)
                    metrics.MEMO_HITS.labels(current().step if current() else "").inc()
                    return result
                except InvalidModelOutput:
                    pass  # a memo written by an older validator; ask again
        calls = tokens = 0
        last: ModelError | None = None
        for model in models:
            for attempt in range(1, policy.retry.attempts + 1):
                if attempt > 1 and not await self._wait(policy, attempt - 1, last):
                    break
                calls += 1
                try:
                    message, used = await self._once(model, messages, policy.timeout_s, None)
                    tokens += used
                    content = parse_json(model, message.content)
                    value = validate(content)
                except ModelError as exc:
                    last = exc
                    metrics.MODEL_RETRIES.labels(model, exc.code).inc()
                    log.warning("model call failed", extra={"fields": {
                        "model": model, "call_attempt": attempt, "reason": exc.code, "error": str(exc)}})
                    if not exc.retryable:
                        break
                    continue
                if memo is not None:
                    await memo.put(key, {"content": content, "model": model})
                if model != models[0]:
                    metrics.FALLBACKS.labels(current().step if current() else "").inc()
                return ModelResult(value, model, calls, tokens)
        assert last is not None
        last.calls = calls  # type: ignore[attr-defined]
        last.tokens = tokens  # type: ignore[attr-defined]
        raise self._outage(last)


def parse_json(model: str, content: str | None) -> dict[str, Any]:
    if not content or not content.strip():
        raise InvalidModelOutput(f"{model} returned an empty answer")
    text = content.strip()
    if text.startswith("```"):
        # Chat models often fence JSON despite being asked not to.
        text = text.strip("`").removeprefix("json").strip()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidModelOutput(f"{model} returned malformed JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidModelOutput(f"{model} returned JSON that is not an object")
    return doc


@dataclass(frozen=True)
class _Function:
    name: str
    arguments: str


@dataclass(frozen=True)
class _ToolCall:
    id: str
    function: _Function


@dataclass(frozen=True)
class _Message:
    """An assistant message rebuilt from the memo (the same fields the tool loop reads)."""

    content: str | None
    tool_calls: list[_ToolCall] | None

    @staticmethod
    def dump(message: Any) -> dict[str, Any]:
        calls = [{"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
                 for tc in (getattr(message, "tool_calls", None) or [])]
        return {"content": message.content, "tool_calls": calls}

    @classmethod
    def of(cls, doc: dict[str, Any]) -> "_Message":
        calls = [_ToolCall(c["id"], _Function(c["name"], c["arguments"])) for c in doc.get("tool_calls") or []]
        return cls(doc.get("content"), calls or None)

    @classmethod
    def of_completion(cls, doc: Any) -> tuple["_Message", int]:
        """The first choice's message and the total tokens of a chat completion as the endpoint sent it.
        Raises InvalidModelOutput when the document is not a chat completion."""
        try:
            message = doc["choices"][0]["message"]
            content = message.get("content")
            calls = [_ToolCall(str(c["id"]), _Function(str(c["function"]["name"]), _arguments(c["function"])))
                     for c in message.get("tool_calls") or []]
            usage = doc.get("usage") or {}
            tokens = int(usage.get("total_tokens") or 0)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise InvalidModelOutput("returned something that is not a chat completion with a choice") from None
        if content is not None and not isinstance(content, str):
            raise InvalidModelOutput("returned a message whose content is not text")
        return cls(content, calls or None), tokens


def _arguments(function: dict[str, Any]) -> str:
    """A tool call's arguments as the JSON text the API specifies. Some compatible servers send the object
    itself: taken as its JSON. Anything else is not a tool call."""
    args = function.get("arguments")
    if args is None or isinstance(args, str):
        return args or ""
    if isinstance(args, dict):
        return json.dumps(args, ensure_ascii=False)
    raise ValueError(f"tool arguments of type {type(args).__name__}")


class Memo:
    """The memo of one record in one step: (tenant, correlation ID, step, attempt, input hash) -> answer.

    A Redis outage makes it a miss, never a failure: memo misses only cost a repeated model call.
    """

    def __init__(self, store: TenantStore | None, step: str, correlation_id: str, attempt: int) -> None:
        self._store, self._step, self._cid, self._attempt = store, step, correlation_id, attempt
        self.errors = 0

    async def get(self, key: str) -> Any:
        if self._store is None:
            return None
        try:
            return await self._store.memo_get(self._step, self._cid, self._attempt, key)
        except StateError as exc:
            self.errors += 1
            log.warning("memo unavailable, calling the model", extra={"fields": {"error": str(exc)}})
            return None

    async def put(self, key: str, value: Any) -> None:
        if self._store is None:
            return
        try:
            await self._store.memo_set(self._step, self._cid, self._attempt, key, value)
        except StateError as exc:
            self.errors += 1
            log.warning("memo write failed", extra={"fields": {"error": str(exc)}})

