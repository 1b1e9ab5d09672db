"""The fluctuation probe: weight fluctuations, curvature, noise and the IVFR of any PyTorch model.

docs/theory.md §11 (Feng & Tu's protocol, our analysis) and §9 (flatness, IVFR). Usage::

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = FluctuationProbe(model, loss_fn, (x, y), optimizer=opt, batch_size=32,
                             sampling="with_replacement", top_k=20, window=5000, every=10)
    probe.attach(opt)              # observes every opt.step(); or call probe.observe() after it
    for step in range(steps):
        ...  # one SGD step: loss.backward(); opt.step()
        if probe.done:
            break
    run = probe.analyze()          # frozen ProbeRun
    run.to_summary(); run.to_dataset(); run.figures()

``observe()`` evaluates the training loss every ``every`` steps, runs the plateau test
(:func:`sgdfluct.probe._stream.plateau_test`) and, once it passes, records the weights every
``every`` steps for ``window`` steps into bounded-memory streaming recorders.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from sgdfluct.errors import ConfigError, MeasurementError
from sgdfluct.landscape import fit_ivfr, spearman
from sgdfluct.theory.detailed_balance import relative_commutator
from sgdfluct.theory.lyapunov import discrete_additive_covariance
from sgdfluct.theory.noise import batch_factor

from ._contract import check_dtypes_devices, check_modes, check_recorder_memory
from ._optim import OptimizerWatch
from ._select import Layer, LayerSpec, discover_layers, parameters_without_gradient, select_layers
from ._split import SplitRecorder
from ._stability import check_loss_growth, check_window_stability
from ._stream import (
    PLATEAU_Z,
    BoundedTrace,
    CoordinateMoments,
    NystromSketch,
    PlateauMonitor,
    SubspaceMoments,
)

__all__ = [
    "DRIFT_SHARE_MAX",
    "NEAR_NULL_RTOL",
    "WELL_ABOVE_ZERO_RTOL",
    "WINDOW_RELAXATIONS",
    "FluctuationProbe",
    "LayerResult",
    "ProbeRun",
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
#: smallest default sketch (columns) while it fits SKETCH_FLOOR_BYTES: layers up to this size
#: get the exact PCA, larger ones a sketch of O(MIN_SKETCH_SIZE d) memory, top-k variances tight
#: unless the spectrum is flat
MIN_SKETCH_SIZE = 256
#: the MIN_SKETCH_SIZE floor applies while the largest probed layer's sketch (Y and Ω, float64:
#: 16 ℓ bytes a parameter) fits in this many bytes; above, the default is ℓ = k + p with the
#: oversampling p = SKETCH_OVERSAMPLING_FACTOR·k + SKETCH_OVERSAMPLING_MIN (memory 16 (k + p) + 24
#: bytes a parameter: Y, Ω, the reference, the running sum and the window mean)
SKETCH_FLOOR_BYTES = 64 * 2**20
SKETCH_OVERSAMPLING_FACTOR = 1
SKETCH_OVERSAMPLING_MIN = 20
#: the recorded training loss (plateau test, trace) is on all samples up to this many, else on a
#: fixed random subset of this size (seeded by ``seed``), so that one record costs one forward
#: pass of at most 2048 samples whatever N. The subset loss is a fixed function of the weights, so
#: its stationarity is the weights' as well (the plateau test is as valid); it differs from the
#: full-set loss by ~ std(per-sample loss) / sqrt(2048). The analysis (profiles, H, C) always
#: uses the full set
TRAIN_LOSS_SAMPLES = 2048
#: grid points of each stored loss profile (odd: the grid contains s = 0)
PROFILE_POINTS = 41
#: bisection steps refining each flatness crossing (grid spacing / 2^30)
BISECTION_STEPS = 30
#: bisections of the calibrated estimate's flatness: the bracket is 1/20 of the grid's half-range,
#: so 12 halvings fix F to ~1e-5 of it, far below the ~1e-2 noise of log σ (each one costs a
#: full-data loss evaluation per direction and side)
CALIBRATED_BISECTIONS = 12
#: doublings of a profile's range before a direction is declared flat (flatness unbounded)
MAX_DOUBLINGS = 40
#: directions (HVPs) and samples (per-sample gradients) evaluated per vectorized call
_HVP_CHUNK = 16
_SAMPLE_CHUNK = 256
_PROFILE_CHUNK = 128
#: ... fewer when the per-item copies (a layer's moved weights, a sample's gradient) would pass
#: this many bytes: the analysis of a 10⁶-parameter layer holds 64 copies, not 256
CHUNK_BYTES = 256 * 2**20


def _memory_chunk(default: int, item_bytes: int) -> int:
    """Items per vectorized call: ``default``, or fewer so that they hold <= CHUNK_BYTES."""
    return max(1, min(default, CHUNK_BYTES // max(item_bytes, 1)))


# ------------------------------------------------------------------------------------------------
# layers and parameter plumbing
# ------------------------------------------------------------------------------------------------


#: a layer: one module's own trainable parameters, or a selection (``probe._select``)
_Layer = Layer


def _flat(params: Mapping[str, torch.Tensor], layer: _Layer) -> torch.Tensor:
    return torch.cat([params[n].reshape(-1) for n in layer.param_names])


def _unflat(vec: torch.Tensor, layer: _Layer) -> dict[str, torch.Tensor]:
    """(..., d_l) -> {name: (..., *shape)}."""
    lead = vec.shape[:-1]
    parts = torch.split(vec, layer.numels, dim=-1)
    return {
        n: p.reshape(tuple(lead) + tuple(s))  # a tuple: a 0-dim parameter has no sizes
        for n, p, s in zip(layer.param_names, parts, layer.shapes, strict=True)
    }


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------


def _none(x: float) -> float | None:
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

    @property
    def k(self) -> int:
        return int(self.variances.size)


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
                "learning_rate": _none(lr.learning_rate),
                "n_directions": lr.k,
                "sketch_exact": lr.sketch_exact,
                "variance_range": [_none(lr.variances.min()), _none(lr.variances.max())],
                "curvature_range": [_none(lr.curvature.min()), _none(lr.curvature.max())],
                "drift_share_mean": _none(float(lr.drift_share.mean())),
                "drift_share_top": [_none(v) for v in lr.drift_share[:3]],
                "n_near_null": int(np.sum(lr.drift_share >= DRIFT_SHARE_MAX)),
                "range_variance_total": _none(float(np.trace(lr.range_cov))),
                "drift_variance_total": _none(
                    float(np.trace(lr.weight_cov_measured) - np.trace(lr.range_cov))
                ),
                "temperature_median": _none(float(np.median(finite_t))) if finite_t.size else None,
                "spearman_temperature_curvature": _none(lr.spearman_temperature_curvature),
                "commutator": _none(lr.commutator),
                "theory_relative_error": _none(lr.theory_error),
                "theory_to_measured_variance_median": _none(
                    float(np.nanmedian(np.diag(lr.weight_cov_theory) / lr.variances))
                    if np.any(np.isfinite(lr.weight_cov_theory))
                    else math.nan
                ),
                "window_relaxations": _none(lr.window_relaxations),
                "notes": list(lr.notes),
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
                "weight_decay": _none(self.weight_decay),
                "param_groups": [dict(g) for g in self.param_groups],
                "train_loss_samples": self.train_loss_samples,
            },
            "directions": self.directions,
            "flatness_factor": self.flatness_factor,
            "loss0": self.loss0,
            "lambda_max": self.lambda_max,
            "near_null": self._near_null_summary(),
            "test_loss": _none(self.test_loss),
            "test_accuracy": _none(self.test_accuracy),
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
            "largest_near_null": _none(float(inside[-1])) if inside.size else None,
            "smallest_above": _none(float(outside[0])) if outside.size else None,
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
        """Matplotlib figures: ``ivfr``, ``temperature``, ``theory``, ``train_loss``."""
        from ._figures import probe_figures

        return probe_figures(self)


# ------------------------------------------------------------------------------------------------
# the probe
# ------------------------------------------------------------------------------------------------


class FluctuationProbe:
    """Bounded-memory fluctuation probe of a PyTorch model trained by plain SGD (docs §11).

    Parameters
    ----------
    model : torch.nn.Module
        The trained model (never modified by the probe).
    loss_fn : callable ``(outputs, targets) -> scalar``
        Mean loss over a batch (e.g. ``torch.nn.functional.cross_entropy``); the per-sample
        loss is ``loss_fn`` on a batch of one.
    train_data : (inputs, targets) tensors
        The full training set (the loss profiles, Hessian and noise use all of it).
    learning_rate : float, optional
        ``η`` of every trained parameter; or give ``optimizer`` (a ``torch.optim.SGD`` without
        momentum): every parameter group's ``lr`` and ``weight_decay`` are then read at every
        step (``probe._optim``; changes inside the window are refused).
    optimizer : torch.optim.SGD, optional
        The user's optimizer (see :meth:`attach` to have it call :meth:`observe` itself).
    batch_size : int
        ``S``.
    sampling : {"with_replacement", "without_replacement", "epoch_shuffle"}
        How the training loop draws batches (sets ``f_S``, docs §3).
    layers : "all" or sequence
        Layers by 1-based number, module name or glob (``"fc*"``), module type
        (``torch.nn.Conv2d``), parameter name or glob (``"*.weight"``: weights without
        biases), or tuples of these (one layer); see ``probe._select``. A default layer is one
        module's own parameters (weight and bias).
    top_k : int
        Directions per layer (all of a smaller layer), >= 3.
    window : int
        Recording window after the plateau (steps).
    every : int
        Record the weights and the training loss every ``every`` steps.
    directions : {"pca", "hessian"}
        PCA of the window (streaming Nyström sketch), or the top Lanczos eigenvectors of the
        layer's Hessian block at the window start (then the window covariance along them is exact).
    weight_decay : float
        ``λ`` of ``torch.optim.SGD(weight_decay=λ)``: the loss is ``L + λ/2 ||w||²`` (with
        ``learning_rate`` only; an optimizer's groups give per-group ``λ_g``).
    steps : int, optional
        The training length; if the plateau test has not passed by ``steps − window``,
        :meth:`observe` raises :class:`MeasurementError`.
    flatness_factor : float
        Level ``factor · L_0`` of the flatness (e by default, Feng & Tu).
    plateau_block : int, optional
        Block length of the plateau test in steps (default ``window // 4``).
    sketch_size : int, optional
        Columns ``ℓ`` of the streaming sketch. Default ``k + p`` with the oversampling
        ``p = top_k + 20`` (:data:`SKETCH_OVERSAMPLING_MIN`), raised to :data:`MIN_SKETCH_SIZE`
        while the largest probed layer's sketch fits :data:`SKETCH_FLOOR_BYTES` (64 MiB: layers
        up to ~16 000 parameters); memory ``16 ℓ + 24`` bytes per probed parameter.
    loss_samples : int, optional
        Samples of the recorded training loss (plateau test, ``train_loss``): all of them up to
        :data:`TRAIN_LOSS_SAMPLES`, else a fixed random subset of that many (``seed``).
    test_data : (inputs, targets) tensors, optional
        For the test loss and accuracy at the window mean.
    task : {"auto", "classification", "one_hot", "regression"}
        How accuracy is defined: integer targets (auto: classification) are labels; "one_hot"
        compares argmaxes; regression has no accuracy.
    bootstrap : int
        Bootstrap replicates of the ψ intervals.
    seed : int
        Seed of the sketch test matrices, Lanczos start vectors and the bootstrap.
    near_null_rtol : float
        An eigenvalue θ of the Hessian compressed to the probed subspace is near-null when
        ``|θ| <= near_null_rtol · λ_max(H)`` (default :data:`NEAR_NULL_RTOL`); set it inside the
        gap of ``ProbeRun.subspace_hessian_eigenvalues`` when the default cuts through a cluster.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        train_data: tuple[torch.Tensor, torch.Tensor],
        *,
        learning_rate: float | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        batch_size: int,
        sampling: str = "with_replacement",
        layers: str | Sequence[int] = "all",
        top_k: int = 20,
        window: int = 5000,
        every: int = 10,
        directions: str = "pca",
        weight_decay: float = 0.0,
        steps: int | None = None,
        flatness_factor: float = math.e,
        plateau_block: int | None = None,
        sketch_size: int | None = None,
        test_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        task: str = "auto",
        bootstrap: int = 1000,
        seed: int = 0,
        near_null_rtol: float = NEAR_NULL_RTOL,
        loss_samples: int | None = None,
        start: str | int = "plateau",
    ) -> None:
        if (learning_rate is None) == (optimizer is None):
            raise ConfigError("give exactly one of learning_rate and optimizer")
        if optimizer is not None and weight_decay != 0.0:
            raise ConfigError(
                f"weight_decay = {weight_decay} given with optimizer: the weight decay is read "
                "from optimizer.param_groups; expected weight_decay unset"
            )
        if learning_rate is not None:
            if not (isinstance(learning_rate, int | float) and math.isfinite(learning_rate)):
                raise ConfigError(
                    f"learning_rate = {learning_rate!r} is out of range: expected a finite "
                    "value > 0"
                )
            if not learning_rate > 0:
                raise ConfigError(f"learning_rate = {learning_rate} is out of range: expected > 0")
            if not (math.isfinite(weight_decay) and weight_decay >= 0):
                raise ConfigError(f"weight_decay = {weight_decay} is out of range: expected >= 0")
        if directions not in ("pca", "hessian"):
            raise ConfigError(f"directions = {directions!r}: expected 'pca' or 'hessian'")
        if top_k < 3:
            raise ConfigError(f"top_k = {top_k} is out of range: expected an integer >= 3")
        if every < 1 or window < every:
            raise ConfigError(f"every = {every}, window = {window}: expected 1 <= every <= window")
        if task not in ("auto", "classification", "one_hot", "regression"):
            raise ConfigError(
                f"task = {task!r}: expected 'auto', 'classification', 'one_hot' or 'regression'"
            )
        self.model = model
        self.loss_fn = loss_fn
        x, y = train_data
        self.x, self.y = x, y
        self.test_data = test_data
        self.n_train = int(x.shape[0])
        self._x_loss, self._y_loss = self._loss_subset(loss_samples, int(seed))
        try:
            self.f_s = batch_factor(batch_size, self.n_train, sampling)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.batch_size = int(batch_size)
        self.sampling = sampling
        self.window = int(window)
        self.every = int(every)
        self.top_k = int(top_k)
        self.directions = directions
        self.steps = steps
        self.flatness_factor = float(flatness_factor)
        if not self.flatness_factor > 1:
            raise ConfigError(f"flatness_factor = {flatness_factor}: expected > 1")
        self.task = task
        if task == "auto":
            self.task = (
                "classification" if not torch.is_floating_point(y) and y.ndim == 1 else "regression"
            )
        self.bootstrap = int(bootstrap)
        if not 0 < near_null_rtol < 1:
            raise ConfigError(f"near_null_rtol = {near_null_rtol}: expected 0 < value < 1")
        self.near_null_rtol = float(near_null_rtol)
        #: when the window opens: "plateau" (the plateau test) or a fixed step (Feng & Tu's
        #: protocol, for losses without a plateau: cross-entropy without weight decay)
        if start != "plateau" and not (
            isinstance(start, int) and not isinstance(start, bool) and start >= 1
        ):
            raise ConfigError(
                f"start = {start!r} is not allowed: expected 'plateau' or a step (integer >= 1)"
            )
        if isinstance(start, int) and steps is not None and start + window > steps:
            raise ConfigError(
                f"start = {start} is out of range: expected an integer in [1, {steps - window}] "
                f"(start + window <= steps = {steps})"
            )
        self.start = start
        self.seed = int(seed)
        self._setup_model(model, optimizer, learning_rate, weight_decay, layers)
        block = plateau_block if plateau_block is not None else window // 4
        block_records = block // every
        if block_records < 2 * 10:
            raise ConfigError(
                f"plateau_block = {block} steps holds {block_records} loss records of every = "
                f"{every}: expected >= 20 (plateau_block >= {20 * every})"
            )
        self.sketch_size = (
            sketch_size if sketch_size is not None else self._default_sketch_size(top_k)
        )
        if self.sketch_size < top_k:
            raise ConfigError(f"sketch_size = {sketch_size}: expected >= top_k = {top_k}")
        check_recorder_memory(
            {lay.name: lay.dim for lay in self.layers},
            self.sketch_size,
            self.top_k,
            directions,
            sum(p.numel() for p in model.parameters()),
        )
        self.plateau = PlateauMonitor(block_records)
        self.trace = BoundedTrace()
        self.step = 0
        self.phase = "burn_in"
        self.plateau_step = -1
        self._window_start = -1
        self._recorders: dict[int, NystromSketch | SubspaceMoments] = {}
        #: joint covariance of all probed layers (cross-layer blocks, for the range projection):
        #: the coordinates along the fixed Hessian directions, or an exact joint sketch in PCA
        #: mode when the probed layers together have at most ``sketch_size`` parameters
        self._joint: CoordinateMoments | NystromSketch | None = None
        self._mean_sum: dict[str, torch.Tensor] = {}
        self._mean_count = 0
        #: the calibrated estimate's projections on directions frozen at mid-window (issue 17)
        self._split: dict[int, SplitRecorder] = {}
        #: PCA mode: the first quarter's directions (frozen at a quarter of the window) and their
        #: second-half recorders, for the direction-noise correction (ivfr_estimator.richardson_fit)
        self._quarter: dict[int, tuple[Array, Array]] = {}
        self._split_quarter: dict[int, SplitRecorder] = {}
        self._gen = torch.Generator(device="cpu").manual_seed(self.seed)

    def _default_sketch_size(self, top_k: int) -> int:
        """``k + p`` columns (``p = SKETCH_OVERSAMPLING_FACTOR·k + SKETCH_OVERSAMPLING_MIN``),
        at least ``MIN_SKETCH_SIZE`` while the largest layer's sketch fits SKETCH_FLOOR_BYTES."""
        k_plus_p = top_k + SKETCH_OVERSAMPLING_FACTOR * top_k + SKETCH_OVERSAMPLING_MIN
        d_max = max(lay.dim for lay in self.layers)
        floor = min(MIN_SKETCH_SIZE, SKETCH_FLOOR_BYTES // (16 * d_max))
        return max(k_plus_p, floor)

    def _loss_subset(
        self, loss_samples: int | None, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples of the recorded training loss: all, or a fixed random subset."""
        n = self.n_train
        if loss_samples is None:
            loss_samples = min(n, TRAIN_LOSS_SAMPLES)
        if isinstance(loss_samples, bool) or not isinstance(loss_samples, int):
            raise ConfigError(f"loss_samples = {loss_samples!r}: expected an integer in [1, {n}]")
        if not 1 <= loss_samples <= n:
            raise ConfigError(
                f"loss_samples = {loss_samples} is out of range: expected an integer in [1, {n}] "
                "(the training set size)"
            )
        self.loss_samples = loss_samples
        if loss_samples == n:
            return self.x, self.y
        pick = np.sort(np.random.default_rng([seed, 7]).choice(n, loss_samples, replace=False))
        idx = torch.as_tensor(pick, device=self.x.device)
        return self.x[idx], self.y[idx]

    def _setup_model(
        self,
        model: torch.nn.Module,
        optimizer: Any,
        learning_rate: float | None,
        weight_decay: float,
        layers: str | Sequence[LayerSpec],
    ) -> None:
        """Trained parameters, their η and λ, and the layers (docs/theory.md §11).

        The trained parameters are those with ``requires_grad`` in an optimizer parameter group
        (every parameter with ``requires_grad`` when only ``learning_rate`` is given); of these,
        the ones the loss depends on are probed (``probe._select``).
        """
        check_modes(model, "FluctuationProbe(...)")
        named = dict(model.named_parameters())
        self._hook: Any = None
        self._watch = OptimizerWatch(optimizer, named) if optimizer is not None else None
        self._setup_notes: list[str] = []
        self._restarts: list[str] = []
        if self._watch is not None:
            lr_of = self._watch.settings.learning_rate
            frozen = [n for n, p in named.items() if p.requires_grad and n not in lr_of]
            if frozen:
                self._setup_notes.append(
                    f"parameter(s) {frozen} are in no optimizer parameter group: frozen, not probed"
                )
        else:
            self._lr_given = float(learning_rate)  # type: ignore[arg-type]
            lr_of = {n: self._lr_given for n, p in named.items() if p.requires_grad}
        #: names of the trained parameters, in model order
        self._trained = [n for n, p in named.items() if p.requires_grad and n in lr_of]
        self._read_settings(float(weight_decay))
        check_dtypes_devices(named, self.x, self._trained)
        unused = parameters_without_gradient(model, self.loss_fn, self.x, self.y, self._trained)
        if unused:
            self._setup_notes.append(
                f"parameter(s) {unused} do not enter the loss (no gradient): not probed"
            )
        probed = set(self._trained) - set(unused)
        all_layers = discover_layers(model, probed.__contains__, self._setup_notes)
        self.layers = select_layers(model, all_layers, layers, probed.__contains__)
        self.all_layers = all_layers
        self._trainable_names = {n for lay in all_layers for n in lay.param_names}
        self.learning_rate = max(self._layer_lr(lay, strict=False) for lay in self.layers)

    def _read_settings(self, weight_decay: float = 0.0) -> None:
        """η and λ per trained parameter, from the optimizer (or the constructor's values)."""
        if self._watch is not None:
            st = self._watch.settings
            self._lr_of = {n: st.learning_rate[n] for n in self._trained}
            self._wd_of = {n: st.weight_decay[n] for n in self._trained}
        else:  # learning_rate= (no optimizer): one η and λ for every trained parameter
            self._lr_of = {n: self._lr_given for n in self._trained}
            self._wd_of = {n: weight_decay for n in self._trained}
        decays: dict[float, list[str]] = {}
        for n in self._trained:
            if self._wd_of[n] > 0:
                decays.setdefault(self._wd_of[n], []).append(n)
        self._decay_groups = [(lam, tuple(ns)) for lam, ns in decays.items()]
        values = set(self._wd_of.values())
        self.weight_decay = values.pop() if len(values) == 1 else math.nan
        if hasattr(self, "layers"):
            self.learning_rate = max(self._layer_lr(lay, strict=False) for lay in self.layers)

    def _layer_lr(self, lay: Layer, *, strict: bool = True) -> float:
        """η of a layer: NaN when its parameters have different learning rates (``strict``;
        the largest otherwise)."""
        values = {self._lr_of[n] for n in lay.param_names}
        if len(values) == 1:
            return values.pop()
        return math.nan if strict else max(values)

    def param_groups(self) -> list[dict[str, Any]]:
        """``[{"group", "lr", "weight_decay", "params"}]`` of the trained parameters."""
        if self._watch is not None:
            return self._watch.settings.describe()
        return [
            {
                "group": 0,
                "lr": self.learning_rate,
                "weight_decay": self.weight_decay,
                "params": list(self._trained),
            }
        ]

    def _check_optimizer(self) -> None:
        """Re-read the optimizer (every step): η/λ changes restart the burn-in's plateau test
        and are refused inside the window (``probe._optim.OptimizerWatch``)."""
        if self._watch is None:
            return
        changes = self._watch.check()
        if not changes:
            return
        if self.phase == "window":
            raise OptimizerWatch.refuse_in_window(changes, self.step, self._window_start)
        self._read_settings()
        self.plateau = PlateauMonitor(self.plateau.block_records)
        self._restarts.append(f"step {self.step}: {'; '.join(changes)}")

    def _restarts_note(self) -> str:
        if not self._restarts:
            return ""
        return (
            f". The optimizer's learning rate or weight decay changed {len(self._restarts)} "
            f"time(s) during the burn-in (last at {self._restarts[-1]}), and every change "
            "restarts the plateau test: keep them constant for the last "
            f"{3 * self.plateau.block_records * self.every} steps before the window"
        )

    def attach(self, optimizer: Any) -> FluctuationProbe:
        """Observe every step of ``optimizer`` (``register_step_post_hook``); returns the probe.

        Replaces the manual :meth:`observe` calls. The hook re-reads every parameter group at
        every step (η and λ changes: see :meth:`observe`) and is removed when the window is
        complete (or by :meth:`detach`). A probe built with ``learning_rate=`` checks that the
        optimizer trains the same parameters with that η and its ``weight_decay``.

        Raises
        ------
        ConfigError
            Already attached; steps already observed; not a plain ``torch.optim.SGD``; or the
            optimizer disagrees with the probe's ``learning_rate`` / ``weight_decay`` (named).
        """
        if self._hook is not None:
            raise ConfigError("probe.attach(): the probe is already attached to an optimizer")
        if self.step:
            raise ConfigError(
                f"probe.attach() after {self.step} observed step(s): attach before the first step"
            )
        if self._watch is None:
            watch = OptimizerWatch(optimizer, dict(self.model.named_parameters()))
            st = watch.settings
            for n in self._trained:
                if n not in st.learning_rate:
                    raise ConfigError(
                        f"parameter {n!r} is trained (requires_grad) but in no parameter group "
                        "of the attached optimizer: build the probe with optimizer= instead of "
                        "learning_rate="
                    )
                if (st.learning_rate[n], st.weight_decay[n]) != (self._lr_of[n], self._wd_of[n]):
                    g = st.group_of[n]
                    raise ConfigError(
                        f"optimizer.param_groups[{g}] trains {n!r} with lr = "
                        f"{st.learning_rate[n]:g}, weight_decay = {st.weight_decay[n]:g}, but the "
                        f"probe was built with learning_rate = {self._lr_of[n]:g}, weight_decay "
                        f"= {self._wd_of[n]:g}: build the probe with optimizer= (it reads every "
                        "group)"
                    )
            self._watch = watch
        elif self._watch.optimizer is not optimizer:
            raise ConfigError("probe.attach(optimizer): not the optimizer the probe was built with")

        def post_step(opt: Any, args: Any, kwargs: Any) -> None:
            self._observe()
            if self.done:
                self.detach()

        self._hook = optimizer.register_step_post_hook(post_step)
        return self

    def detach(self) -> None:
        """Remove the optimizer hook of :meth:`attach` (no-op when not attached)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # -------------------------------------------------------------------- training-time interface

    @property
    def done(self) -> bool:
        """Whether the window is complete (further :meth:`observe` calls are ignored)."""
        return self.phase == "done"

    def _params(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters()}

    def _reg(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``Σ_g (λ_g/2) ||w_g||²`` over the trained parameters (per parameter group)."""
        if not self._decay_groups:
            return torch.zeros((), dtype=self.x.dtype, device=self.x.device)
        total: Any = 0
        for lam, names in self._decay_groups:
            total = total + 0.5 * lam * sum((params[n] ** 2).sum() for n in names)
        return torch.as_tensor(total)

    def _trainable(self, name: str) -> bool:
        return name in self._trainable_names

    def _full_loss(
        self, params: Mapping[str, torch.Tensor], target: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = torch.func.functional_call(self.model, dict(params), (self.x,))
        return self.loss_fn(out, self.y if target is None else target) + self._reg(params)

    def train_loss(self) -> float:
        """Training loss (with the weight-decay term) at the current weights.

        On the full training set, or on its fixed subset of ``loss_samples`` samples when the
        set is larger (``ProbeRun.train_loss_samples``); the model is run through
        :func:`torch.func.functional_call` on detached parameters (nothing of it is changed).
        """
        with torch.no_grad():
            params = self._params()
            out = torch.func.functional_call(self.model, params, (self._x_loss,))
            return float(self.loss_fn(out, self._y_loss) + self._reg(params))

    def observe(self) -> None:
        """Call once after every optimizer step.

        Raises
        ------
        MeasurementError
            If the plateau test has not passed by ``steps − window`` (when ``steps`` is given),
            or the optimizer's learning rate or weight decay changed inside the window.
        ConfigError
            If the probe is attached to the optimizer (:meth:`attach` calls this itself), a
            module updates state in its forward pass (BatchNorm or dropout in training mode,
            ``probe._contract``), or the optimizer gained momentum.
        """
        if self._hook is not None:
            raise ConfigError(
                "probe.observe() called while the probe is attached to the optimizer, which "
                "observes every step itself: remove the observe() calls (or call detach())"
            )
        self._observe()

    def _observe(self) -> None:
        if self.phase == "done":
            return
        self.step += 1
        self._check_optimizer()
        if self.step % self.every:
            return
        check_modes(self.model, "observe()")
        loss = self.train_loss()
        if not math.isfinite(loss):
            from sgdfluct.errors import DivergenceError

            raise DivergenceError(
                f"the training loss is {loss} at step {self.step}: SGD diverged; lower the "
                "learning rate"
            )
        self.trace.add(self.step, loss)
        if self.phase == "burn_in":
            passed = self.plateau.add(loss)
            if self.start != "plateau":
                if self.step >= int(self.start):
                    self._start_window()
                return
            if passed:
                self._start_window()
            elif self.steps is not None and self.step > self.steps - self.window:
                check_loss_growth(self)  # a growing loss is divergence (exit 3), not drift
                blocks = [(round(m, 6), round(e, 6)) for m, e in self.plateau.blocks]
                raise MeasurementError(
                    f"no plateau of the training loss by step {self.step} = steps - window "
                    f"(last block means and standard errors: {blocks}"
                    "): the loss is still drifting. Raise sgd.steps, lower the learning rate, or, "
                    "for cross-entropy on separable data (no stationary state: the weights grow "
                    "for ever), add sgd.weight_decay or use model.loss = 'mse'"
                    + self._restarts_note()
                )
            return
        self._record()

    def _start_window(self) -> None:
        self.phase = "window"
        self.plateau_step = self.step
        self._window_start = self.step
        params = self._params()
        for lay in self.layers:
            w = _flat(params, lay)
            if self.directions == "pca":
                self._recorders[lay.index] = NystromSketch(w, self.sketch_size, self._gen)
            else:
                dirs = self._lanczos_layer(params, lay, min(self.top_k, lay.dim))
                self._recorders[lay.index] = SubspaceMoments(
                    w, torch.as_tensor(dirs, dtype=torch.float64, device=w.device)
                )
        w_all = torch.cat([_flat(params, lay) for lay in self.layers])
        if self.directions == "hessian":
            big_k = 0
            for rec in self._recorders.values():
                assert isinstance(rec, SubspaceMoments)  # directions = "hessian" records these
                big_k += int(rec.directions.shape[0])
            self._joint = CoordinateMoments(big_k, w_all.device)
        elif w_all.numel() <= self.sketch_size:
            self._joint = NystromSketch(w_all, self.sketch_size, self._gen)  # exact: no draws
        self._mean_sum = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
        self._record()

    def _record(self) -> None:
        params = self._params()
        coords = [self._recorders[lay.index].update(_flat(params, lay)) for lay in self.layers]
        if isinstance(self._joint, CoordinateMoments):
            self._joint.update(torch.cat(coords))  # type: ignore[arg-type]
        elif self._joint is not None:
            self._joint.update(torch.cat([_flat(params, lay) for lay in self.layers]))
        for n, p in params.items():
            self._mean_sum[n].add_(p.to(torch.float64))
        self._mean_count += 1
        if not self._quarter and self.step - self._window_start >= self.window // 4:
            for lay in self.layers:
                rec = self._recorders[lay.index]
                if isinstance(rec, NystromSketch):
                    self._quarter[lay.index] = rec.top(min(self.top_k, lay.dim))
        if not self._split and self.step - self._window_start >= self.window // 2:
            self._start_split(params)
        for lay in self.layers:
            if lay.index in self._split:
                w = _flat(params, lay)
                self._split[lay.index].update(w)
                if lay.index in self._split_quarter:
                    self._split_quarter[lay.index].update(w)
        if self.step - self._window_start >= self.window - self.every:
            self.phase = "done"

    def _start_split(self, params: Mapping[str, torch.Tensor]) -> None:
        """Freeze each layer's directions for the calibrated estimate (docs/theory.md §9): the
        first half's top-k PCA (the sketch now), or the Hessian directions fixed at the start."""
        for lay in self.layers:
            rec = self._recorders[lay.index]
            w = _flat(params, lay)
            if isinstance(rec, NystromSketch):
                var, p = rec.top(min(self.top_k, lay.dim))
                self._split[lay.index] = SplitRecorder(p, var, w)
                if lay.index in self._quarter:
                    var_q, p_q = self._quarter[lay.index]
                    self._split_quarter[lay.index] = SplitRecorder(p_q, var_q, w)
            else:
                self._split[lay.index] = SplitRecorder(rec.directions.cpu().numpy(), None, w)

    def recorder_bytes(self) -> int:
        """Memory of the streaming recorders and window means (bytes)."""
        joint = 0 if self._joint is None else self._joint.nbytes()
        return (
            sum(r.nbytes() for r in self._recorders.values())
            + joint
            + sum(r.nbytes() for r in self._split.values())
            + sum(r.nbytes() for r in self._split_quarter.values())
            + 8 * sum(t.numel() for t in self._mean_sum.values())
        )

    # -------------------------------------------------------------------- Hessian machinery

    def _hvp_batch(
        self, params: Mapping[str, torch.Tensor], tangents: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        tangents = {n: tangents[n] for n in params}  # jvp needs the primals' key order
        if not torch.is_floating_point(self.y):  # labels (cross-entropy): no tangent to carry
            grad_fn = torch.func.grad(self._full_loss)

            def one(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
                return torch.func.jvp(grad_fn, (dict(params),), (t,))[1]

            return torch.func.vmap(one)(dict(tangents))
        # a real target enters as a primal with a materialized zero tangent: torch's forward-mode
        # formula of mse_loss_backward writes into the target's tangent, which is an immutable
        # ZeroTensor for a constant ("ZeroTensors are immutable" with F.mse_loss); the zero
        # tangent adds exact zeros, so the product is the same Hessian-vector product
        grad_y = torch.func.grad(self._full_loss, argnums=0)
        zero = torch.zeros_like(self.y)

        def one_y(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return torch.func.jvp(grad_y, (dict(params), self.y), (t, zero))[1]

        return torch.func.vmap(one_y)(dict(tangents))

    def _layer_tangents(
        self, params: Mapping[str, torch.Tensor], lay: _Layer, vecs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        b = vecs.shape[0]
        tangents = {
            n: torch.zeros((b, *p.shape), dtype=p.dtype, device=p.device) for n, p in params.items()
        }
        tangents.update(_unflat(vecs.to(self.x.dtype), lay))
        return tangents

    def _lanczos_layer(self, params: Mapping[str, torch.Tensor], lay: _Layer, k: int) -> Array:
        """Top-k eigenvectors (k, d_l) of the layer's Hessian block (block Krylov on HVPs).

        A block method (:func:`sgdfluct._eigs.top_eigenpairs`) because single-vector Lanczos
        misses copies of repeated eigenvalues: an MSE output layer repeats every eigenvalue of its
        activation Gram matrix ``N_o`` times (block size ``max(2k, k + 10, N_o)``).
        """
        from sgdfluct._eigs import top_eigenpairs

        d = lay.dim

        def matmat(v: Array) -> Array:
            vt = torch.as_tensor(np.asarray(v).T, dtype=self.x.dtype, device=self.x.device)
            out = []
            for c in range(0, vt.shape[0], _HVP_CHUNK):
                hv = self._hvp_batch(
                    params, self._layer_tangents(params, lay, vt[c : c + _HVP_CHUNK])
                )
                out.append(
                    torch.cat([hv[n].reshape(hv[n].shape[0], -1) for n in lay.param_names], 1)
                )
            return torch.cat(out).T.to(torch.float64).cpu().numpy()

        n_out = 1
        if lay.param_names:
            first = self._params()[lay.param_names[0]]
            n_out = int(first.shape[0]) if first.ndim >= 1 else 1
        block = min(d, max(2 * k, k + 10, n_out))
        tol = 1e-4 if self.x.dtype == torch.float32 else 1e-8  # residuals at HVP round-off
        _, evecs = top_eigenpairs(
            matmat, d, k, rng=self.seed, block=block, tol=tol, max_restarts=50
        )
        return evecs.T.copy()

    def _lambda_max(self, params: Mapping[str, torch.Tensor]) -> float:
        """Largest Hessian eigenvalue (all parameters), by Lanczos (dense for small models)."""
        import scipy.sparse.linalg as spla

        names = [n for lay in self.all_layers for n in lay.param_names]
        shapes = [params[n].shape for n in names]
        sizes = [math.prod(s) for s in shapes]
        d = sum(sizes)

        def matmat(v: Array) -> Array:
            vt = torch.as_tensor(np.asarray(v).T, dtype=self.x.dtype, device=self.x.device)
            out = []
            for c in range(0, vt.shape[0], _HVP_CHUNK):
                chunk = vt[c : c + _HVP_CHUNK]
                parts = torch.split(chunk, sizes, dim=1)
                tangents = {
                    n: p.reshape(chunk.shape[0], *s)
                    for n, p, s in zip(names, parts, shapes, strict=True)
                }
                for n, p in params.items():
                    tangents.setdefault(
                        n, torch.zeros((chunk.shape[0], *p.shape), dtype=p.dtype, device=p.device)
                    )
                hv = self._hvp_batch(params, tangents)
                out.append(torch.cat([hv[n].reshape(chunk.shape[0], -1) for n in names], 1))
            return torch.cat(out).T.to(torch.float64).cpu().numpy()

        if d <= 64:
            hmat = matmat(np.eye(d))
            return float(np.linalg.eigvalsh(0.5 * (hmat + hmat.T))[-1])
        op = spla.LinearOperator(
            (d, d), matvec=lambda v: matmat(v[:, None])[:, 0], matmat=matmat, dtype=float
        )
        v0 = np.random.default_rng(self.seed + 1).standard_normal(d)
        return float(spla.eigsh(op, k=1, which="LA", v0=v0, tol=1e-4, ncv=min(d, 24))[0][0])

    def projected_hessian(self, layer: int, directions: Array) -> Array:
        """``P H_ll Pᵀ`` (k, k) at the current weights for rows ``P`` (k, d_l) of one layer.

        H is the Hessian of the full training loss with its weight-decay term, by
        Hessian-vector products (``torch.func.jvp`` of ``torch.func.grad``).
        """
        lay = self._layer(layer)
        params = self._params()
        p = torch.as_tensor(np.atleast_2d(directions), dtype=self.x.dtype, device=self.x.device)
        if p.shape[1] != lay.dim:
            raise ConfigError(f"directions have {p.shape[1]} columns: layer {layer} has {lay.dim}")
        hv = self._hvp_batch(params, self._layer_tangents(params, lay, p))
        flat = torch.cat([hv[n].reshape(p.shape[0], -1) for n in lay.param_names], 1)
        return (flat @ p.T).to(torch.float64).cpu().numpy()

    def _layer(self, layer: int) -> _Layer:
        for lay in [*self.layers, *self.all_layers]:  # a probed selection first (e.g. "*.weight")
            if lay.index == layer:
                return lay
        raise ConfigError(f"layer = {layer}: expected an integer in [1, {len(self.all_layers)}]")

    # -------------------------------------------------------------------- analysis

    def analyze(self) -> ProbeRun:
        """Analyse the window at its mean ``w̄`` (docs/theory.md §11).

        Per layer along its k directions: variances; curvature ``k_i = p_iᵀ H p_i`` (HVP,
        ``torch.func``; H of the loss with its weight-decay term); loss profiles on the full
        training set and the Feng–Tu flatness (grid of :data:`PROFILE_POINTS` points widened by
        doubling until both crossings of ``factor · L_0`` are bracketed, then
        :data:`BISECTION_STEPS` bisections; the first crossing on either side of 0 on the grid);
        projected noise ``C_k`` from per-sample gradients (``torch.func.vmap(grad)``);
        temperature; ψ on all directions and on the sharp ones (:func:`sgdfluct.landscape.fit_ivfr`,
        bootstrap over directions); the drift share; the subspace theory.

        Drift share: with ``P`` the probed directions of all layers (orthonormal, K columns) and
        ``H_K = Pᵀ H P = E diag(θ) Eᵀ``, the near-null eigenvectors are those with
        ``|θ_j| <= near_null_rtol · λ_max(H)``; the share of direction i is
        ``Σ_{j near-null} E_ij²`` — the Rayleigh–Ritz estimate of its weight in the null space of
        H (symmetry orbits of deep linear nets or ReLU rescalings span several layers, which the
        joint ``H_K`` sees).

        Range projection: with ``M_K`` the joint measured covariance of the probed coordinates
        of all layers (recorded in ``directions = "hessian"`` mode, and in PCA mode when the
        probed layers have at most ``sketch_size`` parameters together) and ``E_0`` the
        near-null eigenvectors above, ``range_cov = Π M_K Π`` with ``Π = I − E_0 E_0ᵀ``: the
        fluctuations with the drift along the symmetry orbit removed to first order (docs §8a
        step 4 without the Procrustes alignment, which is specific to deep linear nets). Both
        rest on ``w̄`` lying close to the minimum manifold: a window over which the orbit drift
        is large compared with the fluctuations (hidden units rotating by O(1) angles) puts
        ``w̄`` inside the curved orbit, where the orbit directions carry curvatures
        ``O(|∇L(w̄)|)`` of either sign well above the near-null level; then no direction is
        near-null and the drift share reads 0 although the raw PCs are drift (docs §11).

        Subspace theory (docs §5 in the subspace): the additive discrete-time equation
        ``H_k M + M H_k − η H_k M H_k = f_S η C_k`` with the projected k×k blocks
        (:func:`sgdfluct.theory.lyapunov.discrete_additive_covariance`; the multiplicative term
        ``K(M) − HMH`` of the exact single-layer equation has no general form for a nonlinear
        network and is dropped), compared with the measured covariance in the same basis.

        Raises
        ------
        MeasurementError
            If the window is not complete.
        """
        if self.phase != "done":
            need = (
                "the plateau test has not passed yet"
                if self.phase == "burn_in"
                else f"the window has {self.step - self._window_start} of {self.window} steps"
            )
            raise MeasurementError(
                f"probe.analyze(): {need} (at step {self.step}); train longer before analysing"
            )
        check_modes(self.model, "analyze()")
        t0 = time.perf_counter()
        notes: list[str] = list(self._setup_notes)
        if self.start != "plateau":
            notes.append(
                f"the window opened at the fixed step {self.start} (probe.start), not by the "
                "plateau test: stationarity was not tested; the calibrated estimate's drift test "
                "per direction decides which directions count (docs §9)"
            )
        if self._restarts:
            notes.append(
                f"the optimizer's learning rate or weight decay changed {len(self._restarts)} "
                f"time(s) during the burn-in (last at {self._restarts[-1]}): the plateau test "
                "restarted at each change; the window ran at constant settings"
            )
        if self.loss_samples < self.n_train:
            notes.append(
                f"the recorded training loss (plateau test, train_loss) is on a fixed random "
                f"subset of {self.loss_samples} of the {self.n_train} training samples"
            )
        dtype = self.x.dtype
        params = {n: (s / self._mean_count).to(dtype) for n, s in self._mean_sum.items()}
        with torch.no_grad():
            loss0 = float(self._full_loss(params))
        lam_max = self._lambda_max(params)

        # directions and measured covariances
        dirs: dict[int, Array] = {}
        meas: dict[int, Array] = {}
        exact: dict[int, bool] = {}
        for lay in self.layers:
            rec = self._recorders[lay.index]
            k = min(self.top_k, lay.dim)
            if isinstance(rec, NystromSketch):
                var, p = rec.top(k)
                dirs[lay.index], meas[lay.index] = p, np.diag(var)
                exact[lay.index] = rec.exact
            else:
                dirs[lay.index] = rec.directions.cpu().numpy()
                meas[lay.index] = rec.covariance()
                exact[lay.index] = True
        order = [lay.index for lay in self.layers]
        sizes = [dirs[i].shape[0] for i in order]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        big_k = int(offsets[-1])

        # joint projected Hessian H_K (K x K) from HVPs
        h_k = np.zeros((big_k, big_k))
        p_t = {i: torch.as_tensor(dirs[i], dtype=dtype, device=self.x.device) for i in order}
        for a, lay in enumerate(self.layers):
            pa = p_t[lay.index]
            for c in range(0, pa.shape[0], _HVP_CHUNK):
                chunk = pa[c : c + _HVP_CHUNK]
                hv = self._hvp_batch(params, self._layer_tangents(params, lay, chunk))
                for b, lb in enumerate(self.layers):
                    flat = torch.cat([hv[n].reshape(chunk.shape[0], -1) for n in lb.param_names], 1)
                    rows = slice(offsets[a] + c, offsets[a] + c + chunk.shape[0])
                    h_k[rows, offsets[b] : offsets[b + 1]] = (
                        (flat @ p_t[lb.index].T).to(torch.float64).cpu().numpy()
                    )
        h_k = 0.5 * (h_k + h_k.T)
        # exit 3 unless SGD is stable at the window mean (eta lambda_max < 2, mean square)
        check_window_stability(self, params, p_t, h_k, lam_max)

        # joint projected noise C_K (K x K) from per-sample gradients
        def sample_loss(p: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor) -> Any:
            out = torch.func.functional_call(self.model, p, (xs.unsqueeze(0),))
            return self.loss_fn(out, ys.unsqueeze(0))

        ps_grad = torch.func.vmap(torch.func.grad(sample_loss), in_dims=(None, 0, 0))
        gsum = np.zeros(big_k)
        ggt = np.zeros((big_k, big_k))
        n_chunk = _memory_chunk(
            _SAMPLE_CHUNK, sum(lay.dim for lay in self.all_layers) * self.x.element_size()
        )
        for c in range(0, self.n_train, n_chunk):
            g = ps_grad(params, self.x[c : c + n_chunk], self.y[c : c + n_chunk])
            proj = (
                torch.cat(
                    [
                        torch.cat([g[n].reshape(g[n].shape[0], -1) for n in lay.param_names], 1)
                        @ p_t[lay.index].T
                        for lay in self.layers
                    ],
                    1,
                )
                .to(torch.float64)
                .cpu()
                .numpy()
            )
            gsum += proj.sum(0)
            ggt += proj.T @ proj
        gbar = gsum / self.n_train
        c_k = ggt / self.n_train - np.outer(gbar, gbar)
        c_k = 0.5 * (c_k + c_k.T)

        # drift share from the joint compressed Hessian
        theta, evec = np.linalg.eigh(h_k)
        null = np.abs(theta) <= self.near_null_rtol * lam_max
        drift = (evec[:, null] ** 2).sum(axis=1)
        n_negative = int(np.sum(theta < -self.near_null_rtol * lam_max))
        if n_negative:
            notes.append(
                f"the Hessian in the probed subspace has {n_negative} "
                f"negative eigenvalue(s) (down to {theta.min():.3g}, lambda_max = {lam_max:.3g}) "
                "at the window mean: the mean is not near a minimum, as when the weights drift far "
                "along a curved symmetry orbit during the window; drift shares and range_cov may "
                "miss that drift (shorten the window, or lower eta / raise the batch size)"
            )
        range_cov = self._range_projected(dirs, order, evec[:, null], big_k, notes)

        gen = np.random.default_rng(self.seed)
        results = []
        for a, lay in enumerate(self.layers):
            sl = slice(offsets[a], offsets[a + 1])
            results.append(
                self._layer_result(
                    lay,
                    params,
                    loss0,
                    lam_max,
                    dirs[lay.index],
                    meas[lay.index],
                    h_k[sl, sl],
                    c_k[sl, sl],
                    drift[sl],
                    range_cov[sl, sl],
                    exact[lay.index],
                    gen,
                )
            )

        results = [
            replace(r, ivfr_calibrated=self._calibrated(lay, params, loss0))
            for r, lay in zip(results, self.layers, strict=True)
        ]
        test_loss, test_acc = self._test_metrics(params)
        if self.sampling == "epoch_shuffle":
            notes.append(
                "sampling = 'epoch_shuffle': f_S is the without-replacement value, an "
                "approximation (docs §3)"
            )
        steps_arr, loss_arr = self.trace.arrays()
        blocks = np.asarray(self.plateau.history, dtype=float).reshape(-1, 2)
        return ProbeRun(
            layers=tuple(results),
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            sampling=self.sampling,
            batch_factor=self.f_s,
            weight_decay=self.weight_decay,
            window=self.window,
            every=self.every,
            directions=self.directions,
            flatness_factor=self.flatness_factor,
            plateau_step=self.plateau_step,
            plateau_blocks=blocks,
            steps_observed=self.step,
            loss0=loss0,
            lambda_max=lam_max,
            subspace_hessian_eigenvalues=theta,
            near_null_rtol=self.near_null_rtol,
            train_steps=steps_arr,
            train_loss=loss_arr,
            test_loss=test_loss,
            test_accuracy=test_acc,
            inputs=self.x.detach().cpu().numpy(),
            targets=self.y.detach().cpu().numpy(),
            recorder_bytes=self.recorder_bytes(),
            analysis_seconds=time.perf_counter() - t0,
            notes=tuple(notes),
            param_groups=tuple(self.param_groups()),
            train_loss_samples=self.loss_samples,
        )

    def _range_projected(
        self,
        dirs: Mapping[int, Array],
        order: Sequence[int],
        e_null: Array,
        big_k: int,
        notes: list[str],
    ) -> Array:
        """Joint measured covariance ``M_K`` (K×K) projected off the near-null eigenvectors.

        ``Π M_K Π`` with ``Π = I − E_0 E_0ᵀ`` (``E_0``: the near-null eigenvectors of
        ``H_K = Pᵀ H P``, the columns of ``e_null``); NaN-filled, with a note, when the joint
        covariance was not recorded (PCA directions of layers with more than ``sketch_size``
        parameters together).
        """
        if self._joint is None:
            notes.append(
                f"range_cov not measured: the probed layers have more than sketch_size = "
                f"{self.sketch_size} parameters together, so the cross-layer covariance of the "
                "PCA directions is not recorded; use directions = 'hessian'"
            )
            return np.full((big_k, big_k), np.nan)
        if isinstance(self._joint, CoordinateMoments):
            m_k = self._joint.covariance()
        else:
            var, vec = self._joint.top(self._joint.dim)
            sigma = vec.T @ (var[:, None] * vec)
            sizes = [dirs[i].shape[1] for i in order]
            cols = np.concatenate([[0], np.cumsum(sizes)])
            p_big = np.zeros((big_k, int(cols[-1])))
            row = 0
            for j, i in enumerate(order):
                p_big[row : row + dirs[i].shape[0], cols[j] : cols[j + 1]] = dirs[i]
                row += dirs[i].shape[0]
            m_k = p_big @ sigma @ p_big.T
        proj = np.eye(big_k) - e_null @ e_null.T
        out = proj @ m_k @ proj
        return np.asarray(0.5 * (out + out.T))

    def _test_metrics(self, params: Mapping[str, torch.Tensor]) -> tuple[float, float]:
        if self.test_data is None or self.test_data[0].shape[0] == 0:
            return math.nan, math.nan
        xt, yt = self.test_data
        with torch.no_grad():
            out = torch.func.functional_call(self.model, dict(params), (xt,))
            loss = float(self.loss_fn(out, yt))
            if self.task == "classification":
                acc = float((out.argmax(-1) == yt).to(torch.float64).mean())
            elif self.task == "one_hot":
                acc = float((out.argmax(-1) == yt.argmax(-1)).to(torch.float64).mean())
            else:
                acc = math.nan
        return loss, acc

    def _profiles(
        self, params: Mapping[str, torch.Tensor], lay: _Layer, p: torch.Tensor, s: torch.Tensor
    ) -> Array:
        """``L(w̄ + s_ij p_i)`` for directions p (k, d_l) and offsets s (k, m); returns (k, m)."""
        k, m = s.shape
        rows = torch.arange(k, device=p.device).repeat_interleave(m)
        s_flat = s.reshape(-1)

        def at(delta: torch.Tensor) -> torch.Tensor:
            moved = dict(params)
            for n, v in _unflat(delta, lay).items():
                moved[n] = params[n] + v
            return self._full_loss(moved)

        out = []
        chunk = _memory_chunk(_PROFILE_CHUNK, lay.dim * p.element_size())
        with torch.no_grad():
            for c in range(0, k * m, chunk):  # the (chunk, d_l) offsets, one chunk at a time
                deltas = s_flat[c : c + chunk, None] * p[rows[c : c + chunk]]
                out.append(torch.func.vmap(at)(deltas))
        return torch.cat(out).reshape(k, m).to(torch.float64).cpu().numpy()

    def _flatness(
        self,
        params: Mapping[str, torch.Tensor],
        lay: _Layer,
        p: torch.Tensor,
        loss0: float,
        curv: Array,
        var: Array,
        bisections: int = BISECTION_STEPS,
    ) -> tuple[Array, Array, Array]:
        """Flatness (k,), profile offsets (k, m) and profiles (k, m) along the rows of p."""
        k = p.shape[0]
        level = self.flatness_factor * loss0
        grid = np.linspace(-1.0, 1.0, PROFILE_POINTS)
        mid = PROFILE_POINTS // 2
        # initial half-range: 1.5 x the quadratic crossing (slope ignored), else 10 sigma
        quad = np.sqrt(2.0 * (self.flatness_factor - 1.0) * loss0 / np.where(curv > 0, curv, 1.0))
        scale = np.where(curv > 0, 1.5 * quad, 10.0 * np.sqrt(np.maximum(var, 1e-300)))
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        prof = np.full((k, PROFILE_POINTS), np.nan)
        todo = np.arange(k)
        for _ in range(MAX_DOUBLINGS):
            if todo.size == 0:
                break
            s = torch.as_tensor(
                scale[todo, None] * grid[None, :], dtype=self.x.dtype, device=self.x.device
            )
            vals = self._profiles(params, lay, p[todo], s)
            prof[todo] = vals
            above = vals > level
            ok = above[:, :mid].any(1) & above[:, mid + 1 :].any(1)
            scale[todo[~ok]] *= 2.0
            todo = todo[~ok]
        flat = np.full(k, np.nan)
        good = np.setdiff1d(np.arange(k), todo)
        if good.size:
            lo_in = np.zeros(good.size)
            hi_in = np.zeros(good.size)
            lo_out = np.zeros(good.size)
            hi_out = np.zeros(good.size)
            for j, i in enumerate(good):
                above = prof[i] > level
                r = mid + 1 + int(np.argmax(above[mid + 1 :]))
                left = mid - 1 - int(np.argmax(above[:mid][::-1]))
                hi_in[j], hi_out[j] = grid[r - 1] * scale[i], grid[r] * scale[i]
                lo_in[j], lo_out[j] = grid[left + 1] * scale[i], grid[left] * scale[i]
            pg = p[good]
            for _ in range(bisections):
                mids = np.stack([0.5 * (hi_in + hi_out), 0.5 * (lo_in + lo_out)], 1)
                vals = self._profiles(
                    params, lay, pg, torch.as_tensor(mids, dtype=self.x.dtype, device=self.x.device)
                )
                up = vals[:, 0] > level
                hi_out = np.where(up, mids[:, 0], hi_out)
                hi_in = np.where(up, hi_in, mids[:, 0])
                up = vals[:, 1] > level
                lo_out = np.where(up, mids[:, 1], lo_out)
                lo_in = np.where(up, lo_in, mids[:, 1])
            flat[good] = 0.5 * (hi_in + hi_out) - 0.5 * (lo_in + lo_out)
        return flat, scale[:, None] * grid[None, :], prof

    def _calibrated(
        self, lay: _Layer, params: Mapping[str, torch.Tensor], loss0: float
    ) -> dict[str, Any]:
        """The calibrated IVFR estimate of one layer (docs/theory.md §9, "Estimating ψ").

        Directions frozen at mid-window (:class:`SplitRecorder`); variances, AR(1) errors, drift
        test and effective sample sizes from the second half's projected series
        (:func:`sgdfluct.ivfr_estimator.series_variances`), PCA directions that lose more than
        half their variance out of sample left out; curvature ``p_iᵀ H p_i`` and Feng–Tu flatness
        at the window mean; the errors-in-variables fit. In PCA mode a second direction set from
        the first quarter, measured on the same half, removes the direction-noise bias
        (:func:`sgdfluct.ivfr_estimator.richardson_fit`).
        """
        from sgdfluct.ivfr_estimator import richardson_fit

        rec = self._split.get(lay.index)
        if rec is None or rec.count < 8:
            return {"estimator": "split_eiv", "psi": None, "note": "no second-half series"}
        fit, arrays = self._calibrated_one(rec, lay, params, loss0)
        quarter = self._split_quarter.get(lay.index)
        if quarter is not None:
            fit = richardson_fit(fit, self._calibrated_one(quarter, lay, params, loss0)[0])
        out = fit.to_json()
        used = arrays["used"]
        flat, var = arrays["flatness"], arrays["variances"]
        rho = spearman(var[used], flat[used])[0] if used.sum() >= 3 else math.nan
        out.update(
            spearman=_none(rho),
            n_records=rec.count,
            directions_from="pca_first_half"
            if rec.selection_eigenvalues is not None
            else "hessian_window_start",
            direction_noise_correction=quarter is not None,
            directions=rec.directions,
            **arrays,
        )
        return out

    def _calibrated_one(
        self, rec: SplitRecorder, lay: _Layer, params: Mapping[str, torch.Tensor], loss0: float
    ) -> tuple[Any, dict[str, Array]]:
        """The errors-in-variables fit on one recorder's directions, and its per-direction data."""
        from sgdfluct.ivfr_estimator import (
            fit_ivfr_calibrated,
            out_of_sample_stable,
            series_variances,
        )

        meas = series_variances(rec.moments)
        if rec.selection_eigenvalues is not None:
            meas = out_of_sample_stable(meas, rec.selection_eigenvalues)
        p = torch.as_tensor(rec.directions, dtype=self.x.dtype, device=self.x.device)
        curv = np.empty(p.shape[0])
        for c in range(0, p.shape[0], _HVP_CHUNK):
            chunk = p[c : c + _HVP_CHUNK]
            hv = self._hvp_batch(params, self._layer_tangents(params, lay, chunk))
            flat_hv = torch.cat([hv[n].reshape(chunk.shape[0], -1) for n in lay.param_names], 1)
            curv[c : c + chunk.shape[0]] = (flat_hv * chunk).sum(1).to(torch.float64).cpu().numpy()
        flat = np.full(p.shape[0], np.nan)
        pos = curv > 0
        if pos.any():
            flat[pos] = self._flatness(
                params,
                lay,
                p[torch.as_tensor(pos)],
                loss0,
                curv[pos],
                meas.variances[pos],
                bisections=CALIBRATED_BISECTIONS,
            )[0]
        fit = fit_ivfr_calibrated(meas, flat)
        return fit, {
            "variances": meas.variances,
            "stderr": meas.stderr,
            "n_eff": meas.n_eff,
            "drift_z": meas.drift_z,
            "curvature": curv,
            "flatness": flat,
            "used": fit.used,
        }

    def _fit(self, var: Array, flat: Array, gen: np.random.Generator) -> dict[str, Any]:
        ok = np.isfinite(flat) & (flat > 0) & (var > 0)
        out: dict[str, Any] = {
            "n": int(ok.sum()),
            "psi": None,
            "psi_ci": None,
            "psi_stderr": None,
            "spearman": None,
            "spearman_pvalue": None,
        }
        if ok.sum() < 3:
            out["note"] = f"{int(ok.sum())} direction(s) with finite flatness: fit needs >= 3"
            return out
        try:
            fit = fit_ivfr(var[ok], flat[ok], bootstrap=self.bootstrap, rng=gen)
        except ValueError as exc:
            out["note"] = str(exc)
            return out
        rho, pval = spearman(var[ok], flat[ok])
        out.update(
            psi=fit.psi,
            psi_ci=[fit.psi_ci[0], fit.psi_ci[1]],
            psi_stderr=fit.psi_stderr,
            spearman=_none(rho),
            spearman_pvalue=_none(pval),
        )
        return out

    def _layer_result(
        self,
        lay: _Layer,
        params: Mapping[str, torch.Tensor],
        loss0: float,
        lam_max: float,
        directions: Array,
        measured: Array,
        h_l: Array,
        c_l: Array,
        drift: Array,
        range_cov: Array,
        exact: bool,
        gen: np.random.Generator,
    ) -> LayerResult:
        notes: list[str] = []
        var = np.clip(np.diag(measured).copy(), 0.0, None)
        curv = np.diag(h_l).copy()
        noise = np.clip(np.diag(c_l).copy(), 0.0, None)
        eta, fs = self._layer_lr(lay), self.f_s
        if not math.isfinite(eta):
            lrs = {n: self._lr_of[n] for n in lay.param_names}
            notes.append(
                f"the parameters of this layer have different learning rates ({lrs}): η is not "
                "one number in the layer, so temperatures and the subspace theory are undefined "
                "(NaN); probe the parameters separately (layers=[name, ...])"
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            temp = np.where(
                curv > 0, fs * eta * noise / (2.0 * np.where(curv > 0, curv, 1.0)), np.nan
            )
        if np.any(curv <= 0):
            notes.append(
                f"{int(np.sum(curv <= 0))} direction(s) with curvature <= 0: temperature "
                "undefined (null)"
            )
        p = torch.as_tensor(directions, dtype=self.x.dtype, device=self.x.device)
        flat, offs, prof = self._flatness(params, lay, p, loss0, curv, var)
        if np.any(~np.isfinite(flat)):
            notes.append(
                f"{int(np.sum(~np.isfinite(flat)))} direction(s) stay below factor * L_0 after "
                f"{MAX_DOUBLINGS} doublings: flatness unbounded (NaN)"
            )
        sharp = (curv >= WELL_ABOVE_ZERO_RTOL * lam_max) & (drift < DRIFT_SHARE_MAX)
        ivfr_all = self._fit(var, flat, gen)
        ivfr_sharp = self._fit(np.where(sharp, var, 0.0), np.where(sharp, flat, np.nan), gen)
        pos = curv > 0
        rho_tk = math.nan
        if pos.sum() >= 3:
            rho_tk = spearman(curv[pos], temp[pos])[0]
        commut = relative_commutator(h_l, c_l)
        m_th = np.full_like(h_l, np.nan)
        err = math.nan
        try:
            if math.isfinite(eta):
                m_th = discrete_additive_covariance(h_l, c_l, learning_rate=eta, batch_factor=fs)
                err = float(np.linalg.norm(m_th - measured) / np.linalg.norm(measured))
        except ValueError as exc:
            notes.append(f"subspace theory undefined: {exc}")
        k_min = float(curv[sharp].min()) if sharp.any() else math.nan
        relax = self.window * eta * k_min
        if math.isfinite(relax) and relax < WINDOW_RELAXATIONS:
            notes.append(
                f"window = {self.window} steps is {relax:.3g} relaxation times 1/(eta k_min) of "
                f"the sharp directions (k_min = {k_min:.3g}); {WINDOW_RELAXATIONS:g} wanted: "
                "slow directions are under-sampled"
            )
        if not exact:
            notes.append(
                f"streaming Nyström sketch (d = {lay.dim} > sketch size {self.sketch_size}): "
                "top variances are lower bounds, tight when the spectrum decays"
            )
        return LayerResult(
            layer=lay.index,
            name=lay.name,
            n_params=lay.dim,
            directions=directions,
            variances=var,
            weight_cov_measured=measured,
            curvature=curv,
            flatness=flat,
            profile_offsets=offs,
            loss_profile=prof,
            noise_var=noise,
            hessian_proj=h_l,
            noise_proj=c_l,
            temperature=temp,
            drift_share=drift,
            range_cov=range_cov,
            range_variance=np.diag(range_cov).copy(),
            window_mean=_flat(params, lay).to(torch.float64).cpu().numpy(),
            sharp=sharp,
            weight_cov_theory=m_th,
            ivfr_all=ivfr_all,
            ivfr_sharp=ivfr_sharp,
            spearman_temperature_curvature=float(rho_tk),
            commutator=float(commut),
            theory_error=err,
            window_relaxations=float(relax),
            sketch_exact=exact,
            notes=tuple(notes),
            learning_rate=eta,
        )
