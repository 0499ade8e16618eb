"""Settings: one frozen object, read from the environment in one place (:func:`load`) and passed down.

Every setting has a default that works on a fresh machine with nothing configured: the broker and Redis
the project starts itself, and the offline model server when no ``OPENAI_BASE_URL`` is set.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, get_args

from streams.drift import DriftPolicy
from streams.errors import PipelineError
from streams.pipeline import Pipeline
from streams.policy import RetryPolicy, StepPolicy

REPO_ROOT: Path = Path(__file__).resolve().parents[1]

_SECRET_WORDS = ("password", "secret", "token", "key")

# The closed sets of string settings; the first value is the default. Checked at load: a typo is an error.
MissingPriority = Literal["human", "degrade"]
ModelOutage = Literal["dlq", "wait"]
DriftAction = Literal["fallback", "human"]
SchemaRegistryMode = Literal["off", "embedded"]
SubjectStrategy = Literal["topic", "record"]
# The schema registry client's own settings, passed through as TRIAGE_SCHEMA_REGISTRY_<NAME> (basic auth, TLS).
REGISTRY_CLIENT_PROPS = ("basic.auth.user.info", "basic.auth.credentials.source", "ssl.ca.location",
                         "ssl.certificate.location", "ssl.key.location", "ssl.key.password", "timeout")
# Read outside load() (the worker, the supervisor, the metrics server, the queue page), still checked here.
READ_ELSEWHERE = ("TRIAGE_PIPELINE", "TRIAGE_INSTANCE", "TRIAGE_METRICS_PORT", "TRIAGE_METRICS_BASE_PORT",
                  "TRIAGE_METRICS_HOST", "TRIAGE_REGISTRY_JAVA_HOME",
                  "TRIAGE_UI_TOKENS", "TRIAGE_UI_TOKENS_FILE",
                  # the insights worker's (streams.insights.settings)
                  "TRIAGE_INSIGHTS", "TRIAGE_INSIGHTS_PORT", "TRIAGE_INSIGHTS_WINDOW_S", "TRIAGE_PRICES",
                  "TRIAGE_ALERT_MULTIPLE", "TRIAGE_ALERT_BASELINE_WINDOWS", "TRIAGE_ALERT_MIN_HISTORY",
                  "TRIAGE_ALERT_MIN_ENDS")


def redact(props: Mapping[str, str]) -> dict[str, str]:
    return {k: ("***" if any(w in k.lower() for w in _SECRET_WORDS) else v) for k, v in props.items()}


def redact_url(url: str) -> str:
    """``redis://user:pw@host`` -> ``redis://user:***@host``."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


