"""Shared fixtures: non-interactive matplotlib, a global random seed, optional-extra markers."""

from __future__ import annotations

import os

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
