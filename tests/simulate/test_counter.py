"""Counter-based with-replacement indices: numba = NumPy, chunk invariance, uniformity."""

from __future__ import annotations

import numpy as np
from scipy import stats

from sgdfluct.simulate import batch_indices
from sgdfluct.simulate._counter import counter_indices, replica_keys
from sgdfluct.simulate._sampling import replica_seeds

# chi-square goodness of fit of the index counts: reject uniformity only at p < 1e-6
P_FLOOR = 1e-6


def test_numba_and_numpy_agree_and_chunks_compose():
    keys = replica_keys(replica_seeds(7, 5))
    full = counter_indices(keys, 0, 300, 6, 37, use_numba=False)
    np.testing.assert_array_equal(counter_indices(keys, 0, 300, 6, 37, use_numba=True), full)
    parts = [counter_indices(keys, a, b - a, 6, 37) for a, b in [(0, 13), (13, 200), (200, 300)]]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), full)
    np.testing.assert_array_equal(batch_indices(37, 6, 300, replicas=5, seed=7), full)
    np.testing.assert_array_equal(
        batch_indices(37, 6, 100, replicas=5, seed=7, start=200), full[:, 200:]
    )


def test_uniform_and_replicas_differ():
    keys = replica_keys(replica_seeds(3, 4))
    idx = counter_indices(keys, 0, 50_000, 4, 23)
    assert idx.min() == 0 and idx.max() == 22
    for r in range(4):
        counts = np.bincount(idx[r].ravel(), minlength=23)
        assert stats.chisquare(counts).pvalue > P_FLOOR
    # successive indices of one replica are not correlated (lag-1 pairs uniform over 23^2 cells)
    pairs = idx[0, :, 0] * 23 + idx[0, :, 1]
    assert stats.chisquare(np.bincount(pairs, minlength=23 * 23)).pvalue > P_FLOOR
    assert not np.array_equal(idx[0], idx[1])
