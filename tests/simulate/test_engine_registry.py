"""The engine registry: a toy engine is one small class plus one registration line."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from sgdfluct import networks
from sgdfluct.errors import ConfigError
from sgdfluct.simulate import ENGINES, Problem, batch_indices, register_engine, simulate

# The toy engine and the numpy engine sum the same S per-sample gradients in a different order.
ROUNDOFF_RTOL = 1e-11


class ToyStepper:
    """Plain per-replica, per-step SGD with ``networks.per_sample_gradients``."""

    device, dtype = "cpu", "float64"

    def __init__(self, problem: Problem, theta0: np.ndarray) -> None:
        self.p, self.theta = problem, theta0.copy()

    def advance(self, idx: np.ndarray, snap_at: np.ndarray) -> np.ndarray:
        p, out = self.p, []
        for j in range(idx.shape[1] + 1):
            out += [self.theta.copy()] * int(np.sum(snap_at == j))
            if j == idx.shape[1]:
                break
            for r, b in enumerate(idx[:, j]):
                g = networks.per_sample_gradients(self.theta[r], p.shapes, p.inputs[b],
                                                  p.targets[b]).sum(axis=0)  # fmt: skip
                self.theta[r] -= p.learning_rate / idx.shape[2] * g
        return np.stack(out, axis=1)

    def weights(self) -> np.ndarray:
        return self.theta.copy()


class ToyEngine:
    def check(self, device: str, dtype: str) -> None:
        if dtype != "float64":
            raise ConfigError(f"dtype = {dtype!r} is not allowed with engine = 'toy'")

    def start(self, problem: Problem, theta0: np.ndarray, device: str, dtype: str) -> ToyStepper:
        return ToyStepper(problem, theta0)


@pytest.fixture
def toy() -> Iterator[None]:
    register_engine("toy", ToyEngine())  # the one registration line
    yield
    ENGINES.unregister("toy")


def test_toy_engine_runs_through_simulate(toy: None, rng: np.random.Generator) -> None:
    shapes = [(3, 4), (2, 3)]
    x = rng.standard_normal((12, 4))
    y = rng.standard_normal((12, 2))
    theta0 = 0.3 * rng.standard_normal(networks.n_params(shapes))
    kw = dict(learning_rate=0.05, batch_size=3, steps=80, burn_in=10, record_every=2,
              replicas=2, seed=3, n_batches=2, trajectory_every=5, chunk_steps=17)  # fmt: skip
    res = simulate(x, y, shapes, theta0, engine="toy", **kw)  # type: ignore[arg-type]
    ref = simulate(x, y, shapes, theta0, engine="numpy", **kw)  # type: ignore[arg-type]
    assert (res.engine, res.device, res.dtype) == ("toy", "cpu", "float64")
    assert ref.engine == "numpy"
    for name in ("trajectory", "final", "mean", "cov", "lag1"):
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=ROUNDOFF_RTOL,
                                   atol=ROUNDOFF_RTOL, err_msg=name)  # fmt: skip
    # the toy engine sees the driver's indices: the same as batch_indices
    assert batch_indices(12, 3, 80, replicas=2, seed=3).shape == (2, 80, 3)
    with pytest.raises(ConfigError, match="dtype"):
        simulate(x, y, shapes, theta0, engine="toy", dtype="float32", **kw)  # type: ignore[arg-type]


def test_unknown_engine_and_cpu_engine_limits_name_the_field(rng: np.random.Generator) -> None:
    x = rng.standard_normal((10, 3))
    y = rng.standard_normal((10, 1))
    base = dict(learning_rate=0.1, batch_size=2, steps=50, burn_in=10, replicas=2, n_batches=2)
    with pytest.raises(ConfigError, match=r"engine = 'nope'.*'numpy'"):
        simulate(x, y, [(1, 3)], np.zeros(3), engine="nope", **base)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="device = 'cuda'"):
        simulate(x, y, [(1, 3)], np.zeros(3), engine="numpy", device="cuda", **base)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dtype = 'float32'"):
        simulate(x, y, [(1, 3)], np.zeros(3), engine="numpy", dtype="float32", **base)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="device = 'tpu'"):
        simulate(x, y, [(1, 3)], np.zeros(3), device="tpu", **base)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserved"):
        register_engine("auto", ToyEngine())


def test_registered_engines() -> None:
    assert {"numba", "numpy"} <= set(ENGINES.names())
