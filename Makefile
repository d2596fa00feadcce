# frugalml — `make help` lists the targets. Everything runs inside .venv.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# The CPU build of torch lies on disk here; any other version would pull a multi-GB CUDA build.
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help demo test test-all bench quality lint format typecheck layers clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)  ## Create .venv, install, and run the ladder on the embedded demo
	$(BIN)/frugalml demo

test: $(STAMP)  ## Install what tests need and run the fast suite
	$(BIN)/python -m pytest -q

test-all: $(STAMP)  ## Run every test, including slow ones with the real MiniLM
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP)  ## Run the benchmarks (results in benchmarks/results/)
	$(BIN)/python benchmarks/first_rungs.py
	$(BIN)/python benchmarks/meter_overhead.py
	$(BIN)/python benchmarks/load_memory.py

quality: lint typecheck layers  ## ruff (lint + format check), mypy and the import layers

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: $(STAMP)  ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks examples
	$(BIN)/ruff format src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)  # no module imports from a layer above it: [tool.importlinter] in pyproject.toml
	$(BIN)/lint-imports

clean:  ## Remove the virtual environment and caches (not runs/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
