# The two commands of the README: `make demo` and `make test`. Both set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test up down lint clean

$(BIN)/triage: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/triage

demo: setup
	$(BIN)/triage demo

test: setup
	$(BIN)/pytest -q

up: setup
	$(BIN)/triage up

down:
	$(BIN)/triage down

clean: down
	rm -rf .triage
