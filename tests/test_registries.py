"""Extension points: a new input kind is one function plus one registration line."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct.config import DataConfig
from sgdfluct.data import INPUT_KINDS, InputKind, make_dataset
from sgdfluct.errors import ConfigError


def test_toy_input_kind_is_one_function_and_one_registration():
    def rademacher(config: DataConfig, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice([-1.0, 1.0], size=(n, config.n_in))

    INPUT_KINDS.register("rademacher", InputKind(sample=rademacher))  # the registration line
    try:
        data = make_dataset(DataConfig(n_in=4, n_samples=50, inputs="rademacher"))
        assert set(np.unique(data.inputs)) == {-1.0, 1.0}
        assert np.array_equal(data.input_cov, np.eye(4))
    finally:
        INPUT_KINDS.unregister("rademacher")
    with pytest.raises(ConfigError, match=r"data\.inputs = 'rademacher'"):
        DataConfig(inputs="rademacher")


def test_builtin_kinds_are_registered():
    assert INPUT_KINDS.names()[:4] == ("gaussian", "powerlaw", "student_t", "correlated")
