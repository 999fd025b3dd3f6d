# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
# Both create .venv and install everything the first time, and skip that when nothing changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# Pinned CPU build by default; a GPU worker overrides it, e.g. `make install TORCH=torch==2.13.0`
# with the CUDA index configured for pip.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install browser cluster-deps java run repro test test-slow test-all lint docs triton-start triton-stop airflow cluster cluster-down cluster-status

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,spark]"
	touch $@

install: $(STAMP)

# Headless Chromium for the web-UI test (Debian packages). Where it cannot be installed (not root,
# no apt-get) the UI test skips and says so.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver >/dev/null; \
	else echo "note: chromium and chromium-driver are not installed; the web-UI test will skip"; fi

# The main job: one full retrain cycle through Airflow (every DVC stage, gate, push to a local
# Triton, publish) on the embedded data set; prints the served version and a sample prediction.
run: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m devtools run-once

# Only the DVC pipeline, in this checkout.
repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The documentation site (docs/, mkdocs.yml) into the ignored site/ folder; --strict fails on any
# warning (a broken link or anchor, a page left out of the nav, a missing included file). Then the
# Kubernetes manifests against the Kubernetes schemas, unknown fields rejected. `make test` runs
# both as tests/test_docs.py.
docs: install
	$(BIN)/mkdocs build --strict
	$(BIN)/kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml

# Redis (the Celery broker) and Postgres (Airflow's metadata database) for the local Celery cluster
# (Debian packages). Where they cannot be installed (not root, no apt-get) the cluster tests skip
# and say so.
cluster-deps:
	@if command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    redis-server postgresql >/dev/null; \
	else echo "note: redis-server and postgresql are not installed; the cluster tests will skip"; fi

# Java 17 for the Spark engine's tests (Debian package). Where it cannot be installed (not root, no
# apt-get) the Spark tests skip and say so; the default local engine needs no Java.
java:
	@if command -v java >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    openjdk-17-jre-headless >/dev/null; \
	else echo "note: no Java runtime; the Spark tests will skip"; fi

# The suite (about 40 minutes on two cores) leaves out the tests marked `slow` (over ten minutes
# each); `make test-slow` runs those, `make test-all` everything.
# Test files run TEST_WORKERS at a time (pytest-xdist); a file stays on one worker, so its
# module-scoped servers and runs start once. TEST_WORKERS=0 runs them one by one.
TEST_WORKERS ?= 2

test: install lint browser cluster-deps java
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile --durations=30
	@echo "left out: the tests marked slow (pytest --markers); run them with make test-slow"

test-slow: install browser cluster-deps java
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m slow

test-all: install lint browser cluster-deps java
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# A real local Triton (the binary from the nvidia-pytriton wheel) on the ports and repository of
# params.yaml's `serving` section; PID file and log in .triton/. Start reloads the pinned versions.
triton-start: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m serving start

triton-stop: install
	$(BIN)/python -m serving stop

# Airflow with its web UI (http://localhost:8080, `airflow standalone`) on the project's dags/,
# AIRFLOW_HOME in the ignored .airflow/ folder: migrates the database, creates the GPU pool and
# starts the local Triton when it is not running. Ctrl-C stops Airflow.
airflow: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m devtools ui

# A local CeleryExecutor cluster on 127.0.0.1, the layout a team runs on separate hosts: Redis,
# Postgres, api-server (UI on http://localhost:8090), scheduler, dag-processor, triggerer, and two
# Celery workers (queues default and gpu) with their own workspace roots. PID files, logs and data
# in .airflow/cluster/. Idempotent; `make cluster-down` stops every process it started.
cluster: install cluster-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m devtools cluster up

cluster-down: install
	$(BIN)/python -m devtools cluster down

cluster-status: install
	$(BIN)/python -m devtools cluster status
