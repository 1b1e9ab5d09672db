"""Depth >= 2 (docs/theory.md §8, §8a, §8b): aligned measurement, layer-wise theories, symmetry,
IVFR.

Every replica starts from its own start (``init.kind``; ``"auto"`` = the paper's random start,
stored as ``theta_start``); the saturation gate (:mod:`sgdfluct.analysis.saturation`) sets the
burn-in and says whether the quasi-stationary phase was reached; the null space is checked at the
minimum SGD reached (gradient flow from the window mean) and at the constructed balanced minimum.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from sgdfluct import networks
from sgdfluct.analysis.paired import error_gap
from sgdfluct.config import ConfigError, ExperimentConfig
from sgdfluct.data import Dataset
from sgdfluct.runner._common import (
    _IVFR,
    Array,
    _interpolates,
    _ivfr,
    _ivfr_block,
    _ivfr_figures,
    _Outcome,
    _simulate,
    _subplots,
)
from sgdfluct.theory.layered import layer_block

#: a hidden unit counts as dead when its Gram eigenvalue is below this fraction of the largest
#: (the same rule as the measurement's range projection, docs/theory.md §8a)
DEAD_UNIT_RTOL = 1e-2


def _single_layer_comparison(
    config: ExperimentConfig, data: Dataset, rng: np.random.Generator
) -> Any | None:
    """IVFR of a single layer trained on the same data with the same SGD settings (theory: the
    exact discrete-time covariance at W*), for comparison with the deep network (docs/theory.md
    §10 claim
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


def _trajectory_every(config: ExperimentConfig, shapes: list[tuple[int, int]]) -> int:
    """Thinning of stored snapshots: every ``record_every`` steps, at most ~256 MB of them."""
    s = config.sgd
    d = networks.n_params(shapes)
    budget = 256e6 / 8 / (d * s.replicas)
    every = max(s.record_every, math.ceil(s.steps / max(budget, 1.0)))
    return int(every)


def _starts(config: ExperimentConfig, data: Dataset, shapes: list[tuple[int, int]]) -> Array:
    """Start of every replica, (R, d), by ``init.kind`` (docs/theory.md §8b)."""
    kind, init, replicas = config.init_kind, config.init, config.sgd.replicas
    if kind == "random":
        return networks.random_start(shapes, replicas=replicas, scale=init.scale, seed=init.seed)
    if kind == "gradient_flow":
        return networks.gradient_flow_start(
            data.inputs, data.targets, shapes, replicas=replicas, scale=init.scale, seed=init.seed
        )
    if kind == "balanced_minimum":
        theta = networks.balanced_minimum(data.inputs, data.targets, shapes)
        return np.broadcast_to(theta, (replicas, theta.size)).copy()
    raise ConfigError(
        f"init.kind = {kind!r} is not allowed at model.depth = {len(shapes)}: expected one of "
        "'auto', 'random', 'balanced_minimum', 'gradient_flow'"
    )


def _null_space_block(
    theta: Array, shapes: list[tuple[int, int]], x: Array, y: Array, point: str
) -> dict[str, Any]:
    """Null spaces of H and C at a minimum against the closed-form dimension (§8, §8b)."""
    from sgdfluct.theory.symmetry import check_null_space, expected_null_dim

    null = check_null_space(theta, shapes, x, y)
    # the product SGD can reach: rank of the least-squares solution, capped by the narrowest layer
    w_star = networks.least_squares(x, y)
    sv = np.linalg.svd(w_star, compute_uv=False)
    rank_ls = int(np.sum(sv > 1e-8 * sv[0])) if sv.size and sv[0] > 0 else 0
    target_rank = min([rank_ls] + [r for r, _ in shapes[:-1]])
    generic = expected_null_dim(shapes, target_rank)
    return {
        "symmetry_dim": null.expected_dim,
        "expected_dim": generic,
        "expected_dim_note": None
        if generic is not None
        else "no closed form for this shape: only >= sum N_h^2 is tested",
        "null_dim_hessian": null.null_dim_hessian,
        "null_dim_noise": null.null_dim_noise,
        "symmetry_rank": null.symmetry_rank,
        "product_rank": null.product_rank,
        "rank_deficient": null.rank_deficient,
        "spans": bool(null.spans_null_space),
        "symmetry_in_null_hessian": null.symmetry_in_null_hessian,
        "point": point,
    }


def _deep(
    config: ExperimentConfig, data: Dataset, shapes: list[tuple[int, int]], progress: bool
) -> _Outcome:
    from sgdfluct.analysis.alignment import hidden_gram_eigenvalues, measure_layered_covariance
    from sgdfluct.analysis.saturation import saturation_gate, surplus_unit_decay
    from sgdfluct.plotting import two_layer as plot_two
    from sgdfluct.theory.layered import layered_covariance
    from sgdfluct.theory.noise import sampling_note
    from sgdfluct.theory.symmetry import imbalance_eigenvalues

    x, y = data.inputs, data.targets
    s = config.sgd
    theta_start = _starts(config, data, shapes)
    sim = _simulate(
        config,
        data,
        shapes,
        theta_start,
        progress,
        trajectory_every=_trajectory_every(config, shapes),
    )
    gate = saturation_gate(sim.trajectory, sim.trajectory_steps, shapes, x, y)
    try:
        meas = measure_layered_covariance(
            sim.trajectory,
            sim.trajectory_steps,
            shapes,
            x,
            y,
            learning_rate=s.learning_rate,
            window_factor=config.analysis.window_factor,
            burn_in_step=gate.step,
        )
    except ValueError as exc:  # too few quasi-stationary windows: a config problem
        raise ConfigError(
            f"sgd.steps = {s.steps} is too short for the depth >= 2 measurement (docs/theory.md "
            f"§8a): {exc}"
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
        "window_bias_max_removed": meas.window_bias_max,
        "null_variance": meas.null_variance,
        "range_variance": meas.range_variance,
        "n_records": sim.n_records,
        "engine": sim.engine,
        "engine_device": sim.device,
        "engine_dtype": sim.dtype,
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
        # claim 7e: continuum minus best theory's error, paired over the same simulated windows
        windows = np.stack([layer_block(w, shapes, layer) for w in meas.window_covs])
        continuum = layer_block(theories["continuum"].cov, shapes, layer)
        gap = error_gap(continuum, layer_block(best.cov, shapes, layer), windows)
        entry["gap_continuum_minus_renormalized"] = gap.value
        entry["gap_continuum_minus_renormalized_stderr"] = gap.stderr
        entry["rel_error_continuum_stderr"] = error_gap(continuum, None, windows).stderr
        layers[f"layer_{layer}"] = entry
    summary["layers"] = layers
    summary["rel_error_discrete"] = max(v["rel_error_renormalized"] for v in layers.values())
    summary["rel_error_continuum"] = max(v["rel_error_continuum"] for v in layers.values())
    summary["theory_converged"] = {m: bool(t.converged) for m, t in theories.items()}

    summary["init"] = {
        "kind": config.init_kind,
        "scale": config.init.scale,
        "seed": config.init.seed,
    }
    summary["saturation"] = gate.to_summary()
    # the null-space dimension is a property of exact minima (the window mean is only near one):
    # the minimum SGD reached = gradient flow from the window mean (it keeps the imbalance);
    # the constructed point = the balanced minimum (zero-padded surplus units)
    reached = networks.gradient_flow(theta_ref, shapes, x, y)
    summary["null_space"] = _null_space_block(reached, shapes, x, y, "reached minimum")
    summary["null_space_constructed"] = _null_space_block(
        networks.balanced_minimum(x, y, shapes), shapes, x, y, "balanced minimum (constructed)"
    )
    imbalance = gate.imbalance_values  # (R, T, L - 1, N_h)
    if imbalance is None:  # pragma: no cover - the gate always keeps them
        imbalance = imbalance_eigenvalues(sim.trajectory, shapes)
    summary.update(_equilibrium_metrics(config, data, shapes, imbalance, gate))

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
    gram_traj = gate.gram_values  # (R, T, L - 1, N_h)
    if gram_traj is None:  # pragma: no cover - the gate always keeps them
        gram_traj = hidden_gram_eigenvalues(sim.trajectory, shapes)
    final_gram = gram_traj[:, -1].mean(axis=0)
    summary["dead_hidden_units"] = int(
        np.sum(final_gram < DEAD_UNIT_RTOL * final_gram.max(axis=-1, keepdims=True))
    )
    summary["surplus_units"] = surplus_unit_decay(
        np.asarray(sim.trajectory_steps),
        gram_traj,
        summary["null_space"]["product_rank"],
        dead_rtol=DEAD_UNIT_RTOL,
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
            "theta_start": xr.DataArray(
                np.asarray(theta_start, dtype=float),
                dims=("replica", "param"),
                attrs={"meaning": f"weights at step 0 (init.kind = {config.init_kind!r})"},
            ),
            "hidden_gram_eigenvalues": xr.DataArray(
                gram_traj.mean(axis=0),
                dims=("step", "hidden_layer", "hidden_unit"),
                coords={"step": steps, "hidden_layer": np.arange(1, len(shapes))},
                attrs={"meaning": "eigenvalues of W_l W_l^T + W_(l+1)^T W_(l+1), replica mean"},
            ),
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
    gate: Any,
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
        "saturated": bool(gate.saturated),
    }
    return out