class Secret(str):
    """A string that never shows itself in a repr, a log line or a traceback."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        return str.__str__(self)


@dataclass(frozen=True)
class LoopGuards:
    """Bounds on one record's agent loop and spend: a loop that never ends is refused, never paid for."""

    max_tool_calls: int = 5
    """Tool calls one ticket's writer may make."""
    near_same: float = 0.8
    """Jaccard similarity of two calls' argument words at or above which they count as the same call."""
    max_calls: int = 16
    """Model calls one ticket may cost across all steps."""
    max_tokens: int = 40_000
    """Tokens one ticket may cost across all steps."""


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
    model_concurrency: int = 256
    """The most calls one worker keeps in flight to one model; the limit it keeps halves on time-outs and grows
    back on answers (streams/call_limit.py), so a model that falls behind is not retried into collapse."""
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
    missing_priority_policy: MissingPriority = "human"
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
    model_outage: ModelOutage = "dlq"
    """When every model of a chain is unreachable: 'dlq' settles the ticket now (degraded, escalated or
    dead-lettered); 'wait' holds it and retries until the step deadline, catching up when the models return."""
    kafka: Mapping[str, str] = field(default_factory=dict)
    """librdkafka properties for every client (SASL/TLS...), from [kafka] or TRIAGE_KAFKA_*."""
    schema_registry_url: str = ""
    """An external Schema Registry (TRIAGE_SCHEMA_REGISTRY_URL, Confluent's REST API): producers register their
    schemas there and use its ids, readers resolve ids through it. Set, triage starts no registry of its own."""
    schema_registry: SchemaRegistryMode = "off"
    """Without a URL: 'embedded' starts the project's own registry (Apicurio, KafkaSQL storage on the broker)
    with `triage up` and uses it; 'off' keeps the local id table of schemas/registry.json."""
    schema_registry_port: int = 8781
    """Loopback port of the embedded registry (TRIAGE_SCHEMA_REGISTRY_PORT); its management port is the next."""
    subject_strategy: SubjectStrategy = "topic"
    """Subject a schema is registered under: 'topic' is ``<topic>-value`` (Confluent's default), 'record' the
    record's full name (``dev.triage.Case``), one subject for every topic that carries it."""
    schema_registry_client: Mapping[str, str] = field(default_factory=dict)
    """The registry client's basic-auth and TLS settings (TRIAGE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO...)."""
    pipeline: str = ""
    """The pipeline these settings were read for (TRIAGE_PIPELINE; empty: support): what the stack creates
    topics for and starts workers of."""

    def __repr__(self) -> str:
        # Settings end up in tracebacks and debug logs: never with a secret in them.
        shown = {k: v for k, v in self.__dict__.items()
                 if k not in ("api_key", "kafka", "redis_url", "schema_registry_url", "schema_registry_client")}
        return (f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())}, api_key='***', "
                f"redis_url={redact_url(self.redis_url)!r}, kafka={redact(self.kafka)!r})")

    @property
    def registry_url(self) -> str | None:
        """The Schema Registry every producer and reader uses (the external one, else the embedded one's
        Confluent-compatible API), or None: the local id table."""
        if self.schema_registry_url:
            return self.schema_registry_url
        if self.schema_registry == "embedded":
            return f"http://127.0.0.1:{self.schema_registry_port}/apis/ccompat/v6"
        return None

    @property
    def manage_schema_registry(self) -> bool:
        """True when `triage up` starts the registry itself."""
        return self.schema_registry == "embedded" and not self.schema_registry_url

    def policy(self, step: str) -> StepPolicy:
        return StepPolicy(models=self.models[step], timeout_s=self.step_timeout_s, retry=self.retry,
                          deadline_s=self.step_deadline_s)


