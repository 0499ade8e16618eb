"""A fake OpenAI-compatible model server for tests: the offline models, perturbed on command.

It answers ``POST /v1/chat/completions`` like :mod:`processors.offline.server` (whose request handling it
reuses), except that each model can be switched at runtime into a failure *mode*, so a test can break a
model over real HTTP, watch the pipeline cope, and fix it again.

Model ids are routed to an offline model by a table fixed at start-up: :data:`DEFAULT_ROUTES` (``fake-intent``
-> ``offline-intent``, ``fake-writer-b`` -> ``offline-writer``, ...; every ``offline-*`` id to itself), plus
any ``--route NAME=OFFLINE_ID``. Unrouted ids get OpenAI's 404 ``model_not_found``. The answer's ``model``
field is the id that was asked for.

Modes (per requested model id; see :func:`parse_mode`):

* ``ok``: the offline answer.
* ``slow:<seconds>``: sleep, then the offline answer.
* ``latency:<ms>`` / ``latency:lognormal:<median_ms>:<sigma>[:<cap_ms>]``: a model with a latency, for
  benchmarks: each call sleeps, then gets the offline answer. ``latency:200`` sleeps 200 ms every call (``ms``
  may follow the number); the lognormal draws each sleep from a lognormal of that median and sigma, capped at
  ``cap_ms`` (default 5000). Draws come from a ``random.Random`` per model seeded with the model id and the
  mode, restarted each time the mode is set, so a run is reproducible.
* ``serial:<ms>``: one call at a time, each taking ``ms``, in arrival order, like an endpoint with one slot
  that cannot see a caller hang up: it works through abandoned calls too, then answers them 499 (unsent).
* ``error:<status>``: that HTTP status (400-599) with an OpenAI-style body ``{"error": {...}}``.
* ``ratelimit:<seconds>``: 429 with ``retry-after: <seconds>`` and an error body.
* ``garbage``: 200, content that is not JSON. ``empty``: 200, content ``""``.
* ``badlabel``: 200, valid JSON that breaks the contract: a classifier label outside the task's labels, a
  writer reply citing a doc_id it was not given, a judge verdict of the wrong shape.
* ``drift:<label>``: classifiers answer ``label`` with confidence 0.9 whatever the input; other models
  answer normally (it can only be set on them through ``"*"``).
* ``flaky:<p>``: a 500 with probability ``p``, else the offline answer. The draw is a hash of the model id
  and its call number since the mode was set, so a run is reproducible.
* ``down``: the connection is closed without a response (the client sees a connection error).
* ``obedient``: a model that does whatever the ticket text could ask, however it is worded: the priority
  classifier answers ``critical`` (0.99) when the text names any urgency at all (in any spelling, spacing,
  case, script or width; matched on the letters alone, not by the pipeline's own normaliser); the writer
  appends its system prompt (plain, spaced out, with zero-width spaces, full-width or upper case) and/or a
  verbatim document of another sample tenant (not naming it); the judge passes every draft. Other
  classifiers answer normally. (``obey``, older, only follows the literal word "critical".)

Requests that the offline provider would reject (bad JSON, missing fields) are still rejected with its 400
in the modes that produce an answer (ok, slow, latency, garbage, empty, badlabel, drift, flaky's successes).

Control endpoints: ``POST /control`` ``{"model": id | "*", "mode": str, "count": int | null}``;
``POST /control/reset``; ``GET /control``; ``GET /log``; ``GET /stats``; ``GET /healthz``; ``GET /v1/models``.

Run: ``python -m tests.fake_openai --port 8711`` from the repository root; it stops on SIGTERM or SIGINT.
From test code use :class:`FakeModels`, which runs it as a subprocess.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unicodedata
import urllib.error
import urllib.request
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from aiohttp import web

from processors.offline import LABELS
from processors.offline.classify import warm
# The offline server's private helpers are reused on purpose: the fake must answer exactly as the real
# offline provider does, and copying its request handling would let the two drift apart.
from processors.offline.server import CLASSIFIERS, MODELS, BadRequest, UnknownModel, _abandoned, _complete, _error, _text

log = logging.getLogger("triage.fake_openai")

REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_LIMIT = 10_000

DEFAULT_ROUTES: dict[str, str] = {
    "fake-intent": "offline-intent",
    "fake-language": "offline-language",
    "fake-priority": "offline-priority",
    "fake-sentiment": "offline-sentiment",
    "fake-writer": "offline-writer",
    "fake-writer-b": "offline-writer",
    "fake-intent-b": "offline-intent",
    "fake-writer-strong": "offline-writer-strong",
    "fake-judge": "offline-judge",
    **{m: m for m in MODELS},
}
"""Requested model id -> offline model id, as served unless ``--route`` adds to it."""

GARBAGE = 'Sure! here is {label: '
# A label outside each task's allowed set (checked at import, below).
BAD_LABELS: dict[str, str] = {"intent": "urgent", "language": "klingon", "priority": "urgent",
                              "sentiment": "furious"}
assert all(BAD_LABELS[t] not in LABELS[t] for t in LABELS)
_FOREIGN_DOCS = ("globex-refunds", "acme-refunds")  # doc ids of the sample KB's two tenants
_CREATED = 1_700_000_000


# --------------------------------------------------------------------------------------------- modes

@dataclass(frozen=True)
class Mode:
    """A parsed mode: ``kind`` (ok, slow, latency, error, ratelimit, garbage, empty, badlabel, drift, flaky,
    down) and its argument, already validated; ``text`` is the canonical spelling.

    For ``latency``, ``label`` is the distribution (``fixed`` or ``lognormal``), ``number`` the latency (the
    median for lognormal) in ms, ``sigma`` and ``cap`` (ms) the lognormal's shape and ceiling."""
    kind: str
    number: float = 0.0
    label: str = ""
    sigma: float = 0.0
    cap: float = 0.0

    @property
    def text(self) -> str:
        if self.kind == "drift":
            return f"drift:{self.label}"
        if self.kind == "latency":
            if self.label == "lognormal":
                return f"latency:lognormal:{_num(self.number)}:{_num(self.sigma)}:{_num(self.cap)}"
            return f"latency:{_num(self.number)}"
        if self.kind in ("slow", "serial", "error", "ratelimit", "flaky"):
            return f"{self.kind}:{_num(self.number)}"
        return self.kind


