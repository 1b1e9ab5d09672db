"""The numba step kernels and counter-index fill (imported only when the numba engine first runs).

See :mod:`sgdfluct.simulate._kernels` for the contract (same arguments as ``numpy_chunk``).
Importing this module imports numba (about 0.5-1 s); ``import sgdfluct.simulate`` does not.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

__all__ = ["numba_chunk", "numba_fill"]

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]


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


@njit(cache=True, parallel=True)
def _numba_chunk_gemm(
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
    # wide layers: per replica and step, the batch as small matrix products (BLAS dgemm through
    # np.dot into preallocated buffers, single-threaded by the caller) instead of per-sample loops
    n_rep, n_steps, batch = idx.shape
    depth = rows.shape[0]
    n_in = inputs.shape[1]
    n_out = targets.shape[1]
    scale = learning_rate / batch
    n_snap = snap_at.shape[0]
    # activations a_0 (batch x n_in), a_l (batch x rows[l-1]) in one flat buffer
    aoff = np.zeros(depth + 2, dtype=np.int64)
    aoff[1] = batch * n_in
    max_rows = 0
    max_w = 0
    for l in range(depth):
        aoff[l + 2] = aoff[l + 1] + batch * rows[l]
        max_rows = max(max_rows, rows[l], cols[l])
        max_w = max(max_w, rows[l] * cols[l])
    for r in prange(n_rep):
        w = theta[r]
        abuf = np.empty(aoff[depth + 1])
        dbuf = np.empty((2, batch * max_rows))
        gbuf = np.empty(max_w)
        si = 0
        while si < n_snap and snap_at[si] == 0:
            out[r, si, :] = w
            si += 1
        for j in range(n_steps):
            for s in range(batch):
                mu = idx[r, j, s]
                for c in range(n_in):
                    abuf[s * n_in + c] = inputs[mu, c]
            for l in range(depth):
                a_in = abuf[aoff[l] : aoff[l + 1]].reshape((batch, cols[l]))
                a_out = abuf[aoff[l + 1] : aoff[l + 2]].reshape((batch, rows[l]))
                wl = w[off[l] : off[l] + rows[l] * cols[l]].reshape((rows[l], cols[l]))
                np.dot(a_in, wl.T, a_out)
            cur = 0
            d_flat = dbuf[cur, : batch * n_out]
            last = aoff[depth]
            for s in range(batch):
                mu = idx[r, j, s]
                for c in range(n_out):
                    d_flat[s * n_out + c] = abuf[last + s * n_out + c] - targets[mu, c]
            for l in range(depth - 1, -1, -1):
                delta = dbuf[cur, : batch * rows[l]].reshape((batch, rows[l]))
                a_in = abuf[aoff[l] : aoff[l + 1]].reshape((batch, cols[l]))
                wl = w[off[l] : off[l] + rows[l] * cols[l]].reshape((rows[l], cols[l]))
                g = gbuf[: rows[l] * cols[l]].reshape((rows[l], cols[l]))
                np.dot(delta.T, a_in, g)
                if l > 0:  # delta_{l-1} = delta_l W_l, before W_l is updated
                    nxt = dbuf[1 - cur, : batch * cols[l]].reshape((batch, cols[l]))
                    np.dot(delta, wl, nxt)
                    cur = 1 - cur
                n_w = rows[l] * cols[l]
                o = off[l]
                for i in range(n_w):
                    w[o + i] -= scale * gbuf[i]
            while si < n_snap and snap_at[si] == j + 1:
                out[r, si, :] = w
                si += 1


#: depth >= 2 nets with a layer of at least this many weights use the BLAS kernel (measured in
#: benchmarks/README.md: 50x50 hidden layer 1.4-1.6x, 200x200 2x the per-sample loops)
GEMM_LAYER_SIZE = 2000


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
    elif int(np.max(rows * cols)) >= GEMM_LAYER_SIZE:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):  # the replicas are the parallelism
            _numba_chunk_gemm(theta, inputs, targets, idx, learning_rate, rows, cols, off,
                              snap_at, out)  # fmt: skip
    else:
        _numba_chunk(theta, inputs, targets, idx, learning_rate, rows, cols, off, snap_at, out)


# serial on purpose: it costs ~1 ms per 65k replica-steps, and launching numba's thread pool
# from here (before the step kernels) clashed with the thread caps of sweep workers
@njit(cache=True)
def numba_fill(keys, start, n, batch_size, n_samples, out):
    golden = np.uint64(0x9E3779B97F4A7C15)
    mix1 = np.uint64(0xBF58476D1CE4E5B9)
    mix2 = np.uint64(0x94D049BB133111EB)
    s30, s27, s31, s32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
    p = np.uint64(n_samples)
    base = np.uint64(start) * np.uint64(batch_size)
    for r in range(keys.shape[0]):
        k = keys[r]
        for t in range(n):
            for j in range(batch_size):
                c = base + np.uint64(t * batch_size + j)
                z = k + c * golden
                z = (z ^ (z >> s30)) * mix1
                z = (z ^ (z >> s27)) * mix2
                z = z ^ (z >> s31)
                out[r, t, j] = np.int64(((z >> s32) * p) >> s32)
