"""Depth 1 (docs/theory.md §4-7): exact and continuum theory against the simulation, spectra, "
"currents."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import xarray as xr

from sgdfluct import networks
from sgdfluct.config import ExperimentConfig
from sgdfluct.data import Dataset
from sgdfluct.runner._common import (
    Array,
    _interpolates,
    _ivfr,
    _ivfr_block,
    _ivfr_figures,
    _Outcome,
    _simulate,
    _subplots,
)


def _error_metrics(prefix: str, err: Any) -> dict[str, float]:
    return {
        prefix: err.value,
        f"{prefix}_stderr": err.stderr,
        f"{prefix}_noise_floor": err.noise_floor,
    }


#: largest stored trajectory (bytes) for the windowed, calibrated IVFR estimate of one layer
WINDOW_TRAJECTORY_BYTES = 64 * 2**20


def _window_trajectory_every(config: ExperimentConfig, shapes: list[tuple[int, int]]) -> int | None:
    """Record spacing of the trajectory kept for the calibrated IVFR windows (docs/theory.md §9):
    ``record_every``, thinned by an integer factor so that it holds at most
    :data:`WINDOW_TRAJECTORY_BYTES`; None when even 1000 records per replica would not fit (then
    the PCA fit only, labelled)."""
    s = config.sgd
    d = shapes[0][0] * shapes[0][1]
    per_record = 8 * s.replicas * d
    n_rec = s.steps // s.record_every + 1
    factor = max(1, -(-(per_record * n_rec) // WINDOW_TRAJECTORY_BYTES))
    if n_rec // factor < 1000:
        return None
    return s.record_every * factor


def _single_layer_windows(config: ExperimentConfig, sim: Any, hess: Array) -> Array | None:
    """Window covariances of the stationary part of the stored trajectory: windows of
    ``window_factor / (η h_min)`` steps (as the depth >= 2 analysis, docs/theory.md §8a), pooled
    over replicas; None with fewer than four windows or no trajectory."""
    from sgdfluct.landscape import MIN_CALIBRATION_WINDOWS, window_covariances

    if sim.trajectory is None:
        return None
    evals = np.linalg.eigvalsh(0.5 * (hess + hess.T))
    h_min = float(evals[evals > 1e-10 * evals.max()].min())
    s = config.sgd
    length = config.analysis.window_factor / (s.learning_rate * h_min)
    keep = np.asarray(sim.trajectory_steps) > s.burn_in
    traj = np.asarray(sim.trajectory)[:, keep]
    spacing = float(np.diff(np.asarray(sim.trajectory_steps)[:2])[0])
    n_windows = int(traj.shape[1] // max(length / spacing, 2.0))
    if n_windows < MIN_CALIBRATION_WINDOWS:
        return None
    return window_covariances(traj, n_windows)


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
    start = _depth1_start(config, shapes, theta_ref)
    every = _window_trajectory_every(config, shapes)
    sim = _simulate(config, data, shapes, start, progress, trajectory_every=every)
    window_covs = _single_layer_windows(config, sim, hess)

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
    # one weight (n_in = n_out = 1): the current is an antisymmetric 1 x 1 matrix, zero by
    # symmetry in theory and simulation alike; its relative error is undefined (docs/theory.md §6)
    current_zero = current_theory.size == 1 or not np.any(current_theory)
    err_current = (
        None
        if current_zero
        else relative_frobenius_error(current_sim, current_theory, current_sim_se)
    )
    spectra = single_layer_spectra(hess, noise, exact.cov)
    rng = np.random.default_rng(np.random.SeedSequence([s.seed, config.data.seed, 7]))
    ivfr_theory = _ivfr(exact.cov, theta_ref, shapes, data, config, rng)
    ivfr_sim = _ivfr(sim.cov, theta_ref, shapes, data, config, rng, window_covs=window_covs)
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
        **(
            {
                "rel_error_current": None,
                "rel_error_current_note": "the probability current is zero by symmetry "
                "(one weight, or H and M commute): a relative error against 0 is undefined",
            }
            if err_current is None
            else _error_metrics("rel_error_current", err_current)
        ),
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
        "engine_device": sim.device,
        "engine_dtype": sim.dtype,
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
            "theta_start": _theta_start(start, config.sgd.replicas),
            "current_sim": xr.DataArray(current_sim, dims=("param", "param_b")),
            "current_theory": xr.DataArray(current_theory, dims=("param", "param_b")),
        },
    )


def _random_matrix_metrics(
    config: ExperimentConfig, inputs: Array, noise_eigs: Array
) -> dict[str, float]:
    """Kolmogorov-Smirnov distances of the spectra to their random-matrix laws (docs/theory.md §7).

    Defined for whitened Gaussian inputs, N_o = 1 and q = N_i / P < 1: H_x against
    Marchenko-Pastur, C_0 against the chi^2_1-weighted generalized MP law (weight scale = the
    realized mean eigenvalue of C_0) and, as a check of power, C_0 against plain MP.
    """
    q = inputs.shape[1] / inputs.shape[0]
    if config.data.inputs != "gaussian" or config.data.n_out != 1 or not q < 1:
        return {}
    hx = np.linalg.eigvalsh(inputs.T @ inputs / inputs.shape[0])
    noise = np.ascontiguousarray(noise_eigs, dtype=np.float64)
    return dict(_ks_distances(q, hx.tobytes(), noise.tobytes()))


@functools.lru_cache(maxsize=32)
def _ks_distances(q: float, hx_eigs: bytes, noise_eigs: bytes) -> tuple[tuple[str, float], ...]:
    """The KS distances of :func:`_random_matrix_metrics` from the spectra (float64 bytes).

    They depend on the data set only (H_x and C_0 at W*), not on the SGD settings, and the
    generalized MP law costs ~0.6 s (N_i = 10 to 100): memoized, so the cells of a sweep that
    share a data set (e.g. a learning-rate grid) and run in the same worker process compute them
    once.
    A pure function of its arguments: the numbers do not depend on which cell came first.
    """
    from sgdfluct.theory.spectra import (
        generalized_mp_cdf,
        ks_distance,
        marchenko_pastur_cdf,
    )

    hx = np.frombuffer(hx_eigs, dtype=np.float64)
    noise = np.frombuffer(noise_eigs, dtype=np.float64)
    scale = float(np.mean(noise))
    return (
        ("ks_hessian_mp", ks_distance(hx, lambda v: marchenko_pastur_cdf(v, q))),
        (
            "ks_noise_generalized_mp",
            ks_distance(noise, lambda v: generalized_mp_cdf(v, q, scale)),
        ),
        ("ks_noise_mp", ks_distance(noise, lambda v: marchenko_pastur_cdf(v, q, scale=scale))),
    )


def _theta_start(start: Array, replicas: int) -> xr.DataArray:
    """The weights of every replica at step 0 (``result.nc`` variable ``theta_start``)."""
    start = np.asarray(start, dtype=float)
    return xr.DataArray(
        np.broadcast_to(start, (replicas, start.shape[-1])).copy(), dims=("replica", "param")
    )


def _depth1_start(config: ExperimentConfig, shapes: list[tuple[int, int]], w_star: Array) -> Array:
    """Depth-1 start: W* (``least_squares``) or one random draw per replica (``random``)."""
    if config.init_kind == "random":
        return networks.random_start(
            shapes, replicas=config.sgd.replicas, scale=config.init.scale, seed=config.init.seed
        )
    return w_star


def _end_point_metrics(
    config: ExperimentConfig,
    data: Dataset,
    shapes: list[tuple[int, int]],
    start: Array,
    final: Array,
) -> dict[str, Any]:
    """Interpolation: the predicted end point ``W* + W_0 (I - X^+ X)`` of every replica against
    the simulated one, and their test losses (replica means)."""
    x = data.inputs
    w_star = networks.least_squares(x, data.targets)
    starts = np.broadcast_to(np.asarray(start, float), np.asarray(final).shape)
    null = np.eye(x.shape[1]) - np.linalg.pinv(x) @ x  # projector off the row space of X
    ends = [(w_star + s.reshape(w_star.shape) @ null).ravel() for s in starts]
    err = [
        float(np.linalg.norm(f - e) / max(float(np.linalg.norm(e)), 1e-300))
        for f, e in zip(final, ends, strict=True)
    ]
    out: dict[str, Any] = {"init_kind": config.init_kind, "end_point_rel_error": float(max(err))}
    if data.test_inputs.shape[0]:
        xt, yt = data.test_inputs, data.test_targets
        out["test_loss_end_sim"] = float(np.mean([networks.loss(f, shapes, xt, yt) for f in final]))
        out["test_loss_end_theory"] = float(
            np.mean([networks.loss(e, shapes, xt, yt) for e in ends])
        )
    return out


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
    (docs/theory.md §1). The simulation is still run as a check; spectra and IVFR are undefined.

    From a random start (``init.kind = "random"``) SGD keeps the start's component outside the
    row space of X and converges to ``W_end = W* + W_0 (I - X^+ X)``: the end point (and its test
    loss) depends on the start; both are reported, simulated and predicted (docs/theory.md §10,
    claim 7g)."""
    start = _depth1_start(config, shapes, theta_ref)
    sim = _simulate(config, data, shapes, start, progress)
    zero = np.zeros_like(hess)
    summary: dict[str, Any] = {
        "alpha": config.data.alpha,
        "interpolating": True,
        "theory_note": "interpolation (P <= N_i): zero residuals, no SGD noise at W*, "
        "stationary covariance 0",
        "sim_cov_trace": float(np.trace(sim.cov)),
        **_end_point_metrics(config, data, shapes, start, sim.final),
        "n_records": sim.n_records,
        "engine": sim.engine,
        "engine_device": sim.device,
        "engine_dtype": sim.dtype,
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
        extra={"theta_start": _theta_start(start, config.sgd.replicas)},
    )
