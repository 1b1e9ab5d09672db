"""The PyTorch engine (CPU): float64 agrees with the numba/NumPy engines on the same counter-based
indices; float32 agrees statistically with the exact discrete-time covariance."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct import networks
from sgdfluct.errors import ConfigError
from sgdfluct.simulate import SAMPLING_MODES, _kernels, simulate

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

REFERENCE = "numba" if _kernels.HAVE_NUMBA else "numpy"
# Same SGD on the same indices; the engines sum the S per-sample gradients in a different order
# (torch bmm vs numba loops): round-off ~ steps * eps * |theta|, far below 1e-10 relative.
AGREE_RTOL = 1e-10
# float32 run vs the exact discrete covariance: 36 correlated |z| (see test_simulate_statistics:
# P(max |z| > 4) <= 0.2 %); float32 round-off (~1e-7 relative per step) is far below the
# statistical error of 40 000 steps.
Z_MAX_SINGLE = 4.0

SHAPES = {"depth1": [(2, 5)], "depth2": [(3, 5), (2, 3)], "depth3": [(3, 4), (2, 3), (1, 2)]}


@pytest.mark.parametrize("sampling", SAMPLING_MODES)
@pytest.mark.parametrize("net", list(SHAPES))
def test_float64_agrees_with_reference_engine(
    net: str, sampling: str, rng: np.random.Generator
) -> None:
    shapes = SHAPES[net]
    x = rng.standard_normal((14, shapes[0][1]))
    y = rng.standard_normal((14, shapes[-1][0]))
    theta0 = 0.3 * rng.standard_normal(networks.n_params(shapes))
    kw = dict(learning_rate=0.05, batch_size=4, sampling=sampling, steps=300, burn_in=20,
              record_every=3, replicas=3, seed=7, n_batches=4, trajectory_every=1)  # fmt: skip
    ref = simulate(x, y, shapes, theta0, engine=REFERENCE, **kw)  # type: ignore[arg-type]
    res = simulate(x, y, shapes, theta0, engine="torch", device="cpu", **kw)  # type: ignore[arg-type]
    assert (res.engine, res.device, res.dtype) == ("torch", "cpu", "float64")
    scale = np.abs(ref.trajectory).max()
    np.testing.assert_allclose(res.trajectory, ref.trajectory, rtol=AGREE_RTOL,
                               atol=AGREE_RTOL * scale)  # fmt: skip
    np.testing.assert_allclose(res.final, ref.final, rtol=AGREE_RTOL, atol=AGREE_RTOL * scale)
    np.testing.assert_allclose(res.cov, ref.cov, rtol=1e-8, atol=1e-8 * np.abs(ref.cov).max())


def test_float32_agrees_statistically_with_exact_covariance() -> None:
    # this directory is on sys.path under pytest's default (prepend) import mode
    from test_simulate_statistics import (
        BATCH,
        ETA,
        N_IN,
        N_OUT,
        _single_layer,
        exact_discrete_covariance,
    )

    x, y, theta_star = _single_layer(0)
    exact = exact_discrete_covariance(x, y, theta_star, ETA, 1.0 / BATCH)
    res = simulate(x, y, [(N_OUT, N_IN)], theta_star, learning_rate=ETA, batch_size=BATCH,
                   steps=40_000, burn_in=500, replicas=4, seed=5, n_batches=16,
                   engine="torch", device="cpu", dtype="float32")  # fmt: skip
    assert res.dtype == "float32" and res.cov.dtype == np.float64
    iu = np.triu_indices(exact.shape[0])
    z = ((res.cov - exact) / res.cov_stderr)[iu]
    assert np.all(np.isfinite(z)) and np.max(np.abs(z)) < Z_MAX_SINGLE, z


def test_auto_picks_torch_for_float32_and_cuda_is_checked(rng: np.random.Generator) -> None:
    x = rng.standard_normal((10, 3))
    y = rng.standard_normal((10, 1))
    kw = dict(learning_rate=0.1, batch_size=2, steps=60, burn_in=10, replicas=2, n_batches=2)
    res = simulate(x, y, [(1, 3)], np.zeros(3), dtype="float32", **kw)  # type: ignore[arg-type]
    assert res.engine == "torch" and res.dtype == "float32"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device = 'cuda' is not available"):
            simulate(x, y, [(1, 3)], np.zeros(3), engine="torch", device="cuda", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_records_statistics_stay_on_the_device_and_agree(
    dtype: str, rng: np.random.Generator
) -> None:
    from sgdfluct.simulate._torch import DeviceLazyMoments

    shapes = SHAPES["depth2"]
    x = rng.standard_normal((14, shapes[0][1]))
    y = rng.standard_normal((14, shapes[-1][0]))
    theta0 = 0.3 * rng.standard_normal(networks.n_params(shapes))
    # few records per batch: the records statistics (kept on the device by the torch engine)
    kw = dict(learning_rate=0.05, batch_size=4, steps=400, burn_in=40, record_every=12,
              replicas=3, seed=7, n_batches=3, trajectory_every=50)  # fmt: skip
    ref = simulate(x, y, shapes, theta0, engine=REFERENCE, **kw)  # type: ignore[arg-type]
    res = simulate(x, y, shapes, theta0, engine="torch", device="cpu", dtype=dtype, **kw)  # type: ignore[arg-type]
    assert ref.statistics == res.statistics == "records"
    assert isinstance(res.__dict__["_moments"], DeviceLazyMoments)
    # float64: the same numbers to round-off; float32: the same SGD to float32 round-off
    rtol = 1e-8 if dtype == "float64" else 2e-3
    for name in ("mean", "replica_means", "cov", "lag1", "mean_stderr", "cov_stderr",
                 "lag1_stderr", "lag1_antisym_stderr"):  # fmt: skip
        want, got = getattr(ref, name), getattr(res, name)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max(),
                                   err_msg=name)  # fmt: skip
    np.testing.assert_allclose(res.trajectory, ref.trajectory, rtol=rtol,
                               atol=rtol * np.abs(ref.trajectory).max())  # fmt: skip
