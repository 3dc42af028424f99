# Everything installs into .venv from the project's own files; nothing relies on the host.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck unit control-plane results clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## The main job on its embedded default: replay the built-in trace through the extender.
demo: $(BIN)/.installed
	$(BIN)/fairpack demo

## Every check CI runs: lint, types, unit, property, fidelity and end-to-end tests.
test: lint typecheck control-plane unit

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest -q

## kube-apiserver, kube-controller-manager, kube-scheduler and etcd for the end-to-end
## suite, built from the Go module proxy into ~/.cache/fairpack (once per pin).
control-plane:
	@if command -v go >/dev/null 2>&1; then \
		bash scripts/build-control-plane.sh; \
	else \
		echo "go not found: the end-to-end tests will be skipped (install Go >= 1.25 to run them)"; \
	fi

## Regenerate benchmarks/RESULTS.md from ../shared/data (all traces, 9 policies x 10 seeds).
results: $(BIN)/.installed
	$(BIN)/python -m benchmarks.results --data ../shared/data/alibaba-gpu-2023 --out benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
