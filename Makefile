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

.PHONY: help setup debs data train optimize demo test test-fast lint format clean

help:
	@echo "make demo   - the whole pipeline on the embedded Fashion-MNIST (setup included)"
	@echo "make test   - lint + all tests (setup included)"
	@echo "make setup | data | train | optimize | lint | format | clean"

setup: debs $(STAMP)

debs:
	@scripts/install_debs.sh $(DEBS)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	@echo "setup: installing pinned Python packages into $(VENV) (CPU torch 2.13.0)"
	@$(PY) -m pip install -q -r requirements.lock
	@$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)
	@echo "setup: done"

data: setup
	$(PY) -m train.fashion_mnist --out data/fashion-mnist $(ARGS)

train: data
	$(PY) -m train --config $(CONFIG) $(ARGS)

optimize: setup
	$(PY) -m optimize --run $(RUN) $(ARGS)

demo: train
	@echo "demo: done. Model, metrics and plots in $(RUN)/"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest -q $(ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(ARGS)

clean:
	rm -rf runs data model_repository/* .pytest_cache .ruff_cache
