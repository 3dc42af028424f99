# Everything installs into .venv from the project's own files; nothing relies on the host.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck unit results clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## The main job on its embedded default: replay the built-in trace through the extender.
demo: $(BIN)/.installed
	$(BIN)/fairpack demo

## Every check CI runs: lint, types, unit, property, fidelity and end-to-end tests.
test: lint typecheck unit

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest -q

## Regenerate benchmarks/RESULTS.md from ../shared/data (all traces, 9 policies x 10 seeds).
results: $(BIN)/.installed
	$(BIN)/python -m benchmarks.results --data ../shared/data/alibaba-gpu-2023 --out benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
