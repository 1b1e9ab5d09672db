"""Stationary weight covariance of deep linear nets on range(H_theta) (docs/theory.md §8, §8a).

Around a reference point ``theta_bar`` (the quasi-stationary window mean, docs/theory.md §8a) the
fluctuations
live on ``range(H_theta)``; along the symmetry orbit (the null space) the linear theory says nothing
and the covariance is set to zero there. Four levels of theory, from crude to best:

``continuum``       ``H Σ + Σ H = f_S eta C``                                (the paper's level)
``discrete``        ``H Σ + Σ H - eta H Σ H = f_S eta C``                    (exact map, additive)
``multiplicative``  ``H Σ + Σ H - eta H Σ H = f_S eta [C + K(Σ) - H̄ Σ H̄]`` (fixed point)
``renormalized``    ``H_eff Σ + Σ H_eff - eta H_eff Σ H_eff = f_S eta C_eff`` with
                    ``H_eff = Π E_u[∇²L(theta_bar + u)] Π``, ``C_eff = Π E_u[C(theta_bar + u)] Π``,
                    ``u ~ N(0, Σ)``, iterated from the discrete solution.

All equations are solved in the eigenbasis of ``H`` restricted to its range, where the first two are
diagonal: ``Σ_ab = f_S eta C_ab / (h_a + h_b [- eta h_a h_b])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray

from sgdfluct import networks as nw
from sgdfluct.errors import ConfigError, UnstableError
from sgdfluct.theory.linearization import gauss_newton_variance, hessian_range
from sgdfluct.theory.problem import METHODS, StationaryProblem, stationary_covariance
from sgdfluct.theory.stability import check_learning_rate

__all__ = [
    "LayeredCovariance",
    "layer_block",
    "layer_slices",
    "layered_covariance",
    "relative_frobenius_error",
    "solve_linearized",
]

Array = NDArray[np.float64]
Shapes = Sequence[tuple[int, int]]
Method = Literal["continuum", "discrete", "multiplicative", "renormalized"]
#: the methods :func:`layered_covariance` accepts (all registered in the front door's METHODS)
RANGE_METHODS = ("continuum", "discrete", "multiplicative", "renormalized")


def layer_slices(shapes: Shapes) -> list[slice]:
    """Slices of ``theta`` belonging to ``W_1 ... W_L``."""
    offsets = np.cumsum([0] + [r * c for r, c in shapes])
    return [slice(int(offsets[i]), int(offsets[i + 1])) for i in range(len(shapes))]


def layer_block(matrix: Array, shapes: Shapes, layer: int) -> Array:
    """Diagonal block of a (d, d) matrix for layer ``layer`` (1-based, as in ``W_layer``)."""
    if not 1 <= layer <= len(shapes):
        raise ValueError(f"layer = {layer} must lie in [1, {len(shapes)}]")
    s = layer_slices(shapes)[layer - 1]
    return np.asarray(matrix[s, s])


def relative_frobenius_error(estimate: Array, reference: Array) -> float:
    """``||estimate - reference||_F / ||reference||_F``."""
    norm = float(np.linalg.norm(reference))
    if norm == 0.0:
        raise ValueError("reference has zero norm: relative error undefined")
    return float(np.linalg.norm(np.asarray(estimate) - np.asarray(reference)) / norm)


@dataclass(frozen=True, kw_only=True)
class LayeredCovariance:
    """Theoretical stationary covariance on range(H_theta).

    Attributes
    ----------
    cov : (d, d) array
        Σ in parameter coordinates (zero on the null space of H).
    method : str
        One of ``continuum``, ``discrete``, ``multiplicative``, ``renormalized``.
    iterations : int
        Fixed-point iterations used (0 for the closed forms).
    residual : float
        Relative residual ``||LHS - RHS||_F / ||RHS||_F`` of the method's equation, with Σ plugged
        back (for ``renormalized``: with ``H_eff(Σ)``, ``C_eff(Σ)`` re-evaluated at the final Σ).
    converged : bool
        Closed forms: True. Iterations: the last relative change fell below the tolerance.
    hessian_eigenvalues : (d_r,) array
        Eigenvalues of the (effective) Hessian on its range.
    range_basis : (d, d_r) array
        Orthonormal basis of range(H_theta(theta_bar)).
    batch_factor : float
        ``f_S``.
    sampling_exact : bool
        False for ``epoch_shuffle`` (the theory is then an approximation).
    """

    cov: Array
    method: str
    iterations: int
    residual: float
    converged: bool
    hessian_eigenvalues: Array
    range_basis: Array
    batch_factor: float
    sampling_exact: bool

    def layer(self, shapes: Shapes, layer: int) -> Array:
        """Block of ``cov`` for ``W_layer`` (1-based)."""
        return layer_block(self.cov, shapes, layer)


def _denominator(h: Array, learning_rate: float, discrete: bool) -> Array:
    den = h[:, None] + h[None, :]
    if discrete:
        den = den - learning_rate * np.outer(h, h)
    return den


def _lhs(sigma: Array, hess: Array, learning_rate: float, discrete: bool) -> Array:
    out = hess @ sigma + sigma @ hess
    if discrete:
        out = out - learning_rate * hess @ sigma @ hess
    return np.asarray(out)


def _residual(lhs: Array, rhs: Array) -> float:
    norm = float(np.linalg.norm(rhs))
    return float(np.linalg.norm(lhs - rhs) / norm) if norm > 0 else float(np.linalg.norm(lhs))


def solve_linearized(
    hessian: Array,
    noise_cov: Array,
    *,
    learning_rate: float,
    batch_factor: float,
    discrete: bool = True,
    range_rtol: float = 1e-7,
) -> tuple[Array, Array, Array]:
    """Closed-form stationary covariance on range(H) for given H and C.

    Parameters
    ----------
    hessian : (d, d) array
    noise_cov : (d, d) array
        Per-sample gradient covariance C (not divided by S).
    learning_rate : float
        ``eta > 0``.
    batch_factor : float
        ``f_S`` (see :func:`batch_factor`).
    discrete : bool
        Include the ``- eta h_a h_b`` term of the exact SGD map.
    range_rtol : float
        Eigenvalues of H above ``range_rtol * max`` define its range.

    Returns
    -------
    cov : (d, d) array
    h : (d_r,) array
        Eigenvalues of H on its range.
    basis : (d, d_r) array

    Notes
    -----
    In the eigenbasis ``V`` of H on its range, ``C̃ = V^T C V`` and
    ``Σ̃_ab = f_S eta C̃_ab / (h_a + h_b - [discrete] eta h_a h_b)``; ``Σ = V Σ̃ V^T``.
    """
    if learning_rate <= 0:
        raise ValueError(f"learning_rate = {learning_rate} must be > 0")
    h, basis = hessian_range(hessian, range_rtol)
    if discrete:
        check_learning_rate(float(h.max()), learning_rate)
    c_r = basis.T @ noise_cov @ basis
    sig_r = batch_factor * learning_rate * c_r / _denominator(h, learning_rate, discrete)
    return basis @ sig_r @ basis.T, h, basis


def _solve_in_basis(
    c_r: Array, h: Array, learning_rate: float, f_s: float, discrete: bool = True
) -> Array:
    """Σ̃ in the eigenbasis of H (h: its eigenvalues) for the range-projected C̃."""
    return np.asarray(f_s * learning_rate * c_r / _denominator(h, learning_rate, discrete))


def layered_covariance(
    theta: Array,
    shapes: Shapes,
    inputs: Array,
    targets: Array,
    *,
    learning_rate: float,
    batch_size: int,
    sampling: str,
    method: Method = "continuum",
    range_rtol: float = 1e-7,
    dead_rtol: float = 1e-2,
    tol: float = 1e-10,
    max_iterations: int = 1000,
    renorm_iterations: int = 4,
    renorm_tol: float = 1e-3,
    n_monte_carlo: int = 256,
    rng: np.random.Generator | None = None,
) -> LayeredCovariance:
    """Linearized stationary weight covariance at ``theta`` on range(H_theta) (docs/theory.md §8a).

    Parameters
    ----------
    theta : (d,) array
        Reference point ``theta_bar`` (quasi-stationary mean, or a minimum).
    shapes : sequence of (rows, cols)
        Shapes of ``W_1 ... W_L`` (any depth; depth 1 gives the single-layer theory with the
        range restricted to range(H)).
    inputs : (P, N_i) array
    targets : (P, N_o) array
    learning_rate : float
    batch_size : int
    sampling : {"with_replacement", "without_replacement", "epoch_shuffle"}
        Sets ``f_S``; ``epoch_shuffle`` is approximated by without-replacement.
    method : {"continuum", "discrete", "multiplicative", "renormalized"}
    range_rtol : float
        Relative eigenvalue threshold of range(H) (docs/theory.md §8a: ~1e-7).
    dead_rtol : float
        Hidden units whose Gram eigenvalue is below ``dead_rtol`` times the largest are dead
        (surplus units); their directions are excluded from the range
        (:func:`sgdfluct.theory.linearization.live_range`).
    tol, max_iterations : float, int
        Fixed-point tolerance (relative change) and cap of ``multiplicative``.
    renorm_iterations, renorm_tol : int, float
        Outer iterations of ``renormalized`` (docs/theory.md §8a: 3-4) and its convergence
        criterion.
    n_monte_carlo : int
        Antithetic pairs for ``E_u[C(theta_bar + u)]`` (``renormalized``).
    rng : numpy.random.Generator
        Required for ``renormalized``; the same draws are reused in every iteration (common random
        numbers), so the fixed-point map is deterministic.

    Returns
    -------
    LayeredCovariance

    Notes
    -----
    ``H`` is the exact Hessian at ``theta_bar``, ``C`` the full per-sample gradient covariance
    (cross-layer blocks kept), ``Π`` the projector on range(H). The multiplicative term uses the
    per-sample Gauss-Newton matrices ``H_mu = J_mu^T J_mu``: ``K(Σ) = (1/P) sum_mu H_mu Σ H_mu``
    and ``H̄ = (1/P) sum_mu H_mu`` (so ``K(Σ) - H̄ Σ H̄`` is the sample covariance of ``H_mu u``).
    In ``renormalized`` the Hessian average uses symmetric sigma points
    ``E_u[∇²L] = ∇²L(0) + ½ sum_i [∇²L(s_i) + ∇²L(-s_i) - 2 ∇²L(0)]`` with ``Σ = sum_i s_i s_i^T``;
    exact when ``∇²L`` is quadratic in ``u`` (depth 2, quartic loss), second-order accurate for
    deeper networks.
    """
    problem = StationaryProblem.linearized(
        theta,
        shapes,
        inputs,
        targets,
        learning_rate=learning_rate,
        batch_size=batch_size,
        sampling=sampling,
        range_rtol=range_rtol,
        dead_rtol=dead_rtol,
    )
    if method not in RANGE_METHODS:
        raise ConfigError(f"method = {method!r} is not allowed: expected one of {RANGE_METHODS}")
    options: dict[str, Any] = {}
    if method == "multiplicative":
        options = {"tol": tol, "max_iterations": max_iterations}
    elif method == "renormalized":
        options = {
            "rng": rng,
            "renorm_iterations": renorm_iterations,
            "renorm_tol": renorm_tol,
            "n_monte_carlo": n_monte_carlo,
        }
    return cast(LayeredCovariance, stationary_covariance(problem, method=method, **options))


# ------------------------------------------------------------------------------------------
# the range methods, registered in the theory's front door (sgdfluct.theory.problem.METHODS)
# ------------------------------------------------------------------------------------------


def _range_solution(
    problem: StationaryProblem,
    method: str,
    sig: Array,
    iterations: int,
    residual: float,
    converged: bool,
    evals: Array,
    vb: Array,
) -> LayeredCovariance:
    cov = vb @ sig @ vb.T
    if not np.all(np.isfinite(cov)):
        raise FloatingPointError(f"method {method!r} produced non-finite values")
    return LayeredCovariance(
        cov=0.5 * (cov + cov.T),
        method=method,
        iterations=iterations,
        residual=residual,
        converged=converged,
        hessian_eigenvalues=evals,
        range_basis=problem.range_basis,
        batch_factor=problem.batch_factor,
        sampling_exact=problem.sampling_exact,
    )


def _closed_form(problem: StationaryProblem, method: str, discrete: bool) -> LayeredCovariance:
    h, basis, eta, f_s = (
        problem.range_eigenvalues,
        problem.range_basis,
        problem.learning_rate,
        problem.batch_factor,
    )
    if discrete:
        check_learning_rate(float(h.max()), eta)
    c_r = basis.T @ problem.noise_cov @ basis
    sig_r = _solve_in_basis(c_r, h, eta, f_s, discrete)
    res = _residual(_lhs(sig_r, np.diag(h), eta, discrete), f_s * eta * c_r)
    return _range_solution(problem, method, sig_r, 0, res, True, h, basis)


@METHODS.register("continuum")
def _continuum(problem: StationaryProblem) -> LayeredCovariance:
    """``H Σ + Σ H = f_S η C`` on range(H) (docs/theory.md §5, §8)."""
    return _closed_form(problem, "continuum", discrete=False)


@METHODS.register("discrete")
def _discrete(problem: StationaryProblem) -> LayeredCovariance:
    """``H Σ + Σ H − η H Σ H = f_S η C`` on range(H) (docs/theory.md §8a)."""
    return _closed_form(problem, "discrete", discrete=True)


def _jacobians(problem: StationaryProblem) -> Array:
    """Per-sample Jacobians of the outputs, shape (P, N_o, d)."""
    if problem.theta is None:
        # single layer: f = W x, J_mu = I_{N_o} ⊗ x_mu^T (row-major vec)
        n_out = problem.shapes[0][0]
        eye = np.eye(n_out)
        return np.asarray(
            np.einsum("oq,pi->poqi", eye, problem.inputs).reshape(
                problem.inputs.shape[0], n_out, -1
            )
        )
    return np.asarray(nw.per_sample_jacobians(problem.theta, problem.shapes, problem.inputs))


@METHODS.register("multiplicative")
def _multiplicative(
    problem: StationaryProblem, *, tol: float = 1e-10, max_iterations: int = 1000
) -> LayeredCovariance:
    """Discrete equation plus ``K(Σ) − H̄ Σ H̄`` from per-sample Gauss–Newton matrices, solved by
    fixed-point iteration (docs/theory.md §8a)."""
    h, basis, eta, f_s = (
        problem.range_eigenvalues,
        problem.range_basis,
        problem.learning_rate,
        problem.batch_factor,
    )
    check_learning_rate(float(h.max()), eta)
    c_r = basis.T @ problem.noise_cov @ basis
    sig_r = _solve_in_basis(c_r, h, eta, f_s)
    jac_r = _jacobians(problem) @ basis  # (P, N_o, d_r)

    def bracket(s: Array) -> Array:
        k_term, mean_term = gauss_newton_variance(s, jac_r)
        return np.asarray(c_r + k_term - mean_term)

    converged = False
    it = 0
    for it in range(1, max_iterations + 1):  # noqa: B007
        new = _solve_in_basis(bracket(sig_r), h, eta, f_s)
        if not np.all(np.isfinite(new)) or float(np.linalg.norm(new)) > 1e12 * max(
            float(np.linalg.norm(sig_r)), 1e-300
        ):
            raise UnstableError(
                "the multiplicative fixed point diverges: SGD is not mean-square stable at "
                f"learning_rate = {eta}"
            )
        change = np.linalg.norm(new - sig_r) / max(float(np.linalg.norm(new)), 1e-300)
        sig_r = new
        if change < tol:
            converged = True
            break
    res = _residual(_lhs(sig_r, np.diag(h), eta, True), f_s * eta * bracket(sig_r))
    return _range_solution(problem, "multiplicative", sig_r, it, res, converged, h, basis)


@METHODS.register("renormalized")
def _renormalized(
    problem: StationaryProblem,
    *,
    rng: np.random.Generator | None = None,
    renorm_iterations: int = 4,
    renorm_tol: float = 1e-3,
    n_monte_carlo: int = 256,
) -> LayeredCovariance:
    """Self-consistent discrete theory with ``H`` and ``C`` averaged over ``u ~ N(0, Σ)``,
    iterated from the discrete solution (docs/theory.md §8a)."""
    if problem.theta is None or problem.targets is None:
        raise ConfigError(
            "method = 'renormalized' needs a linearized problem "
            "(StationaryProblem.linearized), which carries theta, shapes and targets"
        )
    if rng is None:
        raise ValueError("method='renormalized' needs an explicit rng (numpy.random.Generator)")
    if n_monte_carlo < 1:
        raise ValueError(f"n_monte_carlo = {n_monte_carlo} must be >= 1")
    theta, shapes, inputs, targets = problem.theta, problem.shapes, problem.inputs, problem.targets
    hess, c_full = problem.hessian, problem.noise_cov
    h, basis, eta, f_s = (
        problem.range_eigenvalues,
        problem.range_basis,
        problem.learning_rate,
        problem.batch_factor,
    )
    check_learning_rate(float(h.max()), eta)
    sig_r = _solve_in_basis(basis.T @ c_full @ basis, h, eta, f_s)
    draws = rng.standard_normal((n_monte_carlo, basis.shape[1]))

    def effective(sig_range: Array) -> tuple[Array, Array]:
        """(V^T E[∇²L] V, V^T E[C] V) at u ~ N(0, V sig_range V^T)."""
        lam, vec = np.linalg.eigh(0.5 * (sig_range + sig_range.T))
        lam = np.clip(lam, 0.0, None)
        root = vec * np.sqrt(lam)  # columns s_i in range coordinates
        h_eff = hess.copy()
        live = np.nonzero(lam > 1e-14 * max(float(lam.max()), 1e-300))[0]
        if live.size:
            # sum_i (H(theta + s_i) + H(theta - s_i) - 2 H) / 2, the sum in one batched pass
            s = root[:, live].T @ basis.T  # (n_live, d)
            pm = np.concatenate([theta + s, theta - s])
            h_eff += 0.5 * nw.hessian_sum(pm, shapes, inputs, targets) - live.size * hess
        # symmetric square root: continuous in Σ, so common random numbers give a smooth map
        u = (draws @ (root @ vec.T)) @ basis.T  # (n_mc, d)
        c_eff = np.zeros_like(c_full)
        for k in range(n_monte_carlo):
            c_eff += nw.noise_covariance(theta + u[k], shapes, inputs, targets)
            c_eff += nw.noise_covariance(theta - u[k], shapes, inputs, targets)
        c_eff /= 2 * n_monte_carlo
        return basis.T @ h_eff @ basis, basis.T @ c_eff @ basis

    def solve(h_r: Array, c_eff_r: Array) -> tuple[Array, Array, Array]:
        evals, evecs = np.linalg.eigh(0.5 * (h_r + h_r.T))
        if evals[0] <= 0.0:
            raise FloatingPointError("the renormalized Hessian is not positive on range(H)")
        check_learning_rate(float(evals.max()), eta)
        sig_e = _solve_in_basis(evecs.T @ c_eff_r @ evecs, evals, eta, f_s)
        return evecs @ sig_e @ evecs.T, evals, evecs

    converged = False
    evals = h
    it = 0
    for it in range(1, renorm_iterations + 1):  # noqa: B007
        h_r, c_eff_r = effective(sig_r)
        new, evals, _ = solve(h_r, c_eff_r)
        change = np.linalg.norm(new - sig_r) / max(float(np.linalg.norm(new)), 1e-300)
        sig_r = new
        converged = bool(change < renorm_tol)
    h_r, c_eff_r = effective(sig_r)
    res = _residual(_lhs(sig_r, h_r, eta, True), f_s * eta * c_eff_r)
    return _range_solution(problem, "renormalized", sig_r, it, res, converged, evals, basis)
