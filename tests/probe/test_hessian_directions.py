"""The probe's Hessian directions on a degenerate spectrum (docs/theory.md §11, issue 17).

An MSE output layer with N_o outputs repeats every eigenvalue of its activation Gram matrix N_o
times. Single-vector Lanczos (ARPACK) returned one Ritz value several times and missed half of the
top-k eigenspace; the block Krylov method must find it whole.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sgdfluct._eigs import top_eigenpairs  # noqa: E402
from sgdfluct.probe import FluctuationProbe  # noqa: E402

#: subspace overlap ||U_trueᵀ U||_F² / k required by the issue
MIN_OVERLAP = 0.99


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def _probe(seed: int = 0) -> tuple[FluctuationProbe, torch.nn.Module]:
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10)
    ).to(torch.float64)
    x = torch.randn(200, 12, generator=gen, dtype=torch.float64)
    y = torch.randn(200, 10, generator=gen, dtype=torch.float64)
    probe = FluctuationProbe(
        model, _mse, (x, y), learning_rate=0.05, batch_size=10, window=400, every=1, top_k=20
    )
    return probe, model


def test_output_layer_top_k_subspace_matches_dense() -> None:
    """Output layer 16 -> 10 (d = 170, every eigenvalue 10-fold): top-20 eigenvalues equal the dense
    ones to 1e-8 relative and the subspace overlap is >= 0.99."""
    probe, model = _probe()
    params = {n: p.detach() for n, p in model.named_parameters()}
    lay = probe._layer(2)
    dirs = probe._lanczos_layer(params, lay, 20)
    hmat = probe.projected_hessian(2, np.eye(lay.dim))
    evals, evecs = np.linalg.eigh(0.5 * (hmat + hmat.T))
    evals, evecs = evals[::-1], evecs[:, ::-1]
    # the spectrum really is degenerate: the top eigenvalue has multiplicity N_o = 10
    assert np.allclose(evals[:10], evals[0], rtol=1e-10)
    got = np.sort(np.diag(dirs @ hmat @ dirs.T))[::-1]
    np.testing.assert_allclose(got, evals[:20], rtol=1e-8)
    # a gap after the 20th eigenvalue (two full multiplets) makes the subspace well defined
    assert evals[19] - evals[20] > 1e-3 * evals[0]
    overlap = np.linalg.norm(evecs[:, :20].T @ dirs.T) ** 2 / 20
    assert overlap >= MIN_OVERLAP
    np.testing.assert_allclose(dirs @ dirs.T, np.eye(20), atol=1e-10)


def test_block_krylov_beats_single_vector_lanczos_on_multiplicity() -> None:
    """A 10-fold spectrum (d = 500): the block method recovers the top-20 subspace; ARPACK's eigsh
    (the previous implementation) does not — the regression this test guards against."""
    import scipy.sparse.linalg as spla

    rng = np.random.default_rng(0)
    d = 500
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.repeat(np.sort(rng.gamma(1.0, 1.0, 50))[::-1], 10)
    a = (q * lam) @ q.T
    _, vecs = top_eigenpairs(lambda v: a @ v, d, 20, rng=1)
    assert np.linalg.norm(q[:, :20].T @ vecs) ** 2 / 20 >= MIN_OVERLAP
    op = spla.LinearOperator((d, d), matvec=lambda v: a @ v, dtype=float)
    _, old = spla.eigsh(op, k=20, which="LA", tol=1e-6, v0=np.ones(d))
    assert np.linalg.norm(q[:, :20].T @ old) ** 2 / 20 < MIN_OVERLAP