class _Env(dict):
    """The merged environment, remembering which names :func:`load` asked for: a key of the config file that
    nothing reads is a typo (``drift_acton``), refused instead of silently ignored."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def _raw(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return None if raw is None or raw.strip() == "" else raw.strip()


def _int(env: Mapping[str, str], name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number{_range(low, high)}, got {raw!r}") from None
    return int(_bounded(value, name, low, high))


def _float(env: Mapping[str, str], name: str, default: float, low: float | None = None,
           high: float | None = None) -> float:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number{_range(low, high)}, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SystemExit(f"{name} must be a finite number{_range(low, high)}, got {raw!r}")
    return _bounded(value, name, low, high)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" between {_num(low)} and {_num(high)}"
    if low is not None:
        return f" of at least {_num(low)}"
    return f" of at most {_num(high)}" if high is not None else ""


def _bounded(value: float, name: str, low: float | None, high: float | None) -> float:
    if (low is not None and value < low) or (high is not None and value > high):
        raise SystemExit(f"{name} must be{_range(low, high)}, got {_num(value)}")
    return value


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    """One of a closed set; the first is the default. A typo must not silently take the other branch."""
    raw = _raw(env, name)
    if raw is None:
        return allowed[0]
    if raw.lower() not in allowed:
        raise SystemExit(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")
    return raw.lower()


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = _raw(env, name)
    if raw is None:
        return default
    if raw.lower() not in _TRUE + _FALSE:
        raise SystemExit(f"{name} must be one of {', '.join(_TRUE + _FALSE)}; got {raw!r}")
    return raw.lower() in _TRUE


def _names(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    chosen = tuple(c.strip() for c in (_raw(env, name) or default).split(",") if c.strip())
    unknown = [c for c in chosen if c not in allowed]
    if unknown:
        raise SystemExit(f"{name}: unknown {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    return tuple(dict.fromkeys(chosen))


def _tenants(env: Mapping[str, str]) -> tuple[str, ...]:
    """Tenant names by the rule every Redis key is checked against: a tenant the rule refuses would pass ingest
    and then fail every state access, so each of its tickets would be escalated."""
    # One rule, defined where every state key is checked.
    from streams.tenant_state import _TENANT_RE as TENANT_RULE
    tenants = tuple(t.strip() for t in (_raw(env, "TRIAGE_TENANTS") or "acme,globex").split(",") if t.strip())
    bad = [t for t in tenants if not TENANT_RULE.match(t)]
    if bad or not tenants:
        raise SystemExit(f"TRIAGE_TENANTS: {', '.join(map(repr, bad)) or 'no tenant given'}; each tenant must be 1 to "
                         f"63 of a-z, 0-9, '_' and '-', starting with a letter or digit (lower case)")
    if len(set(tenants)) != len(tenants):
        raise SystemExit(f"TRIAGE_TENANTS names a tenant twice: {','.join(tenants)}")
    return tenants


def _printable(env: Mapping[str, str], name: str, limit: int = 200) -> str | None:
    raw = _raw(env, name)
    if raw is not None and (len(raw) > limit or not raw.isprintable() or any(c.isspace() for c in raw)):
        raise SystemExit(f"{name} must be at most {limit} printable characters without spaces, got {raw[:60]!r}")
    return raw


_BOOTSTRAP_ENTRY = re.compile(r"(?:[A-Za-z_]+://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?")


def _bootstrap(value: str) -> str:
    for entry in value.split(","):
        m = _BOOTSTRAP_ENTRY.fullmatch(entry.strip())
        if not m or (m.group(1) and not 0 < int(m.group(1)) < 65536):
            raise SystemExit(f"TRIAGE_BOOTSTRAP must be host:port[,host:port...], got {value[:200]!r}")
    return value


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str:
    raw = _raw(env, name) or ""
    if raw and (not raw.lower().startswith(tuple(f"{s}://" for s in schemes)) or not raw.isprintable()):
        raise SystemExit(f"{name} must be a URL starting with {' or '.join(f'{s}://' for s in schemes)}, "
                         f"got {redact_url(raw)[:200]!r}")
    return raw


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


def registry_client_properties(env: Mapping[str, str]) -> dict[str, str]:
    """The registry client's settings from TRIAGE_SCHEMA_REGISTRY_<NAME> (``..._SSL_CA_LOCATION`` ->
    ``ssl.ca.location``), only the names of :data:`REGISTRY_CLIENT_PROPS`."""
    out = {}
    for prop in REGISTRY_CLIENT_PROPS:
        value = _raw(env, "TRIAGE_SCHEMA_REGISTRY_" + prop.upper().replace(".", "_"))
        if value is not None:
            out[prop] = value
    return out


def merged_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The config file (TRIAGE_CONFIG, else ./triage.toml if present) overridden by the environment."""
    env = dict(os.environ if env is None else env)
    path = env.get("TRIAGE_CONFIG") or ("triage.toml" if Path("triage.toml").is_file() else "")
    return {**file_env(Path(path)), **env} if path else env


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the config file and ``env`` (default: the process environment; the environment
    wins). Every value is checked here, at start: a bad one exits with one line naming the setting and what
    it may be (no traceback), instead of a worker taking the other branch of a typo at its first ticket."""
    file = _config_file(env)
    env = _Env(merged_env(env))
    settings = _build(env)
    for name in READ_ELSEWHERE:
        env.get(name)
    unknown_models = sorted(k for k in env if k.startswith("TRIAGE_MODEL_") and k not in env.asked)
    if unknown_models:
        raise SystemExit(f"{unknown_models[0]}: no step is called that; model chains are "
                         + ", ".join(_model_var(s) for s in _pipeline(env).models))
    if file is not None:
        unknown = sorted(k for k in file_env(file) if k not in env.asked and not k.startswith("TRIAGE_KAFKA_"))
        if unknown:
            raise SystemExit(f"config file {file}: unknown setting {unknown[0]} (a typo?); see deploy/triage.example.toml")
    return settings


def known_settings() -> frozenset[str]:
    """Every variable triage reads (the TRIAGE_KAFKA_* pass-through aside)."""
    env = _Env({})
    _build(env)
    return frozenset(env.asked | set(READ_ELSEWHERE) | {_model_var(s) for s in _pipeline(env).models})


def _model_var(step: str) -> str:
    return f"TRIAGE_MODEL_{step.upper().replace('-', '_')}"


def _config_file(env: Mapping[str, str] | None) -> Path | None:
    env = os.environ if env is None else env
    path = env.get("TRIAGE_CONFIG") or ("triage.toml" if Path("triage.toml").is_file() else "")
    return Path(path) if path else None


def _build(env: _Env) -> Settings:
    home = Path(env.get("TRIAGE_HOME") or (REPO_ROOT / ".triage")).resolve()
    env.get("TRIAGE_CONFIG")
    redis_port = _int(env, "TRIAGE_REDIS_PORT", 6390, 1, 65535)
    redis_url = _url(env, "TRIAGE_REDIS_URL", ("redis", "rediss", "unix"))
    offline_port = _int(env, "TRIAGE_OFFLINE_PORT", 8700, 1, 65535)
    base_url = _url(env, "OPENAI_BASE_URL", ("http", "https"))
    offline = not base_url
    pipeline = _pipeline(env)
    defaults = {name: (m.offline if offline else m.remote) for name, m in pipeline.models.items()}
    models = {}
    for step, chain in defaults.items():
        raw = env.get(_model_var(step))
        if raw is not None and raw.strip():
            chain = tuple(m.strip() for m in raw.split(",") if m.strip())
            if not chain or not all(m.isprintable() and " " not in m for m in chain):
                raise SystemExit(f"{_model_var(step)} must be model names separated by commas, got {raw[:200]!r}")
        models[step] = chain
    _int(env, "TRIAGE_METRICS_PORT", 0, 0, 65535)
    _int(env, "TRIAGE_METRICS_BASE_PORT", 9400, 1, 65000)
    _printable(env, "TRIAGE_METRICS_HOST")
    _printable(env, "TRIAGE_INSTANCE")
    retry = RetryPolicy(attempts=_int(env, "TRIAGE_RETRIES", 3, 1, 20),
                        initial_s=_float(env, "TRIAGE_BACKOFF_S", 0.2, 0.0, 60.0))
    trip_at = _float(env, "TRIAGE_DRIFT_TRIP", 0.05, 0.001, 1.0)
    clear_at = _float(env, "TRIAGE_DRIFT_CLEAR", min(0.02, trip_at), 0.0, trip_at)
    step_timeout_s = _float(env, "TRIAGE_MODEL_TIMEOUT_S", 10.0, 0.1, 600.0)
    classifiers = tuple(pipeline.extras.get("classifiers", ()))
    return Settings(
        home=home,
        bootstrap=_bootstrap(_raw(env, "TRIAGE_BOOTSTRAP") or _cluster_bootstrap(home) or "127.0.0.1:9092"),
        redis_url=redis_url or f"redis://127.0.0.1:{redis_port}/0",
        redis_port=redis_port,
        manage_redis=not redis_url,
        model_base_url=base_url or f"http://127.0.0.1:{offline_port}/v1",
        api_key=Secret(env.get("OPENAI_API_KEY") or "offline"),
        offline=offline,
        offline_port=offline_port,
        models=models,
        partitions=_int(env, "TRIAGE_PARTITIONS", 6, 1, 1000),
        tenants=_tenants(env),
        # The body reaches the join's state and every prompt: past this a case may not fit one record.
        max_body_chars=_int(env, "TRIAGE_MAX_BODY_CHARS", 20_000, 1, 50_000),
        max_in_flight=_int(env, "TRIAGE_MAX_IN_FLIGHT", 256, 1, 100_000),
        model_concurrency=_int(env, "TRIAGE_MODEL_CONCURRENCY", 256, 1, 100_000),
        partition_serial=_flag(env, "TRIAGE_PARTITION_SERIAL"),
        commit_interval_s=_float(env, "TRIAGE_COMMIT_INTERVAL_S", 0.1, 0.001, 60.0),
        pause_after_s=_float(env, "TRIAGE_PAUSE_AFTER_S", 1.0, 0.0, 30.0),
        join_timeout_s=_float(env, "TRIAGE_JOIN_TIMEOUT_S", 120.0, 1.0, 86_400.0),
        missing_priority_policy=_choice(env, "TRIAGE_MISSING_PRIORITY", get_args(MissingPriority)),  # type: ignore[arg-type]
        data_dir=_data_dir(env),
        step_timeout_s=step_timeout_s,
        step_deadline_s=_float(env, "TRIAGE_STEP_DEADLINE_S", 60.0, 1.0, 86_400.0),
        retry=retry,
        drift=DriftPolicy(window=_int(env, "TRIAGE_DRIFT_WINDOW", 200, 10, 1_000_000),
                          baseline=_int(env, "TRIAGE_DRIFT_BASELINE", 500, 10, 1_000_000),
                          trip_at=trip_at, clear_at=clear_at,
                          action=_choice(env, "TRIAGE_DRIFT_ACTION", get_args(DriftAction)),
                          classifiers=_names(env, "TRIAGE_DRIFT_CLASSIFIERS", ",".join(classifiers), classifiers)),
        loop=LoopGuards(max_tool_calls=_int(env, "TRIAGE_MAX_TOOL_CALLS", 5, 0, 100),
                        max_calls=_int(env, "TRIAGE_BUDGET_CALLS", 16, 1, 1000),
                        max_tokens=_int(env, "TRIAGE_BUDGET_TOKENS", 40_000, 100, 100_000_000)),
        response_cache=_flag(env, "TRIAGE_RESPONSE_CACHE"),
        pipeline=_raw(env, "TRIAGE_PIPELINE") or "",
        schema_registry_url=_url(env, "TRIAGE_SCHEMA_REGISTRY_URL", ("http", "https")).rstrip("/"),
        schema_registry=_choice(env, "TRIAGE_SCHEMA_REGISTRY", get_args(SchemaRegistryMode)),  # type: ignore[arg-type]
        schema_registry_port=_int(env, "TRIAGE_SCHEMA_REGISTRY_PORT", 8781, 1, 65534),
        subject_strategy=_choice(env, "TRIAGE_SUBJECT_NAME_STRATEGY", get_args(SubjectStrategy)),  # type: ignore[arg-type]
        schema_registry_client=registry_client_properties(env),
        kafka=kafka_properties(env),
        model_outage=_choice(env, "TRIAGE_MODEL_OUTAGE", get_args(ModelOutage)),  # type: ignore[arg-type]
    )


def _pipeline(env: Mapping[str, str]) -> Pipeline:
    """The pipeline TRIAGE_PIPELINE names: its model chains and classifiers are settings. One that cannot be
    loaded stops here, with the reason, like any other bad setting."""
    from streams import pipelines  # at call time: a pipeline's own modules import this one
    try:
        return pipelines.load(_raw(env, pipelines.ENV))
    except PipelineError as exc:
        raise SystemExit(f"{pipelines.ENV}: {exc}") from None


def _data_dir(env: Mapping[str, str]) -> Path:
    raw = _raw(env, "TRIAGE_DATA")
    if raw is None:
        return REPO_ROOT / "deploy" / "sample"
    if not Path(raw).is_dir():
        raise SystemExit(f"TRIAGE_DATA must be a folder (of tickets.jsonl and kb/), got {raw!r}")
    return Path(raw)
