# The two commands of the README: `make repro` and `make test`. Both build .venv from requirements.lock
# first (torch==2.13.0 in the same pip command as everything else, so no CUDA build is pulled).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: setup repro test test-all test-gpu bench ui dashboard clean-checkpoints

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

repro: setup
	dvc repro
	dvc metrics show reports/metrics.json reports/sweep/metrics.json
	@echo "the studies (studies/*.journal): make dashboard; the runs: make ui; the findings: reports/index.md"

test: setup
	scripts/ensure-postgres.sh
	pytest -q

test-all: setup
	scripts/ensure-postgres.sh
	scripts/ensure-browser.sh
	pytest -q -m ""

test-gpu: setup
	pytest -q -m gpu

bench: setup
	python benchmarks/bench.py

ui: setup
	mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

dashboard: setup
	instdiv dashboard --port 8080

clean-checkpoints:
	rm -rf checkpoints
