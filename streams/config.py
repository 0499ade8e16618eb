"""Settings: one frozen object, read from the environment in one place (:func:`load`) and passed down.

Every setting has a default that works on a fresh machine with nothing configured: the broker and Redis
the project starts itself, and the offline model server when no ``OPENAI_BASE_URL`` is set.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from processors.tool_loop import LoopGuards
from streams.drift import DriftPolicy
from streams.policy import RetryPolicy, StepPolicy

REPO_ROOT: Path = Path(__file__).resolve().parents[1]

OFFLINE_MODELS: Mapping[str, tuple[str, ...]] = {
    "classify-intent": ("offline-intent",),
    "classify-language": ("offline-language",),
    "classify-priority": ("offline-priority",),
    "classify-sentiment": ("offline-sentiment",),
    "generate": ("offline-writer",),
    "generate-strong": ("offline-writer-strong",),
    "gate": ("offline-judge",),
}
# With a real endpoint: a small model serves, the stronger one is only a fallback (cost guard).
REMOTE_MODELS: Mapping[str, tuple[str, ...]] = {
    "classify-intent": ("gpt-4o-mini",),
    "classify-language": ("gpt-4o-mini",),
    "classify-priority": ("gpt-4o-mini",),
    "classify-sentiment": ("gpt-4o-mini",),
    "generate": ("gpt-4o-mini",),
    "generate-strong": ("gpt-4o",),
    "gate": ("gpt-4o-mini",),
}


_SECRET_WORDS = ("password", "secret", "token", "key")


def redact(props: Mapping[str, str]) -> dict[str, str]:
    return {k: ("***" if any(w in k.lower() for w in _SECRET_WORDS) else v) for k, v in props.items()}


def redact_url(url: str) -> str:
    """``redis://user:pw@host`` -> ``redis://user:***@host``."""
    import re
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


class Secret(str):
    """A string that never shows itself in a repr, a log line or a traceback."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        return str.__str__(self)


@dataclass(frozen=True)
class Settings:
    """Everything a triage process needs to know. Build with :func:`load`."""

    home: Path
    """Folder of all local state: Kafka logs, Redis data, pid files, worker logs."""
    bootstrap: str
    """Kafka bootstrap servers (TRIAGE_BOOTSTRAP)."""
    redis_url: str
    """Redis URL (TRIAGE_REDIS_URL); by default the redis-server the project starts."""
    redis_port: int
    """Port of the project's own redis-server when TRIAGE_REDIS_URL is not set."""
    manage_redis: bool
    """True when the project starts Redis itself."""
    model_base_url: str
    """OpenAI-compatible endpoint; the offline server's when OPENAI_BASE_URL is not set."""
    api_key: Secret
    offline: bool
    """True when the shipped offline provider serves every step."""
    offline_port: int
    models: Mapping[str, tuple[str, ...]]
    """Fallback chain per step (TRIAGE_MODEL_<STEP>=a,b,c)."""
    partitions: int = 6
    tenants: tuple[str, ...] = ("acme", "globex")
    """Tenants that may submit tickets (TRIAGE_TENANTS); others are dead-lettered UNKNOWN_TENANT."""
    max_body_chars: int = 20_000
    max_value_bytes: int = 256 * 1024
    max_in_flight: int = 256
    """Records one step runner holds at once (handling, or done and waiting for their commit); past it the
    runner takes no more, and pauses its partitions if that lasts longer than ``pause_after_s``."""
    partition_serial: bool = False
    """One record in flight per partition: the naive consumer, kept for benchmarks and strict ordering."""
    commit_interval_s: float = 0.1
    """How often completed records are committed (one transaction for all of them) while work is in flight."""
    pause_after_s: float = 1.0
    """A runner full (max_in_flight) for longer than this pauses its partitions; before, it waits for a commit.
    At most 30 s: a runner that waits does not poll, so a rebalance of its group waits as long."""
    max_batch: int = 500
    join_timeout_s: float = 120.0
    """A join that has not seen four classifications by then carries on with what it has."""
    missing_priority_policy: str = "human"
    """When the priority classifier's result is missing: 'human' escalates, 'degrade' assumes medium."""
    retrieval_min_chars: int = 60
    """Tickets shorter than this are answered without retrieval."""
    retrieval_skip_intents: tuple[str, ...] = ("general",)
    retrieval_top_k: int = 3
    max_regenerations: int = 1
    """Times the gate may send a draft back to the stronger writer before a human takes it."""
    data_dir: Path = field(default_factory=lambda: REPO_ROOT / "deploy" / "sample")
    step_timeout_s: float = 10.0
    step_deadline_s: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    loop: LoopGuards = field(default_factory=LoopGuards)
    response_cache: bool = False
    """Reuse the reply to an identical question of the same tenant (off: answers must be fresh by default)."""
    model_outage: str = "dlq"
    """When every model of a chain is unreachable: 'dlq' settles the ticket now (degraded, escalated or
    dead-lettered); 'wait' holds it and retries until the step deadline, catching up when the models return."""
    kafka: Mapping[str, str] = field(default_factory=dict)
    """librdkafka properties for every client (SASL/TLS...), from [kafka] or TRIAGE_KAFKA_*."""

    def __repr__(self) -> str:
        # Settings end up in tracebacks and debug logs: never with a secret in them.
        shown = {k: v for k, v in self.__dict__.items() if k not in ("api_key", "kafka", "redis_url")}
        return (f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())}, api_key='***', "
                f"redis_url={redact_url(self.redis_url)!r}, kafka={redact(self.kafka)!r})")

    def policy(self, step: str) -> StepPolicy:
        return StepPolicy(models=self.models[step], timeout_s=self.step_timeout_s, retry=self.retry,
                          deadline_s=self.step_deadline_s)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


