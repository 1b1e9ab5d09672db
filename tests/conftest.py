"""Shared fixtures: non-interactive matplotlib, a global random seed, optional-extra markers."""

from __future__ import annotations

import os

# On pytest-xdist workers, BLAS and torch (OpenMP) get cores // workers threads each, set before
# numpy or torch is imported: with every worker's pool as large as the machine, their spinning
# threads oversubscribe the cores (measured on 2 cores, 2 workers: the probe tests 63 s -> 31 s).
# A thread count set by the caller is kept; numba's pool is left as it is (its parallel paths
# stay tested).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def global_random_seed() -> int:
    """Seed for tests that draw random numbers (override with SGDFLUCT_TEST_SEED)."""
    return int(os.environ.get("SGDFLUCT_TEST_SEED", "0"))


@pytest.fixture
def rng(global_random_seed: int) -> np.random.Generator:
    return np.random.default_rng(global_random_seed)
