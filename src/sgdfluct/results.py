"""Typed results of a run: one frozen object, two views (``summary.json`` and ``result.nc``).

:func:`sgdfluct.runner.compute` returns a :class:`SingleLayerRun` (depth 1) or a
:class:`DeepRun` (depth >= 2). Their :meth:`~RunResult.to_summary` and
:meth:`~RunResult.to_dataset` are the only places where the keys of ``summary.json`` and the
variables of ``result.nc`` are written, and every top-level summary key is declared once, with
its meaning, in :data:`SUMMARY_KEYS` (a test checks that a run emits nothing undeclared).

Undefined and exactly-zero values have one representation everywhere:

- :class:`Noted` ``(None, note)`` — a value that does not exist (e.g. a relative error against
  an exactly-zero reference) is written as ``null`` with a sibling ``<key>_note`` saying why;
- :class:`Noted` ``(0.0, note)`` — a quantity that is zero by symmetry or construction is written
  as ``0`` with the note (it is a fact, never evidence).

A float metric that is not finite and not :class:`Noted` is a wrong number: :meth:`to_summary`
raises :class:`~sgdfluct.errors.MeasurementError` instead of writing ``null`` silently.
Asking :meth:`~RunResult.metric` for a key that does not exist raises :class:`MetricMissing`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from sgdfluct.errors import MeasurementError, SgdfluctError

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

    from sgdfluct.config import ExperimentConfig
    from sgdfluct.data import Dataset

__all__ = [
    "SUMMARY_KEYS",
    "DeepRun",
    "MetricMissing",
    "Noted",
    "RunResult",
    "SingleLayerRun",
]

Array = NDArray[np.float64]


class MetricMissing(SgdfluctError, KeyError):
    """A metric that a consumer (a claim, a sweep) asked for does not exist in the result."""

    def __str__(self) -> str:  # KeyError quotes its argument; the message reads better plain
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Noted:
    """A value with the reason it is what it is: ``None`` (undefined) or an exact value (e.g.
    ``0.0`` by symmetry). Written as ``key: value`` and ``key_note: note``."""

    value: float | None
    note: str


#: every top-level key of ``summary.json`` and what it means (depth 1 and depth >= 2)
SUMMARY_KEYS: dict[str, str] = {
    # identity
    "version": "sgdfluct version that wrote the result",
    "depth": "number of weight layers L",
    "n_params": "number of parameters d",
    "alpha": "samples per input dimension P / N_i",
    "batch_factor": "f_S (docs/theory.md §4)",
    "theory_note": "caveat of the theory for this sampling mode ('' when exact)",
    "interpolating": "depth 1, P <= N_i: W* interpolates and SGD has no noise at W*",
    "sim_cov_trace": "trace of the simulated covariance (interpolating single layer)",
    "init_kind": "interpolating single layer: the start kind the end point depends on",
    "end_point_rel_error": "interpolating single layer: worst relative error of the simulated end "
    "point against W* + W_start (I − X⁺X)",
    "test_loss_end_sim": "interpolating single layer: test loss at the simulated end points",
    "test_loss_end_theory": "interpolating single layer: test loss at the predicted end points",
    "engine": "the SGD engine that ran (sgd.engine resolved)",
    "engine_device": "the device it ran on ('cpu' or 'cuda')",
    "engine_dtype": "the dtype of its SGD steps (statistics are float64 whatever it is)",
    "n_records": "records per replica after burn-in",
    "init": "the start of the replicas: kind, scale, seed (docs/theory.md §8b)",
    # single layer: theory vs simulation
    "rel_error_discrete": "relative Frobenius error of the simulated covariance against the exact "
    "discrete-time theory (depth 1) or the best discrete theory, worst layer (depth >= 2)",
    "rel_error_discrete_stderr": "standard error of rel_error_discrete",
    "rel_error_discrete_noise_floor": "error an exact theory would show given the sampling noise",
    "rel_error_continuum": "same against the continuum (Lyapunov) theory",
    "rel_error_continuum_stderr": "standard error of rel_error_continuum",
    "rel_error_continuum_noise_floor": "noise floor of rel_error_continuum",
    "rel_diff_continuum_vs_discrete": "||Σ_cont − Σ_exact|| / ||Σ_exact|| (the O(η) correction)",
    "discrete_solver": "diagnostics of the exact solver: method, iterations, residual, ...",
    "commutator": "relative commutator ||[H, C_0]|| / (||H|| ||C_0||) (docs/theory.md §6)",
    "commutator_exact": "the same, computed directly from H and C_0",
    "entropy_production": "entropy production rate of the continuum OU process (>= 0: a theorem)",
    "current_relative": "||Q|| / ||D||, Q the probability current",
    "rel_error_current": "simulated current (lag-1 estimator) against ½[H, M]",
    "rel_error_current_stderr": "standard error of rel_error_current",
    "rel_error_current_noise_floor": "noise floor of rel_error_current",
    "spectral_distance": "Wasserstein-1 distance of the mean-normalized spectra of C_0 and H",
    "hessian_normalized_variance": "normalized variance of H's spectrum (≈ q)",
    "noise_normalized_variance": "normalized variance of C_0's spectrum (≈ 3q)",
    "cov_anisotropy": "coefficient of variation of the covariance eigenvalues",
    "curvature_cv": "coefficient of variation of the curvature along the covariance's PCs",
    "hessian_cv": "coefficient of variation of H's eigenvalues",
    "ks_hessian_mp": "KS distance of H_x's spectrum to Marchenko-Pastur",
    "ks_noise_generalized_mp": "KS distance of C_0's spectrum to the generalized MP law",
    "ks_noise_mp": "KS distance of C_0's spectrum to plain MP (a power check)",
    "lambda_max": "largest eigenvalue of H",
    "stability_bound": "2 / lambda_max: the deterministic learning-rate bound",
    # IVFR
    "ivfr": "IVFR fit per layer from the simulation: psi, psi_ci, spearman, ...",
    "ivfr_theory": "IVFR fit per layer from the theory covariance",
    "ivfr_continuum": "IVFR fit per layer from the continuum theory (depth >= 2)",
    "ivfr_single_layer_same_data": "IVFR of a single layer on the same data (depth >= 2)",
    # test loss (claim 7g)
    "train_loss_ref": "training loss at theta_ref",
    "test_loss_ref": "test loss at theta_ref",
    "test_loss_fluctuation_sim": "½ tr(H_test Σ_sim): the fluctuation part of the test loss",
    "test_loss_fluctuation_theory": "½ tr(H_test Σ_theory)",
    "test_loss_sgd": "test_loss_ref + test_loss_fluctuation_sim",
    # depth >= 2 measurement (docs/theory.md §8a, §8b)
    "n_windows": "quasi-stationary windows pooled",
    "window_steps": "steps per window",
    "burn_in_step": "step where the measurement starts (saturation)",
    "range_dim": "dimension of range(H) used",
    "null_variance": "variance along the null (orbit) directions",
    "range_variance": "variance on range(H)",
    "window_bias_max_removed": "largest relative bias of a window covariance entry removed by "
    "the window-mean correction (docs/theory.md §8a)",
    "layers": "per layer: noise floor, relative error of every theory, anisotropy",
    "theory_converged": "per theory method: converged",
    "saturation": "the saturation gate: whether and when the run reached the quasi-stationary "
    "phase (docs/theory.md §8b)",
    "null_space": "null space of H and C at the minimum SGD reached",
    "null_space_constructed": "null space at the constructed balanced minimum",
    "equilibrium": "imbalance against the noise-equilibrium prediction",
    "dead_hidden_units": "hidden units whose Gram eigenvalue fell below DEAD_UNIT_RTOL",
    "surplus_units": "decay of surplus hidden units from a random start",
    # bookkeeping
    "timing": "wall-clock facts (not metrics; left out of sweep.nc)",
    "machine": "host name",
}


def _emit(out: dict[str, Any], name: str, value: Any, path: str) -> None:
    """Write ``value`` as ``out[name]`` (``path`` names it in errors); a :class:`Noted` value
    also writes ``out[name + "_note"]``."""
    if isinstance(value, Noted):
        out[name] = value.value
        out[f"{name}_note"] = value.note
    else:
        out[name] = _convert(value, path)


def _convert(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        inner: dict[str, Any] = {}
        for k, v in value.items():
            _emit(inner, str(k), v, f"{path}.{k}")
        return inner
    if isinstance(value, list | tuple):
        return [_convert(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _convert(value.tolist(), path)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        if not math.isfinite(number):
            raise MeasurementError(
                f"metric {path} = {number} is not finite: the run produced no trustworthy number "
                "(overflow or a degenerate problem); check the config's scales (e.g. "
                "data.label_noise, sgd.learning_rate)"
            )
        return number
    return value


def _lookup(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise MetricMissing(f"metric {path!r} does not exist in this result")
        node = node[part]
    return node


@dataclass(frozen=True, kw_only=True, eq=False)
class RunResult:
    """What one ``run`` computed (docs/architecture.md "Outputs of run").

    Attributes
    ----------
    config : ExperimentConfig
    data : Dataset
    theta_ref, mean_sim : (d,) arrays
        Reference point and simulated stationary mean.
    cov_sim, cov_sim_stderr : (d, d) arrays
        Simulated covariance and its standard error.
    hessian, noise_cov : (d, d) arrays
        ``H`` and ``C`` (not divided by S) at ``theta_ref``.
    cov_continuum, cov_discrete : (d, d) arrays
        Continuum theory and the exact (depth 1) / best (depth >= 2) discrete-time theory.
    metrics : mapping
        Scalar metrics (keys declared in :data:`SUMMARY_KEYS`).
    timing : mapping
        Wall-clock facts (kept apart from the metrics).
    extra : mapping of name -> (dims, array)
        Further ``result.nc`` variables (currents, imbalance, ``theta_start``, ...).
    figures : mapping of name -> callable returning a matplotlib Figure
        Drawn by :func:`sgdfluct.runner.present`.
    """

    kind: ClassVar[str] = "run"

    config: ExperimentConfig
    data: Dataset
    theta_ref: Array
    mean_sim: Array
    cov_sim: Array
    cov_sim_stderr: Array
    hessian: Array
    noise_cov: Array
    cov_continuum: Array
    cov_discrete: Array
    metrics: Mapping[str, Any]
    timing: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    figures: Mapping[str, Callable[[], Any]] = field(default_factory=dict, repr=False)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """Layer shapes ``(rows, cols)`` of ``W_1 ... W_L``."""
        return self.config.layer_shapes()

    def metric(self, path: str) -> Any:
        """The metric at the dotted ``path`` (e.g. ``"layers.layer_1.noise_floor"``).

        Raises
        ------
        MetricMissing
            If it does not exist (never NaN).
        """
        value = _lookup(self.metrics, path)
        return value.value if isinstance(value, Noted) else value

    def to_summary(self) -> dict[str, Any]:
        """``summary.json``: identity, the metrics, timing (JSON-ready; floats checked)."""
        from sgdfluct import networks
        from sgdfluct._version import __version__

        tree: dict[str, Any] = {
            "version": __version__,
            "depth": self.config.model.depth,
            "n_params": networks.n_params(self.shapes),
            **self.metrics,
            "timing": dict(self.timing),
        }
        out: dict[str, Any] = {}
        for key, value in tree.items():
            _emit(out, key, value, key)
        return out

    def to_dataset(self) -> xr.Dataset:
        """``result.nc``: the arrays of docs/architecture.md with named dims; config, version and
        seeds
        in ``attrs``."""
        import xarray as xr

        from sgdfluct import networks
        from sgdfluct._version import __version__
        from sgdfluct.config import config_to_toml

        pp = ("param", "param_b")
        variables = {
            "inputs": (("sample", "input"), self.data.inputs),
            "targets": (("sample", "output"), self.data.targets),
            "theta_ref": (("param",), self.theta_ref),
            "weight_mean_sim": (("param",), self.mean_sim),
            "weight_cov_sim": (pp, self.cov_sim),
            "weight_cov_sim_stderr": (pp, self.cov_sim_stderr),
            "hessian": (pp, self.hessian),
            "noise_cov": (pp, self.noise_cov),
            "weight_cov_continuum": (pp, self.cov_continuum),
            "weight_cov_discrete": (pp, self.cov_discrete),
        }
        shapes = self.shapes
        layer = networks.layer_index(shapes).astype(np.int32)
        ds = xr.Dataset(
            {
                k: xr.DataArray(np.asarray(v[1], dtype=float), dims=v[0])
                for k, v in variables.items()
            },
            coords={"layer": ("param", layer), "layer_b": ("param_b", layer)},
        )
        for name, array in self.extra.items():
            ds[name] = array
        config = self.config
        ds.attrs.update(
            {
                "config": config_to_toml(config, header=f"resolved config, sgdfluct {__version__}"),
                "version": __version__,
                "data_seed": config.data.seed,
                "sgd_seed": config.sgd.seed,
                "init_seed": config.init.seed,
                "init_kind": config.init_kind,
                "depth": config.model.depth,
                "layer_shapes": str(shapes),
                "parameter_order": "row-major vec(W_1), then vec(W_2), ... (forward order)",
                "result_kind": self.kind,
            }
        )
        return ds


@dataclass(frozen=True, kw_only=True, eq=False)
class SingleLayerRun(RunResult):
    """A depth-1 run: exact discrete-time theory at ``W*`` against the simulation (§4-7)."""

    kind: ClassVar[str] = "single_layer"


@dataclass(frozen=True, kw_only=True, eq=False)
class DeepRun(RunResult):
    """A depth >= 2 run: aligned, range-projected measurement against layer-wise theories
    (§8, §8a, §8b)."""

    kind: ClassVar[str] = "deep"
