# The two commands of the README: `make demo` and `make test`. Both set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup deps deps-test registry demo test up down lint clean

$(BIN)/triage: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/triage

# System packages (Java, Maven, redis-server, python3-venv; Chromium for the tests): installed when root, else named.
deps:
	@bash .ci/deps

deps-test:
	@bash .ci/deps --browser

# The embedded Schema Registry (Apicurio, built by Maven into build/registry once per deploy/registry/pom.xml).
registry: setup
	$(BIN)/python -m streams.services.schema_registry

demo: deps setup
	$(BIN)/triage demo

test: deps-test setup registry
	$(BIN)/pytest -q

up: setup
	$(BIN)/triage up

down:
	$(BIN)/triage down

clean: down
	rm -rf .triage
