"""Per-record context in contextvars, bound into every log line; and the JSON log format.

A step reads the current record's identity through :func:`current` instead of a global, so concurrent
records of different tenants never see each other's context.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RecordContext:
    step: str
    correlation_id: str
    tenant_id: str
    attempt: int
    topic: str
    partition: int
    offset: int


_current: ContextVar[RecordContext | None] = ContextVar("triage_record", default=None)


def bind(ctx: RecordContext) -> object:
    return _current.set(ctx)


def reset(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def current() -> RecordContext | None:
    return _current.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the record context (correlation ID, tenant, ...) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = _current.get()
        if ctx is not None:
            out.update(asdict(ctx))
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter (httpx logs every request) drowns the lines an operator needs.
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
