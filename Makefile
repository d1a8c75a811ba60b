# One command a stage. Every target depends on setup, so a fresh machine needs only
# `make demo` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3.11
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
DEBS       := dataset-fashion-mnist libb64-0d

RUN    ?= runs/default
CONFIG ?= configs/default.yaml
ARGS   ?=
SERVE_REPO ?= model_repository
SERVE_ARGS ?=
BENCH_ARGS ?=
MA_ARGS    ?=
MA_STAMP   := $(VENV)/.analyzer-installed
SOAK_MINUTES ?= 10
PID_FILE   := .serve/server.pid

.PHONY: help setup debs data train optimize serve serve-bg stop infer verify setup-bench bench setup-analyzer model-analyzer chaos soak faults demo test test-fast lint format clean

help:
	@echo "make demo   - the whole pipeline on the embedded Fashion-MNIST (setup included)"
	@echo "make test   - lint + all tests (setup included)"
	@echo "make setup | data | train | optimize | serve | serve-bg | stop | infer | verify"
	@echo "     bench | setup-bench | model-analyzer | setup-analyzer | chaos | soak | faults"
	@echo "     lint | format | clean"

setup: debs $(STAMP)

debs:
	@scripts/install_debs.sh $(DEBS)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	@echo "setup: installing pinned Python packages into $(VENV) (CPU torch 2.13.0)"
	@# pip warns once per package about this machine's empty local index dirs; keep errors.
	@set -o pipefail; $(PY) -m pip install -q -r requirements.lock 2>&1 | { grep -v "^WARNING: Location" || true; }
	@set -o pipefail; $(PY) -m pip install -q --no-deps -e . 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $(STAMP)
	@echo "setup: done"

data: setup
	$(PY) -m train.fashion_mnist --out data/fashion-mnist $(ARGS)

train: data
	$(PY) -m train --config $(CONFIG) $(ARGS)

optimize: setup
	$(PY) -m optimize --run $(RUN) $(ARGS)

serve: setup
	$(PY) -m serve --repo $(SERVE_REPO) $(SERVE_ARGS)

serve-bg: setup
	$(PY) -m serve --repo $(SERVE_REPO) --background --pid-file $(PID_FILE) \
		--log-file .serve/server.log $(SERVE_ARGS)

stop: setup
	$(PY) -m serve stop --pid-file $(PID_FILE)

infer: setup
	$(PY) client/infer.py $(ARGS)

verify: setup
	$(PY) client/verify.py --run $(RUN) --repo $(SERVE_REPO) $(ARGS)

# perf_analyzer (from tritonclient[all]==2.49.0) + CUDA runtime stub into .venv/tools
setup-bench: setup
	@scripts/setup_bench.sh

bench: setup-bench
	$(PY) -m bench $(BENCH_ARGS)

# Triton Model Analyzer (pyproject's optional extra `analyzer`, ~315 MB: numba's llvmlite is
# 173 MB of it), never part of the CPU install; requirements-analyzer.lock pins what it adds.
setup-analyzer: setup-bench $(MA_STAMP)

$(MA_STAMP): requirements.lock requirements-analyzer.lock
	@echo "setup-analyzer: installing triton-model-analyzer into $(VENV) (~315 MB)"
	@set -o pipefail; $(PY) -m pip install -q -c requirements.lock -r requirements-analyzer.lock 2>&1 \
	  | { grep -v "^WARNING: Location" || true; }
	@touch $(MA_STAMP)

# Its brute search on <model>_pruned_int8 of $(SERVE_REPO), local launch mode: long and CPU-heavy
# (MA_ARGS=--quick for a short one); python -m bench then measures its winner beside ours.
model-analyzer: setup-analyzer
	$(PY) -m bench.model_analyzer --repo $(SERVE_REPO) $(MA_ARGS)

chaos: setup
	$(PY) -m reliability chaos $(ARGS)

soak: setup
	$(PY) -m reliability soak --minutes $(SOAK_MINUTES) $(ARGS)

faults: setup
	$(PY) -m reliability faults $(ARGS)

# The whole pipeline; the background server is stopped even when a step fails.
demo: setup
	@echo "demo [1/5]: data + train ($(CONFIG))"
	@$(MAKE) --no-print-directory train
	@echo "demo [2/5]: optimize: prune, INT8, accuracy gate, Triton repository"
	@$(MAKE) --no-print-directory optimize
	@echo "demo [3/5]: starting Triton in the background"
	@$(MAKE) --no-print-directory serve-bg
	@trap '$(MAKE) --no-print-directory stop' EXIT; set -e; \
	  echo "demo [4/5]: classifying one test image per class through the server"; \
	  mapfile -t imgs < <(for d in data/fashion-mnist/test/*/; do ls "$$d"*.png | head -1; done); \
	  $(PY) client/infer.py --top-k 3 "$${imgs[@]}"; \
	  echo "demo [5/5]: server vs in-process ONNX Runtime on 1000 test images"; \
	  $(PY) client/verify.py --run $(RUN) --repo $(SERVE_REPO) --limit 1000
	@$(PY) scripts/demo_summary.py $(RUN) $(SERVE_REPO)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint setup-bench
	$(PY) -m pytest -q $(ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(ARGS)

clean: stop
	rm -rf runs data model_repository .serve .pytest_cache .ruff_cache
