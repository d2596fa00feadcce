# frugalml — `make help` lists the targets. Everything runs inside .venv.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# The CPU build of torch lies on disk here; any other version would pull a multi-GB CUDA build.
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed
# Flower pins exact minors of fastapi, starlette, typer, rich, ... older than the ones frugalml's
# other extras install, and runs with the newer ones (tests/federated); so it goes in with
# --no-deps, then its missing dependencies under constraints frozen from the venv: nothing
# already installed moves. `make test` needs it (tests/federated/test_deploy.py); `test-all`
# and `bench` also need Ray (Flower's simulation runtime).
FLWR    ?= flwr==1.42.0
RAY     ?= ray==2.55.1
FED     := $(VENV)/.federated
SIM     := $(VENV)/.simulation
PINS    := $(VENV)/constraints.txt

.DEFAULT_GOAL := help
.PHONY: help demo test test-deploy test-all bench quality lint format typecheck layers clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

$(FED): $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v ' @ ' > $(PINS)
	$(BIN)/pip install --quiet --no-deps "$(FLWR)"
	$(BIN)/pip install --quiet -c $(PINS) "dp-accounting>=0.6,<0.7" \
		$$($(BIN)/pip show flwr | sed -n 's/^Requires: //p' | tr -d ',')
	@touch $(FED)

$(SIM): $(FED)
	$(BIN)/pip install --quiet -c $(PINS) "$(RAY)"
	@touch $(SIM)

demo: $(STAMP)  ## Create .venv, install, and run the ladder on the embedded demo
	$(BIN)/frugalml demo

test: $(FED)  ## Install what tests need (Flower included) and run the fast suite
	$(BIN)/python -m pytest -q

test-deploy: $(FED)  ## The federated loopback deployment test (TLS, node auth, faults; ~2.5 min)
	$(BIN)/python -m pytest -q -m slow tests/federated/test_deploy.py -k tls_and_node_auth

test-all: $(SIM)  ## Run every test, including slow ones with the real MiniLM
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(SIM)  ## Run the benchmarks (results in benchmarks/results/)
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
