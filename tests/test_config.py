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
