"""Per-layer Hessian trace (Hutch++) and spectral density (stochastic Lanczos quadrature).

On each probed layer's Hessian block ``H_ll`` (the full training loss with its weight-decay term,
as everywhere in the probe), matrix-free through :func:`sgdfluct.probe._curvature.layer_matmat`:
the probe's own HVPs, nothing else.

* Trace: Hutch++ (Meyer, Musco, Musco & Woodruff 2021) with ``trace_matvecs`` HVPs: a third
  sketch ``H S`` (Rademacher ``S``), its orthonormal basis ``Q``, the exact ``tr(Qᵀ H Q)`` (a
  third), and Hutchinson on the deflated ``(I − QQᵀ) H (I − QQᵀ)`` with the last third of
  Rademacher probes. The standard error is that of the Hutchinson part (sample standard
  deviation over the probes / √n, given ``Q``; the deflated part is the only random one).
* Spectral density: stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ghorbani, Krishnan &
  Xiao 2019; Papyan 2020): ``starts`` Rademacher start vectors, ``steps`` Lanczos steps each with
  full reorthogonalization (classical Gram–Schmidt twice against the whole basis), the Ritz
  values ``θ_j`` of each tridiagonal matrix (``scipy.linalg.eigh_tridiagonal``) with weights
  ``τ_j = (e_1ᵀ s_j)² / starts`` (they sum to 1): the quadrature of ``φ(t) = (1/d) Σ_i δ(t − λ_i)``.
  Its moment ``Σ τ_j θ_j^k`` is the average of ``vᵀ H^k v / |v|²`` over the starts for every
  ``k <= 2 steps − 1`` (the Gauss quadrature is exact there): an unbiased estimate of
  ``tr(H^k) / d``. The density on a grid is the quadrature broadened by Gaussians of width
  ``σ = (hi − lo) / (steps − 1) / √(8 ln κ)`` over the grid ``[lo, hi]`` (the Ritz range widened by
  ``margin`` on each side): Papyan's rule, also that of curvlinops'
  ``LanczosApproximateSpectrumCached`` (κ = 3, margin = 0.05), so the two compare on one grid.

Cost per layer with the defaults (:class:`SpectrumSettings`): ``60 + 4 × 40 = 220`` HVPs on the
full training set (Hutch++ in vectorized chunks of ``HVP_CHUNK``; the SLQ's starts together, one
vectorized call per Lanczos step). A layer of at most that many parameters gets its dense block
from ``d_l`` HVPs instead: the exact trace (standard error 0) and the exact eigenvalues, weight
``1/d_l`` each (``method = "dense"``). Memory: the Lanczos basis, ``starts × steps × d_l`` float64
(1.3 MB per 1000 parameters). With ``hessian_spectrum = "auto"`` (the probe's default) it runs on
models of up to :attr:`SpectrumSettings.max_model_params` parameters (seconds there) and is
skipped above with a note; ``True`` forces it, ``False`` turns it off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from sgdfluct.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from ._core import FluctuationProbe

__all__ = [
    "SPECTRUM_SEED",
    "HessianSpectrum",
    "SpectrumSettings",
    "broadened_density",
    "hessian_spectra",
    "hutchpp_trace",
    "lanczos_quadrature",
    "layer_spectrum",
    "rademacher",
]

Array = NDArray[np.float64]
MatMat = Callable[[Array], Array]

#: the spectra's own seed entry (``[probe.seed, SPECTRUM_SEED, layer]``): no other draw of the
#: probe (sketch, Lanczos starts, bootstrap) is shifted by turning them on or off
SPECTRUM_SEED = 19
#: a Lanczos recurrence stops when ``β_j <= BREAKDOWN_RTOL · max |T|`` (an invariant subspace)
BREAKDOWN_RTOL = 1e-12


@dataclass(frozen=True, kw_only=True)
class SpectrumSettings:
    """Budget of the per-layer trace and spectral density (HVPs per layer: :attr:`matvecs`).

    Attributes
    ----------
    trace_matvecs : int
        HVPs of Hutch++ (a multiple of 3: sketch, its trace, the deflated Hutchinson probes).
    starts, steps : int
        SLQ start vectors and Lanczos steps per start (``starts × steps`` HVPs).
    grid_points, kappa, margin : int, float, float
        The broadened density's grid and Gaussian width (Papyan's rule, module docstring).
    max_model_params : int
        ``hessian_spectrum = "auto"`` runs on models of at most this many parameters.
    """

    trace_matvecs: int = 60
    starts: int = 4
    steps: int = 40
    grid_points: int = 1024
    kappa: float = 3.0
    margin: float = 0.05
    max_model_params: int = 100_000

    def __post_init__(self) -> None:
        if not (isinstance(self.trace_matvecs, int) and self.trace_matvecs >= 6):
            raise ConfigError(
                f"trace_matvecs = {self.trace_matvecs!r}: expected an integer >= 6 (a multiple "
                "of 3)"
            )
        if self.trace_matvecs % 3:
            raise ConfigError(
                f"trace_matvecs = {self.trace_matvecs}: expected a multiple of 3 (Hutch++ splits "
                "it in three)"
            )
        for name, low in (("starts", 1), ("steps", 2), ("grid_points", 16)):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
                raise ConfigError(f"{name} = {v!r}: expected an integer >= {low}")
        if not self.kappa > 1:
            raise ConfigError(f"kappa = {self.kappa}: expected > 1")
        if not 0 <= self.margin < 1:
            raise ConfigError(f"margin = {self.margin}: expected 0 <= margin < 1")
        if not self.max_model_params >= 0:
            raise ConfigError(f"max_model_params = {self.max_model_params}: expected >= 0")

    @property
    def matvecs(self) -> int:
        """HVPs per layer on the stochastic path (``trace_matvecs + starts · steps``)."""
        return self.trace_matvecs + self.starts * self.steps


@dataclass(frozen=True, kw_only=True)
class HessianSpectrum:
    """Trace and spectral density of one layer's Hessian block ``H_ll`` (d_l × d_l).

    Attributes
    ----------
    method : str
        ``"hutch++/slq"`` (stochastic) or ``"dense"`` (the block from ``d_l`` HVPs: exact).
    dim : int
        ``d_l``.
    trace, trace_se : float
        ``tr(H_ll)`` by Hutch++ and its standard error (0 for ``dense``).
    trace_matvecs : int
        HVPs of the trace (``d_l`` for ``dense``: shared with the eigenvalues).
    nodes, weights : (n,) arrays
        Quadrature nodes (Ritz values of all starts, concatenated) and weights (sum 1); for
        ``dense`` the eigenvalues with weight ``1/d_l``.
    grid, density : (grid_points,) arrays
        The Gaussian-broadened density ``φ(t)`` (integral ≈ 1) on its curvature grid.
    broadening : float
        The Gaussians' standard deviation σ.
    starts, steps : int
        SLQ start vectors and the longest Lanczos recurrence (0 for ``dense``).
    matvecs : int
        HVPs spent on this layer in all.
    seconds : float
    """

    method: str
    dim: int
    trace: float
    trace_se: float
    trace_matvecs: int
    nodes: Array
    weights: Array
    grid: Array
    density: Array
    broadening: float
    starts: int
    steps: int
    matvecs: int
    seconds: float

    def moment(self, k: int) -> float:
        """``Σ_j w_j θ_j^k``: estimates ``tr(H^k) / d`` (exact for ``dense``)."""
        return float(np.sum(self.weights * self.nodes**k))

    @property
    def mean(self) -> float:
        """First moment: ``tr(H) / d`` by the quadrature."""
        return self.moment(1)

    @property
    def support(self) -> tuple[float, float]:
        """Smallest and largest node (≈ λ_min, λ_max of the block)."""
        return float(self.nodes.min()), float(self.nodes.max())

    def to_summary(self) -> dict[str, Any]:
        lo, hi = self.support
        return {
            "method": self.method,
            "matvecs": self.matvecs,
            "trace_matvecs": self.trace_matvecs,
            "starts": self.starts,
            "steps": self.steps,
            "nodes_range": [lo, hi],
            "mean": self.mean,
            "second_moment": self.moment(2),
            "broadening": self.broadening,
            "seconds": self.seconds,
        }


def rademacher(rng: np.random.Generator, d: int, n: int) -> Array:
    """(d, n) independent ±1 entries."""
    return rng.integers(0, 2, size=(d, n)).astype(np.float64) * 2.0 - 1.0


def hutchpp_trace(
    matmat: MatMat, d: int, matvecs: int, rng: np.random.Generator
) -> tuple[float, float, Array]:
    """Hutch++ trace of a symmetric ``d × d`` operator with ``matvecs`` products (module doc).

    Returns ``(trace, standard error, the deflated Hutchinson samples)``; the estimate is
    unbiased and the standard error is that of its only random part given ``Q``.
    """
    n = matvecs // 3
    q, _ = np.linalg.qr(matmat(rademacher(rng, d, n)))
    exact_part = float(np.einsum("ij,ij->", q, matmat(q)))
    g = rademacher(rng, d, n)
    g -= q @ (q.T @ g)  # (I − QQᵀ) G: gᵀ (I − QQᵀ) H (I − QQᵀ) g = g_pᵀ H g_p
    samples = np.einsum("ij,ij->j", g, matmat(g))
    se = float(samples.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return exact_part + float(samples.mean()), se, samples


def lanczos_quadrature(matmat: MatMat, starts: Array, steps: int) -> tuple[Array, Array, int]:
    """Lanczos with full reorthogonalization from each column of ``starts`` (d, s), together.

    Returns ``(nodes, weights, longest recurrence)``: the Ritz values of every start and their
    Gauss weights ``(e_1ᵀ s_j)² / s`` (sum 1), concatenated over the starts. A recurrence that
    reaches an invariant subspace stops there (its weights still sum to ``1/s``).
    """
    d, s = starts.shape
    m = min(int(steps), d)
    basis = np.zeros((s, m, d))
    alpha = np.zeros((s, m))
    beta = np.zeros((s, m))
    length = np.full(s, m)
    active = np.ones(s, dtype=bool)
    q = starts / np.linalg.norm(starts, axis=0)
    scale = np.zeros(s)
    for j in range(m):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        basis[idx, j] = q[:, idx].T
        w = matmat(q[:, idx])  # (d, a): one vectorized call for the active starts
        for col, i in enumerate(idx):
            wi = w[:, col]
            alpha[i, j] = float(q[:, i] @ wi)
            v = basis[i, : j + 1]
            for _ in range(2):  # full reorthogonalization (classical Gram-Schmidt, twice)
                wi = wi - v.T @ (v @ wi)
            b = float(np.linalg.norm(wi))
            scale[i] = max(scale[i], abs(alpha[i, j]), b)
            if j == m - 1:
                continue
            if b <= BREAKDOWN_RTOL * max(scale[i], np.finfo(float).tiny):
                length[i], active[i] = j + 1, False
                continue
            beta[i, j] = b
            q[:, i] = wi / b
    from scipy.linalg import eigh_tridiagonal

    nodes, weights = [], []
    for r in range(s):
        n_r = int(length[r])
        if n_r == 1:
            theta, vec = alpha[r, :1], np.ones((1, 1))
        else:
            theta, vec = eigh_tridiagonal(alpha[r, :n_r], beta[r, : n_r - 1])
        nodes.append(theta)
        weights.append(vec[0] ** 2 / s)
    return np.concatenate(nodes), np.concatenate(weights), int(length.max())


def broadened_density(
    nodes: Array,
    weights: Array,
    *,
    steps: int,
    grid_points: int,
    kappa: float,
    margin: float,
    support: tuple[float, float] | None = None,
) -> tuple[Array, Array, float]:
    """``φ(t) = Σ_j w_j N(t; θ_j, σ²)`` on a grid (Papyan's width rule, module docstring).

    ``support`` (default: the nodes' range) sets the grid ``[lo − margin·w, hi + margin·w]``
    and σ; returns ``(grid, density, σ)``.
    """
    lo, hi = support if support is not None else (float(nodes.min()), float(nodes.max()))
    width = hi - lo
    if not width > 0:  # one eigenvalue: a width from its size
        width = max(abs(hi), 1.0) * 1e-3
    lo, hi = lo - margin * width, hi + margin * width
    half = 0.5 * (hi - lo)
    sigma = half * 2.0 / (max(steps, 2) - 1) / math.sqrt(8.0 * math.log(kappa))
    grid = np.linspace(lo, hi, grid_points)
    z = (grid[None, :] - nodes[:, None]) / sigma
    density = (weights[:, None] * np.exp(-0.5 * z**2)).sum(0) / (sigma * math.sqrt(2 * math.pi))
    return grid, density, sigma


def layer_spectrum(
    matmat: MatMat, d: int, settings: SpectrumSettings, rng: np.random.Generator
) -> HessianSpectrum:
    """Trace and SLQ density of a symmetric ``d × d`` operator (dense when ``d <= matvecs``)."""
    t0 = time.perf_counter()
    st = settings
    if d <= st.matvecs:
        h = matmat(np.eye(d))
        h = 0.5 * (h + h.T)
        nodes = np.asarray(np.linalg.eigvalsh(h), dtype=np.float64)
        weights = np.full(d, 1.0 / d)
        trace, se, trace_mv, matvecs = float(np.trace(h)), 0.0, d, d
        method, starts, steps = "dense", 0, 0
    else:
        trace, se, _ = hutchpp_trace(matmat, d, st.trace_matvecs, rng)
        nodes, weights, steps = lanczos_quadrature(matmat, rademacher(rng, d, st.starts), st.steps)
        trace_mv, starts = st.trace_matvecs, st.starts
        matvecs = trace_mv + st.starts * min(st.steps, d)
        method = "hutch++/slq"
    grid, density, sigma = broadened_density(
        nodes,
        weights,
        steps=st.steps,
        grid_points=st.grid_points,
        kappa=st.kappa,
        margin=st.margin,
    )
    return HessianSpectrum(
        method=method,
        dim=d,
        trace=trace,
        trace_se=se,
        trace_matvecs=trace_mv,
        nodes=nodes,
        weights=weights,
        grid=grid,
        density=density,
        broadening=sigma,
        starts=starts,
        steps=steps,
        matvecs=matvecs,
        seconds=time.perf_counter() - t0,
    )


def hessian_spectra(
    probe: FluctuationProbe,
    params: Mapping[str, torch.Tensor],
    notes: list[str],
) -> dict[int, HessianSpectrum | None]:
    """:func:`layer_spectrum` of every probed layer at ``params`` (``probe.hessian_spectrum``)."""
    from ._curvature import layer_matmat

    out: dict[int, HessianSpectrum | None] = {lay.index: None for lay in probe.layers}
    mode, st = probe.hessian_spectrum, probe.spectrum_settings
    if mode is False:
        return out
    n_model = sum(p.numel() for p in probe.model.parameters())
    if mode == "auto" and n_model > st.max_model_params:
        notes.append(
            f"the per-layer Hessian trace and spectral density were skipped: the model has "
            f"{n_model} parameters, above {st.max_model_params} (hessian_spectrum = 'auto'); "
            f"hessian_spectrum = True computes them with {st.matvecs} HVPs per layer"
        )
        return out
    for lay in probe.layers:
        rng = np.random.default_rng([probe.seed, SPECTRUM_SEED, lay.index])
        out[lay.index] = layer_spectrum(layer_matmat(probe, params, lay), lay.dim, st, rng)
    return out
