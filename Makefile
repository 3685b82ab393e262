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

# What `sam build` makes, and what it is made from.
BUILT  := .aws-sam/build/template.yaml
SOURCES := template.yaml layers/Makefile layers/requirements.txt \
	$(shell find layers/celery_ondemand functions -name '*.py' 2>/dev/null)

# A stand-in for Lambda's /var/runtime: its runtime interface client and a boto3 older than
# the layer's (the layer's pair must win), for the test that runs the built artifact.
RUNTIME := .lambda-runtime
RUNTIME_STAMP := $(RUNTIME)/.installed-stamp

.PHONY: install tools test lint lint-python lint-template build lock deploy bench demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The suite also runs the built Lambda artifact, so it builds first (sam build is cached).
# Two test processes by default: most tests wait on real workers and brokers, and every test
# names its own queues and workers, so two share the brokers (PYTEST_WORKERS=0: one process).
# A file's tests stay in one process: its module fixtures (a moto stack, a private RabbitMQ
# node) start once.
PYTEST_WORKERS ?= 2
test: $(STAMP) $(BUILT) $(RUNTIME_STAMP)
	ONDEMAND_LAMBDA_PYTHON="$(LAMBDA_PYTHON)" $(BIN)/python -m pytest -ra --durations=30 \
		-n $(PYTEST_WORKERS) --dist loadfile

lint: lint-python lint-template

lint-python: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

tools: $(TOOLS_STAMP)

$(TOOLS_STAMP):
	@test -n "$(LAMBDA_PYTHON)" || { echo "make: need Python 3.12 (the Lambda runtime) for SAM"; exit 1; }
	$(LAMBDA_PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet aws-sam-cli cfn-lint pip-tools
	touch $(TOOLS_STAMP)

$(RUNTIME_STAMP):
	@test -n "$(LAMBDA_PYTHON)" || { echo "make: need Python 3.12 (the Lambda runtime)"; exit 1; }
	$(LAMBDA_PYTHON) -m pip install --quiet --target $(RUNTIME) awslambdaric boto3==1.40.4
	touch $(RUNTIME_STAMP)

lint-template: $(TOOLS_STAMP)
	$(SAM) validate --lint --region us-east-1
	$(TOOLS)/bin/cfn-lint template.yaml

build: $(TOOLS_STAMP)
	$(SAM) build

$(BUILT): $(TOOLS_STAMP) $(SOURCES)
	$(SAM) build

# Re-resolve the layer's pinned dependencies (exact versions and hashes) from
# layers/requirements.in, on the Lambda's Python.
lock: $(TOOLS_STAMP)
	$(TOOLS)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links --upgrade \
		--output-file layers/requirements.txt layers/requirements.in

# Never run by CI: deploys to the AWS account of your credentials (`sam deploy --guided`
# the first time writes your answers to samconfig.toml).
deploy: build
	$(SAM) deploy $(DEPLOY_ARGS)

bench: $(STAMP) $(BUILT) $(RUNTIME_STAMP)
	ONDEMAND_LAMBDA_PYTHON="$(LAMBDA_PYTHON)" $(BIN)/python -m tests.bench.cold_start
	$(BIN)/python -m tests.bench.observe
	$(BIN)/python -m tests.bench.scale
	$(BIN)/python -m tests.bench.unacked
	$(BIN)/python -m tests.bench.simulate
	$(BIN)/python -m tests.bench.reaction
	$(BIN)/python -m tests.bench.cost
	$(BIN)/python -m tests.bench.forecast
	$(BIN)/python -m tests.bench.large

demo: $(STAMP)
	$(BIN)/ondemand demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) $(RUNTIME) .pytest_cache .mypy_cache .ruff_cache .aws-sam
