"""Ground-truth bench for IVFR estimators (docs/theory.md §9, "Calibration").

Linear-Gaussian processes with a prescribed Hessian ``H`` and stationary covariance ``Σ`` in a
random orthonormal basis, so that the exponent ψ of ``F ∝ σ^{−ψ}`` is known exactly:

* ``"none"`` — ``Σ = s I`` (noise ``C ∝ H`` in the continuum): no variance–flatness relation; the
  right answer is "no ψ" (``None``) or an interval that contains 0;
* ``"equilibrium"`` — ``Σ = s H⁻¹`` (``C ∝ I``): ``σ² ∝ 1/k``, ``F ∝ k^{−1/2}``, so ψ = −1;
* ``"ivfr"`` — ``Σ = s H^{γ−1}`` (``C ∝ H^γ``): ψ = 1/(γ − 1) (γ = 2: ψ = 1).

For ``"none"`` all curvatures are log-uniform in ``curvature_range``. For the other two the
``top_k`` largest-variance modes (the ones the estimators fit) are log-uniform over the whole
range and the remaining bulk continues the relation below them in variance (flatter modes for
``"ivfr"``, sharper ones for ``"equilibrium"``), so that the fitted variances span the range as
in Feng & Tu's heavy-tailed PCA spectra rather than one end of it.

Each eigen-mode of ``H`` (curvature ``k_i``) is the AR(1) recursion of SGD on a quadratic,
``x_{t+1} = (1 − η k_i) x_t + ξ_t``, with the innovation variance chosen so that the stationary
variance is exactly ``Σ_ii``; recorded every ``every`` steps it is again AR(1) with coefficient
``(1 − η k_i)^every`` (simulated exactly, from the stationary state). The loss is the quadratic
``L_0 + ½ θᵀ H θ`` at its minimum, so along a unit direction ``p`` the flatness is
``F = 2 sqrt(2 (e − 1) L_0 / k)`` with ``k = pᵀ H p`` (docs/theory.md §9).

Estimators (:data:`ESTIMATORS`): ``"pca"`` — PCA of the whole window, OLS with a bootstrap over
directions (:func:`sgdfluct.landscape.fit_ivfr`, the estimator of the first two waves);
``"split_eiv"`` — directions from the PCA of the window's first half (and of its first quarter,
for the direction-noise correction), variances along them on the second half, the
errors-in-variables fit (:mod:`sgdfluct.ivfr_estimator`, the default);
``"hessian_eiv"`` — the top-k Hessian eigenvectors as fixed directions, the whole window.

:func:`calibration_table` runs repetitions per (truth, window) cell and reports, per estimator,
the bias of ψ, the coverage of its 95 % interval, how often the interval excludes 0 with the wrong
sign, and how often ψ is not identified. ``benchmarks/calibration.py`` prints the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sgdfluct.ivfr_estimator import (
    fit_ivfr_calibrated,
    out_of_sample_stable,
    richardson_fit,
    series_variances,
)
from sgdfluct.landscape import fit_ivfr

__all__ = [
    "ESTIMATORS",
    "TRUTHS",
    "BenchProcess",
    "calibration_table",
    "estimate",
    "make_process",
    "simulate",
]

Array = NDArray[np.float64]

TRUTHS = ("none", "equilibrium", "ivfr")
ESTIMATORS = ("pca", "split_eiv", "hessian_eiv")
#: loss at the minimum of the bench quadratic (sets the flatness scale only)
LOSS0 = 1.0


@dataclass(frozen=True, kw_only=True)
class BenchProcess:
    """A linear-Gaussian process with known ψ.

    Attributes
    ----------
    truth : str
        One of :data:`TRUTHS`.
    psi : float
        The true exponent (0 for ``"none"``: no relation).
    curvatures : (d,) array
        Eigenvalues ``k_i`` of ``H``.
    variances : (d,) array
        Stationary variances ``Σ_ii`` along the same eigenvectors.
    basis : (d, d) array
        Orthonormal eigenvectors (columns) of ``H`` and ``Σ``.
    learning_rate : float
    top_k : int
        Directions the estimators fit.
    relaxation_steps : float
        ``1 / (η k)`` of the slowest of the ``top_k`` largest-variance directions (the window unit).
    """

    truth: str
    psi: float
    curvatures: Array
    variances: Array
    basis: Array
    learning_rate: float
    top_k: int
    relaxation_steps: float

    @property
    def hessian(self) -> Array:
        return (self.basis * self.curvatures) @ self.basis.T


def make_process(
    truth: str,
    *,
    dim: int = 272,
    learning_rate: float = 0.2,
    curvature_range: tuple[float, float] = (0.05, 1.0),
    gamma: float = 2.0,
    top_k: int = 20,
    rng: np.random.Generator | int,
) -> BenchProcess:
    """A bench process (module docstring): log-uniform curvatures, a random basis.

    Examples
    --------
    >>> from sgdfluct.calibration import make_process
    >>> p = make_process("equilibrium", dim=50, top_k=10, rng=0)
    >>> print(p.psi, round(p.relaxation_steps, 1))
    -1.0 100.0
    """
    if truth not in TRUTHS:
        raise ValueError(f"truth = {truth!r} is out of range: expected one of {TRUTHS}")
    if not 4 <= top_k <= dim:
        raise ValueError(f"top_k = {top_k} is out of range: expected [4, {dim}]")
    lo, hi = curvature_range
    if not 0 < lo < hi < 2.0 / learning_rate:
        raise ValueError(
            f"curvature_range = {curvature_range} is out of range: expected "
            f"0 < lo < hi < 2/η = {2.0 / learning_rate:g}"
        )
    if not gamma > 1.0:
        raise ValueError(f"gamma = {gamma} is out of range: expected > 1")
    gen = np.random.default_rng(rng)
    span = math.log(hi / lo)
    # the top_k largest-variance ("fitted") modes span the whole curvature range; the bulk
    # continues the relation below them (sharper bulk for "equilibrium", flatter for "ivfr")
    fitted = np.exp(gen.uniform(math.log(lo), math.log(hi), top_k))
    fitted[0], fitted[1] = lo, hi  # the range is attained
    bulk_lo, bulk_hi = {
        "none": (lo, hi),
        "equilibrium": (hi, hi * math.exp(span / 2)),
        "ivfr": (lo * math.exp(-span / 2), lo),
    }[truth]
    bulk = np.exp(gen.uniform(math.log(bulk_lo), math.log(bulk_hi), dim - top_k))
    if truth == "equilibrium" and bulk_hi >= 2.0 / learning_rate:
        raise ValueError("curvature_range: the bulk of the equilibrium process exceeds 2/η")
    k = np.concatenate([fitted, bulk])
    psi = {"none": 0.0, "equilibrium": -1.0, "ivfr": 1.0 / (gamma - 1.0)}[truth]
    var = {"none": np.ones(dim), "equilibrium": 1.0 / k, "ivfr": k ** (gamma - 1.0)}[truth]
    q, r = np.linalg.qr(gen.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))
    top = np.argsort(var, kind="stable")[::-1][:top_k]
    return BenchProcess(
        truth=truth,
        psi=psi,
        curvatures=k,
        variances=var,
        basis=q,
        learning_rate=learning_rate,
        top_k=top_k,
        relaxation_steps=float(1.0 / (learning_rate * k[top].min())),
    )


def simulate(
    process: BenchProcess, records: int, every: int, *, rng: np.random.Generator | int
) -> Array:
    """``records`` snapshots, ``every`` steps apart, from the stationary state: (records, d).

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.calibration import make_process, simulate
    >>> p = make_process("ivfr", dim=20, top_k=5, rng=0)
    >>> w = simulate(p, 20000, 5, rng=1)
    >>> est = np.diag(p.basis.T @ np.cov(w.T) @ p.basis)[:5]  # the 5 fitted (fast) modes
    >>> print(bool(np.allclose(est, p.variances[:5], rtol=0.1)))
    True
    """
    from scipy.signal import lfilter  # deferred: keeps `import sgdfluct` light

    gen = np.random.default_rng(rng)
    a = (1.0 - process.learning_rate * process.curvatures) ** every
    sd = np.sqrt(process.variances)
    x = np.empty((records, a.size))
    z = gen.standard_normal((records, a.size))
    for i in range(a.size):
        innov = z[:, i] * sd[i] * math.sqrt(1.0 - a[i] ** 2)
        innov[0] = z[0, i] * sd[i]  # stationary start
        x[:, i] = lfilter([1.0], [1.0, -a[i]], innov)
    return x @ process.basis.T


def _flatness(process: BenchProcess, directions: Array) -> Array:
    k = np.sum((directions @ process.hessian) * directions, axis=1)
    return 2.0 * np.sqrt(2.0 * (math.e - 1.0) * LOSS0 / k)


def _top_pca(window: Array, k: int) -> tuple[Array, Array]:
    dev = window - window.mean(axis=0)
    evals, evecs = np.linalg.eigh(dev.T @ dev / (window.shape[0] - 1))
    return evals[::-1][:k], evecs[:, ::-1][:, :k].T


def estimate(
    estimator: str, process: BenchProcess, window: Array, *, rng: np.random.Generator | int
) -> dict[str, Any]:
    """ψ, its 95 % interval and the estimator's note on one recorded window (records, d)."""
    k = process.top_k
    if estimator == "pca":
        var, dirs = _top_pca(window, k)
        fit = fit_ivfr(var, _flatness(process, dirs), bootstrap=200, rng=rng)
        return {"psi": fit.psi, "psi_ci": fit.psi_ci, "note": ""}
    if estimator == "split_eiv":
        half = window.shape[0] // 2
        fits = []
        for sel_part in (window[:half], window[: half // 2]):
            sel, dirs = _top_pca(sel_part, k)
            meas = out_of_sample_stable(series_variances(window[half:] @ dirs.T), sel)
            fits.append(fit_ivfr_calibrated(meas, _flatness(process, dirs)))
        cal = richardson_fit(*fits)
        return {"psi": cal.psi, "psi_ci": cal.psi_ci, "note": cal.note}
    elif estimator == "hessian_eiv":
        dirs = process.basis[:, np.argsort(process.curvatures)[::-1][:k]].T
        meas = series_variances(window @ dirs.T)
    else:
        raise ValueError(f"estimator = {estimator!r} is out of range: expected one of {ESTIMATORS}")
    cal = fit_ivfr_calibrated(meas, _flatness(process, dirs))
    return {"psi": cal.psi, "psi_ci": cal.psi_ci, "note": cal.note}


def calibration_table(
    *,
    truths: tuple[str, ...] = TRUTHS,
    windows: tuple[float, ...] = (10.0, 100.0, 1000.0),
    estimators: tuple[str, ...] = ESTIMATORS,
    repetitions: int = 20,
    dim: int = 272,
    top_k: int = 20,
    learning_rate: float = 0.2,
    records_per_relaxation: float = 10.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Bias, coverage and wrong-sign rate of each estimator per (truth, window) cell.

    Parameters
    ----------
    windows : window lengths in relaxation times of the slowest fitted direction
        (:attr:`BenchProcess.relaxation_steps`).
    records_per_relaxation : records per relaxation time (the thinning ``every``).
    repetitions : independent processes (new basis and curvatures) and trajectories per cell.

    Returns
    -------
    list of dict, one per (truth, window, estimator): ``psi_true``, ``bias`` (mean over the
    repetitions with a ψ), ``coverage`` (share of reported intervals containing the truth),
    ``wrong_sign`` (share of repetitions whose interval excludes 0 on the side opposite to the
    truth; for ``"none"``, any exclusion of 0), ``not_identified`` (share with ψ = None),
    ``mean_psi``, ``n``.
    """
    rows = []
    for truth in truths:
        for win in windows:
            acc: dict[str, list[dict[str, Any]]] = {e: [] for e in estimators}
            for rep in range(repetitions):
                ss = np.random.SeedSequence([seed, TRUTHS.index(truth), int(win), rep])
                g_proc, g_sim, g_est = (np.random.default_rng(s) for s in ss.spawn(3))
                proc = make_process(
                    truth, dim=dim, top_k=top_k, learning_rate=learning_rate, rng=g_proc
                )
                every = max(1, round(proc.relaxation_steps / records_per_relaxation))
                n_rec = max(16, round(win * proc.relaxation_steps / every))
                traj = simulate(proc, n_rec, every, rng=g_sim)
                for est in estimators:
                    acc[est].append(estimate(est, proc, traj, rng=g_est) | {"true": proc.psi})
            for est, res in acc.items():
                rows.append(_cell_row(truth, win, est, res))
    return rows


def linear_sgd_table(
    *,
    repetitions: int = 20,
    n_in: int = 10,
    n_out: int = 2,
    n_samples: int = 40,
    learning_rate: float = 0.05,
    batch_size: int = 4,
    windows: tuple[float, ...] = (10.0, 100.0, 1000.0),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The estimators on the exact linear SGD of ``sgdfluct run`` (one layer, teacher–student).

    The truth is the ψ of the exact discrete-time stationary covariance
    (:func:`sgdfluct.theory.stationary_covariance`, all directions, curvature ``pᵀ H p`` at the
    least-squares minimum where ``g = 0``); the trajectory comes from the engine
    (:func:`sgdfluct.simulate.simulate`, one replica, started at ``W*``, a burn-in of 20 relaxation
    times ``1/(η h_min)``, recorded 10 times per relaxation time). Each repetition draws new data.
    The single layer's covariance is nearly isotropic (claim 3), so its population ψ is fitted on
    a small spread of ``log σ``: the test is whether an estimator reads more than is there.

    Returns
    -------
    list of dict, as :func:`calibration_table` (``truth = "linear_sgd"``; ``psi_true`` is the
    mean over repetitions of the per-repetition truth, and coverage and bias use each
    repetition's own truth).
    """
    from sgdfluct.simulate import simulate as run_sgd
    from sgdfluct.theory.discrete import stationary_covariance
    from sgdfluct.theory.noise import least_squares_residuals

    rows = []
    for win in windows:
        acc: dict[str, list[dict[str, Any]]] = {e: [] for e in ("pca", "split_eiv")}
        for rep in range(repetitions):
            gen = np.random.default_rng(np.random.SeedSequence([seed, 99, int(win), rep]))
            x = gen.standard_normal((n_samples, n_in))
            y = x @ gen.standard_normal((n_in, n_out)) / math.sqrt(n_in)
            y = y + gen.standard_normal((n_samples, n_out))
            w_star = np.linalg.lstsq(x, y, rcond=None)[0].T  # (n_out, n_in)
            gram = x.T @ x / n_samples
            hess = np.kron(np.eye(n_out), gram)  # row-major W: θ = vec_rows(W)
            exact = stationary_covariance(
                x,
                least_squares_residuals(x, y),
                learning_rate=learning_rate,
                batch_size=batch_size,
                sampling="with_replacement",
            ).cov
            evals, evecs = np.linalg.eigh(exact)
            k_true = np.einsum("ai,ab,bi->i", evecs, hess, evecs)
            truth = fit_ivfr(evals, k_true**-0.5, bootstrap=1, rng=0).psi
            tau = 1.0 / (learning_rate * float(np.linalg.eigvalsh(gram)[0]))
            every = max(1, round(tau / 10))
            burn = round(20 * tau / every) * every
            steps = burn + round(win * tau / every) * every
            sim = run_sgd(
                x,
                y,
                [(n_out, n_in)],
                w_star.ravel(),
                learning_rate=learning_rate,
                batch_size=batch_size,
                steps=steps,
                burn_in=burn,
                record_every=every,
                trajectory_every=every,
                seed=int(gen.integers(2**31)),
            )
            keep = np.asarray(sim.trajectory_steps) > burn
            traj = np.asarray(sim.trajectory)[0][keep]
            proc = BenchProcess(
                truth="linear_sgd",
                psi=truth,
                curvatures=np.linalg.eigvalsh(hess),
                variances=evals,
                basis=np.linalg.eigh(hess)[1],
                learning_rate=learning_rate,
                top_k=n_in * n_out,
                relaxation_steps=tau,
            )
            for est in acc:
                acc[est].append(estimate(est, proc, traj, rng=gen) | {"true": truth})
        for est, res in acc.items():
            rows.append(_cell_row("linear_sgd", win, est, res))
    return rows


def _cell_row(truth: str, win: float, est: str, res: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row: each repetition against its own true ψ (bias, coverage of the reported
    intervals, wrong-sign exclusions: for a true ψ of 0, any interval excluding 0)."""
    got = [r for r in res if r["psi"] is not None]
    covered = [r["psi_ci"][0] <= r["true"] <= r["psi_ci"][1] for r in got]

    def wrong(r: dict[str, Any]) -> bool:
        if r["psi_ci"] is None:
            return False
        lo, hi = r["psi_ci"]
        if r["true"] == 0.0:
            return lo > 0 or hi < 0
        return (lo > 0 and r["true"] < 0) or (hi < 0 and r["true"] > 0)

    return {
        "truth": truth,
        "window_relaxations": win,
        "estimator": est,
        "psi_true": float(np.mean([r["true"] for r in res])),
        "n": len(res),
        "mean_psi": float(np.mean([r["psi"] for r in got])) if got else None,
        "bias": float(np.mean([r["psi"] - r["true"] for r in got])) if got else None,
        "coverage": float(np.mean(covered)) if got else None,
        "wrong_sign": float(np.mean([wrong(r) for r in res])),
        "not_identified": 1.0 - len(got) / len(res),
    }