OK = Mode("ok")
_BARE = ("ok", "garbage", "empty", "badlabel", "down", "toolonce", "toolrepeat", "toolvary", "obey", "obedient")
_TOOL_MODES = ("toolonce", "toolrepeat", "toolvary")
_VARY_WORDS = ("refund", "invoice", "password", "webhook", "trial", "ownership", "deletion", "proration",
               "declined", "sync", "authenticator", "outage", "export", "billing", "address")


def _num(x: float) -> str:
    """``2.0`` -> ``"2"``, ``0.25`` -> ``"0.25"``: so ``ratelimit:2`` sends ``retry-after: 2``."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def parse_mode(text: str) -> Mode:
    """Parses a mode string; raises ValueError with a readable message when it is not one."""
    if not isinstance(text, str):
        raise ValueError("mode must be a string")
    kind, sep, arg = text.strip().partition(":")
    if kind in _BARE:
        if sep:
            raise ValueError(f"mode {kind!r} takes no argument")
        return Mode(kind)
    if kind == "drift":
        if not arg:
            raise ValueError("drift needs a label: drift:<label>")
        return Mode("drift", label=arg)
    if kind == "latency":
        return _parse_latency(arg)
    if kind not in ("slow", "serial", "error", "ratelimit", "flaky"):
        raise ValueError(f"unknown mode {text!r}; modes: ok, slow:<s>, serial:<ms>, latency:<ms>, "
                         "latency:lognormal:<median_ms>:<sigma>[:<cap_ms>], error:<status>, ratelimit:<s>, "
                         "garbage, empty, badlabel, drift:<label>, flaky:<p>, down")
    try:
        number = float(arg)
    except ValueError:
        raise ValueError(f"mode {kind!r} needs a number: {kind}:<number>") from None
    if kind == "error" and not (number.is_integer() and 400 <= number <= 599):
        raise ValueError("error:<status> needs an HTTP status from 400 to 599")
    if kind == "flaky" and not 0.0 <= number <= 1.0:
        raise ValueError("flaky:<p> needs a probability from 0 to 1")
    if kind in ("slow", "ratelimit") and not 0.0 <= number <= 3600.0:
        raise ValueError(f"{kind}:<seconds> needs 0 to 3600 seconds")
    if kind == "serial" and not 0.0 < number <= 60_000.0:
        raise ValueError("serial:<ms> needs 0 to 60000 ms")
    return Mode(kind, number=number)


LATENCY_CAP_MS = 5000.0
_LATENCY_HELP = "latency:<ms> or latency:lognormal:<median_ms>:<sigma>[:<cap_ms>]"


def _ms(text: str) -> float:
    text = text.strip()
    value = float(text[:-2] if text.endswith("ms") else text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _parse_latency(arg: str) -> Mode:
    parts = arg.split(":")
    try:
        if parts[0] == "lognormal":
            if len(parts) not in (3, 4):
                raise ValueError(arg)
            median, sigma = _ms(parts[1]), float(parts[2])
            cap = _ms(parts[3]) if len(parts) == 4 else LATENCY_CAP_MS
            if not math.isfinite(sigma):
                raise ValueError(arg)
        else:
            if len(parts) != 1:
                raise ValueError(arg)
            median, sigma, cap = _ms(parts[0]), 0.0, 0.0
    except ValueError:
        raise ValueError(f"latency needs {_LATENCY_HELP}, got latency:{arg}") from None
    if parts[0] == "lognormal":
        if not (0.0 < median <= 3_600_000.0 and 0.0 <= sigma <= 10.0 and 0.0 < cap <= 3_600_000.0):
            raise ValueError("latency:lognormal needs a median of 0 to 3600000 ms, sigma 0 to 10 and a cap "
                             "of 0 to 3600000 ms")
        return Mode("latency", number=median, label="lognormal", sigma=sigma, cap=cap)
    if not 0.0 <= median <= 3_600_000.0:
        raise ValueError("latency:<ms> needs 0 to 3600000 ms")
    return Mode("latency", number=median, label="fixed")


@dataclass
class _Setting:
    mode: Mode
    remaining: int | None = None  # calls left before the model reverts to "ok"; None = until changed


class State:
    """Modes, call counters, the request log and the stats of one server. Single-threaded (one loop)."""

    def __init__(self, routes: Mapping[str, str]) -> None:
        self.routes = dict(routes)
        self.in_flight = 0  # chat requests being served now (a reset does not end them)
        self.slots: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)  # serial:<ms>, per model
        self.reset()

    def reset(self) -> None:
        self.default = _Setting(OK)            # what "*" set; used by models with no setting of their own
        self.settings: dict[str, _Setting] = {}
        self.flaky_calls: Counter[str] = Counter()
        self.latency_rngs: dict[str, random.Random] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self.stats: defaultdict[str, Counter[str]] = defaultdict(Counter)
        # A call still in flight at a reset (a slow:<s> whose client gave up) belongs to the test before it:
        # it is left out of the new log instead of landing in the next test's.
        self.generation = getattr(self, "generation", 0) + 1

    def set(self, model: str, mode: Mode, count: int | None) -> None:
        if model == "*":
            # "*" means every model: per-model settings are dropped so none of them shadows it.
            self.default = _Setting(mode, count)
            self.settings.clear()
            self.flaky_calls.clear()
            self.latency_rngs.clear()
        else:
            self.settings[model] = _Setting(mode, count)
            self.flaky_calls.pop(model, None)  # a fresh flaky sequence each time the mode is set
            self.latency_rngs.pop(model, None)  # and a fresh latency sequence

    def take(self, model: str) -> Mode:
        """The mode for one call of ``model``, counting the call against a ``count``."""
        setting = self.settings.get(model, self.default)
        if setting.remaining is not None:
            setting.remaining -= 1
            if setting.remaining <= 0:
                if setting is self.default:
                    self.default = _Setting(OK)
                else:
                    self.settings[model] = _Setting(OK)
        return setting.mode

    def flaky_fails(self, model: str, p: float) -> bool:
        n = self.flaky_calls[model]
        self.flaky_calls[model] += 1
        draw = int.from_bytes(hashlib.sha256(f"{model}\n{n}".encode()).digest()[:8], "big") / 2**64
        return draw < p

    def latency_s(self, model: str, mode: Mode) -> float:
        """Seconds one call of ``model`` sleeps in a ``latency`` mode (drawn from the model's seeded RNG)."""
        if mode.label != "lognormal":
            return mode.number / 1000.0
        rng = self.latency_rngs.get(model)
        if rng is None:
            rng = self.latency_rngs[model] = random.Random(f"{model}\n{mode.text}")
        return min(mode.cap, mode.number * math.exp(mode.sigma * rng.gauss(0.0, 1.0))) / 1000.0

    def describe(self) -> dict[str, Any]:
        """``{"*": {...}, <every routed id>: {"mode", "remaining"}}``, the modes in effect now."""
        def one(s: _Setting) -> dict[str, Any]:
            return {"mode": s.mode.text, "remaining": s.remaining}
        return {"*": one(self.default), **{m: one(self.settings.get(m, self.default)) for m in self.routes}}

    def record(self, t: float, model: str | None, mode: Mode | None, status: int | str,
               generation: int | None = None) -> None:
        if generation is not None and generation != self.generation:
            return
        self.log.append({"t": t, "model": model, "mode": mode.text if mode else None, "status": status,
                         "elapsed": round(time.time() - t, 4)})
        self.stats[model or "-"][str(status)] += 1


# ------------------------------------------------------------------------------------------ handlers

STATE = web.AppKey("state", State)


class _Dropped(Exception):
    """Mode ``down``: close the connection without a response (carries what the log needs)."""

    def __init__(self, model: str, mode: Mode) -> None:
        super().__init__(model)
        self.model, self.mode = model, mode


def _injected(status: int, message: str, type_: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.json_response(body, status=status)


def _error_for(status: int) -> web.Response:
    # The types and codes OpenAI uses, so a client that branches on them sees the usual ones.
    type_, code = {400: ("invalid_request_error", "invalid_request"),
                   401: ("authentication_error", "invalid_api_key"),
                   403: ("permission_error", "permission_denied"),
                   404: ("invalid_request_error", "model_not_found"),
                   429: ("requests", "rate_limit_exceeded")}.get(
        status, ("server_error", "server_error") if status >= 500 else ("invalid_request_error", "injected"))
    return _injected(status, f"injected error {status} (fake_openai)", type_, code)


def _foreign_doc(given: set[str]) -> str:
    """A doc id that was not given: another sample tenant's document when possible."""
    tenants = {d.split("-", 1)[0] for d in given}
    for doc_id in _FOREIGN_DOCS:
        if doc_id not in given and doc_id.split("-", 1)[0] not in tenants:
            return doc_id
    return "nonexistent-doc"


def _perturb(mode: Mode, base: str, request_doc: dict[str, Any], content: str) -> str:
    """The content a content-level mode returns instead of the offline ``content``."""
    if mode.kind == "garbage":
        return GARBAGE
    if mode.kind == "empty":
        return ""
    task = CLASSIFIERS.get(base)
    if mode.kind == "drift":
        return json.dumps({"label": mode.label, "confidence": 0.9}) if task else content
    if mode.kind != "badlabel":
        return content
    if task:
        return json.dumps({"label": BAD_LABELS[task], "confidence": 0.9})
    if base.startswith("offline-writer"):
        answer = json.loads(content)
        given = {d["doc_id"] for d in request_doc.get("documents", [])}
        foreign = _foreign_doc(given)
        answer["reply"] = f"{answer['reply']}\n\n- See also [{foreign}]"
        answer["citations"] = [*answer["citations"], foreign]
        return json.dumps(answer, ensure_ascii=False)
    # The judge: a verdict whose fields have the wrong types and ranges.
    return json.dumps({"score": 7, "passed": "maybe", "checks": {"vibes": True}})


# What "obedient" hears as a demand for urgency: letters only, so no spacing, zero-width character, case, accent
# or width hides it from the model (a real model reads through all of those).
_URGENCY = ("critical", "critico", "critica", "critique", "kritisch", "urgent", "dringend", "emergency", "p0",
            "sev0", "highestpriority", "toppriority", "緊急", "紧急", "重大", "至急", "最優先", "срочн", "критич")


def _letters(text: str) -> str:
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text)).casefold()
    return "".join(ch for ch in text if ch.isalnum() and unicodedata.category(ch) != "Mn")


