"""The theory's front door: one problem object, one solver registry, one entry point.

A :class:`StationaryProblem` holds everything a stationary-covariance solver needs: the Hessian
``H`` and per-sample noise covariance ``C`` (not divided by S) at the reference point, the
learning rate ``η``, the batch factor ``f_S``, the range of ``H`` on which the fluctuations live,
and what a method may need to re-expand (the single-layer data, or the linearization point
``θ̄`` with its shapes and data). Build it with :meth:`StationaryProblem.single_layer`
(docs/theory.md §4-5) or :meth:`StationaryProblem.linearized` (§8, §8a), then call
:func:`stationary_covariance` with a ``method`` from :data:`METHODS`:

================  ===============================================================  =========
method            equation solved (on range(H))                                    needs
================  ===============================================================  =========
``continuum``     ``H Σ + Σ H = f_S η C`` (Lyapunov; the paper's level)             any
``discrete``      ``H Σ + Σ H − η H Σ H = f_S η C`` (exact map, additive noise)     any
``exact``         ``… = f_S η [C_0 + K(Σ) − H Σ H]`` (§5, dense/Krylov/fixed point) one layer
``multiplicative``  as ``exact`` with ``K`` from per-sample Gauss–Newton matrices   any
``renormalized``  ``discrete`` with ``H, C`` averaged over ``u ~ N(0, Σ)``          linearized
================  ===============================================================  =========

Every method checks stability once, through :func:`sgdfluct.theory.stability.check_learning_rate`
(:class:`~sgdfluct.errors.UnstableError`). A new method is one function plus one registration::

    @METHODS.register("my_method")
    def my_method(problem: StationaryProblem, **options) -> Solution: ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from sgdfluct import networks as nw
from sgdfluct.errors import ConfigError
from sgdfluct.registry import Registry
from sgdfluct.theory.linearization import live_range
from sgdfluct.theory.noise import (
    _as_2d_residuals,
    _as_inputs,
    batch_factor,
    sampling_note,
    single_layer_hessian,
    single_layer_noise_covariance,
)

__all__ = [
    "METHODS",
    "Solution",
    "StationaryProblem",
    "stationary_covariance",
]

Array = NDArray[np.float64]
Shapes = Sequence[tuple[int, int]]


class Solution(Protocol):
    """What every method returns (:class:`~sgdfluct.theory.discrete.StationaryCovariance` or
    :class:`~sgdfluct.theory.layered.LayeredCovariance`)."""

    cov: Array
    method: str
    iterations: int
    residual: float
    converged: bool
    batch_factor: float


@dataclass(frozen=True, kw_only=True, eq=False)
class StationaryProblem:
    """A stationary-covariance problem (see the module docstring).

    Attributes
    ----------
    hessian, noise_cov : (d, d) arrays
        ``H`` and ``C`` at the reference point (parameter coordinates, row-major vec).
    learning_rate : float
        ``η > 0``.
    batch_size : int
        ``S``.
    sampling : str
        Sampling mode; sets ``batch_factor``.
    batch_factor : float
        ``f_S``.
    range_eigenvalues : (d_r,) array
        Eigenvalues of ``H`` on the range the fluctuations live on.
    range_basis : (d, d_r) array
        Orthonormal eigenvectors of ``H`` for ``range_eigenvalues``.
    inputs : (P, N_i) array
        The training inputs.
    targets : (P, N_o) array or None
        Labels (linearized problems).
    residuals : (P, N_o) array or None
        Least-squares residuals (single-layer problems).
    theta : (d,) array or None
        Linearization point ``θ̄`` (linearized problems; the least-squares ``W*`` for one layer
        when known).
    shapes : tuple of (rows, cols)
        Layer shapes.
    """

    hessian: Array
    noise_cov: Array
    learning_rate: float
    batch_size: int
    sampling: str
    batch_factor: float
    range_eigenvalues: Array
    range_basis: Array
    inputs: Array
    shapes: tuple[tuple[int, int], ...]
    targets: Array | None = None
    residuals: Array | None = None
    theta: Array | None = None

    @property
    def is_single_layer(self) -> bool:
        """True when built from single-layer data (the exact §5 solvers apply)."""
        return self.residuals is not None

    @property
    def sampling_exact(self) -> bool:
        """False for ``epoch_shuffle`` (the theory is then an approximation)."""
        return self.sampling != "epoch_shuffle"

    @property
    def note(self) -> str:
        """Caveat of the sampling mode ("" when the theory is exact for it)."""
        return sampling_note(self.sampling)

    @classmethod
    def single_layer(
        cls,
        inputs: Array,
        residuals: Array,
        *,
        learning_rate: float,
        batch_size: int,
        sampling: str,
    ) -> StationaryProblem:
        """Single layer at the least-squares minimum (docs/theory.md §4-5).

        Parameters
        ----------
        inputs : (P, N_i) array
            Design matrix ``X`` (``P > N_i``, so that ``H`` is positive definite).
        residuals : (P, N_o) or (P,) array
            Least-squares residuals ``r_mu = W* x_mu − y_mu``.
        learning_rate, batch_size, sampling
            ``η``, ``S`` and the sampling mode.

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((20, 3)); r = rng.standard_normal(20)
        >>> p = StationaryProblem.single_layer(x, r, learning_rate=0.1, batch_size=4,
        ...                                    sampling="with_replacement")
        >>> p.hessian.shape, p.batch_factor, p.is_single_layer
        ((3, 3), 0.25, True)
        """
        x = _as_inputs(inputs)
        r = _as_2d_residuals(residuals, x.shape[0])
        _check_learning_rate_value(learning_rate)
        n_out = r.shape[1]
        hess = single_layer_hessian(x, n_out)
        evals, vecs = np.linalg.eigh(hess)
        return cls(
            hessian=hess,
            noise_cov=single_layer_noise_covariance(x, r),
            learning_rate=float(learning_rate),
            batch_size=int(batch_size),
            sampling=sampling,
            batch_factor=batch_factor(batch_size, x.shape[0], sampling),
            range_eigenvalues=evals,
            range_basis=vecs,
            inputs=x,
            shapes=((n_out, x.shape[1]),),
            residuals=r,
        )

    @classmethod
    def linearized(
        cls,
        theta: Array,
        shapes: Shapes,
        inputs: Array,
        targets: Array,
        *,
        learning_rate: float,
        batch_size: int,
        sampling: str,
        range_rtol: float = 1e-7,
        dead_rtol: float = 1e-2,
    ) -> StationaryProblem:
        """Depth-L linear network linearized at ``θ̄`` (docs/theory.md §8, §8a).

        ``H`` is the exact Hessian at ``θ̄``, ``C`` the full per-sample gradient covariance
        (cross-layer blocks kept); the range excludes the symmetry null space and the directions
        of dead hidden units (:func:`sgdfluct.theory.linearization.live_range`).
        """
        _check_learning_rate_value(learning_rate)
        theta = np.asarray(theta, dtype=float)
        x = np.asarray(inputs, dtype=float)
        y = np.asarray(targets, dtype=float)
        hess = nw.hessian(theta, shapes, x, y)
        h, basis, _ = live_range(theta, shapes, hess, range_rtol=range_rtol, dead_rtol=dead_rtol)
        return cls(
            hessian=hess,
            noise_cov=nw.noise_covariance(theta, shapes, x, y),
            learning_rate=float(learning_rate),
            batch_size=int(batch_size),
            sampling=sampling,
            batch_factor=batch_factor(batch_size, x.shape[0], sampling),
            range_eigenvalues=h,
            range_basis=basis,
            inputs=x,
            shapes=tuple((int(a), int(b)) for a, b in shapes),
            targets=y,
            theta=theta,
        )


def _check_learning_rate_value(learning_rate: float) -> None:
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ConfigError(f"learning_rate = {learning_rate!r} is out of range: expected > 0")


#: the stationary-covariance methods (name -> ``f(problem, **options) -> Solution``)
METHODS: Registry[Callable[..., Any]] = Registry("theory method")

#: the exact single-layer solvers selectable with the legacy ``method=`` of
#: :func:`stationary_covariance` (and ``analysis.theory_method``)
EXACT_SOLVERS = ("auto", "dense", "krylov", "fixed_point")


def stationary_covariance(
    problem: StationaryProblem | Array,
    residuals: Array | None = None,
    *,
    method: str = "auto",
    learning_rate: float | None = None,
    batch_size: int | None = None,
    sampling: str | None = None,
    **options: Any,
) -> Any:
    """Stationary weight covariance of SGD: the theory's single entry point.

    Parameters
    ----------
    problem : StationaryProblem or (P, N_i) array
        The problem; or, for the single-layer exact solver, the inputs ``X`` (then pass
        ``residuals``, ``learning_rate``, ``batch_size`` and ``sampling`` too).
    residuals : (P, N_o) or (P,) array, optional
        Least-squares residuals (only with inputs as the first argument).
    method : str
        A name of :data:`METHODS` (``"continuum"``, ``"discrete"``, ``"exact"``,
        ``"multiplicative"``, ``"renormalized"``, …) or ``"auto"``: ``"exact"`` for a
        single-layer problem, ``"multiplicative"`` otherwise. With inputs as the first argument
        ``method`` may also name an exact solver (``"dense"``, ``"krylov"``, ``"fixed_point"``).
    **options
        Passed to the method (e.g. ``tol``, ``max_iter``, ``rng``, ``solver``).

    Returns
    -------
    Solution
        ``cov`` (d, d) and the method's diagnostics (``converged``, ``residual``, …).

    Raises
    ------
    UnstableError
        If SGD is not (mean-square) stable at this learning rate.
    ConfigError
        If the method is unknown or does not apply to this problem.

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.theory import StationaryProblem, stationary_covariance
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((40, 3)); r = rng.standard_normal(40)
    >>> p = StationaryProblem.single_layer(x, r, learning_rate=0.05, batch_size=4,
    ...                                    sampling="with_replacement")
    >>> exact = stationary_covariance(p, method="exact")
    >>> cont = stationary_covariance(p, method="continuum")
    >>> bool(exact.converged), round(float(np.trace(exact.cov) / np.trace(cont.cov)), 2)
    (True, 1.04)
    """
    if not isinstance(problem, StationaryProblem):
        if residuals is None or learning_rate is None or batch_size is None or sampling is None:
            raise TypeError(
                "stationary_covariance(inputs, residuals, learning_rate=..., batch_size=..., "
                "sampling=...) or stationary_covariance(problem, method=...)"
            )
        if method in EXACT_SOLVERS:
            options.setdefault("solver", method)
            method = "exact"
        problem = StationaryProblem.single_layer(
            problem,
            residuals,
            learning_rate=learning_rate,
            batch_size=batch_size,
            sampling=sampling,
        )
    if method == "auto":
        method = "exact" if problem.is_single_layer else "multiplicative"
    return METHODS.get(method)(problem, **options)
