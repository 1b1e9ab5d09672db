"""Pieces shared by the depth-1 and depth >= 2 paths of :mod:`sgdfluct.runner`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from sgdfluct.config import ExperimentConfig
from sgdfluct.data import Dataset

Array = np.ndarray
FigureMaker = Callable[[], Any]


@dataclass
class _Outcome:
    """What one analysis path hands back to :func:`run_experiment`."""

    theta_ref: Array
    mean_sim: Array
    cov_sim: Array
    cov_sim_stderr: Array
    hessian: Array
    noise_cov: Array
    cov_continuum: Array
    cov_discrete: Array
    summary: dict[str, Any]
    figures: dict[str, FigureMaker] = field(default_factory=dict)
    extra: dict[str, xr.DataArray] = field(default_factory=dict)


def _simulate(
    config: ExperimentConfig,
    data: Dataset,
    shapes: list[tuple[int, int]],
    theta0: Array,
    progress: bool,
    trajectory_every: int | None = None,
) -> Any:
    from sgdfluct.io import checkpoint_interval, load_stage, resume_dir, save_stage
    from sgdfluct.simulate import SimulationResult, simulate

    s = config.sgd
    # a claimed run (sgdfluct.io.claim_output_dir) that was interrupted resumes: from the stored
    # result after its simulation, from the engine's last checkpoint during it
    digest = hashlib.sha256(np.ascontiguousarray(theta0, dtype=float).tobytes()).hexdigest()
    stage = f"simulation-{digest[:16]}-{trajectory_every}"
    done = load_stage(stage, SimulationResult)
    if done is not None:
        return done
    folder = resume_dir()
    resume: dict[str, Any] = {}
    # depth >= 2 measures from the stored trajectory (windows, docs/theory.md §8a) and never
    # reads the run-long moments: keep only the mean and its standard error there
    stats: dict[str, Any] = (
        {} if len(shapes) == 1 else {"statistics": "subspace", "subspace_rank": 0}
    )
    if folder is not None:
        resume = {"checkpoint": folder / f"{stage}.ckpt", "checkpoint_every": checkpoint_interval()}
    result = simulate(
        data.inputs,
        data.targets,
        shapes,
        theta0,
        learning_rate=s.learning_rate,
        batch_size=s.batch_size,
        sampling=s.sampling,
        steps=s.steps,
        burn_in=s.burn_in,
        record_every=s.record_every,
        replicas=s.replicas,
        seed=s.seed,
        trajectory_every=trajectory_every,
        progress=progress,
        engine=s.engine,
        device=s.device,
        dtype=s.dtype,
        **stats,
        **resume,
    )
    save_stage(stage, result)
    return result


def _subplots(*args: Any, **kwargs: Any) -> tuple[Figure, Any]:
    """Figure and axes without pyplot: no global figure manager, no backend switch."""
    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


#: residuals below this fraction of the label norm count as interpolation (round-off level)
INTERPOLATION_RTOL = 1e-9


def _interpolates(residuals: Array, targets: Array) -> bool:
    scale = max(float(np.linalg.norm(targets)), 1.0)
    return bool(float(np.linalg.norm(residuals)) <= INTERPOLATION_RTOL * scale)


@dataclass
class _IVFR:
    """IVFR results of the layers where a fit exists, and why the others have none."""

    results: dict[int, Any]
    skipped: dict[int, str]


def _ivfr(
    cov: Array,
    theta_ref: Array,
    shapes: list[tuple[int, int]],
    data: Dataset,
    config: ExperimentConfig,
    rng: np.random.Generator,
    window_covs: Array | None = None,
) -> _IVFR:
    """IVFR analysis layer by layer; a layer with too few live directions (e.g. a one-unit
    bottleneck) or no fluctuations is reported as skipped with the reason."""
    from sgdfluct.landscape import ivfr_analysis

    out = _IVFR(results={}, skipped={})
    for layer in range(1, len(shapes) + 1):
        try:
            out.results.update(
                ivfr_analysis(
                    cov,
                    theta_ref,
                    shapes,
                    data.inputs,
                    data.targets,
                    factor=config.analysis.flatness_factor,
                    window_covs=window_covs,
                    bootstrap=config.analysis.bootstrap,
                    rng=rng,
                    layers=[layer],
                )
            )
        except ValueError as exc:
            out.skipped[layer] = str(exc)
    return out


def _ivfr_block(ivfr: _IVFR) -> dict[str, Any]:
    """The ``summary.json`` IVFR block, with the interval also as scalars (for ``sweep.nc``)."""
    from sgdfluct.landscape import ivfr_summary

    block: dict[str, Any] = ivfr_summary(ivfr.results)["ivfr"] if ivfr.results else {}
    for entry in block.values():
        lo, hi = entry.get("psi_ci") or (None, None)
        entry["psi_ci_low"], entry["psi_ci_high"] = lo, hi
    for layer, reason in ivfr.skipped.items():
        block[f"layer_{layer}"] = {"skipped": reason}
    return dict(sorted(block.items()))


def _ivfr_figures(
    sim: dict[int, Any], theory: dict[int, Any], comparison: tuple[Any, str] | None = None
) -> dict[str, FigureMaker]:
    """IVFR figures: variance vs flatness (with the fit), curvature vs variance, loss profiles;
    ``comparison`` (an IVFR result and its label, e.g. the single layer on the same data) is
    drawn beside every layer."""
    from sgdfluct.plotting import landscape as plot_landscape

    others = [comparison] if comparison is not None else []

    def make(results: dict[int, Any], kind: str) -> FigureMaker:
        def draw() -> Any:
            layers = sorted(results)
            fig, axes = _subplots(3, len(layers), figsize=(5 * len(layers), 12), squeeze=False)
            for col, layer in enumerate(layers):
                plot_landscape.plot_variance_flatness(
                    results[layer], ax=axes[0, col], others=others
                )
                plot_landscape.plot_curvature_variance(
                    results[layer], ax=axes[1, col], others=others
                )
                plot_landscape.plot_loss_profiles(results[layer], ax=axes[2, col])
                axes[0, col].set_title(f"layer {layer} ({kind})")
            fig.tight_layout()
            return fig

        return draw

    figures = {}
    if sim:
        figures["ivfr_simulation"] = make(sim, "simulation")
    if theory:
        figures["ivfr_theory"] = make(theory, "theory")
    return figures
