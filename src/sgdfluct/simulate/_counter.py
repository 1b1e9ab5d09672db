"""Counter-based uniform indices for ``with_replacement`` sampling.

Index ``j`` of step ``t`` of a replica with key ``k`` is a pure function of ``(k, t, j)``:

    z = splitmix64(k + (t S + j) * 0x9E3779B97F4A7C15),   index = ((z >> 32) * P) >> 32

(the SplitMix64 finalizer of Steele, Lea & Flood 2014; the multiply-shift map to ``[0, P)`` of
Lemire 2019, whose bias is below ``P / 2^32``, i.e. < 1e-6 for ``P < 4000``). Being a function of
the counter, the stream is independent of how a run is chunked and can be generated for all
replicas in parallel inside numba, instead of one NumPy generator call per replica and block.
"""

from __future__ import annotations

import sys

import numpy as np
from numpy.typing import NDArray

from sgdfluct.simulate._kernels import HAVE_NUMBA

__all__ = ["counter_indices", "replica_keys"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def replica_keys(seeds: list[np.random.SeedSequence]) -> NDArray[np.uint64]:
    """One 64-bit key per replica, drawn from its ``SeedSequence``."""
    return np.array([sd.generate_state(1, dtype=np.uint64)[0] for sd in seeds], dtype=np.uint64)


def _numpy_indices(
    keys: NDArray[np.uint64], start: int, n: int, batch_size: int, n_samples: int
) -> NDArray[np.int64]:
    counter = (np.uint64(start) * np.uint64(batch_size)) + np.arange(
        n * batch_size, dtype=np.uint64
    )
    z = keys[:, None] + counter[None, :] * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    idx = ((z >> np.uint64(32)) * np.uint64(n_samples)) >> np.uint64(32)
    return idx.astype(np.int64).reshape(keys.shape[0], n, batch_size)


def counter_indices(
    keys: NDArray[np.uint64],
    start: int,
    n: int,
    batch_size: int,
    n_samples: int,
    *,
    use_numba: bool | None = None,
) -> NDArray[np.int64]:
    """Indices of steps ``start .. start + n - 1`` for every replica key; int64 (R, n, S).

    ``use_numba=None`` uses the (identical, faster) numba fill only when numba is already loaded,
    so that index generation alone never imports numba.
    """
    if use_numba is None:
        use_numba = HAVE_NUMBA and "sgdfluct.simulate._numba_kernels" in sys.modules
    if not use_numba:
        return _numpy_indices(keys, start, n, batch_size, n_samples)
    from sgdfluct.simulate._numba_kernels import numba_fill

    out = np.empty((keys.shape[0], n, batch_size), dtype=np.int64)
    numba_fill(keys, start, n, batch_size, n_samples, out)
    return out
