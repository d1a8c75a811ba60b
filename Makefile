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
OPTIMIZE_CONFIG ?= configs/optimize.yaml
ARGS   ?=
SERVE_REPO ?= model_repository
SERVE_ARGS ?=
REPLICAS   ?= 1
BENCH_ARGS ?=
MA_ARGS    ?=
MA_STAMP   := $(VENV)/.analyzer-installed
SOAK_MINUTES ?= 10
NPROC      ?= 2
PID_FILE   := .serve/server.pid

.PHONY: help setup debs data data-photo train train-ddp optimize serve serve-bg stop infer verify setup-bench bench setup-analyzer model-analyzer chaos soak faults demo demo-photo demo-run test test-fast lint format clean

help:
	@echo "make demo   - the whole pipeline on the embedded Fashion-MNIST (setup included)"
	@echo "make demo-photo - the same with EfficientNet-Lite0 (ImageNet weights) on 224 px JPEGs"
	@echo "make test   - lint + all tests (setup included)"
	@echo "make setup | data | data-photo | train | train-ddp | optimize | serve | serve-bg | stop | infer | verify"
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

# Fashion-MNIST rendered as 224x224 RGB JPEGs (photo-sized payloads; the content stays 28 px)
data-photo: setup
	$(PY) -m train.fashion_photo --out data/fashion-photo $(ARGS)

# ARGS are the trainer's: the data step runs without them.
train: setup
	@$(MAKE) --no-print-directory data ARGS=
	$(PY) -m train --config $(CONFIG) $(ARGS)

# NPROC processes on this machine (gloo on CPU, NCCL where CUDA exists); --standalone picks
# a free rendezvous port. Several machines: see docs/scale.md.
train-ddp: setup
	@$(MAKE) --no-print-directory data ARGS=
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m train --config $(CONFIG) $(ARGS)

optimize: setup
	$(PY) -m optimize --run $(RUN) --config $(OPTIMIZE_CONFIG) $(ARGS)

serve: setup
	$(PY) -m serve --repo $(SERVE_REPO) --replicas $(REPLICAS) $(SERVE_ARGS)

serve-bg: setup
	$(PY) -m serve --repo $(SERVE_REPO) --replicas $(REPLICAS) --background \
		--pid-file $(PID_FILE) --log-file .serve/server.log $(SERVE_ARGS)

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
	@$(MAKE) --no-print-directory demo-run DEMO=demo DATA_TARGET=data RUN=runs/default \
		CONFIG=configs/default.yaml OPTIMIZE_CONFIG=configs/optimize.yaml \
		TEST_DIR=data/fashion-mnist/test DEMO_START=$$(date +%s)

# EfficientNet-Lite0 from ImageNet weights on 224 px JPEGs; its models (photo224*) join the
# repository beside default*, and the server serves both.
demo-photo: setup
	@$(MAKE) --no-print-directory demo-run DEMO=demo-photo DATA_TARGET=data-photo \
		RUN=runs/photo224 CONFIG=configs/photo224.yaml \
		OPTIMIZE_CONFIG=configs/photo224-optimize.yaml TEST_DIR=data/fashion-photo/test \
		DEMO_START=$$(date +%s)

demo-run:
	@echo "$(DEMO) [1/6]: data ($(DATA_TARGET))"
	@$(MAKE) --no-print-directory $(DATA_TARGET)
	@echo "$(DEMO) [2/6]: train ($(CONFIG)) into $(RUN)"
	@$(PY) -m train --config $(CONFIG)
	@echo "$(DEMO) [3/6]: optimize: prune, INT8, accuracy gate, Triton repository"
	@$(MAKE) --no-print-directory optimize
	@echo "$(DEMO) [4/6]: starting Triton in the background"
	@$(MAKE) --no-print-directory serve-bg
	@trap '$(MAKE) --no-print-directory stop' EXIT; set -e; \
	  echo "$(DEMO) [5/6]: classifying one test image per class through the server"; \
	  mapfile -t imgs < <(for d in $(TEST_DIR)/*/; do find "$$d" -type f | sort | head -1; done); \
	  $(PY) client/infer.py --model $(notdir $(RUN)) --top-k 3 "$${imgs[@]}"; \
	  echo "$(DEMO) [6/6]: server vs the same engine in process on 1000 test images"; \
	  $(PY) client/verify.py --run $(RUN) --repo $(SERVE_REPO) --limit 1000
	@$(PY) scripts/demo_summary.py $(RUN) $(SERVE_REPO) $(DEMO_START)

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