def _bounded(value: float, name: str, low: float, high: float) -> float:
    if not low <= value <= high:
        raise SystemExit(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def _cluster_bootstrap(home: Path) -> str | None:
    """The bootstrap of the local cluster `triage up --brokers N` started under ``home``, if any."""
    import json
    try:
        return json.loads((home / "cluster.json").read_text())["bootstrap"]
    except (OSError, ValueError, KeyError):
        return None


def file_env(path: Path) -> dict[str, str]:
    """A config file (TOML) as the environment variables it stands for.

    Top-level keys are the variable names without ``TRIAGE_`` (``bootstrap = "..."`` is TRIAGE_BOOTSTRAP);
    ``[models]`` holds chains (``generate = ["a", "b"]`` is TRIAGE_MODEL_GENERATE); ``[kafka]`` holds librdkafka
    properties passed to every client (``"sasl.password" = "..."`` is TRIAGE_KAFKA_SASL_PASSWORD); ``[openai]``
    holds ``base_url`` and ``api_key``. See deploy/triage.example.toml.
    """
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"cannot read config file {path}: {exc}") from None
    out: dict[str, str] = {}
    for key, value in doc.items():
        if key == "models" and isinstance(value, dict):
            for step, chain in value.items():
                out[f"TRIAGE_MODEL_{step.upper().replace('-', '_')}"] = ",".join(chain) if isinstance(chain, list) else str(chain)
        elif key == "kafka" and isinstance(value, dict):
            for prop, v in value.items():
                out[kafka_env_name(prop)] = str(v)
        elif key == "openai" and isinstance(value, dict):
            for k, v in value.items():
                out[f"OPENAI_{k.upper()}"] = str(v)
        elif isinstance(value, list):
            out[f"TRIAGE_{key.upper()}"] = ",".join(map(str, value))
        else:
            out[f"TRIAGE_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def kafka_env_name(prop: str) -> str:
    return "TRIAGE_KAFKA_" + prop.upper().replace(".", "_")


def kafka_properties(env: Mapping[str, str]) -> dict[str, str]:
    """librdkafka properties from TRIAGE_KAFKA_* (``TRIAGE_KAFKA_SECURITY_PROTOCOL`` -> ``security.protocol``)."""
    return {k.removeprefix("TRIAGE_KAFKA_").lower().replace("_", "."): v
            for k, v in env.items() if k.startswith("TRIAGE_KAFKA_")}


def merged_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The config file (TRIAGE_CONFIG, else ./triage.toml if present) overridden by the environment."""
    env = dict(os.environ if env is None else env)
    path = env.get("TRIAGE_CONFIG") or ("triage.toml" if Path("triage.toml").is_file() else "")
    return {**file_env(Path(path)), **env} if path else env


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the config file and ``env`` (default: the process environment; the environment
    wins). Exits with a clear message on bad values."""
    env = merged_env(env)
    home = Path(env.get("TRIAGE_HOME") or (REPO_ROOT / ".triage")).resolve()
    redis_port = _int(env, "TRIAGE_REDIS_PORT", 6390)
    redis_url = env.get("TRIAGE_REDIS_URL") or ""
    offline_port = _int(env, "TRIAGE_OFFLINE_PORT", 8700)
    base_url = env.get("OPENAI_BASE_URL") or ""
    offline = not base_url
    defaults = OFFLINE_MODELS if offline else REMOTE_MODELS
    models = {
        step: tuple(m.strip() for m in env[f"TRIAGE_MODEL_{step.upper().replace('-', '_')}"].split(",") if m.strip())
        if env.get(f"TRIAGE_MODEL_{step.upper().replace('-', '_')}") else chain
        for step, chain in defaults.items()
    }
    tenants = tuple(t.strip() for t in (env.get("TRIAGE_TENANTS") or "acme,globex").split(",") if t.strip())
    retry = RetryPolicy(attempts=_int(env, "TRIAGE_RETRIES", 3), initial_s=_float(env, "TRIAGE_BACKOFF_S", 0.2))
    return Settings(
        home=home,
        bootstrap=env.get("TRIAGE_BOOTSTRAP") or _cluster_bootstrap(home) or "127.0.0.1:9092",
        redis_url=redis_url or f"redis://127.0.0.1:{redis_port}/0",
        redis_port=redis_port,
        manage_redis=not redis_url,
        model_base_url=base_url or f"http://127.0.0.1:{offline_port}/v1",
        api_key=Secret(env.get("OPENAI_API_KEY") or "offline"),
        offline=offline,
        offline_port=offline_port,
        models=models,
        partitions=_int(env, "TRIAGE_PARTITIONS", 6),
        tenants=tenants,
        max_in_flight=_int(env, "TRIAGE_MAX_IN_FLIGHT", 256),
        partition_serial=(env.get("TRIAGE_PARTITION_SERIAL") or "0").lower() in ("1", "true", "yes", "on"),
        commit_interval_s=_float(env, "TRIAGE_COMMIT_INTERVAL_S", 0.1),
        pause_after_s=_bounded(_float(env, "TRIAGE_PAUSE_AFTER_S", 1.0), "TRIAGE_PAUSE_AFTER_S", 0.0, 30.0),
        join_timeout_s=_float(env, "TRIAGE_JOIN_TIMEOUT_S", 120.0),
        missing_priority_policy=env.get("TRIAGE_MISSING_PRIORITY") or "human",
        data_dir=Path(env.get("TRIAGE_DATA") or (REPO_ROOT / "deploy" / "sample")),
        step_timeout_s=_float(env, "TRIAGE_MODEL_TIMEOUT_S", 10.0),
        step_deadline_s=_float(env, "TRIAGE_STEP_DEADLINE_S", 60.0),
        retry=retry,
        drift=DriftPolicy(window=_int(env, "TRIAGE_DRIFT_WINDOW", 200), baseline=_int(env, "TRIAGE_DRIFT_BASELINE", 500),
                          trip_at=_float(env, "TRIAGE_DRIFT_TRIP", 0.05), clear_at=_float(env, "TRIAGE_DRIFT_CLEAR", 0.02),
                          action=env.get("TRIAGE_DRIFT_ACTION") or "fallback",
                          classifiers=tuple(c.strip() for c in (env.get("TRIAGE_DRIFT_CLASSIFIERS")
                                                                or "intent,language,priority,sentiment").split(",") if c.strip())),
        loop=LoopGuards(max_tool_calls=_int(env, "TRIAGE_MAX_TOOL_CALLS", 5),
                        max_calls=_int(env, "TRIAGE_BUDGET_CALLS", 16),
                        max_tokens=_int(env, "TRIAGE_BUDGET_TOKENS", 40_000)),
        response_cache=(env.get("TRIAGE_RESPONSE_CACHE") or "0").lower() in ("1", "true", "yes", "on"),
        kafka=kafka_properties(env),
        model_outage=env.get("TRIAGE_MODEL_OUTAGE") or "dlq",
    )