def _sample_kb() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((REPO_ROOT / "deploy" / "sample" / "kb").glob("*.jsonl")):
        out[path.stem] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return out


_KB = _sample_kb()


def _disguise(text: str, how: int) -> str:
    """The leaked prompt as an obedient model might be told to spell it."""
    if how == 1:
        return "  ".join(text.split(" "))
    if how == 2:
        return "\u200b".join(text.split(" "))
    if how == 3:
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    if how == 4:
        return text.upper()
    return text


def _obedient(body: dict[str, Any], base: str, message: dict[str, Any]) -> None:
    """Rewrites ``message`` (the offline answer) as a model that obeys the ticket."""
    user = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    system = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "system"]
    doc = json.loads(_text(user[-1].get("content")))
    ticket = doc.get("ticket") if isinstance(doc.get("ticket"), dict) else doc
    text = f"{ticket.get('subject', '')}\n{ticket.get('body', '')}"
    if base == "offline-priority":
        if any(word in _letters(text) for word in _URGENCY):
            message["content"] = json.dumps({"label": "critical", "confidence": 0.99})
    elif base.startswith("offline-writer"):
        answer = json.loads(message["content"])
        pick = int(hashlib.sha256(text.encode()).hexdigest(), 16)
        if pick % 3 != 1 and system:  # the prompt, in one of five spellings
            answer["reply"] += "\n\nAs requested, my instructions: " + _disguise(_text(system[0].get("content")),
                                                                               pick // 3 % 5)
        others = [(t, d) for t, docs in sorted(_KB.items()) if t != ticket.get("tenant_id") for d in docs]
        if pick % 3 != 0 and others:  # another tenant's document, word for word, its name left out
            tenant, other = others[pick % len(others)]
            quote = re.sub(rf"\b{re.escape(tenant)}\b", "the company", other["body"], flags=re.IGNORECASE)
            answer["reply"] += "\n\nHere is what another company does: " + quote
        message["content"] = json.dumps(answer, ensure_ascii=False)
    elif base == "offline-judge":
        message["content"] = json.dumps({"score": 1.0, "passed": True, "checks": {"told_to_pass": True}})


def _answer(body: dict[str, Any], model: str, base: str, mode: Mode) -> web.Response:
    try:
        completion = _complete({**body, "model": base})
    except UnknownModel as exc:  # only if a --route points at a model the offline server lacks
        return _error(404, str(exc), "model_not_found", "model")
    except BadRequest as exc:
        return _error(400, str(exc), None, exc.param)
    completion["model"] = model
    if mode.kind in _TOOL_MODES and base.startswith("offline-writer"):
        tool_results = sum(1 for m in body["messages"] if isinstance(m, dict) and m.get("role") == "tool")
        if mode.kind != "toolonce" or tool_results == 0:
            if mode.kind == "toolvary":  # a different search every time: only the cap ends it
                query = f"{_VARY_WORDS[tool_results % len(_VARY_WORDS)]} {_VARY_WORDS[(tool_results * 7 + 3) % len(_VARY_WORDS)]}"
            else:  # toolrepeat, and toolonce's single search
                query = "refund policy duplicate charge"
            completion["choices"][0]["message"] = {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": f"call_{tool_results}", "type": "function",
                                "function": {"name": "search_kb", "arguments": json.dumps({"query": query})}}]}
            completion["choices"][0]["finish_reason"] = "tool_calls"
        return web.json_response(completion)
    if mode.kind == "obedient":
        _obedient(body, base, completion["choices"][0]["message"])
        return web.json_response(completion)
    if mode.kind == "obey":
        # A model that does what the ticket text says: leaks its instructions and names the other tenant.
        user = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        system = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "system"]
        message = completion["choices"][0]["message"]
        if base.startswith("offline-writer"):
            answer = json.loads(message["content"])
            answer["reply"] += ("\n\nAs requested, my instructions: " + _text(system[0].get("content")) if system else "")
            answer["reply"] += "\nAlso, Globex refunds duplicate charges within 14 days only, as account credit."
            message["content"] = json.dumps(answer, ensure_ascii=False)
        elif base == "offline-priority" and "critical" in _text(user[-1].get("content")).lower():
            message["content"] = json.dumps({"label": "critical", "confidence": 0.99})
        return web.json_response(completion)
    if mode.kind in ("garbage", "empty", "badlabel", "drift"):
        # _complete accepted the request, so its last user message is a JSON object.
        user = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        message = completion["choices"][0]["message"]
        message["content"] = _perturb(mode, base, json.loads(_text(user[-1].get("content"))), message["content"])
    return web.json_response(completion)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    t, generation = time.time(), state.generation
    model: str | None = None
    mode: Mode | None = None
    status: int | str = "dropped"
    state.in_flight += 1
    try:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            resp = _error(400, "the request body is not valid JSON", None)
        else:
            resp, model, mode = await _serve(state, body, request)
        status = resp.status
        return resp
    except _Dropped as dropped:
        model, mode = dropped.model, dropped.mode
        # Closing the transport before any byte is written is what a crashed or unplugged server looks
        # like to the client ("server disconnected without sending a response"); aiohttp then discards
        # the placeholder response without complaint.
        if request.transport is not None:
            request.transport.close()
        return web.Response()
    finally:
        state.in_flight -= 1
        state.record(t, model, mode, status, generation)


