"""Exact discrete-time stationary weight covariance of SGD on a single linear layer
(docs/theory.md §5).

SGD at finite learning rate ``η``, batch size ``S`` and finite data set, around the least-squares
minimum, ``u_{k+1} = u_k - (η/S) sum_{mu in B_k} (A_mu u_k + g_mu)`` with
``A_mu = I_{N_o} ⊗ x_mu x_mu^T`` and ``g_mu = r_mu ⊗ x_mu``. The stationary second moment
``M = E[u u^T]`` solves the linear equation

    H M + M H - η H M H = f_S η [C_0 + K(M) - H M H],   K(M) = (1/P) sum_mu A_mu M A_mu.

It has a (positive semi-definite) solution iff the second-moment map
``T(M) = (I - ηH) M (I - ηH) + η² f_S (K(M) - H M H)`` has spectral radius < 1
(mean-square stability).

Methods
-------
``"dense"``: the d² x d² linear system (small d only). ``"krylov"``: matrix-free GMRES on
``(I - G) M = B`` in the eigenbasis of ``H``, where ``G(M) = f_S η L^{-1}[K(M) - H M H]`` and
``L`` is the discrete Lyapunov operator ``H M + M H - η H M H`` (diagonal in that basis).
``"fixed_point"``: the iteration ``M <- B + G(M)``. One application of ``G`` costs O(P d²)
(``A_mu`` is never formed: ``(A_mu M A_mu)[o i, o' j] = x_i x_j (x^T M_{o o'} x)``).
``I - T = η (L - η f_S (K - H·H))`` is a regular splitting of positive maps, so
``ρ(T) < 1`` iff ``ρ(G) < 1``; ``ρ(G)`` (power iteration from the identity) is the
stability check and the convergence rate of the fixed-point iteration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
from numpy.typing import NDArray

from sgdfluct.errors import ConfigError, UnstableError
from sgdfluct.theory.noise import (
    _as_2d_residuals,
    _as_inputs,
    batch_factor,
    sampling_note,
    single_layer_noise_covariance,
)
from sgdfluct.theory.problem import EXACT_SOLVERS, METHODS, StationaryProblem
from sgdfluct.theory.stability import check_learning_rate

__all__ = [
    "DENSE_MAX_PARAMS",
    "StationaryCovariance",
    "UnstableError",
    "benchmark_exact_solver",
    "discrete_residual",
    "mean_square_spectral_radius",
    "stationary_covariance",
]

Array = NDArray[np.float64]

#: Largest number of parameters d for which ``method="dense"`` builds its d² x d² matrix
#: (d = 48: a 2304 x 2304 system, ~40 MB).
DENSE_MAX_PARAMS = 48

_METHODS = EXACT_SOLVERS


@dataclass(frozen=True, kw_only=True)
class StationaryCovariance:
    """Result of :func:`stationary_covariance`.

    Attributes
    ----------
    cov : (d, d) array
        Stationary covariance ``M`` of ``theta - theta*`` (row-major ``vec(W)``).
    method : str
        Method used (``"dense"``, ``"krylov"`` or ``"fixed_point"``).
    iterations : int
        Matrix-free operator applications of the solve (0 for ``"dense"``).
    residual : float
        Relative residual of the exact equation, ``||LHS - RHS||_F / ||f_S η C_0||_F``,
        evaluated in the original basis.
    converged : bool
        Whether ``residual <= tol`` (with a small allowance for round-off, see ``tol``).
    spectral_radius : float
        ``ρ(G)`` of the splitting operator (< 1 iff mean-square stable); 0 when ``f_S = 0``.
    batch_factor : float
        ``f_S`` used.
    note : str
        Caveats (e.g. the epoch-shuffle approximation), "" if none.
    """

    cov: Array
    method: str
    iterations: int
    residual: float
    converged: bool
    spectral_radius: float
    batch_factor: float
    note: str


# --------------------------------------------------------------------------------------------
# the multiplicative term K(M), matrix-free
# --------------------------------------------------------------------------------------------


def _apply_k(m: Array, z: Array, n_out: int) -> Array:
    """``K(M) = (1/P) sum_mu A_mu M A_mu`` with ``A_mu = I_{N_o} ⊗ z_mu z_mu^T``; O(P d²)."""
    p, n_in = z.shape
    if n_out == 1:
        q = np.einsum("pi,pi->p", z @ m, z)  # z^T M z
        return np.asarray((z * q[:, None]).T @ z / p)
    m4 = m.reshape(n_out, n_in, n_out, n_in)
    t = np.einsum("pk,okql->poql", z, m4)
    q = np.einsum("poql,pl->poq", t, z).reshape(p, n_out * n_out)
    k = np.einsum("pa,pi,pj->aij", q, z, z, optimize=True) / p
    return np.asarray(
        k.reshape(n_out, n_out, n_in, n_in).transpose(0, 2, 1, 3).reshape(n_out * n_in, -1)
    )


def _hmh(h: Array, m: Array) -> Array:
    return np.asarray(h @ m @ h)


def discrete_residual(
    inputs: Array,
    residuals: Array,
    cov: Array,
    *,
    learning_rate: float,
    batch_factor: float,
) -> float:
    """Relative residual of the exact discrete-time equation for a candidate ``cov``.

    Parameters
    ----------
    inputs : (P, N_i) array
    residuals : (P, N_o) or (P,) array
    cov : (d, d) array, d = N_o N_i
    learning_rate, batch_factor : float
        ``η`` and ``f_S``.

    Returns
    -------
    float
        ``||H M + M H - η H M H - f_S η (C_0 + K(M) - H M H)||_F / ||f_S η C_0||_F``.
    """
    x = _as_inputs(inputs)
    r = _as_2d_residuals(residuals, x.shape[0])
    n_out = r.shape[1]
    h = np.kron(np.eye(n_out), x.T @ x / x.shape[0])
    c0 = single_layer_noise_covariance(x, r)
    m = np.asarray(cov, float)
    eta, fs = learning_rate, batch_factor
    hmh = _hmh(h, m)
    lhs = h @ m + m @ h - eta * hmh
    rhs = fs * eta * (c0 + _apply_k(m, x, n_out) - hmh)
    scale = np.linalg.norm(fs * eta * c0)
    if scale == 0:
        return float(np.linalg.norm(lhs - rhs))
    return float(np.linalg.norm(lhs - rhs) / scale)


# --------------------------------------------------------------------------------------------
# eigenbasis machinery
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    z: Array  # rotated inputs X V, (P, N_i)
    vecs: Array  # eigenvectors V of H_x
    h: Array  # eigenvalues of H = I ⊗ H_x in the rotated basis, (d,)
    den: Array  # h_a + h_b - η h_a h_b, (d, d)
    n_out: int
    eta: float
    fs: float

    def rotate(self, m: Array, inverse: bool = False) -> Array:
        n_in = self.vecs.shape[0]
        v = self.vecs.T if inverse else self.vecs
        m4 = m.reshape(self.n_out, n_in, self.n_out, n_in)
        out = np.einsum("oiqj,ia,jb->oaqb", m4, v, v, optimize=True)
        return np.asarray(out.reshape(m.shape))

    def g(self, m: Array) -> Array:
        """Splitting operator ``G(M) = f_S η L^{-1}[K(M) - H M H]`` (rotated basis)."""
        km = _apply_k(m, self.z, self.n_out) - np.outer(self.h, self.h) * m
        return np.asarray(self.fs * self.eta * km / self.den)


def _setup(x: Array, n_out: int, eta: float, fs: float) -> _Problem:
    hx = x.T @ x / x.shape[0]
    evals, vecs = np.linalg.eigh(hx)
    lam_max = float(evals[-1])
    if evals[0] <= lam_max * 1e-12 or lam_max <= 0:
        raise ValueError(
            f"H_x is singular (smallest eigenvalue {evals[0]:.3g}, largest {lam_max:.3g}): "
            "an overparameterized single layer (P < N_i) has no unique stationary covariance"
        )
    check_learning_rate(lam_max, eta)
    h = np.tile(evals, n_out)
    den = h[:, None] + h[None, :] - eta * np.outer(h, h)
    return _Problem(z=x @ vecs, vecs=vecs, h=h, den=den, n_out=n_out, eta=eta, fs=fs)


def _spectral_radius(prob: _Problem, *, rtol: float = 1e-4, max_iter: int = 500) -> float:
    """Power iteration for ``ρ(G)`` from the identity (G maps PSD matrices to PSD matrices)."""
    if prob.fs == 0:
        return 0.0
    m = np.eye(prob.h.size) / np.sqrt(prob.h.size)
    rho_old = np.inf
    rho = 0.0
    for _ in range(max_iter):
        gm = prob.g(m)
        nrm = float(np.linalg.norm(gm))
        if nrm == 0:
            return 0.0
        rho = nrm  # m has unit norm
        m = gm / nrm
        if abs(rho - rho_old) <= rtol * rho:
            break
        rho_old = rho
    return rho


def _raise_unstable(prob: _Problem, rho: float) -> None:
    lam_max = float(prob.h.max())
    raise UnstableError(
        f"SGD is not mean-square stable at learning_rate={prob.eta} (batch factor "
        f"f_S={prob.fs:.4g}): the multiplicative-noise splitting operator has spectral radius "
        f"{rho:.4g} >= 1, so the SGD second moment diverges. lambda_max(H)={lam_max:.6g}; the "
        f"deterministic bound 2/lambda_max = {2 / lam_max:.6g} is not sufficient at this batch size"
    )


def mean_square_spectral_radius(
    inputs: Array,
    *,
    n_out: int = 1,
    learning_rate: float,
    batch_size: int,
    sampling: str,
) -> float:
    """Spectral radius ``ρ(G)`` of the splitting operator (mean-square stable iff ``ρ < 1``).

    Parameters
    ----------
    inputs : (P, N_i) array
    n_out : int
    learning_rate : float
    batch_size : int
    sampling : str

    Raises
    ------
    UnstableError
        If ``η λ_max(H) >= 2``.
    """
    x = _as_inputs(inputs)
    fs = batch_factor(batch_size, x.shape[0], sampling)
    return _spectral_radius(_setup(x, n_out, learning_rate, fs))


# --------------------------------------------------------------------------------------------
# solvers
# --------------------------------------------------------------------------------------------


def _solve_dense(x: Array, r: Array, eta: float, fs: float) -> Array:
    p, n_in = x.shape
    n_out = r.shape[1]
    d = n_in * n_out
    if d > DENSE_MAX_PARAMS:
        raise ValueError(
            f"method='dense' builds a d^2 x d^2 system and is limited to d <= {DENSE_MAX_PARAMS} "
            f"parameters (got d = N_o * N_i = {d}); use method='krylov' or 'fixed_point'"
        )
    h = np.kron(np.eye(n_out), x.T @ x / p)
    eye = np.eye(d)
    # row-major vec: vec(A M B) = (A ⊗ B^T) vec(M)
    a = np.einsum("pi,pj->pij", x, x)
    amu = np.einsum("oq,pij->poiqj", np.eye(n_out), a).reshape(p, d, d)
    kmat = np.einsum("pab,pcd->acbd", amu, amu).reshape(d * d, d * d) / p
    hh = np.kron(h, h)
    op = np.kron(h, eye) + np.kron(eye, h) - eta * hh - fs * eta * (kmat - hh)
    rhs = fs * eta * single_layer_noise_covariance(x, r).ravel()
    sol = scipy.linalg.solve(op, rhs).reshape(d, d)
    return np.asarray(sol)


def _solve_krylov(prob: _Problem, b: Array, tol: float, max_iter: int) -> tuple[Array, int]:
    d = prob.h.size
    count = [0]

    def matvec(v: Array) -> Array:
        count[0] += 1
        m = v.reshape(d, d)
        return np.asarray((m - prob.g(m)).ravel())

    op = scipy.sparse.linalg.LinearOperator((d * d, d * d), matvec=matvec, dtype=float)
    sol, info = scipy.sparse.linalg.gmres(
        op, b.ravel(), x0=b.ravel(), rtol=tol, atol=0.0, restart=min(50, d * d), maxiter=max_iter
    )
    if info < 0:
        raise RuntimeError(f"GMRES failed with info={info}")
    return sol.reshape(d, d), count[0]


def _solve_fixed_point(prob: _Problem, b: Array, tol: float, max_iter: int) -> tuple[Array, int]:
    m = b.copy()
    scale = float(np.linalg.norm(b)) or 1.0
    for it in range(1, max_iter + 1):
        new = b + prob.g(m)
        step = float(np.linalg.norm(new - m))
        m = new
        if step <= tol * scale:
            return m, it
    return m, max_iter


def stationary_covariance(
    inputs: Array,
    residuals: Array,
    *,
    learning_rate: float,
    batch_size: int,
    sampling: str,
    method: str = "auto",
    tol: float = 1e-12,
    max_iter: int = 10_000,
) -> StationaryCovariance:
    """Exact stationary covariance of single-layer SGD at finite ``η``, ``S`` and ``P``.

    Parameters
    ----------
    inputs : (P, N_i) array
        Design matrix ``X`` (``P > N_i``: ``H`` must be positive definite).
    residuals : (P, N_o) or (P,) array
        Least-squares residuals ``r_mu = W* x_mu - y_mu``
        (:func:`sgdfluct.theory.noise.least_squares_residuals`).
    learning_rate : float
        ``η > 0``.
    batch_size : int
        ``S``.
    sampling : {"with_replacement", "without_replacement", "epoch_shuffle"}
        Exact for the first two; ``"epoch_shuffle"`` is treated as ``"without_replacement"``
        (an approximation, stated in ``note``).
    method : {"auto", "dense", "krylov", "fixed_point"}
        ``"auto"`` is ``"krylov"``. ``"dense"`` is limited to ``d <= DENSE_MAX_PARAMS``.
    tol : float
        Relative tolerance of the iterative solvers (GMRES residual of the preconditioned
        system, or the step size of the fixed-point iteration).
    max_iter : int
        Iteration limit of the iterative solvers.

    Returns
    -------
    StationaryCovariance
        ``cov`` of shape (d, d), d = N_o N_i, in row-major ``vec(W)`` order.

    Raises
    ------
    UnstableError
        If SGD is not mean-square stable (``η λ_max(H) >= 2``, or the multiplicative noise
        makes the second moment diverge).

    Notes
    -----
    Solves (docs/theory.md §5)

        ``H M + M H - η H M H = f_S η [C_0 + K(M) - H M H]``,

    ``K(M) = (1/P) sum_mu A_mu M A_mu``, ``A_mu = I_{N_o} ⊗ x_mu x_mu^T``,
    ``H = I_{N_o} ⊗ X^T X / P``, ``C_0 = (1/P) sum_mu (r_mu r_mu^T) ⊗ (x_mu x_mu^T)``,
    ``f_S = 1/S`` (with replacement) or ``(P - S)/(S (P - 1))`` (without).
    ``converged`` is ``residual <= max(10 tol, 1e-10)`` (round-off of the residual evaluation
    itself is ~1e-13 relative).
    """
    x = _as_inputs(inputs)
    r = _as_2d_residuals(residuals, x.shape[0])
    if method not in _METHODS:
        raise ConfigError(f"method = {method!r} is not allowed: expected one of {_METHODS}")
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate={learning_rate} must be > 0")
    if not (0 < tol < 1):
        raise ValueError(f"tol={tol} must be in (0, 1)")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be an integer >= 1")
    fs = batch_factor(batch_size, x.shape[0], sampling)
    note = sampling_note(sampling)
    n_out = r.shape[1]
    eta = float(learning_rate)
    prob = _setup(x, n_out, eta, fs)
    rho = _spectral_radius(prob)
    if rho >= 1.0:
        _raise_unstable(prob, rho)
    if method == "auto":
        method = "krylov"
    iterations = 0
    if method == "dense":
        cov = _solve_dense(x, r, eta, fs)
    else:
        # in the rotated basis C_0 is built from z_mu = V^T x_mu directly
        b = fs * eta * single_layer_noise_covariance(prob.z, r) / prob.den
        if method == "krylov":
            cov_rot, iterations = _solve_krylov(prob, b, tol, max_iter)
        else:
            cov_rot, iterations = _solve_fixed_point(prob, b, tol, max_iter)
        cov = prob.rotate(cov_rot, inverse=True)
    cov = 0.5 * (cov + cov.T)
    if not np.all(np.isfinite(cov)):
        raise UnstableError(
            "the stationary covariance solve produced non-finite values: SGD is at or beyond "
            f"its mean-square stability edge at learning_rate = {eta}"
        )
    _check_psd(cov, eta)
    res = discrete_residual(x, r, cov, learning_rate=eta, batch_factor=fs)
    return StationaryCovariance(
        cov=cov,
        method=method,
        iterations=iterations,
        residual=res,
        converged=bool(res <= max(10 * tol, 1e-10)),
        spectral_radius=rho,
        batch_factor=fs,
        note=note,
    )


#: a stationary covariance is PSD; eigenvalues below -PSD_RTOL * largest mean the solve is
#: meaningless (at the stability edge the linear system is singular): round-off gives ~1e-14
PSD_RTOL = 1e-8


def _check_psd(cov: Array, eta: float) -> None:
    evals = np.linalg.eigvalsh(cov)
    top = max(float(np.abs(evals).max()), 1e-300)
    if evals[0] < -PSD_RTOL * top:
        raise UnstableError(
            f"the stationary covariance at learning_rate = {eta} is not positive semi-definite "
            f"(smallest eigenvalue {evals[0]:.3g}, largest {evals[-1]:.3g}): SGD is at or beyond "
            "its mean-square stability edge, so no stationary covariance exists"
        )


@METHODS.register("exact")
def _exact(
    problem: StationaryProblem, *, solver: str = "auto", tol: float = 1e-12, max_iter: int = 10_000
) -> StationaryCovariance:
    """The exact single-layer equation of docs/theory.md §5 (front-door method ``"exact"``);
    ``solver`` is one of ``"auto"``, ``"dense"``, ``"krylov"``, ``"fixed_point"``."""
    if not problem.is_single_layer:
        raise ConfigError(
            "method = 'exact' needs a single-layer problem (StationaryProblem.single_layer); "
            "for a linearized network use 'multiplicative' or 'renormalized'"
        )
    assert problem.residuals is not None
    return stationary_covariance(
        problem.inputs,
        problem.residuals,
        learning_rate=problem.learning_rate,
        batch_size=problem.batch_size,
        sampling=problem.sampling,
        method=solver,
        tol=tol,
        max_iter=max_iter,
    )


def benchmark_exact_solver(n_in: int = 200, n_samples: int = 400, seed: int = 0) -> dict:
    """Time the exact solver against one continuum Lyapunov solve of the same size.

    Parameters
    ----------
    n_in, n_samples : int
        ``N_i`` and ``P`` (``N_o = 1``, whitened Gaussian inputs, label noise 1).
    seed : int
        Seed of the data set.

    Returns
    -------
    dict
        ``n_in``, ``n_samples``, ``exact_seconds`` (best of 3, ``method="auto"``),
        ``lyapunov_seconds`` (best of 3, ``scipy.linalg.solve_continuous_lyapunov`` on the
        same H and C_0), ``ratio``, ``iterations``, ``residual``, ``spectral_radius``.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, n_in))
    y = x @ (rng.standard_normal(n_in) / np.sqrt(n_in)) + rng.standard_normal(n_samples)
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    r = x @ w - y
    eta, bs = 0.05, 10
    h = x.T @ x / n_samples
    c0 = single_layer_noise_covariance(x, r)
    fs = batch_factor(bs, n_samples, "with_replacement")

    def best(fn: object) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append(time.perf_counter() - t0)
        return min(times)

    t_lyap = best(lambda: scipy.linalg.solve_continuous_lyapunov(h, fs * eta * c0))
    out: list[StationaryCovariance] = []
    t_exact = best(
        lambda: out.append(
            stationary_covariance(
                x, r, learning_rate=eta, batch_size=bs, sampling="with_replacement"
            )
        )
    )
    res = out[-1]
    return {
        "n_in": n_in,
        "n_samples": n_samples,
        "learning_rate": eta,
        "batch_size": bs,
        "exact_seconds": t_exact,
        "lyapunov_seconds": t_lyap,
        "ratio": t_exact / t_lyap,
        "iterations": res.iterations,
        "residual": res.residual,
        "spectral_radius": res.spectral_radius,
    }
