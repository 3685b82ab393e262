# celery-ondemand: every command a developer or CI needs. `make test` on a fresh clone
# creates .venv, installs the project with its dev tools, and runs the whole suite.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# aws-sam-cli and cfn-lint live in their own virtualenv (.tools), on the Lambda's Python.
# `sam build` without a container needs that Python first on PATH; pyenv has it here.
LAMBDA_PYTHON ?= $(shell ls $$(pyenv root 2>/dev/null)/versions/3.12.*/bin/python3.12 \
	2>/dev/null | tail -n 1 || true)
ifeq ($(LAMBDA_PYTHON),)
LAMBDA_PYTHON := $(shell command -v python3.12 2>/dev/null)
endif
TOOLS  := .tools
TOOLS_STAMP := $(TOOLS)/.installed-stamp
SAM    := SAM_CLI_TELEMETRY=0 PATH="$(dir $(LAMBDA_PYTHON)):$$PATH" $(TOOLS)/bin/sam

.PHONY: install tools test lint lint-python lint-template build deploy bench demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -ra

lint: lint-python lint-template

lint-python: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

tools: $(TOOLS_STAMP)

$(TOOLS_STAMP):
	@test -n "$(LAMBDA_PYTHON)" || { echo "make: need Python 3.12 (the Lambda runtime) for SAM"; exit 1; }
	$(LAMBDA_PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet aws-sam-cli cfn-lint
	touch $(TOOLS_STAMP)

lint-template: $(TOOLS_STAMP)
	$(SAM) validate --lint --region us-east-1
	$(TOOLS)/bin/cfn-lint template.yaml

build: $(TOOLS_STAMP)
	$(SAM) build

# Never run by CI: deploys to the AWS account of your credentials (`sam deploy --guided`
# the first time writes your answers to samconfig.toml).
deploy: build
	$(SAM) deploy $(DEPLOY_ARGS)

bench: $(STAMP)
	$(BIN)/python -m tests.bench.observe
	$(BIN)/python -m tests.bench.scale
	$(BIN)/python -m tests.bench.simulate

demo: $(STAMP)
	$(BIN)/ondemand demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .aws-sam
