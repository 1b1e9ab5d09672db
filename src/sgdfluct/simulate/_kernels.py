"""SGD step kernels: a fused numba loop and a vectorized NumPy reference.

Both advance ``R`` replicas of a depth-L linear network by ``n`` SGD steps in place,

    theta_{k+1} = theta_k - (eta / S) sum_{mu in B_k} grad l_mu(theta_k),

and copy ``theta`` into ``out[:, i]`` after ``snap_at[i]`` steps of the chunk (``snap_at`` sorted,
values in ``[0, n]``). Layer ``l`` occupies ``theta[off[l] : off[l] + rows[l] * cols[l]]``
(row-major ``vec(W_l)``).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from numpy.typing import NDArray

__all__ = ["HAVE_NUMBA", "numba_chunk", "numpy_chunk"]

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: numba is installed and not disabled; checked without importing it (numba loads, from
#: :mod:`._numba_kernels`, only when the numba engine first runs)
HAVE_NUMBA = (
    importlib.util.find_spec("numba") is not None
    and os.environ.get("SGDFLUCT_DISABLE_NUMBA", "") == ""
)


def numpy_chunk(
    theta: Array,
    inputs: Array,
    targets: Array,
    idx: IntArray,
    learning_rate: float,
    rows: IntArray,
    cols: IntArray,
    off: IntArray,
    snap_at: IntArray,
    out: Array,
) -> None:
    """Vectorized NumPy engine (reference and fallback): one Python iteration per step."""
    n_rep, n_steps, batch = idx.shape
    depth = rows.shape[0]
    scale = learning_rate / batch
    views = [
        theta[:, off[l] : off[l] + rows[l] * cols[l]].reshape(n_rep, rows[l], cols[l])
        for l in range(depth)
    ]
    si = 0
    n_snap = snap_at.shape[0]
    while si < n_snap and snap_at[si] == 0:
        out[:, si] = theta
        si += 1
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(n_steps):
            b = idx[:, j]  # (R, S)
            acts = [inputs[b]]  # (R, S, N_i)
            for w in views:
                acts.append(np.matmul(acts[-1], w.transpose(0, 2, 1)))
            delta = acts[-1] - targets[b]  # (R, S, N_o)
            grads = [np.empty(0)] * depth
            for l in range(depth - 1, -1, -1):
                grads[l] = np.matmul(delta.transpose(0, 2, 1), acts[l])  # (R, rows, cols)
                if l:
                    delta = np.matmul(delta, views[l])
            for l in range(depth):
                views[l] -= scale * grads[l]
            while si < n_snap and snap_at[si] == j + 1:
                out[:, si] = theta
                si += 1


def numba_chunk(
    theta: Array,
    inputs: Array,
    targets: Array,
    idx: IntArray,
    learning_rate: float,
    rows: IntArray,
    cols: IntArray,
    off: IntArray,
    snap_at: IntArray,
    out: Array,
) -> None:
    """Fused numba engine (replicas in parallel); imports numba on its first call."""
    if not HAVE_NUMBA:  # pragma: no cover - exercised only without numba
        raise RuntimeError("numba is not importable (or SGDFLUCT_DISABLE_NUMBA is set)")
    from sgdfluct.simulate._numba_kernels import numba_chunk as kernel

    kernel(theta, inputs, targets, idx, learning_rate, rows, cols, off, snap_at, out)
