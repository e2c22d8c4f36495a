# DGX Spark Operations. `make run` serves the app; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export REFLEX_USE_NPM := 1
export PYTHONUNBUFFERED := 1

.PHONY: run test setup setup-dev browser migrate lint bench fuzz gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt requirements.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev browser
	@bash scripts/ensure_postgres.sh
	@bash scripts/ensure_podman.sh

## Debian's chromium for the browser tests (playwright cannot download browsers here).
browser:
	@bash scripts/ensure_browser.sh

migrate: setup
	@if [ -d alembic ]; then $(BIN)/reflex db migrate; fi

run: migrate
	$(BIN)/reflex run --env prod --single-port

test: setup-dev
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## Benchmarks: table on stdout, JSON in bench/results/; Glances goes into bench/.glances-venv.
## Quick run: make bench BENCH_ARGS="--only sampler --sizes 1000 --ops-row= --churn-row="
## Sampler rows without kernel process events (how a non-root dashboard on an older kernel runs): --discovery scan
## What a user feels (ours with one tab vs glances -w with one tab; glances[web] into the same venv): --only user_level --user-seconds 20
bench: setup-dev
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## Fuzz the API: schemathesis over every route, with the token, against a backend of its own.
## 0 5xx and 0 schema violations, else it fails. More cases: make fuzz FUZZ_ARGS="--max-examples 500"
fuzz: $(VENV)/.installed-dev
	$(BIN)/python scripts/fuzz.py $(FUZZ_ARGS)

## Ruff (rules in pyproject.toml) over all the Python here, then mypy over dgx_spark/ (strict for collector/ and supervisor/).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check dgx_spark tests bench scripts examples rxconfig.py setup.py
	$(BIN)/mypy

## Print what NVML sees (devices, unified memory, GPU processes), for checking by hand on a GPU machine.
gpu-check: setup
	$(BIN)/python scripts/gpu_check.py

clean:
	rm -rf .web .states test-artifacts
