"""The offline provider as a local OpenAI-compatible HTTP server (aiohttp).

Endpoints: ``GET /healthz``, ``GET /v1/models``, ``POST /v1/chat/completions``. The request's last
``user`` message carries a JSON string; its shape depends on the model:

* ``offline-intent|language|priority|sentiment``: ``{"subject", "body"}`` -> ``{"label", "confidence"}``
* ``offline-writer``, ``offline-writer-strong``: ``{"ticket", "documents"}`` -> ``{"reply", "citations"}``
* ``offline-judge``: ``{"ticket", "draft", "documents"}`` -> ``{"score", "passed", "checks"}``

The answer is the assistant message's ``content``, itself a JSON string. Errors use OpenAI's shape:
404 ``model_not_found`` for an unknown model, 400 ``invalid_request_error`` for a bad body. Answers are
deterministic (the completion id is a hash of the request); nothing is read from disk per request.

Run it with ``python -m processors.offline.server --port 8700``.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import time
from typing import Any, Callable

from aiohttp import web

from processors.offline.classify import classify, warm
from processors.offline.judge import judge
from processors.offline.write import write_reply

log = logging.getLogger("triage.offline")

CLASSIFIERS = {f"offline-{task}": task for task in ("intent", "language", "priority", "sentiment")}
MODELS = (*CLASSIFIERS, "offline-writer", "offline-writer-strong", "offline-judge")
_OWNER = "triage-offline"
_STARTED = 1_700_000_000  # a fixed "created" for /v1/models, so the listing is deterministic


class UnknownModel(Exception):
    """No such model; becomes a 404 ``model_not_found``."""


class BadRequest(Exception):
    """The request cannot be served; becomes a 400 with the message."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _error(status: int, message: str, code: str | None, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.json_response(body, status=status)


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind):
        raise BadRequest(f"content field {name!r} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _documents(doc: dict[str, Any]) -> list[dict[str, Any]]:
    docs = _field(doc, "documents", list)
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or not isinstance(d.get("doc_id"), str) or not isinstance(d.get("body"), str):
            raise BadRequest(f"documents[{i}] needs string fields 'doc_id' and 'body'")
    return docs


def _run_classifier(task: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def run(doc: dict[str, Any]) -> dict[str, Any]:
        label, confidence = classify(task, _field(doc, "subject", str), _field(doc, "body", str))
        return {"label": label, "confidence": confidence}
    return run


def _run_model(model: Callable[[str, str], tuple[str, float]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def run(doc: dict[str, Any]) -> dict[str, Any]:
        label, confidence = model(_field(doc, "subject", str), _field(doc, "body", str))
        return {"label": label, "confidence": confidence}
    return run


def serve_pipeline_models(models: dict[str, Callable[[str, str], tuple[str, float]]]) -> list[str]:
    """Also serve the offline classifiers a pipeline declares (a fifth classifier brings its own); the ids
    already served keep their model. Returns the ids added."""
    global MODELS
    added = [m for m in models if m not in _HANDLERS]
    for m in added:
        _HANDLERS[m] = _run_model(models[m])
    MODELS = (*MODELS, *added)
    return added


def _run_writer(strong: bool) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def run(doc: dict[str, Any]) -> dict[str, Any]:
        return write_reply(_field(doc, "ticket", dict), _documents(doc), strong=strong)
    return run


def _run_judge(doc: dict[str, Any]) -> dict[str, Any]:
    draft = _field(doc, "draft", dict)
    if not isinstance(draft.get("reply"), str) or not isinstance(draft.get("citations"), list):
        raise BadRequest("content field 'draft' needs 'reply' (string) and 'citations' (list)")
    return judge(_field(doc, "ticket", dict), draft, _documents(doc))


_HANDLERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    **{model: _run_classifier(task) for model, task in CLASSIFIERS.items()},
    "offline-writer": _run_writer(False),
    "offline-writer-strong": _run_writer(True),
    "offline-judge": _run_judge,
}


def _text(content: Any) -> str:
    """A message's text: a plain string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4)  # the usual ~4 characters per token; deterministic is what matters


def _complete(body: Any) -> dict[str, Any]:
    """The chat.completion for a parsed request body; raises BadRequest or UnknownModel."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required", param="model")
    handler = _HANDLERS.get(model)
    if handler is None:
        raise UnknownModel(f"The model '{model}' does not exist")
    if body.get("stream"):
        raise BadRequest("streaming is not supported by the offline provider", param="stream")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", param="messages")
    user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not user:
        raise BadRequest("no message with role 'user'", param="messages")
    prompt = _text(user[-1].get("content"))
    try:
        doc = json.loads(prompt)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the last user message must be a JSON string: {exc}", param="messages") from None
    if not isinstance(doc, dict):
        raise BadRequest("the last user message must be a JSON object", param="messages")
    content = json.dumps(handler(doc), ensure_ascii=False, separators=(",", ":"))
    prompt_chars = sum(len(_text(m.get("content"))) for m in messages if isinstance(m, dict))
    prompt_tokens, completion_tokens = _tokens(prompt_chars), _tokens(len(content))
    digest = hashlib.sha256(f"{model}\n{prompt}".encode()).hexdigest()[:24]
    return {
        "id": f"chatcmpl-offline-{digest}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


async def _chat_completions(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "the request body is not valid JSON", None)
    if _abandoned(request):
        return web.Response(status=499)
    try:
        return web.json_response(_complete(body))
    except UnknownModel as exc:
        return _error(404, str(exc), "model_not_found", "model")
    except BadRequest as exc:
        return _error(400, str(exc), None, exc.param)


def _abandoned(request: web.Request) -> bool:
    """True when the caller has hung up (its time-out passed while the request queued).

    Answering it anyway is how an overloaded server collapses: the caller has already retried, so every
    answer computed for a dead connection is work done twice, and the queue only grows.
    """
    return request.transport is None or request.transport.is_closing()


async def _models(_: web.Request) -> web.Response:
    data = [{"id": m, "object": "model", "created": _STARTED, "owned_by": _OWNER} for m in MODELS]
    return web.json_response({"object": "list", "data": data})


async def _model(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    if model not in _HANDLERS:
        return _error(404, f"The model '{model}' does not exist", "model_not_found", "model")
    return web.json_response({"id": model, "object": "model", "created": _STARTED, "owned_by": _OWNER})


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app() -> web.Application:
    """The aiohttp application; stateless, so one process can serve many pipelines."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model}", _model)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    return app


async def serve(host: str, port: int) -> None:
    """Serves :func:`make_app` on ``host:port`` until cancelled."""
    warm()  # before listening: the first burst of tickets must not wait for the models to load
    # Access logs would cost more than the answers; a handler whose caller hung up is cancelled (see _abandoned).
    runner = web.AppRunner(make_app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("offline model server listening on http://%s:%d/v1", host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m processors.offline.server [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(prog="python -m processors.offline.server",
                                     description="Serve triage's offline models over an OpenAI-compatible API.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8700, help="port to listen on (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from streams import pipelines  # the pipeline TRIAGE_PIPELINE names, as the workers that call us run it
    added = serve_pipeline_models(dict(pipelines.active().extras.get("offline_models", {})))
    if added:
        log.info("serving the pipeline's own offline models too: %s", ", ".join(added))
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
