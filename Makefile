# Every target does its own set-up, so `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CDK_DISABLE_VERSION_CHECK := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1
CDK := node_modules/.bin/cdk
# cdk.json runs `python3 app.py`: it must be the project's interpreter.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup demo test lint format synth deploy diff bench drill clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup  ## both flows end to end on loopback: emulator, real handlers, reference OGC RS
	$(BIN)/ogc-audit demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint  ## lint, then the whole suite
	$(BIN)/pytest -n 2 -q

synth: setup  ## synthesize (offline, no Docker) with cdk-nag, then cfn-lint the templates
	rm -rf cdk.out
	$(CDK) synth --quiet
	$(BIN)/cfn-lint cdk.out/*.template.json -i W3005 W6001

diff: setup
	$(CDK) diff --all

deploy: setup  ## needs AWS credentials and a bootstrapped account (see docs/deploy.md)
	$(CDK) deploy --all --require-approval broadening

bench: setup
	$(BIN)/python -m bench.cloudtrail_extract
	$(BIN)/python -m bench.access_log_extract
	$(BIN)/python -m bench.minio_webhook
	$(BIN)/python -m bench.eventbridge_latency

drill: setup  ## both flows under injected faults: lost 0, duplicates only in the answer-lost window
	$(BIN)/python -m ogc_audit.fault_drill

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache
