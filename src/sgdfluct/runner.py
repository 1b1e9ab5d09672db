"""One experiment end to end (``sgdfluct run``): data, simulation, theory, analysis, files.

This module is orchestration only: every number comes from the library modules
(:mod:`sgdfluct.simulate`, :mod:`sgdfluct.theory`, :mod:`sgdfluct.analysis`,
:mod:`sgdfluct.landscape`). It is the one place where simulation and theory meet.

Outputs in ``out_dir`` (INTERFACE.md): ``config.toml``, ``result.nc``, ``figures/*.png`` and,
written
last so that its presence marks a finished run, ``summary.json``.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from sgdfluct import __version__, networks
from sgdfluct.config import ConfigError, ExperimentConfig, config_to_toml
from sgdfluct.data import Dataset, make_dataset
from sgdfluct.io import (
    atomic_save_figure,
    atomic_write_dataset,
    atomic_write_json,
    atomic_write_text,
)

__all__ = ["N_TEST", "run_experiment", "run_experiment_without_figures"]

#: size of the independent test set used for the test loss (claim 7, double descent)
N_TEST = 2000

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


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    progress: bool = False,
    quiet: bool = True,
    figures: bool = True,
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
    """
    del quiet
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = make_dataset(config.data, n_test=N_TEST)
    shapes = config.layer_shapes()
    if config.model.depth == 1:
        outcome = _single_layer(config, data, shapes, progress)
    else:
        outcome = _deep(config, data, shapes, progress)
    outcome.summary.update(_test_loss_metrics(config, data, shapes, outcome))

    toml_text = config_to_toml(config, header=f"resolved config, sgdfluct {__version__}")
    atomic_write_text(out / "config.toml", toml_text)
    atomic_write_dataset(out / "result.nc", _dataset(config, data, shapes, outcome, toml_text))
    if figures:
        _draw(outcome.figures, out / "figures")
    # wall-clock facts live apart from the metrics: sweeps leave them out of sweep.nc so that
    # results do not depend on the machine or the number of workers
    timing = {
        "runtime_seconds": time.perf_counter() - start,
        "simulation_seconds": outcome.summary.pop("simulation_seconds", None),
    }
    summary = {
        "version": __version__,
        "depth": config.model.depth,
        "n_params": networks.n_params(shapes),
        **outcome.summary,
        "timing": timing,
        "machine": platform.node(),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def run_experiment_without_figures(config: ExperimentConfig, out_dir: str | Path) -> dict[str, Any]:
    """:func:`run_experiment` without figures: the cell function of the reproduction's sweeps,
    which draw their own summary figures (drawing is most of a small run's time)."""
    return run_experiment(config, out_dir, figures=False)


# ----------------------------------------------------------------------------- single layer


def _simulate(
    config: ExperimentConfig,
    data: Dataset,
    shapes: list[tuple[int, int]],
    theta0: Array,
    progress: bool,
    trajectory_every: int | None = None,
) -> Any:
    from sgdfluct.simulate import simulate

    s = config.sgd
    return simulate(
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
    )


def _error_metrics(prefix: str, err: Any) -> dict[str, float]:
    return {
        prefix: err.value,
        f"{prefix}_stderr": err.stderr,
        f"{prefix}_noise_floor": err.noise_floor,
    }


def _single_layer(
    config: ExperimentConfig, data: Dataset, shapes: list[tuple[int, int]], progress: bool
) -> _Outcome:
    from sgdfluct.analysis.single_layer import current_from_lag1, relative_frobenius_error
    from sgdfluct.plotting import single_layer as plot_single
    from sgdfluct.theory.detailed_balance import detailed_balance, relative_commutator
    from sgdfluct.theory.discrete import stationary_covariance
    from sgdfluct.theory.lyapunov import continuum_covariance
    from sgdfluct.theory.noise import batch_factor, least_squares_residuals, sampling_note
    from sgdfluct.theory.spectra import single_layer_spectra

    x, y = data.inputs, data.targets
    s, a = config.sgd, config.analysis
    theta_ref = networks.least_squares(x, y).ravel()
    hess = networks.hessian(theta_ref, shapes, x, y)
    noise = networks.noise_covariance(theta_ref, shapes, x, y)

    residuals = least_squares_residuals(x, y)
    if _interpolates(residuals, y):
        return _interpolating_single_layer(config, data, shapes, theta_ref, hess, noise, progress)
    # theory first: an unstable learning rate is reported before any simulation time is spent
    f_s = batch_factor(s.batch_size, x.shape[0], s.sampling)
    cov_cont = continuum_covariance(hess, noise, learning_rate=s.learning_rate, batch_factor=f_s)
    exact = stationary_covariance(
        x,
        residuals,
        learning_rate=s.learning_rate,
        batch_size=s.batch_size,
        sampling=s.sampling,
        method=a.theory_method,
    )
    sim = _simulate(config, data, shapes, theta_ref, progress)

    err_exact = relative_frobenius_error(sim.cov, exact.cov, sim.cov_stderr)
    err_cont = relative_frobenius_error(sim.cov, cov_cont, sim.cov_stderr)
    balance = detailed_balance(
        hess, noise, learning_rate=s.learning_rate, batch_factor=f_s, cov=cov_cont
    )
    # E[u_k u_{k+1}^T] = M (1 - eta H) exactly, so the lag-1 estimator targets ½[H, M] of the
    # exact discrete-time covariance M
    current_theory = 0.5 * (hess @ exact.cov - exact.cov @ hess)
    current_sim, _ = current_from_lag1(sim.lag1, s.learning_rate)
    current_sim_se = sim.lag1_antisym_stderr / (2.0 * s.learning_rate)
    err_current = relative_frobenius_error(current_sim, current_theory, current_sim_se)
    spectra = single_layer_spectra(hess, noise, exact.cov)
    rng = np.random.default_rng(np.random.SeedSequence([s.seed, config.data.seed, 7]))
    ivfr_theory = _ivfr(exact.cov, theta_ref, shapes, data, config, rng)
    ivfr_sim = _ivfr(sim.cov, theta_ref, shapes, data, config, rng)
    summary: dict[str, Any] = {
        "alpha": config.data.alpha,
        "batch_factor": f_s,
        "theory_note": sampling_note(s.sampling),
        **_error_metrics("rel_error_discrete", err_exact),
        **_error_metrics("rel_error_continuum", err_cont),
        "rel_diff_continuum_vs_discrete": float(
            np.linalg.norm(cov_cont - exact.cov) / np.linalg.norm(exact.cov)
        ),
        "discrete_solver": {
            "method": exact.method,
            "iterations": exact.iterations,
            "residual": exact.residual,
            "converged": exact.converged,
            "spectral_radius": exact.spectral_radius,
        },
        "commutator": balance.commutator,
        "commutator_exact": relative_commutator(hess, noise),
        "entropy_production": balance.entropy_production,
        "current_relative": balance.current_relative,
        **_error_metrics("rel_error_current", err_current),
        "spectral_distance": spectra.distance,
        "hessian_normalized_variance": spectra.hessian_normalized_variance,
        "noise_normalized_variance": spectra.noise_normalized_variance,
        "cov_anisotropy": spectra.cov_anisotropy,
        "curvature_cv": spectra.curvature_cv,
        "hessian_cv": spectra.hessian_cv,
        **_random_matrix_metrics(config, x, spectra.noise_eigs),
        "lambda_max": float(np.linalg.eigvalsh(hess)[-1]),
        "stability_bound": float(2.0 / np.linalg.eigvalsh(hess)[-1]),
        "n_records": sim.n_records,
        "engine": sim.engine,
        "simulation_seconds": sim.seconds,
        "ivfr": _ivfr_block(ivfr_sim),
        "ivfr_theory": _ivfr_block(ivfr_theory),
    }
    n_out = config.data.n_out
    ratio = x.shape[1] / x.shape[0]

    def spectra_figure() -> Any:
        fig, ax = _subplots(figsize=(6, 4))
        hx_eigs = np.linalg.eigvalsh(x.T @ x / x.shape[0])
        if n_out == 1 and ratio < 1:
            plot_single.plot_hessian_noise_spectra(hx_eigs, spectra.noise_eigs, ratio, ax=ax)
        else:
            ax.hist(hx_eigs / hx_eigs.mean(), bins=40, alpha=0.5, density=True, label="H_x")
            ax.hist(
                spectra.noise_eigs / spectra.noise_eigs.mean(),
                bins=40,
                alpha=0.5,
                density=True,
                label="C_0",
            )
            ax.legend()
        return fig

    def comparison_figure() -> Any:
        fig, axes = _subplots(1, 2, figsize=(10, 4))
        plot_single.plot_covariance_comparison(
            sim.cov,
            exact.cov,
            simulated_stderr=sim.cov_stderr,
            label="exact discrete-time",
            ax=axes[0],
        )
        plot_single.plot_covariance_comparison(
            sim.cov,
            cov_cont,
            simulated_stderr=sim.cov_stderr,
            label="continuum (Lyapunov)",
            ax=axes[1],
        )
        return fig

    def cov_spectrum_figure() -> Any:
        fig, ax = _subplots(figsize=(6, 4))
        plot_single.plot_covariance_spectrum(spectra.cov_eigs, ax=ax)
        return fig

    figures = {
        "spectra_hessian_noise": spectra_figure,
        "covariance_sim_vs_theory": comparison_figure,
        "covariance_spectrum": cov_spectrum_figure,
        **_ivfr_figures(ivfr_sim.results, ivfr_theory.results),
    }
    return _Outcome(
        theta_ref=theta_ref,
        mean_sim=sim.mean,
        cov_sim=sim.cov,
        cov_sim_stderr=sim.cov_stderr,
        hessian=hess,
        noise_cov=noise,
        cov_continuum=cov_cont,
        cov_discrete=exact.cov,
        summary=summary,
        figures=figures,
        extra={
            "current_sim": xr.DataArray(current_sim, dims=("param", "param_b")),
            "current_theory": xr.DataArray(current_theory, dims=("param", "param_b")),
        },
    )


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


def _random_matrix_metrics(
    config: ExperimentConfig, inputs: Array, noise_eigs: Array
) -> dict[str, float]:
    """Kolmogorov-Smirnov distances of the spectra to their random-matrix laws (SPEC §7).

    Defined for whitened Gaussian inputs, N_o = 1 and q = N_i / P < 1: H_x against
    Marchenko-Pastur, C_0 against the chi^2_1-weighted generalized MP law (weight scale = the
    realized mean eigenvalue of C_0) and, as a check of power, C_0 against plain MP.
    """
    from sgdfluct.theory.spectra import (
        generalized_mp_cdf,
        ks_distance,
        marchenko_pastur_cdf,
    )

    q = inputs.shape[1] / inputs.shape[0]
    if config.data.inputs != "gaussian" or config.data.n_out != 1 or not q < 1:
        return {}
    hx = np.linalg.eigvalsh(inputs.T @ inputs / inputs.shape[0])
    scale = float(np.mean(noise_eigs))
    return {
        "ks_hessian_mp": ks_distance(hx, lambda v: marchenko_pastur_cdf(v, q)),
        "ks_noise_generalized_mp": ks_distance(
            noise_eigs, lambda v: generalized_mp_cdf(v, q, scale)
        ),
        "ks_noise_mp": ks_distance(noise_eigs, lambda v: marchenko_pastur_cdf(v, q, scale=scale)),
    }


#: a hidden unit counts as dead when its Gram eigenvalue is below this fraction of the largest
#: (the same rule as the measurement's range projection, SPEC §8a)
DEAD_UNIT_RTOL = 1e-2


def _single_layer_comparison(
    config: ExperimentConfig, data: Dataset, rng: np.random.Generator
) -> Any | None:
    """IVFR of a single layer trained on the same data with the same SGD settings (theory: the
    exact discrete-time covariance at W*), for comparison with the deep network (SPEC §10 claim
    6 vs 3). Pooled over outputs, i.e. one 'layer'. None when it is undefined."""
    from sgdfluct.theory.discrete import UnstableError, stationary_covariance
    from sgdfluct.theory.noise import least_squares_residuals

    x, y = data.inputs, data.targets
    residuals = least_squares_residuals(x, y)
    if _interpolates(residuals, y):
        return None
    s = config.sgd
    try:
        exact = stationary_covariance(
            x,
            residuals,
            learning_rate=s.learning_rate,
            batch_size=s.batch_size,
            sampling=s.sampling,
            method=config.analysis.theory_method,
        )
    except UnstableError:
        return None
    shapes = [(y.shape[1], x.shape[1])]
    theta = networks.least_squares(x, y).ravel()
    result = _ivfr(exact.cov, theta, shapes, data, config, rng)
    return result.results.get(1)


#: residuals below this fraction of the label norm count as interpolation (round-off level)
INTERPOLATION_RTOL = 1e-9


def _interpolates(residuals: Array, targets: Array) -> bool:
    scale = max(float(np.linalg.norm(targets)), 1.0)
    return bool(float(np.linalg.norm(residuals)) <= INTERPOLATION_RTOL * scale)


def _interpolating_single_layer(
    config: ExperimentConfig,
    data: Dataset,
    shapes: list[tuple[int, int]],
    theta_ref: Array,
    hess: Array,
    noise: Array,
    progress: bool,
) -> _Outcome:
    """Overparameterized single layer (P <= N_i): W* interpolates, every per-sample gradient
    vanishes at W*, so SGD started there has no noise and the stationary covariance is zero
    (SPEC §1). The simulation is still run as a check; spectra and IVFR are undefined."""
    sim = _simulate(config, data, shapes, theta_ref, progress)
    zero = np.zeros_like(hess)
    summary: dict[str, Any] = {
        "alpha": config.data.alpha,
        "interpolating": True,
        "theory_note": "interpolation (P <= N_i): zero residuals, no SGD noise at W*, "
        "stationary covariance 0",
        "sim_cov_trace": float(np.trace(sim.cov)),
        "n_records": sim.n_records,
        "engine": sim.engine,
        "simulation_seconds": sim.seconds,
    }
    return _Outcome(
        theta_ref=theta_ref,
        mean_sim=sim.mean,
        cov_sim=sim.cov,
        cov_sim_stderr=sim.cov_stderr,
        hessian=hess,
        noise_cov=noise,
        cov_continuum=zero,
        cov_discrete=zero,
        summary=summary,
    )


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


# ----------------------------------------------------------------------------- depth >= 2


def _trajectory_every(config: ExperimentConfig, shapes: list[tuple[int, int]]) -> int:
    """Thinning of stored snapshots: every ``record_every`` steps, at most ~256 MB of them."""
    s = config.sgd
    d = networks.n_params(shapes)
    budget = 256e6 / 8 / (d * s.replicas)
    every = max(s.record_every, math.ceil(s.steps / max(budget, 1.0)))
    return int(every)


def _deep(
    config: ExperimentConfig, data: Dataset, shapes: list[tuple[int, int]], progress: bool
) -> _Outcome:
    from sgdfluct.analysis.alignment import hidden_gram_eigenvalues, measure_layered_covariance
    from sgdfluct.plotting import two_layer as plot_two
    from sgdfluct.theory.layered import layered_covariance
    from sgdfluct.theory.noise import sampling_note
    from sgdfluct.theory.symmetry import check_null_space, imbalance_eigenvalues

    x, y = data.inputs, data.targets
    s = config.sgd
    theta0 = networks.balanced_minimum(x, y, shapes)
    sim = _simulate(
        config, data, shapes, theta0, progress, trajectory_every=_trajectory_every(config, shapes)
    )
    try:
        meas = measure_layered_covariance(
            sim.trajectory,
            sim.trajectory_steps,
            shapes,
            x,
            y,
            learning_rate=s.learning_rate,
            window_factor=config.analysis.window_factor,
        )
    except ValueError as exc:  # too few quasi-stationary windows: a config problem
        raise ConfigError(
            f"sgd.steps = {s.steps} is too short for the depth >= 2 measurement (SPEC §8a): {exc}"
        ) from None
    theta_ref = meas.theta_ref
    hess = networks.hessian(theta_ref, shapes, x, y)
    noise = networks.noise_covariance(theta_ref, shapes, x, y)
    rng = np.random.default_rng(np.random.SeedSequence([s.seed, config.data.seed, 11]))
    theories = {
        method: layered_covariance(
            theta_ref,
            shapes,
            x,
            y,
            method=method,
            rng=rng,
            learning_rate=s.learning_rate,
            batch_size=s.batch_size,
            sampling=s.sampling,
        )
        for method in ("continuum", "discrete", "multiplicative", "renormalized")
    }
    best = theories["renormalized"]
    summary: dict[str, Any] = {
        "alpha": config.data.alpha,
        "theory_note": sampling_note(s.sampling),
        "n_windows": meas.n_windows,
        "window_steps": meas.window_steps,
        "burn_in_step": meas.burn_in_step,
        "range_dim": meas.range_dim,
        "null_variance": meas.null_variance,
        "range_variance": meas.range_variance,
        "n_records": sim.n_records,
        "engine": sim.engine,
        "simulation_seconds": sim.seconds,
    }
    layers: dict[str, Any] = {}
    for layer in range(1, len(shapes) + 1):
        entry: dict[str, Any] = {"noise_floor": meas.noise_floor(layer)}
        for method, theory in theories.items():
            entry[f"rel_error_{method}"] = meas.relative_error(theory.cov, layer)
        block = meas.layer(layer)
        eig = np.linalg.eigvalsh(block)
        eig = eig[eig > eig.max() * 1e-8]
        entry["anisotropy"] = float(eig.std() / eig.mean())
        layers[f"layer_{layer}"] = entry
    summary["layers"] = layers
    summary["rel_error_discrete"] = max(v["rel_error_renormalized"] for v in layers.values())
    summary["rel_error_continuum"] = max(v["rel_error_continuum"] for v in layers.values())
    summary["theory_converged"] = {m: bool(t.converged) for m, t in theories.items()}

    # the null-space dimension is a property of exact minima (the window mean is only near one)
    null = check_null_space(theta0, shapes, x, y)
    summary["null_space"] = {
        "expected_dim": null.expected_dim,
        "null_dim_hessian": null.null_dim_hessian,
        "null_dim_noise": null.null_dim_noise,
        "symmetry_rank": null.symmetry_rank,
        "rank_deficient": null.rank_deficient,
        "spans": bool(null.spans_null_space),
        "symmetry_in_null_hessian": null.symmetry_in_null_hessian,
        "point": "balanced minimum",
    }
    imbalance = imbalance_eigenvalues(sim.trajectory, shapes)  # (R, T, L - 1, N_h)
    summary.update(_equilibrium_metrics(config, data, shapes, imbalance, meas))

    ivfr_rng = np.random.default_rng(np.random.SeedSequence([s.seed, config.data.seed, 13]))
    ivfr_sim = _ivfr(
        meas.cov, theta_ref, shapes, data, config, ivfr_rng, window_covs=meas.window_covs
    )
    ivfr_theory = _ivfr(best.cov, theta_ref, shapes, data, config, ivfr_rng)
    single = _single_layer_comparison(config, data, ivfr_rng)
    summary["ivfr"] = _ivfr_block(ivfr_sim)
    summary["ivfr_theory"] = _ivfr_block(ivfr_theory)
    if single is not None:
        summary["ivfr_single_layer_same_data"] = _ivfr_block(_IVFR(results={1: single}, skipped={}))
    gram = hidden_gram_eigenvalues(sim.trajectory[:, -1, :], shapes)  # (R, L - 1, N_h)
    final_gram = gram.mean(axis=0)
    summary["dead_hidden_units"] = int(
        np.sum(final_gram < DEAD_UNIT_RTOL * final_gram.max(axis=-1, keepdims=True))
    )
    summary["ivfr_continuum"] = _ivfr_block(
        _ivfr(theories["continuum"].cov, theta_ref, shapes, data, config, ivfr_rng)
    )

    def imbalance_figure() -> Any:
        fig, ax = _subplots(figsize=(7, 4))
        predicted = summary.get("equilibrium", {}).get("predicted_imbalance")
        plot_two.plot_imbalance(
            sim.trajectory_steps,
            imbalance,
            predicted=None if predicted is None else np.asarray(predicted),
            ax=ax,
        )
        return fig

    def spectra_figure() -> Any:
        layers = range(1, len(shapes) + 1)
        fig, axes = _subplots(1, len(shapes), figsize=(5 * len(shapes), 4), squeeze=False)
        plot_two.plot_layer_spectra(
            [meas.layer(l) for l in layers],
            {m: [t.layer(shapes, l) for l in layers] for m, t in theories.items()},
            ax=list(axes[0]),
        )
        fig.tight_layout()
        return fig

    figures = {
        "imbalance": imbalance_figure,
        "layer_spectra": spectra_figure,
        **_ivfr_figures(
            ivfr_sim.results,
            ivfr_theory.results,
            None if single is None else (single, "single layer, same data (theory)"),
        ),
    }
    steps = np.asarray(sim.trajectory_steps)
    imbalance_mean = np.asarray(imbalance).mean(axis=0)  # (T, L - 1, N_h)
    return _Outcome(
        theta_ref=theta_ref,
        mean_sim=meas.theta_ref,
        cov_sim=meas.cov,
        cov_sim_stderr=meas.cov_stderr,
        hessian=hess,
        noise_cov=noise,
        cov_continuum=theories["continuum"].cov,
        cov_discrete=best.cov,
        summary=summary,
        figures=figures,
        extra={
            "weight_cov_discrete_additive": xr.DataArray(
                theories["discrete"].cov, dims=("param", "param_b")
            ),
            "weight_cov_multiplicative": xr.DataArray(
                theories["multiplicative"].cov, dims=("param", "param_b")
            ),
            "imbalance_eigenvalues": xr.DataArray(
                imbalance_mean,
                dims=("step", "hidden_layer", "hidden_unit"),
                coords={"step": steps, "hidden_layer": np.arange(1, len(shapes))},
                attrs={"meaning": "eigenvalues of W_l W_l^T - W_(l+1)^T W_(l+1), replica mean"},
            ),
        },
    )


def _equilibrium_metrics(
    config: ExperimentConfig,
    data: Dataset,
    shapes: list[tuple[int, int]],
    imbalance: Array,
    meas: Any,
) -> dict[str, Any]:
    """Predicted (noise equilibrium, depth 2) vs measured imbalance eigenvalues."""
    from sgdfluct.theory.symmetry import noise_equilibrium

    out: dict[str, Any] = {}
    if len(shapes) != 2:
        return out
    measured = np.asarray(imbalance)[..., 0, :]  # (R, T, N_h): the one hidden layer
    tail = measured[:, -max(1, measured.shape[1] // 10) :, :]  # last 10 % of the run
    eq = noise_equilibrium(data.inputs, data.targets, config.model.hidden)
    predicted = np.sort(np.asarray(eq.imbalance_eigenvalues))
    final = np.sort(tail.reshape(-1, tail.shape[-1]).mean(axis=0))
    out["equilibrium"] = {
        "predicted_imbalance": predicted.tolist(),
        "measured_imbalance": final.tolist(),
        "rel_error": float(
            np.linalg.norm(final - predicted) / max(float(np.linalg.norm(predicted)), 1e-300)
        ),
        "saturated": bool(meas.saturation.saturated) if meas.saturation is not None else None,
    }
    return out


# ----------------------------------------------------------------------------- shared


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


def _dataset(
    config: ExperimentConfig,
    data: Dataset,
    shapes: list[tuple[int, int]],
    outcome: _Outcome,
    toml_text: str,
) -> xr.Dataset:
    pp = ("param", "param_b")
    variables = {
        "inputs": (("sample", "input"), data.inputs),
        "targets": (("sample", "output"), data.targets),
        "theta_ref": (("param",), outcome.theta_ref),
        "weight_mean_sim": (("param",), outcome.mean_sim),
        "weight_cov_sim": (pp, outcome.cov_sim),
        "weight_cov_sim_stderr": (pp, outcome.cov_sim_stderr),
        "hessian": (pp, outcome.hessian),
        "noise_cov": (pp, outcome.noise_cov),
        "weight_cov_continuum": (pp, outcome.cov_continuum),
        "weight_cov_discrete": (pp, outcome.cov_discrete),
    }
    layer = networks.layer_index(shapes).astype(np.int32)
    ds = xr.Dataset(
        {k: xr.DataArray(np.asarray(v[1], dtype=float), dims=v[0]) for k, v in variables.items()},
        coords={"layer": ("param", layer), "layer_b": ("param_b", layer)},
    )
    for name, array in outcome.extra.items():
        ds[name] = array
    ds.attrs.update(
        {
            "config": toml_text,
            "version": __version__,
            "data_seed": config.data.seed,
            "sgd_seed": config.sgd.seed,
            "depth": config.model.depth,
            "layer_shapes": str(shapes),
            "parameter_order": "row-major vec(W_1), then vec(W_2), ... (forward order)",
        }
    )
    return ds


def _subplots(*args: Any, **kwargs: Any) -> tuple[Figure, Any]:
    """Figure and axes without pyplot: no global figure manager, no backend switch."""
    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _draw(makers: dict[str, FigureMaker], folder: Path) -> None:
    for name, make in makers.items():
        fig = make()
        try:
            atomic_save_figure(fig, folder / f"{name}.png")
        finally:
            fig.clear()
