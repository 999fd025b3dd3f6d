# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
# Both create .venv and install everything the first time, and skip that when nothing changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# Pinned CPU build by default; a GPU worker overrides it, e.g. `make install TORCH=torch==2.13.0`
# with the CUDA index configured for pip.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install run test lint clean-outputs

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
