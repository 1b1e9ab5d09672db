"""simulate(checkpoint=...): an interrupted run resumes to bitwise the uninterrupted result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sgdfluct import networks
from sgdfluct.errors import ConfigError
from sgdfluct.simulate import SAMPLING_MODES, _cpu, simulate

FIELDS = ("mean", "mean_stderr", "cov", "cov_stderr", "lag1", "lag1_stderr",
          "lag1_antisym_stderr", "replica_means", "trajectory", "final")  # fmt: skip


def _problem(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shapes = [(3, 4), (2, 3)]
    x = rng.standard_normal((13, 4))
    y = rng.standard_normal((13, 2))
    return x, y, 0.3 * rng.standard_normal(networks.n_params(shapes))


@pytest.mark.parametrize("sampling", SAMPLING_MODES)
@pytest.mark.parametrize("record_every", [1, 40])  # streaming and records statistics
def test_interrupted_run_resumes_exactly(
    sampling: str, record_every: int, rng: np.random.Generator, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    x, y, theta0 = _problem(rng)
    shapes = [(3, 4), (2, 3)]
    kw = dict(learning_rate=0.05, batch_size=4, sampling=sampling, steps=1500, burn_in=37,
              record_every=record_every, replicas=3, seed=5, n_batches=4, trajectory_every=7,
              chunk_steps=100, engine="numpy")  # fmt: skip
    whole = simulate(x, y, shapes, theta0, **kw)  # type: ignore[arg-type]
    path = tmp_path / "run.ckpt"
    calls = {"n": 0}
    advance = _cpu.KernelStepper.advance

    def flaky(self: _cpu.KernelStepper, idx: np.ndarray, snap_at: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return advance(self, idx, snap_at)

    monkeypatch.setattr(_cpu.KernelStepper, "advance", flaky)
    with pytest.raises(KeyboardInterrupt):
        simulate(x, y, shapes, theta0, checkpoint=path, checkpoint_every=0, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(_cpu.KernelStepper, "advance", advance)
    assert path.exists()
    # resumed with another chunk length: the chunking does not change the numbers
    resumed = simulate(x, y, shapes, theta0, checkpoint=path, checkpoint_every=0,  # type: ignore[arg-type]
                       **{**kw, "chunk_steps": 333})  # fmt: skip
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name), err_msg=name)
    # a finished checkpoint gives the result without stepping
    monkeypatch.setattr(_cpu.KernelStepper, "advance", flaky)
    calls["n"] = 5  # the next advance would raise
    again = simulate(x, y, shapes, theta0, checkpoint=path, **kw)  # type: ignore[arg-type]
    np.testing.assert_array_equal(again.cov, whole.cov)


def test_checkpoint_of_another_run_is_refused(rng: np.random.Generator, tmp_path: Path) -> None:
    x, y, theta0 = _problem(rng)
    kw = dict(learning_rate=0.05, batch_size=4, steps=300, burn_in=10, replicas=2, seed=1,
              n_batches=2, engine="numpy")  # fmt: skip
    path = tmp_path / "run.ckpt"
    simulate(x, y, [(3, 4), (2, 3)], theta0, checkpoint=path, **kw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="different run"):
        simulate(x, y, [(3, 4), (2, 3)], theta0, checkpoint=path,  # type: ignore[arg-type]
                 **{**kw, "learning_rate": 0.04})  # fmt: skip
