"""The batched small-matrix kernels against numpy.linalg (LAPACK)."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct._smallmat import JACOBI_MAX, eigvalsh_desc, procrustes_rotation


def _batch(k: int, n: int = 400, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((n, k, k))
    a[:20, :, -1] = 0.0  # rank k - 1
    a[20:30] = 0.0  # rank 0
    if k >= 2:
        a[30:40, :, 0] = a[30:40, :, 1] * (1.0 + 1e-9)  # nearly rank deficient
    a[40:50] *= 1e-150  # tiny scale
    a[50:60] = np.eye(k)  # already diagonal
    return a


@pytest.mark.parametrize("k", [1, 2, 3, 5, JACOBI_MAX, JACOBI_MAX + 1])
def test_procrustes_is_orthogonal_and_maximizes_the_trace(k):
    a = _batch(k)
    o = procrustes_rotation(a)
    eye = np.eye(k)
    np.testing.assert_allclose(o @ np.swapaxes(o, 1, 2), np.broadcast_to(eye, a.shape), atol=1e-13)
    u, s, vt = np.linalg.svd(a)
    ref = np.swapaxes(vt, 1, 2) @ np.swapaxes(u, 1, 2)
    # the maximum of tr(O a) over orthogonal O is the nuclear norm, whatever the rank
    tr = np.einsum("nij,nji->n", o, a)
    np.testing.assert_allclose(tr, s.sum(axis=1), rtol=1e-12, atol=1e-300)
    # unique for full rank: equal to the LAPACK answer
    full = s[:, -1] > 1e-6 * s[:, 0]
    np.testing.assert_allclose(o[full], ref[full], atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 5, JACOBI_MAX, JACOBI_MAX + 1])
def test_eigvalsh_desc_matches_lapack(k):
    a = _batch(k, seed=1)
    a[60:70] *= 1e-250  # tinier: the convergence sums of squares underflow unless scaled
    sym = a + np.swapaxes(a, 1, 2)
    got = eigvalsh_desc(sym.reshape(2, -1, k, k))
    ref = np.linalg.eigvalsh(sym)[..., ::-1]
    scale = np.abs(sym).max(axis=(1, 2)).reshape(2, -1, 1) + 1e-300
    assert got.shape == (2, sym.shape[0] // 2, k)
    assert np.all(np.abs(got - ref.reshape(got.shape)) <= 1e-13 * scale)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="square"):
        procrustes_rotation(np.zeros((3, 2, 3)))
    with pytest.raises(ValueError, match="square"):
        eigvalsh_desc(np.zeros(3))


@pytest.mark.parametrize("k", [2, 5, JACOBI_MAX + 1])
def test_procrustes_warm_start_gives_the_same_rotation(k):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, k, k))
    cold = procrustes_rotation(a)
    basis = np.broadcast_to(np.eye(k), a.shape).copy()
    procrustes_rotation(a + 0.05 * rng.standard_normal(a.shape), basis)  # a nearby problem
    warm = procrustes_rotation(a, basis)
    np.testing.assert_allclose(warm, cold, atol=1e-12)
    # the basis returned holds right singular vectors of a: a V has orthogonal columns
    av = a @ basis
    gram = np.swapaxes(av, 1, 2) @ av
    off = gram - np.einsum("nii->ni", gram)[:, :, None] * np.eye(k)
    assert np.abs(off).max() <= 1e-12 * np.abs(gram).max()
    with pytest.raises(ValueError, match="basis"):
        procrustes_rotation(a, basis[:10])


@pytest.mark.parametrize(
    ("r", "c", "o"), [(1, 3, 2), (3, 6, 4), (5, 20, 5), (JACOBI_MAX + 1, 4, 3)]
)
def test_gram_pair_eigenvalues_match_lapack(r, c, o):
    from sgdfluct._smallmat import gram_pair_eigenvalues

    rng = np.random.default_rng(2)
    n = 300
    flat = rng.standard_normal((n, 7 + r * c + o * r))
    flat[:10, 7 : 7 + r * c] = 0.0  # W_l = 0: imbalance = -gram
    flat[10:20] *= 1e-120  # tiny scale
    w_l = flat[:, 7 : 7 + r * c].reshape(n, r, c)
    w_n = flat[:, 7 + r * c :].reshape(n, o, r)
    a = w_l @ np.swapaxes(w_l, 1, 2)
    b = np.swapaxes(w_n, 1, 2) @ w_n
    imb, gram = gram_pair_eigenvalues(flat, (7, 7 + r * c), ((r, c), (o, r)))
    # rounding is relative to the products, not to their difference (cancellation)
    scale = (np.abs(a).max(axis=(1, 2)) + np.abs(b).max(axis=(1, 2)))[:, None] + 1e-300
    for got, mat in ((imb, a - b), (gram, a + b)):
        ref = np.linalg.eigvalsh(mat)[:, ::-1]
        assert np.all(np.abs(got - ref) <= 1e-13 * scale)


def test_imbalance_and_gram_eigenvalues_equal_the_separate_functions():
    from sgdfluct.analysis.alignment import hidden_gram_eigenvalues, imbalance_and_gram_eigenvalues
    from sgdfluct.theory.symmetry import imbalance_eigenvalues

    shapes = [(4, 6), (4, 4), (3, 4)]
    traj = np.random.default_rng(3).standard_normal((2, 50, 24 + 16 + 12))
    imb, gram = imbalance_and_gram_eigenvalues(traj, shapes)
    np.testing.assert_allclose(imb, imbalance_eigenvalues(traj, shapes), rtol=0, atol=1e-12)
    np.testing.assert_allclose(gram, hidden_gram_eigenvalues(traj, shapes), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="one hidden width"):
        imbalance_and_gram_eigenvalues(traj[..., :40], [(4, 6), (3, 4), (2, 3)])


@pytest.mark.parametrize("shapes", [[(4, 6), (3, 4)], [(5, 7), (5, 5), (2, 5)], [(3, 2)]])
def test_snapshot_losses_equal_the_loss_of_every_snapshot(shapes):
    from sgdfluct import networks as nw
    from sgdfluct.analysis.saturation import snapshot_losses

    rng = np.random.default_rng(4)
    d = sum(r * c for r, c in shapes)
    x = rng.standard_normal((30, shapes[0][1]))
    y = rng.standard_normal((30, shapes[-1][0]))
    traj = rng.standard_normal((2, 7, d))
    got = snapshot_losses(traj, shapes, x, y)
    ref = np.array([[nw.loss(theta, shapes, x, y) for theta in rep] for rep in traj])
    np.testing.assert_allclose(got, ref, rtol=1e-12)
