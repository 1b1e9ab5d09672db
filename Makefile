# Two entry points (see README): `make reproduce` and `make test` (what CI runs: .ci/run).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results
# OVERWRITE=1: let `make run-example` replace an earlier run in $(OUT)/single_layer
OVERWRITE ?=
# torch is pinned to the CPU build *before* the extra, so the extra's range is already met and pip
# never pulls a multi-GB CUDA build: first the local build (a wheel in pip's find-links or index),
# then the PyTorch CPU index, then plain torch==2.13.0 (macOS: PyPI's build is the CPU build).
TORCH_PIN := torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP := $(BIN)/python -m pip install -q
TORCH_INSTALL := $(PIP) '$(TORCH_PIN)+cpu' || $(PIP) '$(TORCH_PIN)+cpu' --extra-index-url $(TORCH_INDEX) || $(PIP) '$(TORCH_PIN)'
# installs happen once per pyproject.toml: a stamp in the venv records it (touch pyproject.toml or
# delete $(VENV)/.installed-* to force a re-install); the package itself is installed editable, so
# source changes need no re-install
STAMP := $(VENV)/.installed
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: install install-dev reproduce run-example test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(TORCH_INSTALL) || echo "torch $(TORCH_PIN) unavailable: the probe claim will be skipped"
	$(PIP) -e '.[probe]' || $(PIP) -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(TORCH_INSTALL) || echo "torch $(TORCH_PIN) unavailable: torch tests will be skipped"
	$(PIP) -e '.[dev,dask,torch,probe,bench]' || $(PIP) -e '.[dev,dask,probe]' || $(PIP) -e '.[dev,dask]'
	touch $@ $(STAMP)

install: $(STAMP)

install-dev: $(STAMP_DEV)

# measured on 2 cores: 282 s on a quiet machine (2026-12-02, load 1.2-2.0: the two workers alone),
# 3078 s under load 5-7 (issue 21);
# plus ~5 minutes of install from a fresh clone; re-running resumes (finished cells are kept)
reproduce: install
	$(BIN)/sgdfluct reproduce --quick --out $(OUT)

run-example: install
	@$(BIN)/sgdfluct run configs/single_layer.toml --out $(OUT)/single_layer $(if $(OVERWRITE),--overwrite) \
	  || { rc=$$?; echo "make run-example: to run it again, use OVERWRITE=1 (replaces $(OUT)/single_layer) or OUT=<another folder>" >&2; exit $$rc; }

# the whole suite, slow statistical tests included, on TEST_WORKERS pytest-xdist processes (the
# tests of one file stay on one worker, so module fixtures are computed once); TEST_WORKERS=0 runs
# it in this process; the 25 slowest tests are listed at the end. In one process it took 13 min
# on a quiet 2-core machine and 35 min under load 5-7 (issue 21); 2026-12-02 on a quiet machine,
# 9.5 min on 2 workers against 11.9 min in one process; with each worker's BLAS and torch on
# cores // workers threads (tests/conftest.py) 5.6 min (334 s) from a fresh clone, 6.4 min with the
# install (30 min with the install under load 4-6, before the thread caps).
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q --durations=25 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: install-dev
	$(PYTEST)

test-fast: install-dev
	$(PYTEST) -m "not slow"

lint: install-dev
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

bench: install-dev
	$(BIN)/sgdfluct bench --quick --out $(OUT)/bench.json

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
