# Two entry points (see README): `make reproduce` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results
# torch is pinned to the local CPU build *before* the extra, so the extra's range is already met
# and pip never pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: install install-dev reproduce run-example test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_PIN) || echo "torch $(TORCH_PIN) unavailable: the probe claim will be skipped"
	$(BIN)/python -m pip install -q -e '.[probe]' || $(BIN)/python -m pip install -q -e .

install-dev: $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_PIN) || echo "torch $(TORCH_PIN) unavailable: torch tests will be skipped"
	$(BIN)/python -m pip install -q -e '.[dev,dask,torch,probe,bench]' || $(BIN)/python -m pip install -q -e '.[dev,dask,probe]' || $(BIN)/python -m pip install -q -e '.[dev,dask]'

reproduce: install
	$(BIN)/sgdfluct reproduce --quick --out $(OUT)

run-example: install
	$(BIN)/sgdfluct run configs/single_layer.toml --out $(OUT)/single_layer

# the whole suite, slow statistical tests included (about 2 minutes on 2 cores)
test: install-dev
	$(BIN)/python -m pytest -q

test-fast: install-dev
	$(BIN)/python -m pytest -m "not slow" -q

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: install-dev
	$(BIN)/sgdfluct bench --quick --out $(OUT)/bench.json

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
