"""The probe's frozen results: :class:`LayerResult` per layer, :class:`ProbeRun` (docs §11).

Their views: ``ProbeRun.to_summary()`` (``summary.json``), ``to_dataset()`` (``result.nc``) and
``figures()``. The thresholds that define the ``sharp`` directions and the drift share live here
with the fields they define.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._spectrum import HessianSpectrum
from ._stream import PLATEAU_Z

__all__ = [
    "DRIFT_SHARE_MAX",
    "NEAR_NULL_RTOL",
    "WELL_ABOVE_ZERO_RTOL",
    "WINDOW_RELAXATIONS",
    "LayerResult",
    "ProbeRun",
    "none_if_undefined",
]


Array = NDArray[np.float64]

#: an eigenvalue θ of the Hessian compressed to the probed subspace is "near-null" when
#: |θ| <= NEAR_NULL_RTOL · λ_max(H) (λ_max of the full Hessian by Lanczos)
NEAR_NULL_RTOL = 1e-3
#: a direction's curvature is "well above zero" when k_i >= WELL_ABOVE_ZERO_RTOL · λ_max(H)
#: (ten times the near-null level) and its drift share is below DRIFT_SHARE_MAX
WELL_ABOVE_ZERO_RTOL = 1e-2
DRIFT_SHARE_MAX = 0.5
#: the window should span this many relaxation times 1/(η k_min) (docs/theory.md §11: 100/(η k_min))
WINDOW_RELAXATIONS = 100.0


def none_if_undefined(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


@dataclass(frozen=True, kw_only=True)
class LayerResult:
    """Probe measurements of one layer along its k directions (docs/theory.md §11).

    Attributes
    ----------
    layer, name, n_params : int, str, int
        1-based layer number, module name, parameters of the layer (weight and bias).
    directions : (k, d_l) array
        Unit directions ``p_i`` (rows): PCA of the window (decreasing variance) or top Lanczos
        eigenvectors of the layer's Hessian block at the window start.
    variances : (k,) array
        ``σ_i²`` measured in the window (PCA eigenvalues, or ``p_iᵀ Σ p_i``).
    weight_cov_measured : (k, k) array
        Measured covariance in the subspace (diagonal for PCA).
    curvature : (k,) array
        ``k_i = p_iᵀ H p_i`` at the window mean (HVP; H includes weight decay).
    flatness : (k,) array
        Feng–Tu flatness (width where ``L ≤ factor · L_0``); NaN where unbounded.
    profile_offsets, loss_profile : (k, m) arrays
        Offsets ``s`` and ``L(w̄ + s p_i)`` on the full training set (or its fixed subset).
    noise_var : (k,) array
        ``c_ii = p_iᵀ C p_i`` (per-sample gradient covariance, not divided by S).
    hessian_proj, noise_proj : (k, k) arrays
        ``H_k = Pᵀ H P``, ``C_k = Pᵀ C P``.
    temperature : (k,) array
        ``T_i = f_S η c_ii / (2 k_i)``; NaN (JSON null) where ``k_i <= 0``.
    drift_share : (k,) array
        Share of ``p_i`` in the near-null eigenspace of the Hessian compressed to the probed
        subspace of all layers (see :meth:`FluctuationProbe.analyze`).
    range_cov : (k, k) array
        Range-projected covariance: the layer's block of ``Π M_K Π``, where ``M_K`` is the joint
        measured covariance of the probed coordinates of all layers and ``Π`` projects off the
        near-null eigenvectors of ``H_K`` (those of the drift share). The fluctuations with the
        symmetry-orbit drift removed to first order: for a deep linear net this is the
        covariance on ``range(H)`` of docs §8a that ``run`` measures and predicts. NaN-filled
        when the cross-layer covariance is not recorded (see ``notes``).
    range_variance : (k,) array
        ``diag(range_cov)``: the range-projected variance along each ``p_i``.
    window_mean : (d_l,) array
        The layer's window mean ``w̄`` (the point of the analysis).
    sharp : (k,) bool array
        Directions with curvature well above zero (:data:`WELL_ABOVE_ZERO_RTOL`) and drift share
        below :data:`DRIFT_SHARE_MAX`.
    weight_cov_theory : (k, k) array or None
        Subspace theory: ``H_k M + M H_k − η H_k M H_k = f_S η C_k`` (NaN-filled when ``H_k`` is
        not positive definite or ``η λ_max(H_k) >= 2``; see ``notes``).
    ivfr_all, ivfr_sharp : dict
        ``{psi, psi_ci, psi_stderr, spearman, spearman_pvalue, n}`` on all directions with finite
        flatness, and on the sharp ones (None entries where a fit is undefined).
    spearman_temperature_curvature : float
        Spearman of ``(k_i, T_i)`` over directions with ``k_i > 0`` (Feng & Tu's explanation:
        > 0 when the noise grows with the sharpness).
    commutator : float
        ``||[H_k, C_k]||_F / (||H_k||_F ||C_k||_F)`` (detailed balance in the subspace: 0).
    theory_error : float
        ``||M_theory − M_measured||_F / ||M_measured||_F`` (NaN when the theory is undefined).
    window_relaxations : float
        ``window · η k_min`` over the sharp directions (should be >= 100).
    notes : tuple of str
    hessian_spectrum : HessianSpectrum or None
        Trace (Hutch++, with standard error) and spectral density (stochastic Lanczos
        quadrature: Ritz nodes, weights, broadened density) of the layer's Hessian block at the
        window mean (``probe._spectrum``); None when not computed (``hessian_spectrum``).
        ``hessian_trace``, ``hessian_trace_se`` (NaN when None) are its trace and error.
    """

    layer: int
    name: str
    n_params: int
    directions: Array
    variances: Array
    weight_cov_measured: Array
    curvature: Array
    flatness: Array
    profile_offsets: Array
    loss_profile: Array
    noise_var: Array
    hessian_proj: Array
    noise_proj: Array
    temperature: Array
    drift_share: Array
    range_cov: Array
    range_variance: Array
    window_mean: Array
    sharp: NDArray[np.bool_]
    weight_cov_theory: Array
    ivfr_all: dict[str, Any]
    ivfr_sharp: dict[str, Any]
    spearman_temperature_curvature: float
    commutator: float
    theory_error: float
    window_relaxations: float
    sketch_exact: bool
    notes: tuple[str, ...]
    #: η of the layer's parameter group(s); NaN when its parameters have different ones
    learning_rate: float = math.nan
    #: the calibrated estimate (docs §9; :meth:`FluctuationProbe._calibrated`): the JSON of
    #: :class:`sgdfluct.ivfr_estimator.CalibratedFit` plus per-direction ``variances``,
    #: ``stderr``, ``curvature``, ``flatness``, ``n_eff``, ``drift_z``, ``used``
    ivfr_calibrated: dict[str, Any] = field(default_factory=dict)
    hessian_spectrum: HessianSpectrum | None = None

    @property
    def k(self) -> int:
        return int(self.variances.size)

    @property
    def hessian_trace(self) -> float:
        """``tr(H_ll)`` (Hutch++ or dense; NaN when the spectrum was not computed)."""
        return math.nan if self.hessian_spectrum is None else self.hessian_spectrum.trace

    @property
    def hessian_trace_se(self) -> float:
        """Standard error of :attr:`hessian_trace` (0 when dense, NaN when not computed)."""
        return math.nan if self.hessian_spectrum is None else self.hessian_spectrum.trace_se


@dataclass(frozen=True, kw_only=True)
class ProbeRun:
    """Result of :meth:`FluctuationProbe.analyze` (frozen).

    Attributes
    ----------
    layers : tuple of LayerResult
    learning_rate, batch_size, sampling, batch_factor, weight_decay : SGD of the run
    window, every, directions, flatness_factor : probe settings
    plateau_step : int
        Step at which the plateau test passed (the window starts there).
    plateau_blocks : (n, 2) array
        ``(mean, stderr)`` of every completed plateau block.
    steps_observed : int
    loss0 : float
        Training loss (with the weight-decay term) at the window mean.
    lambda_max : float
        Largest Hessian eigenvalue at the window mean (Lanczos).
    subspace_hessian_eigenvalues : (K,) array
        Eigenvalues θ of ``H_K = Pᵀ H P`` over the probed directions of all layers (ascending);
        those with ``|θ| <= near_null_rtol · lambda_max`` are near-null (drift share, range
        projection). A clear gap around the cut makes both well defined.
    near_null_rtol : float
    train_steps, train_loss : arrays
        The recorded training loss (bounded trace).
    test_loss, test_accuracy : float
        At the window mean (NaN where not defined).
    inputs, targets : arrays
        The training set used.
    recorder_bytes : int
        Memory of the streaming recorders (independent of the training length).
    analysis_seconds : float
    notes : tuple of str
    """

    layers: tuple[LayerResult, ...]
    learning_rate: float
    batch_size: int
    sampling: str
    batch_factor: float
    weight_decay: float
    window: int
    every: int
    directions: str
    flatness_factor: float
    plateau_step: int
    plateau_blocks: Array
    steps_observed: int
    loss0: float
    lambda_max: float
    subspace_hessian_eigenvalues: Array
    near_null_rtol: float
    train_steps: Array
    train_loss: Array
    test_loss: float
    test_accuracy: float
    inputs: Array
    targets: Array
    recorder_bytes: int
    analysis_seconds: float
    notes: tuple[str, ...] = field(default=())
    #: ``{"group", "lr", "weight_decay", "params"}`` per optimizer parameter group (read at
    #: every step); ``learning_rate`` is the largest η of the probed layers, ``weight_decay``
    #: the common λ (NaN when the groups differ)
    param_groups: tuple[dict[str, Any], ...] = ()
    #: samples of the recorded training loss (all, or a fixed random subset)
    train_loss_samples: int = 0

    def to_summary(self) -> dict[str, Any]:
        """The ``summary.json`` content (``"ivfr": {"layer_L": {psi, psi_ci, spearman}}``)."""
        ivfr: dict[str, Any] = {}
        layers: dict[str, Any] = {}
        for lr in self.layers:
            key = f"layer_{lr.layer}"
            a, s, c = lr.ivfr_all, lr.ivfr_sharp, lr.ivfr_calibrated
            ivfr[key] = {
                "estimator": c.get("estimator", "pca"),
                "psi": c.get("psi") if c else a.get("psi"),
                "psi_ci": c.get("psi_ci") if c else a.get("psi_ci"),
                "psi_stderr": c.get("psi_stderr") if c else a.get("psi_stderr"),
                "spearman": c.get("spearman") if c else a.get("spearman"),
                "n_directions": c.get("n_directions") if c else a.get("n"),
                "note": c.get("note", ""),
                "calibrated": {
                    k: v
                    for k, v in c.items()
                    if k
                    not in ("directions", "variances", "stderr", "curvature", "flatness", "used")
                    and not isinstance(v, np.ndarray)
                },
                # Feng & Tu's estimator (PCA of the whole window), labelled as such
                "psi_pca": a.get("psi"),
                "psi_pca_ci": a.get("psi_ci"),
                "spearman_pca": a.get("spearman"),
                "n_directions_pca": a.get("n"),
                "psi_pca_sharp": s.get("psi"),
                "psi_pca_sharp_ci": s.get("psi_ci"),
                "spearman_pca_sharp": s.get("spearman"),
                "n_pca_sharp": s.get("n"),
            }
            finite_t = lr.temperature[np.isfinite(lr.temperature)]
            layers[key] = {
                "name": lr.name,
                "n_params": lr.n_params,
                "learning_rate": none_if_undefined(lr.learning_rate),
                "n_directions": lr.k,
                "sketch_exact": lr.sketch_exact,
                "variance_range": [
                    none_if_undefined(lr.variances.min()),
                    none_if_undefined(lr.variances.max()),
                ],
                "curvature_range": [
                    none_if_undefined(lr.curvature.min()),
                    none_if_undefined(lr.curvature.max()),
                ],
                "drift_share_mean": none_if_undefined(float(lr.drift_share.mean())),
                "drift_share_top": [none_if_undefined(v) for v in lr.drift_share[:3]],
                "n_near_null": int(np.sum(lr.drift_share >= DRIFT_SHARE_MAX)),
                "range_variance_total": none_if_undefined(float(np.trace(lr.range_cov))),
                "drift_variance_total": none_if_undefined(
                    float(np.trace(lr.weight_cov_measured) - np.trace(lr.range_cov))
                ),
                "temperature_median": none_if_undefined(float(np.median(finite_t)))
                if finite_t.size
                else None,
                "spearman_temperature_curvature": none_if_undefined(
                    lr.spearman_temperature_curvature
                ),
                "commutator": none_if_undefined(lr.commutator),
                "theory_relative_error": none_if_undefined(lr.theory_error),
                "theory_to_measured_variance_median": none_if_undefined(
                    float(np.nanmedian(np.diag(lr.weight_cov_theory) / lr.variances))
                    if np.any(np.isfinite(lr.weight_cov_theory))
                    else math.nan
                ),
                "window_relaxations": none_if_undefined(lr.window_relaxations),
                "notes": list(lr.notes),
                "hessian_trace": none_if_undefined(lr.hessian_trace),
                "hessian_trace_se": none_if_undefined(lr.hessian_trace_se),
                "hessian_spectrum": (
                    None if lr.hessian_spectrum is None else lr.hessian_spectrum.to_summary()
                ),
            }
        psis = [
            f"L{lr.layer} psi={ivfr[f'layer_{lr.layer}']['psi']:.2f}"
            for lr in self.layers
            if ivfr[f"layer_{lr.layer}"]["psi"] is not None
        ]
        acc = (
            "" if not math.isfinite(self.test_accuracy) else f", test acc {self.test_accuracy:.3f}"
        )
        return {
            "headline": "; ".join(psis) + acc,
            "ivfr": ivfr,
            "layers": layers,
            "stationarity": {
                "test": (
                    f"block means of the training loss, and of its logarithm, change by at most "
                    f"{PLATEAU_Z:g} standard errors (batch means of 10 sub-blocks; "
                    "successive-difference scatter of the two most recent blocks) over both "
                    "consecutive pairs of the last three blocks (sliding, checked at every "
                    "sub-block)"
                ),
                "plateau_step": self.plateau_step,
                "blocks": [[float(m), float(s)] for m, s in self.plateau_blocks],
                "window": self.window,
                "record_every": self.every,
                "steps_observed": self.steps_observed,
            },
            "sgd": {
                "learning_rate": self.learning_rate,
                "batch_size": self.batch_size,
                "sampling": self.sampling,
                "batch_factor": self.batch_factor,
                "weight_decay": none_if_undefined(self.weight_decay),
                "param_groups": [dict(g) for g in self.param_groups],
                "train_loss_samples": self.train_loss_samples,
            },
            "directions": self.directions,
            "flatness_factor": self.flatness_factor,
            "loss0": self.loss0,
            "lambda_max": self.lambda_max,
            "near_null": self._near_null_summary(),
            "test_loss": none_if_undefined(self.test_loss),
            "test_accuracy": none_if_undefined(self.test_accuracy),
            "recorder_bytes": self.recorder_bytes,
            "analysis_seconds": self.analysis_seconds,
            "notes": list(self.notes),
        }

    def _near_null_summary(self) -> dict[str, Any]:
        """Count of near-null eigenvalues of ``H_K`` and the gap around the cut."""
        a = np.sort(np.abs(self.subspace_hessian_eigenvalues))
        cut = self.near_null_rtol * self.lambda_max
        inside, outside = a[a <= cut], a[a > cut]
        return {
            "rtol": self.near_null_rtol,
            "count": int(inside.size),
            "largest_near_null": none_if_undefined(float(inside[-1])) if inside.size else None,
            "smallest_above": none_if_undefined(float(outside[0])) if outside.size else None,
        }

    def to_dataset(self) -> Any:
        """xarray Dataset with the variables of docs/architecture.md ("sgdfluct probe").

        Layers with fewer directions than the largest are NaN-padded along ``direction``; the
        attribute ``n_directions_l`` gives the valid length. ``offset`` indexes the profile grid;
        ``profile_offset_l`` holds its values ``s`` per direction.
        """
        import xarray as xr

        kmax = max(lr.k for lr in self.layers)
        m = self.layers[0].loss_profile.shape[1]

        def pad(a: Array, dims: int) -> Array:
            a = np.asarray(a, dtype=float)
            shape = (kmax,) * dims + a.shape[dims:]
            out = np.full(shape, np.nan)
            out[tuple(slice(0, s) for s in a.shape)] = a
            return out

        data: dict[str, Any] = {}
        attrs: dict[str, Any] = {
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "sampling": self.sampling,
            "batch_factor": self.batch_factor,
            "weight_decay": self.weight_decay,
            "window": self.window,
            "record_every": self.every,
            "directions": self.directions,
            "flatness_factor": self.flatness_factor,
            "plateau_step": self.plateau_step,
            "loss0": self.loss0,
            "lambda_max": self.lambda_max,
            "near_null_rtol": self.near_null_rtol,
        }
        for lr in self.layers:
            v = lr.layer
            attrs[f"n_directions_{v}"] = lr.k
            data[f"pca_variance_{v}"] = ("direction", pad(lr.variances, 1))
            data[f"curvature_{v}"] = ("direction", pad(lr.curvature, 1))
            data[f"flatness_{v}"] = ("direction", pad(lr.flatness, 1))
            data[f"loss_profile_{v}"] = (("direction", "offset"), pad(lr.loss_profile, 1))
            data[f"profile_offset_{v}"] = (("direction", "offset"), pad(lr.profile_offsets, 1))
            data[f"noise_var_{v}"] = ("direction", pad(lr.noise_var, 1))
            data[f"hessian_proj_{v}"] = (("direction", "direction_b"), pad(lr.hessian_proj, 2))
            data[f"noise_proj_{v}"] = (("direction", "direction_b"), pad(lr.noise_proj, 2))
            data[f"temperature_{v}"] = ("direction", pad(lr.temperature, 1))
            data[f"drift_share_{v}"] = ("direction", pad(lr.drift_share, 1))
            data[f"range_variance_{v}"] = ("direction", pad(lr.range_variance, 1))
            data[f"range_cov_{v}"] = (("direction", "direction_b"), pad(lr.range_cov, 2))
            data[f"window_mean_{v}"] = (f"param_{v}", np.asarray(lr.window_mean, dtype=float))
            data[f"weight_cov_theory_{v}"] = (
                ("direction", "direction_b"),
                pad(lr.weight_cov_theory, 2),
            )
            data[f"weight_cov_measured_{v}"] = (
                ("direction", "direction_b"),
                pad(lr.weight_cov_measured, 2),
            )
            spec = lr.hessian_spectrum
            if spec is not None:  # trace and SLQ density of H_ll (probe._spectrum)
                data[f"hessian_trace_{v}"] = ((), spec.trace)
                data[f"hessian_trace_se_{v}"] = ((), spec.trace_se)
                data[f"slq_nodes_{v}"] = (f"slq_node_{v}", spec.nodes)
                data[f"slq_weights_{v}"] = (f"slq_node_{v}", spec.weights)
                data[f"spectral_grid_{v}"] = (f"spectral_point_{v}", spec.grid)
                data[f"spectral_density_{v}"] = (f"spectral_point_{v}", spec.density)
                attrs[f"hessian_spectrum_method_{v}"] = spec.method
                attrs[f"hessian_spectrum_matvecs_{v}"] = spec.matvecs
                attrs[f"spectral_broadening_{v}"] = spec.broadening
            cal = lr.ivfr_calibrated
            for key in ("variances", "stderr", "n_eff", "drift_z", "curvature", "flatness", "used"):
                if key in cal:  # the calibrated estimate's per-direction values (docs §9)
                    vals = np.asarray(cal[key], dtype=float)
                    data[f"calibrated_{key}_{v}"] = ("direction", pad(vals, 1))
        data["subspace_hessian_eigenvalues"] = (
            "subspace_direction",
            np.asarray(self.subspace_hessian_eigenvalues, dtype=float),
        )
        data["train_loss"] = ("step", self.train_loss)
        data["test_loss"] = ((), float(self.test_loss))
        data["test_accuracy"] = ((), float(self.test_accuracy))
        x = np.asarray(self.inputs, dtype=float)
        data["inputs"] = (("sample", "input_dim"), x.reshape(x.shape[0], -1))
        t = np.asarray(self.targets)
        data["targets"] = (("sample",), t) if t.ndim == 1 else (("sample", "output_dim"), t)
        return xr.Dataset(
            data,
            coords={"step": self.train_steps, "offset": np.arange(m)},
            attrs=attrs,
        )

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures: ``ivfr``, ``temperature``, ``theory``, ``train_loss``, and
        ``hessian_spectrum`` when the layers' spectra were computed."""
        from ._figures import probe_figures

        return probe_figures(self)
