# Every target does its own set-up, so `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CDK_DISABLE_VERSION_CHECK := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1
CDK := node_modules/.bin/cdk
# checkov pins an old boto3: it lives in a virtual environment of its own. Offline: no guideline download, no
# update check.
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov --framework cloudformation --skip-download --compact --quiet
export CKV_SKIP_PACKAGE_UPDATE_CHECK := true
export BC_SKIP_MAPPING := TRUE
# The second configuration `make synth` reviews: one customer managed key for the app.
KMS_OUT := cdk.out.kms-create
# cdk.json runs `python3 app.py`: it must be the project's interpreter.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup postgres-server demo test lint format synth deploy diff bench drill clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

# Tests that need OGC RS's database or the fleet's shared spool start a throwaway PostgreSQL server of their own
# (functions/testbed/postgres.py) from Debian's server binaries: installed here when missing (CI runs as root).
postgres-server:
	@if [ -n "$${PG_BIN:-}" ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's PostgreSQL server for the tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	else echo "make: the tests need PostgreSQL's server binaries: apt-get install postgresql, or set PG_BIN" >&2; exit 2; fi

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

test: lint $(CHECKOV_VENV)/.installed postgres-server  ## lint, then the whole suite (checkov included)
	$(BIN)/pytest -n 2 -q

synth: setup $(CHECKOV_VENV)/.installed  ## synthesize (offline, no Docker) with cdk-nag; cfn-lint and checkov
	rm -rf cdk.out $(KMS_OUT)
	$(CDK) synth --quiet
	$(CDK) synth --quiet -c kmsKey=create -o $(KMS_OUT)
	$(BIN)/cfn-lint cdk.out/*.template.json $(KMS_OUT)/*.template.json -i W3005 W6001
	$(CHECKOV) -f cdk.out/*.template.json
	$(CHECKOV) -f $(KMS_OUT)/*.template.json

diff: setup
	$(CDK) diff --all

deploy: setup  ## needs AWS credentials and a bootstrapped account (see docs/deploy.md)
	$(CDK) deploy --all --require-approval broadening

bench: setup
	$(BIN)/python -m bench.cloudtrail_extract
	$(BIN)/python -m bench.access_log_extract
	$(BIN)/python -m bench.minio_webhook
	$(BIN)/python -m bench.eventbridge_latency
	$(BIN)/python -m bench.reconcile
	$(BIN)/python -m bench.bounded_work

drill: setup  ## both flows under injected faults and a slow OGC RS: lost 0, duplicated 0, copies per line
	$(BIN)/python -m testbed.fault_drill

clean:
	rm -rf cdk.out $(KMS_OUT) .pytest_cache .mypy_cache .ruff_cache
