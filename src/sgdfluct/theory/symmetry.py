"""Rescaling symmetry of deep linear nets: null space, imbalance, noise equilibrium
(docs/theory.md §8, §8a).

The map ``W_l -> A W_l``, ``W_{l+1} -> W_{l+1} A^{-1}`` (any invertible ``A`` at hidden layer l)
leaves the product ``M = W_L ... W_1`` unchanged. Its generators are the directions
``(..., K W_l, -W_{l+1} K, ...)`` for ``K ∈ R^{N_h×N_h}``: ``N_h^2`` per hidden layer. At a minimum
they span ``null(H_theta)`` and ``null(C_theta)`` when the product has full rank ``N_h``.

Gradient flow conserves the imbalance ``D_l = W_l W_l^T - W_{l+1}^T W_{l+1}``; SGD noise moves it
(by ``O(eta^2)`` per step) towards the noise equilibrium ``W_2^T A_out W_2 = W_1 A_in W_1^T``
(depth 2; docs/theory.md §8a).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sgdfluct import networks as nw

__all__ = [
    "NoiseEquilibrium",
    "NullSpaceCheck",
    "check_null_space",
    "expected_null_dim",
    "imbalance",
    "imbalance_eigenvalues",
    "noise_equilibrium",
    "symmetry_basis",
    "symmetry_directions",
]

Array = NDArray[np.float64]
Shapes = Sequence[tuple[int, int]]


def _check_deep(shapes: Shapes) -> None:
    if len(shapes) < 2:
        raise ValueError(f"shapes has {len(shapes)} layer(s): the symmetry needs depth L >= 2")


def symmetry_directions(theta: Array, shapes: Shapes) -> Array:
    """Generators of the rescaling symmetry at ``theta``; shape (d, sum_l N_{h,l}^2).

    Column ``(l, a, b)`` is the tangent vector of ``K = E_ab`` (unit matrix) at hidden layer l:
    ``delta W_l = K W_l``, ``delta W_{l+1} = -W_{l+1} K``, other layers zero. Hidden layers are
    ordered l = 1 .. L-1 and ``(a, b)`` row-major within each.
    """
    _check_deep(shapes)
    weights = nw.unflatten(np.asarray(theta, dtype=float), shapes)
    offsets = np.cumsum([0] + [r * c for r, c in shapes])
    cols = []
    for l in range(len(shapes) - 1):
        n_h = shapes[l][0]
        for a in range(n_h):
            for b in range(n_h):
                vec = np.zeros(int(offsets[-1]))
                k = np.zeros((n_h, n_h))
                k[a, b] = 1.0
                vec[offsets[l] : offsets[l + 1]] = (k @ weights[l]).ravel()
                vec[offsets[l + 1] : offsets[l + 2]] = (-weights[l + 1] @ k).ravel()
                cols.append(vec)
    return np.stack(cols, axis=1)


def symmetry_basis(theta: Array, shapes: Shapes, rtol: float = 1e-8) -> Array:
    """Orthonormal basis (d, k) of the span of :func:`symmetry_directions` (rank-revealing SVD).

    ``k < sum N_h^2`` when some ``K`` leaves ``theta`` fixed (dead hidden units, ``N_h > rank M``).
    """
    u, s, _ = np.linalg.svd(symmetry_directions(theta, shapes), full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return np.zeros((u.shape[0], 0))
    return np.asarray(u[:, s > rtol * s[0]])


@dataclass(frozen=True, kw_only=True)
class NullSpaceCheck:
    """Null spaces of H and C at a point, compared with the symmetry directions.

    Attributes
    ----------
    expected_dim : int
        ``sum_l N_{h,l}^2`` (the full-rank expectation).
    symmetry_rank : int
        Dimension of the span of the symmetry generators at ``theta``.
    null_dim_hessian, null_dim_noise : int
        Number of eigenvalues of H (resp. C) below ``rtol`` times the largest.
    product_rank : int
        Numerical rank of ``M = W_L ... W_1``.
    rank_deficient : bool
        ``product_rank < min_l N_{h,l}``: extra flat directions (dead units) beyond the symmetry.
    symmetry_in_null_hessian, symmetry_in_null_noise : float
        ``||H S||_2 / ||H||_2`` and ``||C S||_2 / ||C||_2`` for the orthonormal symmetry basis S
        (0 when the symmetry directions are exact null directions).
    max_angle_hessian : float
        Largest principal angle (radians) between span(S) and null(H) when their dimensions agree;
        ``nan`` otherwise (then ``null_dim_hessian - symmetry_rank`` extra flat directions exist).
    """

    expected_dim: int
    symmetry_rank: int
    null_dim_hessian: int
    null_dim_noise: int
    product_rank: int
    rank_deficient: bool
    symmetry_in_null_hessian: float
    symmetry_in_null_noise: float
    max_angle_hessian: float

    @property
    def spans_null_space(self) -> bool:
        """True when the symmetry directions are exactly the null space of H and of C."""
        return (
            self.symmetry_rank == self.null_dim_hessian == self.null_dim_noise
            and self.max_angle_hessian < 1e-6
        )


def check_null_space(
    theta: Array, shapes: Shapes, inputs: Array, targets: Array, *, rtol: float = 1e-7
) -> NullSpaceCheck:
    """Compare ``null(H_theta)``, ``null(C_theta)`` and the symmetry directions at ``theta``.

    Parameters
    ----------
    theta : (d,) array
        Usually a minimum (e.g. :func:`sgdfluct.networks.balanced_minimum`).
    shapes : sequence of (rows, cols), depth >= 2
    inputs : (P, N_i) array
    targets : (P, N_o) array
    rtol : float
        Eigenvalues below ``rtol * max`` count as zero (docs/theory.md §8a uses ~1e-7).
    """
    _check_deep(shapes)
    h = nw.hessian(theta, shapes, inputs, targets)
    c = nw.noise_covariance(theta, shapes, inputs, targets)
    h_eval, h_evec = np.linalg.eigh(h)
    c_eval = np.linalg.eigvalsh(c)
    null_h = h_evec[:, h_eval <= rtol * h_eval[-1]]
    sym = symmetry_basis(theta, shapes)
    m = nw.product(nw.unflatten(np.asarray(theta, dtype=float), shapes))
    sv = np.linalg.svd(m, compute_uv=False)
    product_rank = int(np.sum(sv > 1e-8 * sv[0])) if sv.size and sv[0] > 0 else 0
    if sym.shape[1] == null_h.shape[1] and sym.shape[1] > 0:
        cosines = np.linalg.svd(sym.T @ null_h, compute_uv=False)
        angle = float(np.arccos(np.clip(cosines.min(), -1.0, 1.0)))
    else:
        angle = float("nan")
    return NullSpaceCheck(
        expected_dim=int(sum(r * r for r, _ in shapes[:-1])),
        symmetry_rank=int(sym.shape[1]),
        null_dim_hessian=int(null_h.shape[1]),
        null_dim_noise=int(np.sum(c_eval <= rtol * c_eval[-1])),
        product_rank=product_rank,
        rank_deficient=product_rank < min(r for r, _ in shapes[:-1]),
        symmetry_in_null_hessian=float(np.linalg.norm(h @ sym, 2) / np.linalg.norm(h, 2)),
        symmetry_in_null_noise=float(np.linalg.norm(c @ sym, 2) / np.linalg.norm(c, 2)),
        max_angle_hessian=angle,
    )


def imbalance(theta: Array, shapes: Shapes) -> list[Array]:
    """Imbalances ``D_l = W_l W_l^T - W_{l+1}^T W_{l+1}`` of the hidden layers l = 1..L-1."""
    _check_deep(shapes)
    w = nw.unflatten(np.asarray(theta, dtype=float), shapes)
    return [w[l] @ w[l].T - w[l + 1].T @ w[l + 1] for l in range(len(w) - 1)]


def imbalance_eigenvalues(trajectory: Array, shapes: Shapes) -> Array:
    """Eigenvalues (descending) of every hidden layer's imbalance along trajectories.

    Parameters
    ----------
    trajectory : (..., d) array
        Snapshots, e.g. (R, T, d) from the SGD engine.
    shapes : sequence of (rows, cols), depth >= 2, all hidden widths equal ``N_h``.

    Returns
    -------
    (..., L-1, N_h) array
        Invariant under the orthogonal part of the symmetry (hidden-unit rotations).
    """
    from sgdfluct._smallmat import eigvalsh_desc

    _check_deep(shapes)
    traj = np.asarray(trajectory, dtype=float)
    widths = {r for r, _ in shapes[:-1]}
    if len(widths) != 1:
        raise ValueError(f"hidden widths {sorted(widths)} differ; pass one width for all layers")
    offsets = np.cumsum([0] + [r * c for r, c in shapes])
    lead = traj.shape[:-1]
    out = []
    for l in range(len(shapes) - 1):
        w_l = traj[..., offsets[l] : offsets[l + 1]].reshape(*lead, *shapes[l])
        w_n = traj[..., offsets[l + 1] : offsets[l + 2]].reshape(*lead, *shapes[l + 1])
        d = w_l @ np.swapaxes(w_l, -1, -2) - np.swapaxes(w_n, -1, -2) @ w_n
        out.append(eigvalsh_desc(d))
    return np.stack(out, axis=-2)


@dataclass(frozen=True, kw_only=True)
class NoiseEquilibrium:
    """Predicted quasi-stationary point on the symmetry orbit of a two-layer network.

    Attributes
    ----------
    theta : (d,) array
        ``vec(W_1), vec(W_2)`` at the noise equilibrium (hidden frame fixed by ``rotation``).
    shapes : ((N_h, N_i), (N_o, N_h))
    product : (N_o, N_i) array
        ``M*`` (least-squares, reduced-rank if ``N_h < rank W*``).
    a_out : (N_o, N_o) array
        ``(1/P) sum |x_mu|^2 r_mu r_mu^T``.
    a_in : (N_i, N_i) array
        ``(1/P) sum |r_mu|^2 x_mu x_mu^T``.
    imbalance_eigenvalues : (N_h,) array
        Eigenvalues (descending) of ``D = W_1 W_1^T - W_2^T W_2`` there.
    rank : int
        Rank of ``M*``; ``N_h - rank`` surplus hidden units are dead (zero weights).
    """

    theta: Array
    shapes: tuple[tuple[int, int], ...]
    product: Array
    a_out: Array
    a_in: Array
    imbalance_eigenvalues: Array
    rank: int


def _sym_power(a: Array, power: float) -> Array:
    evals, evecs = np.linalg.eigh(0.5 * (a + a.T))
    if evals[0] <= 0.0:
        raise ValueError(
            "A_out/A_in is singular: zero residuals (no label noise or interpolation); "
            "the noise equilibrium needs r_mu != 0"
        )
    return np.asarray((evecs * evals**power) @ evecs.T)


def noise_equilibrium(
    inputs: Array, targets: Array, hidden: int, *, rotation: Array | None = None
) -> NoiseEquilibrium:
    """Noise-equilibrium point of a two-layer linear network (docs/theory.md §8a).

    Parameters
    ----------
    inputs : (P, N_i) array
    targets : (P, N_o) array
    hidden : int
        ``N_h``.
    rotation : (N_h, N_h) orthogonal array, optional
        The free hidden-unit rotation ``Q`` (identity by default).

    Notes
    -----
    With least-squares residuals ``r_mu = M* x_mu - y_mu``,
    ``A_out = (1/P) sum |x_mu|^2 r_mu r_mu^T`` and ``A_in = (1/P) sum |r_mu|^2 x_mu x_mu^T``, the
    orbit point where the SGD drift of the imbalance vanishes satisfies
    ``W_2^T A_out W_2 = W_1 A_in W_1^T``. With ``A_out^{1/2} M* A_in^{1/2} = U s V^T``:
    ``W_2 = A_out^{-1/2} U s^{1/2} Q^T``, ``W_1 = Q s^{1/2} V^T A_in^{-1/2}``. (Per step,
    ``Delta D = eta^2 (G_1 G_1^T - G_2^T G_2)`` with ``G_1 = W_2^T E``, ``G_2 = E W_1^T``;
    averaging the mini-batch error ``E`` gives the condition.) Derived for depth 2 only.
    """
    inputs = np.asarray(inputs, dtype=float)
    targets = np.asarray(targets, dtype=float)
    n_in, n_out = inputs.shape[1], targets.shape[1]
    if hidden < 1:
        raise ValueError(f"hidden = {hidden} must be >= 1")
    shapes = ((hidden, n_in), (n_out, hidden))
    product = nw.product(nw.unflatten(nw.balanced_minimum(inputs, targets, shapes), shapes))
    r = inputs @ product.T - targets
    p = inputs.shape[0]
    x2 = np.sum(inputs**2, axis=1)
    r2 = np.sum(r**2, axis=1)
    a_out = (r * x2[:, None]).T @ r / p
    a_in = (inputs * r2[:, None]).T @ inputs / p
    out_half, out_mhalf = _sym_power(a_out, 0.5), _sym_power(a_out, -0.5)
    in_half, in_mhalf = _sym_power(a_in, 0.5), _sym_power(a_in, -0.5)
    u, s, vt = np.linalg.svd(out_half @ product @ in_half, full_matrices=False)
    rank = int(np.sum(s > 1e-10 * s[0])) if s.size and s[0] > 0 else 0
    root = np.sqrt(s[:rank])
    w1 = np.zeros((hidden, n_in))
    w2 = np.zeros((n_out, hidden))
    w1[:rank] = root[:, None] * vt[:rank] @ in_mhalf
    w2[:, :rank] = out_mhalf @ u[:, :rank] * root[None, :]
    if rotation is not None:
        q = np.asarray(rotation, dtype=float)
        if q.shape != (hidden, hidden) or not np.allclose(q @ q.T, np.eye(hidden), atol=1e-10):
            raise ValueError(f"rotation must be an orthogonal ({hidden}, {hidden}) matrix")
        w1, w2 = q @ w1, w2 @ q.T
    d = w1 @ w1.T - w2.T @ w2
    return NoiseEquilibrium(
        theta=nw.flatten([w1, w2]),
        shapes=shapes,
        product=product,
        a_out=a_out,
        a_in=a_in,
        imbalance_eigenvalues=np.asarray(np.linalg.eigvalsh(d)[::-1], dtype=np.float64),
        rank=rank,
    )


def expected_null_dim(shapes: Shapes, product_rank: int) -> int | None:
    """Dimension of ``null(H_theta)`` at a generic minimum whose product has rank ``product_rank``.

    The null space at a minimum is the tangent space of the fiber ``{theta: M(theta) = M*}``
    (H = J^T H_M J with H_M positive definite; docs/theory.md §8, §8b). Cases with a closed form:

    - every hidden width equals the rank (``N_{h,l} = r``): ``sum_l N_{h,l}^2`` (the symmetry
      orbit alone);
    - depth 2 with ``r = min(N_o, N_i) < N_h`` (surplus units): the product map is a submersion
      onto all ``N_o x N_i`` matrices at a generic point of the fiber, so
      ``N_h (N_i + N_o) - N_o N_i`` (more than ``N_h^2``: the excess of a rank-deficient point).

    Returns None where no closed form is implemented (then only ``>= sum N_h^2`` is tested).

    Examples
    --------
    >>> expected_null_dim([(5, 20), (5, 5)], 5)
    25
    >>> expected_null_dim([(3, 6), (2, 3)], 2)
    12
    """
    _check_deep(shapes)
    widths = [r for r, _ in shapes[:-1]]
    n_in, n_out = shapes[0][1], shapes[-1][0]
    if all(w == product_rank for w in widths):
        return int(sum(w * w for w in widths))
    if len(shapes) == 2 and product_rank == min(n_in, n_out) < widths[0]:
        return int(widths[0] * (n_in + n_out) - n_in * n_out)
    return None
