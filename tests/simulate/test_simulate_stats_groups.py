"""Batch means over (replica group, batch) when the per-replica accumulators would be too big."""

from __future__ import annotations

import numpy as np

from sgdfluct.simulate._stats import StreamingMoments


def test_grouped_batch_means(rng: np.random.Generator) -> None:
    n_rep, n_rec, n_batches, d = 6, 90, 3, 3
    v = rng.standard_normal((n_rep, n_rec + 1, d)).cumsum(axis=1) * 0.1 + 2.0
    acc = StreamingMoments(v[:, 0].mean(0), n_rep, n_rec, n_batches, max_bytes=2 * 2 * 8 * d * d)
    assert acc.n_rep == 2  # two replica groups
    for lo in range(0, n_rec, 17):  # arbitrary feeding pieces
        hi = min(n_rec, lo + 17)
        acc.add(v[:, lo:hi], v[:, lo + 1 : hi + 1])
    res = acc.result()
    u = v[:, :n_rec].reshape(-1, d)
    np.testing.assert_allclose(res.cov, np.cov(u.T, bias=True), atol=1e-13)
    groups = [v[:3, :n_rec], v[3:, :n_rec]]
    z = []
    for g in groups:
        for b in range(n_batches):
            blk = (g[:, b * 30 : (b + 1) * 30] - res.mean).reshape(-1, d)
            z.append(blk.T @ blk / blk.shape[0])
    se = np.array(z).std(axis=0, ddof=1) / np.sqrt(len(z))
    np.testing.assert_allclose(res.cov_stderr, se, rtol=1e-8)