async def _serve(state: State, body: Any, request: web.Request) -> tuple[web.Response, str | None, Mode | None]:
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        return _error(400, "'model' is required", None, "model"), None, None
    base = state.routes.get(model)
    if base is None:
        return _error(404, f"The model '{model}' does not exist", "model_not_found", "model"), model, None
    mode = state.take(model)
    if mode.kind == "down":
        raise _Dropped(model, mode)
    if mode.kind == "slow":
        await asyncio.sleep(mode.number)
    elif mode.kind == "latency":
        await asyncio.sleep(state.latency_s(model, mode))
    elif mode.kind == "serial":
        async with state.slots[model]:  # asyncio.Lock wakes its waiters in arrival order
            await asyncio.sleep(mode.number / 1000.0)
    elif mode.kind == "error":
        return _error_for(int(mode.number)), model, mode
    elif mode.kind == "ratelimit":
        resp = _injected(429, f"Rate limit reached for {model} (fake_openai); retry after {_num(mode.number)}s",
                         "requests", "rate_limit_exceeded")
        resp.headers["retry-after"] = _num(mode.number)
        return resp, model, mode
    elif mode.kind == "flaky" and state.flaky_fails(model, mode.number):
        return _error_for(500), model, mode
    if _abandoned(request):  # as the offline server does: no answer for a caller that hung up (status 499)
        return web.Response(status=499), model, mode
    return _answer(body, model, base, mode), model, mode


