"""One experiment end to end (``sgdfluct run``): data, simulation, theory, analysis, files.

This package is orchestration only: every number comes from the library modules
(:mod:`sgdfluct.simulate`, :mod:`sgdfluct.theory`, :mod:`sgdfluct.analysis`,
:mod:`sgdfluct.landscape`). It is the one place where simulation and theory meet: ``_single``
handles depth 1, ``_deep`` depth >= 2, ``_common`` what both share.

Outputs in ``out_dir`` (docs/architecture.md): ``config.toml``, ``result.nc``, ``figures/*.png``
and,
written last so that its presence marks a finished run, ``summary.json``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sgdfluct import networks
from sgdfluct.config import ExperimentConfig
from sgdfluct.data import Dataset, make_dataset
from sgdfluct.io import (
    atomic_save_figure,
    atomic_write_dataset,
    atomic_write_json,
    atomic_write_text,
    require_finite,
)
from sgdfluct.results import DeepRun, RunResult, SingleLayerRun
from sgdfluct.runner._common import FigureMaker, _Outcome
from sgdfluct.runner._deep import _deep
from sgdfluct.runner._single import _single_layer

__all__ = ["N_TEST", "compute", "present", "run_experiment", "run_experiment_without_figures"]

#: size of the independent test set used for the test loss (claim 7, double descent)
N_TEST = 2000


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    progress: bool = False,
    quiet: bool = True,
    figures: bool = True,
    overwrite: bool = False,
    claim: bool = True,
) -> dict[str, Any]:
    """Run one experiment and write its outputs; return the summary (scalar metrics).

    Parameters
    ----------
    config : ExperimentConfig
    out_dir : path
        Output folder (created).
    progress : bool
        Show a progress bar for the simulation.
    quiet : bool
        Kept for API symmetry with the CLI (the runner itself prints nothing).
    figures : bool
        Draw the figures (``figures/*.png``).
    overwrite : bool
        Replace an earlier run in ``out_dir`` (otherwise such a folder is refused).
    claim : bool
        Claim ``out_dir`` first (:func:`sgdfluct.io.claim_output_dir`: lock, refuse a folder
        holding something else, write into a temporary folder renamed into place at the end) and
        check the memory estimate. False writes straight into ``out_dir``, for callers that own
        the folder already (sweep cells are claimed temporary folders).

    Raises
    ------
    OutputError
        ``out_dir`` is locked by another process, holds another output, or cannot be written
        (checked before computing).
    MeasurementError
        A metric came out non-finite (e.g. overflow at huge label noise).
    """
    del quiet
    if claim:
        from sgdfluct.config import check_resources, config_to_toml
        from sgdfluct.io import claim_output_dir

        check_resources(config)
        key = config_to_toml(config)  # an interrupted run of the same config resumes
        with claim_output_dir(out_dir, kind="run", overwrite=overwrite, resume_key=key) as tmp:
            return run_experiment(config, tmp, progress=progress, figures=figures, claim=False)
    result = compute(config, progress=progress)
    return present(result, out_dir, figures=figures)


def compute(config: ExperimentConfig, *, progress: bool = False) -> RunResult:
    """Compute one experiment (no files): simulation, theory and analysis as a typed result.

    Parameters
    ----------
    config : ExperimentConfig
    progress : bool
        Show a progress bar for the simulation.

    Returns
    -------
    SingleLayerRun or DeepRun
        Its ``to_summary()`` and ``to_dataset()`` are ``summary.json`` and ``result.nc``.
    """
    start = time.perf_counter()
    data = make_dataset(config.data, n_test=N_TEST)
    shapes = config.layer_shapes()
    if config.model.depth == 1:
        outcome = _single_layer(config, data, shapes, progress)
    else:
        outcome = _deep(config, data, shapes, progress)
    outcome.summary.update(_test_loss_metrics(config, data, shapes, outcome))
    metrics = dict(outcome.summary)
    # wall-clock facts live apart from the metrics: sweeps leave them out of sweep.nc so that
    # results do not depend on the machine or the number of workers
    timing = {
        "runtime_seconds": time.perf_counter() - start,
        "simulation_seconds": metrics.pop("simulation_seconds", None),
    }
    metrics["machine"] = platform.node()
    cls = SingleLayerRun if config.model.depth == 1 else DeepRun
    return cls(
        config=config,
        data=data,
        theta_ref=outcome.theta_ref,
        mean_sim=outcome.mean_sim,
        cov_sim=outcome.cov_sim,
        cov_sim_stderr=outcome.cov_sim_stderr,
        hessian=outcome.hessian,
        noise_cov=outcome.noise_cov,
        cov_continuum=outcome.cov_continuum,
        cov_discrete=outcome.cov_discrete,
        metrics=metrics,
        timing=timing,
        extra=outcome.extra,
        figures=outcome.figures,
    )


def present(result: RunResult, out_dir: str | Path, *, figures: bool = True) -> dict[str, Any]:
    """Write a computed result into ``out_dir``; return the summary.

    ``config.toml``, ``result.nc`` and ``figures/*.png`` first, ``summary.json`` last (its
    presence marks a finished run). A non-finite metric raises
    :class:`~sgdfluct.errors.MeasurementError` before anything is written.
    """
    out = Path(out_dir)
    require_finite(result.metrics)  # names every non-finite metric; nothing written on failure
    summary = result.to_summary()
    dataset = result.to_dataset()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", dataset.attrs["config"])
    atomic_write_dataset(out / "result.nc", dataset)
    if figures:
        _draw(result.figures, out / "figures")
    atomic_write_json(out / "summary.json", summary)
    return summary


def run_experiment_without_figures(config: ExperimentConfig, out_dir: str | Path) -> dict[str, Any]:
    """:func:`run_experiment` without figures: the cell function of the reproduction's sweeps,
    which draw their own summary figures (drawing is most of a small run's time)."""
    return run_experiment(config, out_dir, figures=False, claim=False)


def _test_loss_metrics(
    config: ExperimentConfig, data: Dataset, shapes: list[tuple[int, int]], outcome: _Outcome
) -> dict[str, float]:
    """Test loss at the reference point and its fluctuation contribution.

    For a linear model the expected test loss over the stationary distribution is
    ``L_test(theta_ref) + ½ tr(H_test Σ)`` to second order (exact for one layer), with
    ``H_test`` the Hessian of the test loss; the second term is the fluctuation contribution.
    """
    if data.test_inputs.shape[0] == 0:
        return {}
    xt, yt = data.test_inputs, data.test_targets
    ref_loss = networks.loss(outcome.theta_ref, shapes, xt, yt)
    h_test = networks.hessian(outcome.theta_ref, shapes, xt, yt)
    fluct_sim = 0.5 * float(np.sum(h_test * outcome.cov_sim))
    fluct_theory = 0.5 * float(np.sum(h_test * outcome.cov_discrete))
    return {
        "train_loss_ref": networks.loss(outcome.theta_ref, shapes, data.inputs, data.targets),
        "test_loss_ref": ref_loss,
        "test_loss_fluctuation_sim": fluct_sim,
        "test_loss_fluctuation_theory": fluct_theory,
        "test_loss_sgd": ref_loss + fluct_sim,
    }


def _draw(makers: Mapping[str, FigureMaker], folder: Path) -> None:
    for name, make in makers.items():
        fig = make()
        try:
            atomic_save_figure(fig, folder / f"{name}.png")
        finally:
            fig.clear()
