"""SGD step kernels: a fused numba loop and a vectorized NumPy reference.

Both advance ``R`` replicas of a depth-L linear network by ``n`` SGD steps in place,

    theta_{k+1} = theta_k - (eta / S) sum_{mu in B_k} grad l_mu(theta_k),

and copy ``theta`` into ``out[:, i]`` after ``snap_at[i]`` steps of the chunk (``snap_at`` sorted,
values in ``[0, n]``). Layer ``l`` occupies ``theta[off[l] : off[l] + rows[l] * cols[l]]``
(row-major ``vec(W_l)``).
"""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import NDArray

__all__ = ["HAVE_NUMBA", "numba_chunk", "numpy_chunk"]

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]

try:  # numba is a core dependency, but keep a working fallback if its import fails
    from numba import njit, prange

    HAVE_NUMBA = os.environ.get("SGDFLUCT_DISABLE_NUMBA", "") == ""
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False


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


if HAVE_NUMBA:

    @njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz"})
    def _numba_chunk(
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
    ) -> None:  # pragma: no cover - compiled
        n_rep, n_steps, batch = idx.shape
        depth = rows.shape[0]
        n_in = cols[0]
        n_out = rows[depth - 1]
        # activation offsets: a_0 (n_in) then a_l (rows[l-1]); per sample
        aoff = np.zeros(depth + 1, dtype=np.int64)
        aoff[1] = n_in
        for l in range(1, depth):
            aoff[l + 1] = aoff[l] + rows[l - 1]
        n_act = aoff[depth]  # a_0 .. a_{L-1} (inputs of each layer)
        doff = np.zeros(depth + 1, dtype=np.int64)
        for l in range(depth):
            doff[l + 1] = doff[l] + rows[l]
        n_del = doff[depth]
        max_rows = 0
        for l in range(depth):
            max_rows = max(max_rows, rows[l])
        n_snap = snap_at.shape[0]
        scale = -learning_rate / batch
        for r in prange(n_rep):
            w = theta[r]
            acts = np.empty((batch, n_act))
            deltas = np.empty((batch, n_del))
            tmp = np.empty(max_rows)
            si = 0
            while si < n_snap and snap_at[si] == 0:
                out[r, si, :] = w
                si += 1
            for j in range(n_steps):
                # phase 1: forward and backward pass of every sample at the old weights
                for s in range(batch):
                    mu = idx[r, j, s]
                    a = acts[s]
                    for l in range(depth):
                        nr = rows[l]
                        nc = cols[l]
                        o = off[l]
                        ai = aoff[l]
                        if l == 0:
                            ain = inputs[mu]
                        else:
                            ain = a[ai : ai + nc]
                        for i in range(nr):
                            wrow = w[o + i * nc : o + (i + 1) * nc]
                            acc = 0.0
                            for k in range(nc):
                                acc += wrow[k] * ain[k]
                            if l + 1 < depth:
                                a[aoff[l + 1] + i] = acc
                            else:
                                tmp[i] = acc
                    dl = deltas[s]
                    last = doff[depth - 1]
                    for i in range(n_out):
                        dl[last + i] = tmp[i] - targets[mu, i]
                    for l in range(depth - 1, 0, -1):
                        # delta_{l-1} = W_l^T delta_l
                        nr = rows[l]
                        nc = cols[l]
                        o = off[l]
                        dprev = doff[l - 1]
                        dcur = doff[l]
                        dout = dl[dprev : dprev + nc]
                        for k in range(nc):
                            dout[k] = 0.0
                        for i in range(nr):
                            c = dl[dcur + i]
                            wrow = w[o + i * nc : o + (i + 1) * nc]
                            for k in range(nc):
                                dout[k] += c * wrow[k]
                # phase 2: W_l -= (eta/S) sum_s delta_{l,s} a_{l-1,s}^T
                for l in range(depth):
                    nr = rows[l]
                    nc = cols[l]
                    o = off[l]
                    ai = aoff[l]
                    dcur = doff[l]
                    for s in range(batch):
                        if l == 0:
                            ain = inputs[idx[r, j, s]]
                        else:
                            ain = acts[s, ai : ai + nc]
                        dl = deltas[s]
                        for i in range(nr):
                            c = scale * dl[dcur + i]
                            wrow = w[o + i * nc : o + (i + 1) * nc]
                            for k in range(nc):
                                wrow[k] += c * ain[k]
                while si < n_snap and snap_at[si] == j + 1:
                    out[r, si, :] = w
                    si += 1

    @njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz"})
    def _numba_chunk_single(
        theta: Array,
        inputs: Array,
        targets: Array,
        idx: IntArray,
        learning_rate: float,
        snap_at: IntArray,
        out: Array,
    ) -> None:  # pragma: no cover - compiled
        # depth 1: theta = vec(W) with W (N_o, N_i); residual first, then a rank-S update
        n_rep, n_steps, batch = idx.shape
        n_in = inputs.shape[1]
        n_out = targets.shape[1]
        n_snap = snap_at.shape[0]
        scale = -learning_rate / batch
        for r in prange(n_rep):
            w = theta[r]
            res = np.empty((batch, n_out))
            si = 0
            while si < n_snap and snap_at[si] == 0:
                out[r, si, :] = w
                si += 1
            for j in range(n_steps):
                for s in range(batch):
                    mu = idx[r, j, s]
                    x = inputs[mu]
                    for o in range(n_out):
                        wrow = w[o * n_in : (o + 1) * n_in]
                        acc = 0.0
                        for k in range(n_in):
                            acc += wrow[k] * x[k]
                        res[s, o] = scale * (acc - targets[mu, o])
                for s in range(batch):
                    x = inputs[idx[r, j, s]]
                    for o in range(n_out):
                        c = res[s, o]
                        wrow = w[o * n_in : (o + 1) * n_in]
                        for k in range(n_in):
                            wrow[k] += c * x[k]
                while si < n_snap and snap_at[si] == j + 1:
                    out[r, si, :] = w
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
        """Fused numba engine: replicas in parallel (prange), per-sample loops in L1/L2 cache."""
        if rows.shape[0] == 1:
            _numba_chunk_single(theta, inputs, targets, idx, learning_rate, snap_at, out)
        else:
            _numba_chunk(theta, inputs, targets, idx, learning_rate, rows, cols, off, snap_at, out)

else:  # pragma: no cover
    numba_chunk = None  # type: ignore[assignment]
