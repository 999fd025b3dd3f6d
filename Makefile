# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
# Both create .venv and install everything the first time, and skip that when nothing changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# Pinned CPU build by default; a GPU worker overrides it, e.g. `make install TORCH=torch==2.13.0`
# with the CUDA index configured for pip.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install run test lint clean-outputs triton-start triton-stop airflow

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(STAMP)

# The main job: the whole DVC pipeline on the embedded data set.
run: install
	$(BIN)/dvc repro

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
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
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m orchestration ui
