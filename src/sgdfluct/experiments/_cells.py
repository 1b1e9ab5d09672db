"""A cheap, deterministic cell function for sweep tests and dry runs.

:func:`synthetic_cell` follows the :data:`~sgdfluct.experiments.sweep.CellFn` contract of the real
runner (writes ``config.toml`` and, last, ``summary.json``) in milliseconds: it builds the data
set of the config, fits least squares and adds a Monte Carlo number seeded by ``sgd.seed``, so its
metrics depend on every seed and on the grid values, and are identical wherever they are computed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from sgdfluct.config import ExperimentConfig, config_to_toml
from sgdfluct.data import make_dataset
from sgdfluct.io import atomic_write_json, atomic_write_text
from sgdfluct.networks import least_squares

__all__ = ["dying_cell", "failing_cell", "synthetic_cell", "synthetic_metrics"]


def synthetic_metrics(config: ExperimentConfig) -> dict[str, Any]:
    """Nested metrics computed from the config (numbers, a flag, a string and a list)."""
    data = make_dataset(config.data)
    w_star = least_squares(data.inputs, data.targets)
    residuals = data.inputs @ w_star.T - data.targets
    train_loss = 0.5 * float(np.mean(np.sum(residuals**2, axis=1)))
    rng = np.random.default_rng(config.sgd.seed)
    draws = rng.standard_normal(config.sgd.batch_size)
    return {
        "train_loss": train_loss,
        "n_params": int(w_star.size),
        "sgd": {
            "noise_scale": config.sgd.learning_rate / config.sgd.batch_size,
            "mc_mean": float(draws.mean()),
        },
        "underparameterized": bool(config.data.n_samples > config.data.n_in),
        "note": "strings are not gathered",
        "spectrum": [1.0, 2.0],
    }


def synthetic_cell(
    config: ExperimentConfig, cell_dir: Path, *, sleep: float = 0.0, log: Path | None = None
) -> dict[str, Any]:
    """Write ``config.toml`` and ``summary.json`` into ``cell_dir``; return the metrics.

    ``sleep`` (seconds) simulates a slow cell; ``log``, if given, gets one line per call (the
    cell's ``data.n_samples``, ``sgd.learning_rate``, seeds and ``sgd.steps``) so tests can count
    computations and see their order.
    """
    cell_dir = Path(cell_dir)
    if log is not None:
        with open(log, "a") as fh:
            fh.write(
                f"{config.data.n_samples} {config.sgd.learning_rate!r} "
                f"{config.data.seed} {config.sgd.seed} {config.sgd.steps}\n"
            )
    if sleep > 0:
        time.sleep(sleep)
    metrics = synthetic_metrics(config)
    atomic_write_text(cell_dir / "config.toml", config_to_toml(config))
    atomic_write_json(cell_dir / "summary.json", metrics)
    return metrics


def dying_cell(
    config: ExperimentConfig, cell_dir: Path, *, marker: Path, n_samples: int
) -> dict[str, Any]:
    """Like :func:`synthetic_cell`, but the first call with ``data.n_samples == n_samples`` kills
    its own process (SIGKILL) after creating ``marker``: a fault injection for resume tests."""
    import os
    import signal

    if config.data.n_samples == n_samples and not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return synthetic_cell(config, cell_dir)


def failing_cell(config: ExperimentConfig, cell_dir: Path, *, n_samples: int) -> dict[str, Any]:
    """Like :func:`synthetic_cell`, but raises for the cells with ``data.n_samples == n_samples``
    (every time): a failure confined to some cells of a sweep."""
    if config.data.n_samples == n_samples:
        raise RuntimeError(f"failing_cell: n_samples = {n_samples}")
    return synthetic_cell(config, cell_dir)