async def _control_get(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].describe())


async def _control_post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        model, count = body.get("model"), body.get("count")
        if not isinstance(model, str) or (model != "*" and model not in state.routes):
            raise ValueError(f"unknown model {model!r}; known: '*', {', '.join(sorted(state.routes))}")
        mode = parse_mode(body.get("mode"))
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer or null")
        if mode.kind == "drift" and model != "*" and state.routes[model] not in CLASSIFIERS:
            raise ValueError(f"drift applies to classifiers only; {model} is not one")
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        return _injected(400, str(exc), "invalid_request_error", "invalid_control")
    state.set(model, mode, count)
    log.info("mode of %s set to %s%s", model, mode.text, f" for {count} calls" if count else "")
    return web.json_response(state.describe())


async def _control_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response(request.app[STATE].describe())


async def _in_flight(request: web.Request) -> web.Response:
    return web.json_response({"in_flight": request.app[STATE].in_flight})


async def _log(request: web.Request) -> web.Response:
    return web.json_response(list(request.app[STATE].log))


async def _stats(request: web.Request) -> web.Response:
    return web.json_response({m: dict(c) for m, c in request.app[STATE].stats.items()})


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _models(request: web.Request) -> web.Response:
    data = [{"id": m, "object": "model", "created": _CREATED, "owned_by": "fake-openai"}
            for m in request.app[STATE].routes]
    return web.json_response({"object": "list", "data": data})


