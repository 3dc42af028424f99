# Everything installs into .venv from the project's own files; nothing relies on the host.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck unit control-plane results clean tools manifests

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## The main job on its embedded default: replay the built-in trace through the extender.
demo: $(BIN)/.installed
	$(BIN)/fairpack demo

## Every check CI runs: lint, types, unit, property, fidelity and end-to-end tests.
test: lint typecheck manifests control-plane unit

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest -q

## promtool (Debian's prometheus package) and kubectl (with kustomize) for the manifest checks:
## installed with apt-get when missing and we are root, else how to install them is printed.
tools:
	@if ! command -v promtool >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing promtool (Debian package prometheus)"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
		else \
			echo "promtool not found: install it with 'sudo apt-get install -y prometheus'"; exit 1; \
		fi; \
	fi
	@if ! command -v kubectl >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && apt-cache policy kubectl | grep -q 'Candidate: [0-9]'; then \
			echo "installing kubectl"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubectl; \
		else \
			echo "kubectl >= 1.27 not found (kubectl kustomize, end-to-end tests): install it from the Kubernetes package repository (https://kubernetes.io/docs/tasks/tools/); Debian's kubernetes-client is too old"; exit 1; \
		fi; \
	fi

## The shipped manifests: every kustomize directory builds, the PrometheusRules are up to date
## with manifests/monitoring/rules, and promtool checks and unit-tests the rules.
manifests: tools $(BIN)/.installed
	@for kustomization in $$(find manifests -name kustomization.yaml | sort); do \
		dir=$$(dirname $$kustomization); \
		kubectl kustomize $$dir > /dev/null || { echo "kubectl kustomize $$dir failed"; exit 1; }; \
		echo "kubectl kustomize $$dir: ok"; \
	done
	$(BIN)/python manifests/monitoring/generate.py --check
	promtool check rules manifests/monitoring/rules/*.rules.yaml
	cd manifests/monitoring/tests && promtool test rules *.test.yaml

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
