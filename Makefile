# Two commands work on a fresh machine: `make run` and `make test`. Both create .venv and install
# everything the project needs from its own files.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

RADDRAFT_PORT ?= 11112
RADDRAFT_AE ?= RADDRAFT

.PHONY: run test test-fast lint setup bench model clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[cpu]'
	touch $@

$(DEV_STAMP): $(STAMP)
	$(PIP) install --quiet -e '.[cpu,dev,train]'
	touch $@

setup: $(DEV_STAMP)

run: $(STAMP)
	$(VENV)/bin/raddraft service --port $(RADDRAFT_PORT) --ae-title $(RADDRAFT_AE)

test: $(DEV_STAMP) lint
	$(PY) -m pytest

test-fast: $(DEV_STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(DEV_STAMP)
	$(VENV)/bin/lint-imports

bench: $(DEV_STAMP)
	$(PY) bench/node_ingest.py

# Reproduces the embedded default model in resources/models/raddraft-phantom-cxr/ (about an hour on 2 cores).
model: $(DEV_STAMP)
	$(VENV)/bin/raddraft train --config training/configs/phantom-cxr.toml

clean:
	rm -rf $(VENV) build dist .pytest_cache