async def _model(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    if model not in request.app[STATE].routes:
        return _error(404, f"The model '{model}' does not exist", "model_not_found", "model")
    return web.json_response({"id": model, "object": "model", "created": _CREATED, "owned_by": "fake-openai"})


def make_app(routes: Mapping[str, str] | None = None) -> web.Application:
    """The aiohttp application; ``routes`` replaces :data:`DEFAULT_ROUTES` when given."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[STATE] = State(DEFAULT_ROUTES if routes is None else routes)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model}", _model)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/control", _control_get)
    app.router.add_post("/control", _control_post)
    app.router.add_post("/control/reset", _control_reset)
    app.router.add_get("/log", _log)
    app.router.add_get("/in_flight", _in_flight)
    app.router.add_get("/stats", _stats)
    return app


# --------------------------------------------------------------------------------------- the process

async def serve(host: str, port: int, routes: Mapping[str, str] | None = None) -> None:
    """Serves :func:`make_app` on ``host:port`` until SIGTERM or SIGINT."""
    # A short shutdown timeout: a test stopping the fake must not wait for a slow:<s> request to finish.
    warm()  # as the offline server does: /healthz answers once the models are loaded
    runner = web.AppRunner(make_app(routes), access_log=None, shutdown_timeout=0.25)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("fake OpenAI server listening on http://%s:%d/v1", host, port)
        await stop.wait()
    finally:
        await runner.cleanup()


def _route(text: str) -> tuple[str, str]:
    name, sep, base = text.partition("=")
    if not sep or not name or base not in MODELS:
        raise argparse.ArgumentTypeError(f"expected NAME=OFFLINE_ID with OFFLINE_ID one of {', '.join(MODELS)}")
    return name, base


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m tests.fake_openai --port P [--host H] [--route NAME=OFFLINE_ID ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_openai",
        description="A fake OpenAI-compatible server over the offline models, with failure modes set "
                    "at runtime through POST /control. Run from the repository root; stops on SIGTERM.")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--route", type=_route, action="append", default=[], metavar="NAME=OFFLINE_ID",
                        help="serve model id NAME with an offline model, besides the default routes "
                             "(fake-intent, fake-writer-b, ...); repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args.host, args.port, {**DEFAULT_ROUTES, **dict(args.route)}))


# ------------------------------------------------------------------------------------ the test helper

def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]



CONTROL_BUDGET_S = 120.0
"""How long a control call (set, reset, stats, log) keeps being sent again while it times out."""


def _timed_out(exc: BaseException) -> bool:
    """Whether a urllib failure is a time-out (sent again) rather than a refusal (raised at once)."""
    return isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)


class FakeModels:
    """The fake server as a subprocess, driven from sync or async test code.

    ``FakeModels.start()`` spawns ``python -m tests.fake_openai`` (cwd: the repository root, the current
    interpreter) and returns once ``/healthz`` answers; point clients at :attr:`base_url`. Stop it with
    :meth:`stop` or use it as a context manager (``with FakeModels.start() as fake:``; ``with
    FakeModels() as fake:`` starts it too). Control calls are blocking stdlib HTTP; they are fast, but in
    an async test they do block the loop for that moment.
    """

    def __init__(self, port: int | None = None, *, routes: Mapping[str, str] | None = None) -> None:
        """Configures, does not start: see :meth:`start`. ``routes`` adds to :data:`DEFAULT_ROUTES`."""
        self.host = "127.0.0.1"
        self._wanted_port = port
        self.port: int | None = port
        self.routes = dict(routes or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: Any = None
        # Loopback only, so no proxy: a proxy from the environment would break or intercept the calls.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def start(cls, port: int | None = None, *, routes: Mapping[str, str] | None = None,
              timeout: float = 90.0) -> FakeModels:
        """A running fake on ``port`` (a free one if None). Raises RuntimeError if it is not healthy in
        ``timeout`` seconds or exits early (its output is in the message)."""
        fake = cls(port, routes=routes)
        fake._spawn(timeout)
        return fake

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:8711`` (control endpoints live here)."""
        if self.port is None:
            raise RuntimeError("FakeModels is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:8711/v1``."""
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _spawn(self, timeout: float) -> None:
        # A port picked here may be taken by someone else before the child binds it: retry with another.
        attempts = 1 if self._wanted_port is not None else 3
        for attempt in range(attempts):
            self.port = self._wanted_port or _free_port(self.host)
            cmd = [sys.executable, "-m", "tests.fake_openai", "--host", self.host, "--port", str(self.port)]
            cmd += [arg for name, base in self.routes.items() for arg in ("--route", f"{name}={base}")]
            # Output to a file, not a pipe: nobody reads it while the server runs, and a full pipe blocks.
            self._output = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=self._output, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                try:
                    with self._opener.open(f"{self.url}/healthz", timeout=1.0) as resp:
                        if resp.status == 200 and self._proc.poll() is None:
                            return
                except OSError:
                    pass
                time.sleep(0.05)
            output = self._drain()
            self.stop()
            if attempt == attempts - 1 or "address already in use" not in output.lower():
                raise RuntimeError(f"fake OpenAI server did not become healthy on port {self.port}:\n{output}")

    def _drain(self) -> str:
        if self._output is None:
            return ""
        self._output.seek(0)
        return self._output.read().decode(errors="replace")[-4000:]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        """One control call. Every control call is idempotent, so one that times out is sent again, for up to
        CONTROL_BUDGET_S: on a loaded machine the server's one event loop, busy with a whole cluster's model
        calls, can leave a control call unanswered past 10 s (a cluster test's fault then failed for that alone)."""
        data = None if body is None else json.dumps(body).encode()
        deadline = time.monotonic() + CONTROL_BUDGET_S
        while True:
            req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"content-type": "application/json"})
            try:
                return self._call_once(req)
            except (TimeoutError, urllib.error.URLError) as exc:
                if isinstance(exc, urllib.error.HTTPError) or time.monotonic() > deadline or not _timed_out(exc):
                    raise

    def _call_once(self, req: urllib.request.Request) -> Any:
        try:
            with self._opener.open(req, timeout=10.0) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = str(exc)
            if exc.code == 400:
                raise ValueError(message) from None
            raise

    def set(self, model: str, mode: str, count: int | None = None) -> None:
        """Sets ``model``'s mode (``"*"``: every model, replacing per-model modes). With ``count``, only
        the next ``count`` calls of that model (for ``"*"``: of all models together) get it, then the
        mode is ``"ok"``. Raises ValueError for an unknown model, mode or a bad count."""
        self._call("POST", "/control", {"model": model, "mode": mode, "count": count})

    def modes(self) -> dict[str, dict[str, Any]]:
        """``{"*" or model id: {"mode": str, "remaining": int | None}}``, the modes in effect now."""
        return self._call("GET", "/control")

    def reset(self) -> None:
        """Every model back to ``"ok"``; counters, log and stats cleared. A call in flight at the reset is
        left out of the new log and stats when it ends."""
        self._call("POST", "/control/reset", {})

    def in_flight(self) -> int:
        """How many chat requests the server is serving now (one whose client gave up still counts)."""
        return self._call("GET", "/in_flight")["in_flight"]

    def log(self) -> list[dict[str, Any]]:
        """The finished chat requests, oldest first (the last 10,000): ``{"t": arrival time.time(),
        "model": requested id or None, "mode": mode text or None, "status": int or "dropped",
        "elapsed": seconds}``. ``mode`` is None when the request never reached a model (bad body, unknown
        model)."""
        return self._call("GET", "/log")

    def stats(self) -> dict[str, dict[str, int]]:
        """``{model id: {status as a string: count}}`` since start or the last reset (``"-"``: no model)."""
        return self._call("GET", "/stats")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> FakeModels:
        if not self.running:
            self._spawn(20.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
