"""Configuration: one documented file plus environment overrides; secrets never shown."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streams import config
from streams.context import JsonFormatter
from streams.kafka_io import consumer_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_need_no_configuration() -> None:
    s = config.load({})
    assert s.bootstrap == "127.0.0.1:9092" and s.offline and s.manage_redis
    assert s.models["classify-intent"] == ("offline-intent",)


def test_the_example_file_parses_to_the_defaults() -> None:
    env = config.file_env(REPO / "deploy" / "triage.example.toml")
    s = config.load({"TRIAGE_CONFIG": str(REPO / "deploy" / "triage.example.toml")})
    assert env["TRIAGE_BOOTSTRAP"] == "127.0.0.1:9092" and env["TRIAGE_TENANTS"] == "acme,globex"
    assert s.partitions == 6 and s.drift.window == 200 and s.loop.max_tool_calls == 5 and not s.response_cache


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    f = tmp_path / "triage.toml"
    f.write_text('bootstrap = "kafka-a:9092"\npartitions = 12\n[models]\ngenerate = ["m1", "m2"]\n'
                 '[kafka]\n"security.protocol" = "SASL_SSL"\n"sasl.password" = "hunter2"\n'
                 '[openai]\nbase_url = "http://llm:8000/v1"\napi_key = "sk-file"\n')
    s = config.load({"TRIAGE_CONFIG": str(f), "TRIAGE_PARTITIONS": "3"})
    assert s.bootstrap == "kafka-a:9092" and s.partitions == 3
    assert s.models["generate"] == ("m1", "m2") and not s.offline and s.model_base_url == "http://llm:8000/v1"
    assert s.kafka == {"security.protocol": "SASL_SSL", "sasl.password": "hunter2"}
    conf = consumer_config(s.bootstrap, "g", dict(s.kafka))
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.password"] == "hunter2"


def test_secrets_never_show_in_reprs_or_log_lines(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    s = config.load({"OPENAI_BASE_URL": "http://llm/v1", "OPENAI_API_KEY": "sk-live-123",
                     "TRIAGE_REDIS_URL": "rediss://user:redispw@redis:6380/0", "TRIAGE_KAFKA_SASL_PASSWORD": "hunter2"})
    text = repr(s) + str(s) + JsonFormatter().format(logging.LogRecord("t", 20, "", 0, "settings %s", (s,), None))
    for secret in ("sk-live-123", "redispw", "hunter2"):
        assert secret not in text
    assert s.api_key.reveal() == "sk-live-123"


def test_bad_numbers_are_refused_with_the_variable_named() -> None:
    with pytest.raises(SystemExit, match="TRIAGE_COMMIT_INTERVAL_S must be a number"):
        config.load({"TRIAGE_COMMIT_INTERVAL_S": "fast"})
    with pytest.raises(SystemExit, match="TRIAGE_PAUSE_AFTER_S must be between 0 and 30"):
        config.load({"TRIAGE_PAUSE_AFTER_S": "600"})
    assert config.load({"TRIAGE_PAUSE_AFTER_S": "0"}).pause_after_s == 0.0


def _readme_settings() -> set[str]:
    """The variables the README's configuration table documents (``TRIAGE_DRIFT_ACTION, `_WINDOW`` spells out
    as TRIAGE_DRIFT_WINDOW), without the prefixes of families (TRIAGE_KAFKA_<PROPERTY>, TRIAGE_MODEL_<STEP>)."""
    import re
    readme = (REPO / "README.md").read_text()
    names = {n for n in re.findall(r"`((?:TRIAGE|OPENAI)_[A-Z0-9_]*[A-Z0-9])(?:=[^`]*)?`", readme)
             if not n.startswith("TRIAGE_KAFKA_")}
    for line in readme.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        full = re.findall(r"`((?:TRIAGE|OPENAI)_[A-Z0-9_]*[A-Z0-9])`", first)
        names.update(full)
        for short in re.findall(r"`(_[A-Z0-9_]+)`", first):
            names.add(full[0].rsplit("_", 1)[0] + short)
    return names


def test_every_documented_setting_is_read() -> None:
    """Each setting the README documents and the example file lists is read by load() (TRIAGE_MAX_BODY_CHARS
    was documented and never read)."""
    known = config.known_settings()
    documented = _readme_settings()
    assert {"TRIAGE_MAX_BODY_CHARS", "TRIAGE_DRIFT_WINDOW", "TRIAGE_TENANTS"} <= documented
    assert documented - known == set()
    listed = set(config.file_env(REPO / "deploy" / "triage.example.toml"))
    assert listed - known == set()
    assert config.load({"TRIAGE_MAX_BODY_CHARS": "500"}).max_body_chars == 500


@pytest.mark.parametrize("name, bad, allowed", [
    ("TRIAGE_DRIFT_ACTION", "fallbak", "fallback, human"),
    ("TRIAGE_MODEL_OUTAGE", "wiat", "dlq, wait"),
    ("TRIAGE_MISSING_PRIORITY", "degraded", "human, degrade"),
    ("TRIAGE_RESPONSE_CACHE", "sure", "1, true, yes, on, 0, false, no, off"),
    ("TRIAGE_PARTITION_SERIAL", "y", "1, true, yes, on, 0, false, no, off"),
    ("TRIAGE_DRIFT_CLASSIFIERS", "intent,mood", "intent, language, priority, sentiment"),
    ("TRIAGE_TENANTS", "acme,Acme", "each tenant must be 1 to 63 of a-z, 0-9"),
    ("TRIAGE_TENANTS", "acme,ac me", "each tenant must be"),
    ("TRIAGE_TENANTS", "acme,acme", "names a tenant twice"),
    ("TRIAGE_TENANTS", " , ", "no tenant given"),
    ("TRIAGE_MAX_BODY_CHARS", "0", "between 1 and 50000"),
    ("TRIAGE_MAX_BODY_CHARS", "lots", "whole number between 1 and 50000"),
    ("TRIAGE_PARTITIONS", "0", "between 1 and 1000"),
    ("TRIAGE_MAX_IN_FLIGHT", "-1", "between 1 and 100000"),
    ("TRIAGE_MODEL_CONCURRENCY", "0", "between 1 and 100000"),
    ("TRIAGE_RETRIES", "0", "between 1 and 20"),
    ("TRIAGE_BACKOFF_S", "-0.1", "between 0 and 60"),
    ("TRIAGE_MODEL_TIMEOUT_S", "0", "between 0.1 and 600"),
    ("TRIAGE_STEP_DEADLINE_S", "nan", "finite number"),
    ("TRIAGE_JOIN_TIMEOUT_S", "0", "between 1 and 86400"),
    ("TRIAGE_COMMIT_INTERVAL_S", "0", "between 0.001 and 60"),
    ("TRIAGE_DRIFT_WINDOW", "1", "between 10 and 1000000"),
    ("TRIAGE_DRIFT_BASELINE", "x", "whole number"),
    ("TRIAGE_DRIFT_TRIP", "2", "between 0.001 and 1"),
    ("TRIAGE_DRIFT_CLEAR", "0.06", "between 0 and 0.05"),
    ("TRIAGE_MAX_TOOL_CALLS", "1000", "between 0 and 100"),
    ("TRIAGE_BUDGET_CALLS", "0", "between 1 and 1000"),
    ("TRIAGE_BUDGET_TOKENS", "10", "between 100 and 100000000"),
    ("TRIAGE_REDIS_PORT", "70000", "between 1 and 65535"),
    ("TRIAGE_OFFLINE_PORT", "0", "between 1 and 65535"),
    ("TRIAGE_METRICS_BASE_PORT", "x", "whole number"),
    ("TRIAGE_METRICS_PORT", "-5", "between 0 and 65535"),
    ("TRIAGE_REDIS_URL", "localhost:6379", "redis:// or rediss:// or unix://"),
    ("OPENAI_BASE_URL", "api.openai.com/v1", "http:// or https://"),
    ("TRIAGE_BOOTSTRAP", "kafka:9092;kafka2:9092", "host:port"),
    ("TRIAGE_BOOTSTRAP", "kafka:99999", "host:port"),
    ("TRIAGE_INSTANCE", "a b", "printable characters without spaces"),
    ("TRIAGE_MODEL_GENERAT", "gpt-4o", "no step is called that"),
    ("TRIAGE_MODEL_GENERATE", " , ", "model names separated by commas"),
    ("TRIAGE_DATA", "/nonexistent/folder", "must be a folder"),
])
def test_every_setting_is_checked_at_load(name: str, bad: str, allowed: str) -> None:
    """A typo never silently takes the other branch: load() refuses it with the setting and what it may be."""
    with pytest.raises(SystemExit) as info:
        config.load({name: bad})
    message = str(info.value)
    assert name in message and allowed in message, message
    assert "\n" not in message


@pytest.mark.parametrize("name, value", [
    ("TRIAGE_DRIFT_ACTION", "human"), ("TRIAGE_MODEL_OUTAGE", "WAIT"), ("TRIAGE_MISSING_PRIORITY", "degrade"),
    ("TRIAGE_TENANTS", "acme, globex ,initech_2,a-b"), ("TRIAGE_BOOTSTRAP", "k1:9092,[::1]:9093,SASL_SSL://k3:9094"),
    ("TRIAGE_REDIS_URL", "rediss://:pw@redis:6380/0"), ("TRIAGE_DRIFT_CLASSIFIERS", "intent"),
    ("TRIAGE_MAX_TOOL_CALLS", "0"), ("TRIAGE_RESPONSE_CACHE", "on"),
])
def test_good_values_still_load(name: str, value: str) -> None:
    config.load({name: value})


def test_an_unknown_key_in_the_config_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "triage.toml"
    f.write_text('drift_acton = "human"\n')
    with pytest.raises(SystemExit, match="unknown setting TRIAGE_DRIFT_ACTON"):
        config.load({"TRIAGE_CONFIG": str(f)})
    f.write_text('[openai]\nmodel = "gpt-4o"\n')
    with pytest.raises(SystemExit, match="unknown setting OPENAI_MODEL"):
        config.load({"TRIAGE_CONFIG": str(f)})
    f.write_text('[models]\ngenerat = ["gpt-4o"]\n')
    with pytest.raises(SystemExit, match="TRIAGE_MODEL_GENERAT: no step"):
        config.load({"TRIAGE_CONFIG": str(f)})
    f.write_text('drift_action = "human"\ntenants = ["acme", "initech"]\n[kafka]\n"client.rack" = "r1"\n')
    s = config.load({"TRIAGE_CONFIG": str(f)})
    assert s.drift.action == "human" and s.tenants == ("acme", "initech") and s.kafka == {"client.rack": "r1"}


@pytest.mark.parametrize("argv", [["status"], ["worker", "ingest"], ["dlq", "list"], ["tail", "tickets.in"]])
def test_commands_and_workers_exit_with_one_line_on_a_bad_setting(argv: list[str], tmp_path: Path) -> None:
    """The real CLI, as a process: exit code 1, one line naming the setting and its allowed values, no
    traceback, before touching Kafka or Redis."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "OPENAI_"))}
    env.update(TRIAGE_HOME=str(tmp_path), TRIAGE_BOOTSTRAP="127.0.0.1:1", TRIAGE_DRIFT_ACTION="fallbak")
    r = subprocess.run([sys.executable, "-m", "streams.cli", *argv], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip() == "TRIAGE_DRIFT_ACTION must be one of fallback, human; got 'fallbak'", r.stderr
    env["TRIAGE_DRIFT_ACTION"], env["TRIAGE_TENANTS"] = "human", "acme,Acme"
    r = subprocess.run([sys.executable, "-m", "streams.cli", *argv], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("TRIAGE_TENANTS: 'Acme'"), r.stderr
