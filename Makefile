# FlowForge — every target installs what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Prefer the Lambda runtime's Python (3.13); fall back to python3 >= 3.11.
PYTHON ?= $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13 python3; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
# checkov pins boto3/botocore far below the project's: it gets a virtualenv of its own.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

.PHONY: help install test run validate bench lint fmt clean checkov

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with the project and its dev tools (idempotent)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: need python3.13 or python3 >= 3.11" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

$(SAM_STAMP):
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli
	@touch $@

$(CHECKOV_STAMP):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	@touch $@

# Each finding is fixed, or skipped in template.yaml next to its resource with the reason.
checkov: $(CHECKOV_STAMP)  ## checkov's security checks over template.yaml (offline)
	$(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation --compact --quiet --skip-download

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)  ## format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP) $(CHECKOV_STAMP) chromium firefox  ## ruff + mypy + checkov + the whole test suite (the console's tests run in headless Chromium and Firefox)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory checkov
	$(BIN)/python -m pytest -q -n 2

# The console's browser tests drive the system's Chromium with Playwright and the
# system's Firefox ESR over WebDriver BiDi (tests/e2e/firefox.py): Debian's packages,
# installed here when missing, never a browser download.
CHROMIUM ?= /usr/bin/chromium
FIREFOX ?= /usr/bin/firefox-esr
.PHONY: chromium firefox screenshots
chromium:
	@test -x $(CHROMIUM) || { apt-get update && apt-get install -y chromium; }
firefox:
	@test -x $(FIREFOX) || { apt-get update && apt-get install -y firefox-esr; }

screenshots: $(STAMP) chromium  ## the console's screenshots in docs/ (README), from a fresh local stack
	FLOWFORGE_CHROMIUM=$(CHROMIUM) $(BIN)/python -m tests.e2e.screenshots docs

# The long versions of tests/reliability (make test runs the fast ones): more hypothesis
# examples, more faults, kills and load; the figures end up in .flowforge/reliability.json.
# The local-stack tests (marker e2e) run after the others, alone: the load figures get the CPU.
.PHONY: reliability
reliability: export FLOWFORGE_RELIABILITY := long
reliability: export FLOWFORGE_RELIABILITY_RUN := $(shell date +%s%N)
reliability: $(STAMP)  ## long reliability tests (faults, hostile input, chaos, load) and their figures
	$(BIN)/python -m pytest -q -n 2 -m "not e2e" tests/reliability
	$(BIN)/python -m pytest -q -m e2e tests/reliability
	$(BIN)/python -m tests.reliability.figures

run: $(STAMP)  ## the whole stack locally (moto, API + WebSocket on :3000), no Docker, no AWS account
	$(BIN)/flowforge dev

validate: $(SAM_STAMP)  ## sam validate --lint
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --lint --region us-east-1

# sam build needs python3.13 on PATH (the functions' runtime); prefer a pyenv install.
PY313_BIN ?= $(or $(lastword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin)),$(patsubst %/,%,$(dir $(shell command -v python3.13 2>/dev/null))))

package: $(SAM_STAMP)  ## sam build (arm64, python3.13) and check what each function ships
	@test -n "$(PY313_BIN)" || { echo "error: sam build needs python3.13 on PATH" >&2; exit 1; }
	PATH="$(PY313_BIN):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam build
	@set -e; n=0; for d in .aws-sam/build/*Function/; do n=$$((n+1)); \
	  for want in engine workflows functions; do \
	    test -d "$$d$$want" || { echo "error: $$d has no $$want/" >&2; exit 1; }; done; \
	  for banned in tests flowforge bench boto3 botocore; do \
	    test ! -e "$$d$$banned" || { echo "error: $$d ships $$banned/" >&2; exit 1; }; done; \
	  for src in $$(cd "$$d" && find engine workflows functions -name '*.py'); do \
	    pyc="$$d$$(dirname $$src)/__pycache__/$$(basename $$src .py).cpython-313.pyc"; \
	    test -f "$$pyc" || { echo "error: $$d ships $$src without its compiled $$pyc" >&2; exit 1; }; done; \
	  test -z "$$(find "$$d"engine "$$d"workflows "$$d"functions -name '*.pyc' ! -name '*.cpython-313.pyc')" \
	    || { echo "error: $$d ships bytecode of another Python than the runtime's" >&2; exit 1; }; \
	done; test $$n -gt 0 || { echo "error: sam build produced no function" >&2; exit 1; }; \
	echo "package: $$n functions ship engine/ workflows/ functions/ (compiled for python3.13) and their runtime deps only"

# Called by `sam build` (Metadata.BuildMethod: makefile) as `make build-<LogicalId>` with
# ARTIFACTS_DIR set: the function's code and functions/requirements.txt built for arm64.
# The code ships compiled for the runtime (python3.13): a function's code directory is
# read-only, so sources without their .pyc would be compiled again at every cold start
# (about a sixth of the API function's import). The checkout's own __pycache__ is left
# out; the .pyc are made from the copied sources and never checked against them
# ("unchecked-hash": a zip's timestamps cannot invalidate them), with the /var/task
# paths a deployed function shows in its tracebacks.
LAMBDA_FUNCTIONS := ApiFunction StepFunction DlqFunction SweeperFunction WsFunction BroadcastFunction
LAMBDA_BUILD_TARGETS := $(addprefix build-,$(LAMBDA_FUNCTIONS))
LAMBDA_SOURCES := engine workflows functions
.PHONY: package $(LAMBDA_BUILD_TARGETS)

$(LAMBDA_BUILD_TARGETS): build-%:
	@test -n "$(ARTIFACTS_DIR)" || { echo "error: ARTIFACTS_DIR is unset (run sam build)" >&2; exit 1; }
	mkdir -p "$(ARTIFACTS_DIR)"
	tar -cf - --exclude=__pycache__ --exclude='*.pyc' --exclude=tests --exclude='*.egg-info' \
	  $(LAMBDA_SOURCES) | tar -xf - -C "$(ARTIFACTS_DIR)"
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' \
	  || { echo "error: the functions' code is compiled for python3.13, the runtime; $(PYTHON) is not" >&2; exit 1; }
	cd "$(ARTIFACTS_DIR)" && $(PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash \
	  -p /var/task $(LAMBDA_SOURCES)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check \
	  --platform manylinux2014_aarch64 --implementation cp --python-version 3.13 \
	  --only-binary=:all: --target "$(ARTIFACTS_DIR)" -r functions/requirements.txt

# The `bench` extra (LangGraph, the baseline) is installed only for benchmarks.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@

bench: $(BENCH_STAMP)  ## benchmarks (writes bench/results.json; BENCH_ARGS="--quick" or a name)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:  ## remove virtualenvs and build output
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam .pytest_cache .ruff_cache
