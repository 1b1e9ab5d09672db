"""Streaming stationary statistics with batch-means standard errors.

Records ``v_k = theta_k - ref`` (about a fixed reference close to the stationary mean, for numerical
stability) and the next-step deviations ``v'_k = theta_{k+1} - ref`` are fed in order. The records
of each replica are cut into ``n_batches`` contiguous batches; per (replica, batch) the accumulator
keeps the batch sums of ``v v^T``, ``v v'^T``, ``v`` and ``v'`` and, at the end of every batch,
folds the squared linearized pseudo-values into global sums. Memory: ``O(G d^2)`` with G = R
replica groups (fewer when ``2 R d^2`` floats would exceed ``GROUP_BYTES``; then the batch
means run over (replica group, batch)), flat in the number of steps. Records are buffered and
flushed in fixed groups (``FLUSH_RECORDS`` or a batch end), so the floating-point summation order
is independent of how the caller chunks the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: Records buffered per replica before a GEMM flush (fixed: bitwise chunk invariance).
FLUSH_RECORDS = 256
#: Memory budget of the per-(replica group) batch accumulators (two (d, d) float64 arrays each).
GROUP_BYTES = 256 * 2**20
#: Memory budget of the record buffer (R x records x d, twice).
BUFFER_BYTES = 64 * 2**20


def _gemm_acc(c: Array, a: Array, b: Array) -> None:
    """``c += a.T @ b`` in place (BLAS updates the Fortran view ``c.T += b.T @ a``)."""
    from scipy.linalg.blas import dgemm

    out = dgemm(1.0, b, a, beta=1.0, c=c.T, trans_a=True, overwrite_c=True)
    if not np.shares_memory(out, c):  # pragma: no cover - BLAS wrappers that copy
        c[...] = out.T


def _mirror_upper(a: Array) -> Array:
    """Copy the upper triangle of the Fortran-ordered square ``a`` onto its lower one, in place."""
    from sgdfluct._smallmat import symmetrize_from_lower

    symmetrize_from_lower(a.T)  # the transpose is C-contiguous; its lower triangle is a's upper
    return a


def batch_bounds(n_records: int, n_batches: int) -> NDArray[np.int64]:
    """Record boundaries of ``n_batches`` contiguous batches (sizes differ by at most one)."""
    return np.array([(b * n_records) // n_batches for b in range(n_batches + 1)], dtype=np.int64)


@dataclass(frozen=True)
class Moments:
    mean: Array
    mean_stderr: Array
    cov: Array
    cov_stderr: Array
    lag1: Array
    lag1_stderr: Array
    lag1_antisym_stderr: Array
    replica_means: Array


class StreamingMoments:
    """Accumulate mean, covariance and lag-1 covariance of R replicas; see module docstring."""

    kind = "streaming"

    def __init__(
        self,
        ref: Array,
        n_replicas: int,
        n_records: int,
        n_batches: int,
        max_bytes: int = GROUP_BYTES,
    ) -> None:
        d = ref.shape[0]
        self.ref = ref.copy()
        self.d = d
        self.n_replicas = n_replicas
        # replica groups: one (d, d) batch accumulator pair per group; groups = replicas unless
        # that would exceed max_bytes (then batch means run over (replica group, batch))
        self.n_rep = int(max(1, min(n_replicas, max_bytes // (2 * 8 * d * d))))
        if self.n_rep * n_batches < 2:
            self.n_rep = min(n_replicas, 2)
        self.group = (np.arange(n_replicas) * self.n_rep) // n_replicas
        self.group_bounds = np.searchsorted(self.group, np.arange(self.n_rep + 1))
        self.bounds = batch_bounds(n_records, n_batches)
        self.n_records = n_records
        self.n_batches = n_batches
        self.batch = 0  # current batch
        self.count = 0  # records seen per replica
        cap = int(min(FLUSH_RECORDS, n_records, max(1, BUFFER_BYTES // (2 * 8 * n_replicas * d))))
        self.buf_v = np.empty((n_replicas, cap, d))
        self.buf_w = np.empty((n_replicas, cap, d))
        self.nbuf = 0
        # per-group sums of the current batch
        g = self.n_rep
        self.bA = np.zeros((g, d, d))
        self.bB = np.zeros((g, d, d))
        self.ba = np.zeros((g, d))
        self.bw = np.zeros((g, d))
        # per-replica totals
        self.tot_a = np.zeros((n_replicas, d))
        self.tot_w = np.zeros((n_replicas, d))
        self.tot_A = np.zeros((d, d))
        self.tot_B = np.zeros((d, d))
        # sums over (replica, batch) of the batch means and of products needed for pseudo-values
        self.sA = np.zeros((d, d))
        self.sB = np.zeros((d, d))
        self.sa = np.zeros(d)
        self.sw = np.zeros(d)
        self.sA2 = np.zeros((d, d))
        self.sB2 = np.zeros((d, d))
        self.sa2 = np.zeros(d)
        self.sw2 = np.zeros(d)
        self.sAa = np.zeros((d, d))  # sum A_ij a_i
        self.sBa = np.zeros((d, d))  # sum B_ij a_i
        self.sBw = np.zeros((d, d))  # sum B_ij w_j
        self.sBBt = np.zeros((d, d))  # sum B_ij B_ji (for the antisymmetric part of lag1)
        self.saa = np.zeros((d, d))  # sum a a^T
        self.saw = np.zeros((d, d))  # sum a w^T

    def _flush(self) -> None:
        n = self.nbuf
        if n == 0:
            return
        v = self.buf_v[:, :n]
        w = self.buf_w[:, :n]
        sv = v.sum(axis=1)
        sw = w.sum(axis=1)
        self.tot_a += sv
        self.tot_w += sw
        for g in range(self.n_rep):
            lo, hi = self.group_bounds[g], self.group_bounds[g + 1]
            vg = v[lo:hi].reshape(-1, self.d)
            wg = w[lo:hi].reshape(-1, self.d)
            _gemm_acc(self.bA[g], vg, vg)
            _gemm_acc(self.bB[g], vg, wg)
            self.ba[g] += sv[lo:hi].sum(axis=0)
            self.bw[g] += sw[lo:hi].sum(axis=0)
        self.nbuf = 0

    def _end_batch(self) -> None:
        sizes = np.diff(self.group_bounds).astype(float)
        nb = (self.bounds[self.batch + 1] - self.bounds[self.batch]) * sizes
        a = self.ba / nb[:, None]
        w = self.bw / nb[:, None]
        self.sa += a.sum(axis=0)
        self.sw += w.sum(axis=0)
        self.sa2 += np.einsum("ri,ri->i", a, a)
        self.sw2 += np.einsum("ri,ri->i", w, w)
        self.saa += a.T @ a
        self.saw += a.T @ w
        # one group at a time, in place (no (G, d, d) temporaries): ~20 passes over d x d per
        # group and batch, against 2 (records in the batch) d^2 flops per group for its GEMMs
        tmp = np.empty((self.d, self.d))
        for g in range(self.n_rep):
            big_a, big_b = self.bA[g], self.bB[g]
            self.tot_A += big_a
            self.tot_B += big_b
            big_a *= 1.0 / nb[g]
            big_b *= 1.0 / nb[g]
            self.sA += big_a
            self.sB += big_b
            np.multiply(big_a, big_a, out=tmp)
            self.sA2 += tmp
            np.multiply(big_b, big_b, out=tmp)
            self.sB2 += tmp
            np.multiply(big_b, big_b.T, out=tmp)
            self.sBBt += tmp
            np.multiply(big_a, a[g][:, None], out=tmp)
            self.sAa += tmp
            np.multiply(big_b, a[g][:, None], out=tmp)
            self.sBa += tmp
            np.multiply(big_b, w[g][None, :], out=tmp)
            self.sBw += tmp
        self.bA[:] = 0.0
        self.bB[:] = 0.0
        self.ba[:] = 0.0
        self.bw[:] = 0.0
        self.batch += 1

    def add(self, theta_k: Array, theta_next: Array) -> None:
        """Add records: ``theta_k`` and ``theta_{k+1}`` of shape (R, n, d), consecutive records."""
        n = theta_k.shape[1]
        i = 0
        cap = self.buf_v.shape[1]
        while i < n:
            end_batch = int(self.bounds[self.batch + 1])
            k = min(n - i, cap - self.nbuf, end_batch - self.count)
            self.buf_v[:, self.nbuf : self.nbuf + k] = theta_k[:, i : i + k] - self.ref
            self.buf_w[:, self.nbuf : self.nbuf + k] = theta_next[:, i : i + k] - self.ref
            self.nbuf += k
            self.count += k
            i += k
            if self.nbuf == cap or self.count == end_batch:
                self._flush()
            if self.count == end_batch:
                self._end_batch()

    def result(self) -> Moments:
        """Estimates and batch-means standard errors (linearized pseudo-values, see Notes).

        Notes
        -----
        With ``K = G * n_batches`` batches (G replica groups, G = R unless memory-capped), batch
        means ``A_b = <v v^T>_b``, ``B_b = <v v'^T>_b``,
        ``a_b = <v>_b``, ``w_b = <v'>_b`` and pooled ``m = mean a_b``, ``m' = mean w_b``:
        ``cov = mean A_b - m m^T``, ``lag1 = mean B_b - m m'^T``; the pseudo-values
        ``z_b = A_b - a_b m^T - m a_b^T`` (``B_b - a_b m'^T - m w_b^T``) linearize them, and
        ``stderr^2 = var(z_b) / K`` with the unbiased variance over the K batches.
        """
        if self.count != self.n_records:
            raise RuntimeError(f"received {self.count} of {self.n_records} records")
        k = float(self.n_rep * self.n_batches)
        n_tot = float(self.n_replicas * self.n_records)
        # exact pooled estimates (all records weighted equally)
        m = self.tot_a.sum(axis=0) / n_tot
        mw = self.tot_w.sum(axis=0) / n_tot
        cov = self.tot_A / n_tot - np.outer(m, m)
        cov = 0.5 * (cov + cov.T)
        lag1 = self.tot_B / n_tot - np.outer(m, mw)
        # standard errors from the spread of the K batch means (sizes differ by at most one)
        mean_a = self.sA / k
        mean_b = self.sB / k
        # sum of squared pseudo-values for the covariance
        s_z2 = (
            self.sA2
            + np.outer(self.sa2, m * m)
            + np.outer(m * m, self.sa2)
            - 2.0 * self.sAa * m[None, :]
            - 2.0 * (self.sAa.T) * m[:, None]
            + 2.0 * self.saa * np.outer(m, m)
        )
        ma = self.sa / k  # mean of the batch means (= m for equal batch sizes)
        mwa = self.sw / k
        z_mean = mean_a - np.outer(ma, m) - np.outer(m, ma)
        var_z = (s_z2 - k * z_mean**2) / (k - 1.0)
        cov_se = np.sqrt(np.maximum(var_z, 0.0) / k)
        # lag-1: z_b = B_b - a_b m'^T - m w_b^T
        s_y2 = (
            self.sB2
            + np.outer(self.sa2, mw * mw)
            + np.outer(m * m, self.sw2)
            - 2.0 * self.sBa * mw[None, :]
            - 2.0 * self.sBw * m[:, None]
            + 2.0 * self.saw * np.outer(m, mw)
        )
        y_mean = mean_b - np.outer(ma, mw) - np.outer(m, mwa)
        var_y = (s_y2 - k * y_mean**2) / (k - 1.0)
        lag1_se = np.sqrt(np.maximum(var_y, 0.0) / k)
        # antisymmetric part lag1 - lag1^T (the probability current): batch means
        # q_b = B_b - B_b^T; the mean correction m m'^T - m' m^T is second order (m' - m = O(1/n))
        # and left out. Entries ij and ji are strongly correlated, so this is much smaller than
        # combining lag1_stderr_ij and lag1_stderr_ji as if independent.
        q_mean = (self.sB - self.sB.T) / k
        s_q2 = self.sB2 + self.sB2.T - 2.0 * self.sBBt
        var_q = (s_q2 - k * q_mean**2) / (k - 1.0)
        antisym_se = np.sqrt(np.maximum(var_q, 0.0) / k)
        var_m = (self.sa2 - k * ma * ma) / (k - 1.0)
        mean_se = np.sqrt(np.maximum(var_m, 0.0) / k)
        return Moments(
            mean=self.ref + m,
            mean_stderr=mean_se,
            cov=cov,
            cov_stderr=cov_se,
            lag1=lag1,
            lag1_stderr=lag1_se,
            lag1_antisym_stderr=antisym_se,
            replica_means=self.ref + self.tot_a / self.n_records,
        )


#: records mode: at most this many records per (replica, batch); the entry-wise second moments of
#: the K batch matrices then cost 2 K n_b^2 d^2 flops in a few GEMMs ("pair rows" below), less
#: than the ~20 passes over d x d per batch of the streaming accumulators
PAIR_MAX = 16
#: records mode keeps every record: at most this many bytes (or the streaming footprint, if larger)
RECORD_BYTES = 256 * 2**20
#: rows of one pair-row GEMM block (bounds the temporary to PAIR_BLOCK x d floats)
PAIR_BLOCK = 4096


def streaming_bytes(d: int, n_replicas: int, max_bytes: int = GROUP_BYTES) -> int:
    """Bytes of the streaming accumulators (14 d x d arrays plus the group accumulators)."""
    groups = int(max(1, min(n_replicas, max_bytes // (2 * 8 * d * d))))
    return 8 * d * d * (14 + 2 * groups)


class RecordMoments:
    """Keep the (few) records and compute the moments lazily, on first access.

    Chosen by the driver when every (replica, batch) has at most :data:`PAIR_MAX` records and the
    records fit :data:`RECORD_BYTES` (or the streaming footprint): short runs and sparse records,
    where the streaming accumulators would spend their time in d x d passes at batch ends. The
    estimates are the streaming ones with one batch per (replica, batch) (no replica groups):
    ``cov``, ``lag1`` one GEMM each; a standard error costs its few GEMMs only when read.
    """

    kind = "records"

    def __init__(self, ref: Array, n_replicas: int, n_records: int, n_batches: int) -> None:
        self.ref = ref.copy()
        self.d = ref.shape[0]
        self.n_replicas = n_replicas
        self.n_records = n_records
        self.n_batches = n_batches
        self.bounds = batch_bounds(n_records, n_batches)
        self.v = np.empty((n_replicas, n_records, self.d))
        self.w = np.empty((n_replicas, n_records, self.d))
        self.count = 0

    def add(self, theta_k: Array, theta_next: Array) -> None:
        """Add records: ``theta_k`` and ``theta_{k+1}`` of shape (R, n, d), consecutive records."""
        n = theta_k.shape[1]
        np.subtract(theta_k, self.ref, out=self.v[:, self.count : self.count + n])
        np.subtract(theta_next, self.ref, out=self.w[:, self.count : self.count + n])
        self.count += n

    def result(self) -> LazyMoments:
        if self.count != self.n_records:
            raise RuntimeError(f"received {self.count} of {self.n_records} records")
        return LazyMoments(self)


class LazyFields:
    """The fields of :class:`Moments` as properties read through ``self._get(name)`` (computed on
    first access by the subclass)."""

    def _get(self, name: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    mean = property(lambda self: self._get("mean"))
    mean_stderr = property(lambda self: self._get("mean_stderr"))
    cov = property(lambda self: self._get("cov"))
    cov_stderr = property(lambda self: self._get("cov_stderr"))
    lag1 = property(lambda self: self._get("lag1"))
    lag1_stderr = property(lambda self: self._get("lag1_stderr"))
    lag1_antisym_stderr = property(lambda self: self._get("lag1_antisym_stderr"))
    replica_means = property(lambda self: self._get("replica_means"))


class LazyMoments(LazyFields):
    """The moments of :class:`RecordMoments`, each computed on first access (then cached).

    Notes
    -----
    Batches are the ``K = R * n_batches`` (replica, batch) blocks. With the pooled means ``m``,
    ``m'`` known, the records are centred first, ``u = v - m``, ``u' = v' - m'``; the linearized
    pseudo-values of :meth:`StreamingMoments.result` are then, up to a constant,
    ``C_b = U_b^T U_b / n_b`` (covariance) and ``D_b = U_b^T U'_b / n_b`` (lag 1), and
    ``D_b - D_b^T`` for the antisymmetric part (here with its mean correction, which the streaming
    accumulators leave out as second order). Their entry-wise sums of squares are GEMMs over
    "pair rows": ``(C_b)_ij^2 = sum_{s,t in b} (u_s o u_t)_i (u_s o u_t)_j / n_b^2`` (``s <= t``,
    weight 2 off the diagonal), ``2 K n_b^2 d^2`` flops in all instead of K passes over d x d.
    """

    def __init__(self, acc: RecordMoments) -> None:
        self._acc = acc
        self._cache: dict[str, Any] = {}

    def _get(self, name: str) -> Any:
        if name not in self._cache:
            self._compute(name)
        return self._cache[name]

    def _blocks(self) -> list[tuple[int, int, int]]:
        acc = self._acc
        return [
            (r, int(acc.bounds[b]), int(acc.bounds[b + 1]))
            for r in range(acc.n_replicas)
            for b in range(acc.n_batches)
        ]

    def _compute(self, name: str) -> None:
        acc = self._acc
        c = self._cache
        if name in ("m", "mean", "mean_stderr", "replica_means", "u", "uw"):
            n_tot = acc.n_replicas * acc.n_records
            m = acc.v.reshape(n_tot, acc.d).sum(axis=0) / n_tot
            mw = acc.w.reshape(n_tot, acc.d).sum(axis=0) / n_tot
            a = np.array([acc.v[r, lo:hi].mean(axis=0) for r, lo, hi in self._blocks()])
            k = a.shape[0]
            var_m = ((a - a.mean(axis=0)) ** 2).sum(axis=0) / (k - 1.0)
            c.update(m=m, mean=acc.ref + m, mean_stderr=np.sqrt(var_m / k))
            c["replica_means"] = acc.ref + acc.v.mean(axis=1)
            c["u"] = (acc.v - m).reshape(n_tot, acc.d)
            c["uw"] = (acc.w - mw).reshape(n_tot, acc.d)
        elif name == "cov":
            # one SYRK (half the flops of a GEMM, the scale folded in), then the lower triangle
            # mirrored: exactly symmetric, no extra d x d temporaries or passes
            from scipy.linalg.blas import dsyrk

            u = self._get("u")
            upper = dsyrk(1.0 / u.shape[0], u, trans=1, lower=0)  # Fortran order
            c["cov"] = _mirror_upper(upper)
        elif name == "lag1":
            from scipy.linalg.blas import dgemm

            u, uw = self._get("u"), self._get("uw")
            c["lag1"] = dgemm(1.0 / u.shape[0], u, uw, trans_a=1)  # u^T u' / n, Fortran order
        elif name in ("cov_stderr", "lag1_stderr"):
            self._pairs_symmetric()
        elif name == "lag1_antisym_stderr":
            self._pairs_antisymmetric()
        else:  # pragma: no cover
            raise KeyError(name)

    def _batch_sum(self, x: Array, y: Array) -> Array:
        """``sum_b X_b^T Y_b / n_b`` over the records (one GEMM)."""
        sizes = np.array([hi - lo for _, lo, hi in self._blocks()])
        out = np.zeros((self._acc.d, self._acc.d))
        _gemm_acc(out, x / np.repeat(sizes, sizes)[:, None].astype(float), y)
        return out

    def _pairs(self, kind: str) -> Iterator[tuple[Array, ...]]:
        """Blocks of pair rows (at most ~PAIR_BLOCK rows each)."""
        u, uw = self._get("u"), self._get("uw")
        pieces: list[list[Array]] = []
        n_rows = 0
        start = 0
        for _, lo, hi in self._blocks():
            n = hi - lo
            ub, wb = u[start : start + n], uw[start : start + n]
            start += n
            if kind == "symmetric":
                s, t = np.triu_indices(n)
                wt = (np.where(s == t, 1.0, np.sqrt(2.0)) / n)[:, None]
                pieces.append([ub[s] * ub[t] * wt, wb[s] * wb[t] * wt])
            else:
                s, t = np.divmod(np.arange(n * n), n)
                pieces.append([ub[s] * wb[t] / n, wb[s] * ub[t] / n])
            n_rows += s.size
            if n_rows >= PAIR_BLOCK:
                yield tuple(np.concatenate(col) for col in zip(*pieces, strict=True))
                pieces, n_rows = [], 0
        if pieces:
            yield tuple(np.concatenate(col) for col in zip(*pieces, strict=True))

    @staticmethod
    def _stderr(s1: Array, s2: Array, k: float) -> Array:
        """``sqrt(var / k)`` from the sum and the sum of squares of k pseudo-values (in place)."""
        s1 *= s1
        s1 *= 1.0 / k
        s2 -= s1
        s2 *= 1.0 / ((k - 1.0) * k)
        np.maximum(s2, 0.0, out=s2)
        return np.sqrt(s2, out=s2)

    def _pairs_symmetric(self) -> None:
        acc = self._acc
        u, uw = self._get("u"), self._get("uw")
        k = float(acc.n_replicas * acc.n_batches)
        s_c2, s_d2 = np.zeros((acc.d, acc.d)), np.zeros((acc.d, acc.d))
        for p, q in self._pairs("symmetric"):
            _gemm_acc(s_c2, p, p)
            _gemm_acc(s_d2, p, q)
        s_d = self._batch_sum(u, uw)
        self._cache["_s_d"] = s_d.copy()
        self._cache["_s_d2"] = s_d2.copy()
        self._cache["cov_stderr"] = self._stderr(self._batch_sum(u, u), s_c2, k)
        self._cache["lag1_stderr"] = self._stderr(s_d, s_d2, k)

    def _pairs_antisymmetric(self) -> None:
        acc = self._acc
        k = float(acc.n_replicas * acc.n_batches)
        if "_s_d2" not in self._cache:
            self._pairs_symmetric()
        s_d, s_d2 = self._cache.pop("_s_d"), self._cache.pop("_s_d2")
        s_ddt = np.zeros((acc.d, acc.d))
        for x, y in self._pairs("antisymmetric"):
            _gemm_acc(s_ddt, x, y)  # sum_b D_b o D_b^T
        s_q = s_d - s_d.T
        s_q2 = s_d2 + s_d2.T
        s_q2 -= 2.0 * s_ddt
        se = self._stderr(s_q, s_q2, k)
        np.fill_diagonal(se, 0.0)  # D_b - D_b^T has a zero diagonal exactly
        self._cache["lag1_antisym_stderr"] = se


#: memory budget of the full d x d statistics (streaming accumulators or kept records); above it
#: ``statistics="auto"`` switches to the top-k subspace (:class:`SubspaceMoments`)
STATS_BYTES = 4 * 2**30
#: rank k of the subspace statistics
SUBSPACE_RANK = 64


@dataclass(frozen=True)
class SubspaceStatistics:
    """Top-k eigenpairs of the stationary covariance from a one-pass Nystrom sketch.

    Attributes
    ----------
    basis : ndarray (d, k)
        Orthonormal eigenvectors (columns), eigenvalues descending.
    eigenvalues : ndarray (k,)
    rank : int
        k, the sketch size.
    note : str
        Why the full d x d statistics were not kept, and what is missing.
    """

    basis: Array
    eigenvalues: Array
    rank: int
    note: str

    def covariance(self) -> Array:
        """The rank-k approximation ``U diag(lambda) U^T`` (d, d): for small d only."""
        return (self.basis * self.eigenvalues) @ self.basis.T


def _thin_qr(e: Array) -> tuple[Array, Array]:
    """``e = q r`` for a tall (d, k) ``e``: CholeskyQR2 (two passes of Gram, Cholesky and a
    triangular solve, all BLAS-3: Yamamoto et al. 2015, orthogonal to round-off for cond(e) up
    to ~1e8), Householder QR (``numpy.linalg.qr``, BLAS-2-bound on one thread: 0.23 s at
    d = 42 000, k = 64, a third of a short wide run) where the Gram matrix is not positive
    definite to working precision or the result is not orthonormal to 1e-10."""
    from scipy.linalg import LinAlgError, cholesky, solve_triangular

    try:
        q, r = e, np.eye(e.shape[1])
        for _ in range(2):
            low = cholesky(q.T @ q, lower=True)
            q = solve_triangular(low, q.T, lower=True).T
            r = low.T @ r
    except LinAlgError:
        return np.linalg.qr(e)
    # a nearly singular Gram matrix can pass Cholesky and leave q far from orthonormal
    if not np.all(np.isfinite(q)) or np.abs(q.T @ q - np.eye(q.shape[1])).max() > 1e-10:
        return np.linalg.qr(e)
    return q, r


class SubspaceMoments:
    """Mean, its batch-means standard error and a top-k covariance sketch in O(d k) memory
    (``rank = 0``: no sketch, the mean and its standard error only).

    The sketch ``Y = C Omega`` (``Omega`` a fixed Gaussian d x k test matrix, seed 0) is
    accumulated as ``sum_k v_k (v_k^T Omega)``, O(d k) per record; the result is the Nystrom
    approximation ``Y (Omega^T Y)^+ Y^T`` with the stabilising shift of Tropp, Yurtsever, Udell &
    Cevher (2017, "Fixed-rank approximation of a positive-semidefinite matrix from streaming
    data", Alg. 3), exact when the covariance has rank <= k.
    """

    kind = "subspace"

    def __init__(
        self, ref: Array, n_replicas: int, n_records: int, n_batches: int, rank: int, note: str
    ) -> None:
        self.ref = ref.copy()
        self.d = ref.shape[0]
        self.k = int(min(rank, self.d))
        self.n_replicas = n_replicas
        self.n_records = n_records
        self.n_batches = n_batches
        self.note = note
        self.bounds = batch_bounds(n_records, n_batches)
        self.omega = np.random.default_rng(0).standard_normal((self.d, self.k))
        self.sketch = np.zeros((self.d, self.k))
        self.batch_sums = np.zeros((n_replicas, n_batches, self.d))
        self.count = 0

    def add(self, theta_k: Array, theta_next: Array) -> None:
        """Add records (R, n, d); ``theta_next`` is not used (no lag-1 statistics here)."""
        n = theta_k.shape[1]
        v = theta_k - self.ref
        if self.k:
            vf = v.reshape(-1, self.d)
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1, user_api="blas"):  # thin products: threads only contend
                self.sketch += vf.T @ (vf @ self.omega)
        rec = self.count + np.arange(n)
        batch = np.searchsorted(self.bounds, rec, side="right") - 1
        for b in np.unique(batch):
            lo, hi = np.searchsorted(batch, [b, b + 1])  # records are consecutive
            self.batch_sums[:, b] += v[:, lo:hi].sum(axis=1)
        self.count += n

    def result(self) -> SubspaceResultMoments:
        if self.count != self.n_records:
            raise RuntimeError(f"received {self.count} of {self.n_records} records")
        from scipy.linalg import cholesky, solve_triangular

        n_tot = float(self.n_replicas * self.n_records)
        sizes = np.diff(self.bounds).astype(float)
        a = (self.batch_sums / sizes[None, :, None]).reshape(-1, self.d)
        m = self.batch_sums.sum(axis=(0, 1)) / n_tot
        k_b = a.shape[0]
        mean_se = np.sqrt(((a - a.mean(axis=0)) ** 2).sum(axis=0) / (k_b - 1.0) / k_b)
        replica_means = self.ref + self.batch_sums.sum(axis=1) / self.n_records
        if self.k == 0:  # rank 0: the mean and its standard error only
            return SubspaceResultMoments(
                mean=self.ref + m, mean_stderr=mean_se, replica_means=replica_means, subspace=None
            )
        # single-threaded: thin (d x k) products and factorizations, where BLAS/LAPACK threads
        # only contend (5-20x slower on the shared 2-core machine)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            y = self.sketch / n_tot - np.outer(m, m @ self.omega)  # C Omega
            nu = np.sqrt(self.d) * np.spacing(np.linalg.norm(y))
            y_nu = y + nu * self.omega
            core = 0.5 * (self.omega.T @ y_nu + (self.omega.T @ y_nu).T)
            try:
                low = cholesky(core, lower=True)
                e = solve_triangular(low, y_nu.T, lower=True).T  # Y_nu L^{-T}
            except np.linalg.LinAlgError:
                # the shift nu did not make the core positive definite (a covariance of rank
                # < k at round-off level): the same Nystrom factor through the core's
                # eigen-decomposition, its non-positive part dropped (Tropp et al. 2017, §2.2)
                w, v = np.linalg.eigh(core)
                pos = w > w.max() * 1e-12
                e = (y_nu @ v[:, pos]) / np.sqrt(w[pos])
            q, r = _thin_qr(e)  # thin SVD of e as QR, then a k x k SVD
            u_r, sv, _ = np.linalg.svd(r)
            u = q @ u_r
        lam = np.maximum(sv**2 - nu, 0.0)
        return SubspaceResultMoments(
            mean=self.ref + m,
            mean_stderr=mean_se,
            replica_means=replica_means,
            subspace=SubspaceStatistics(basis=u, eigenvalues=lam, rank=self.k, note=self.note),
        )


@dataclass(frozen=True)
class SubspaceResultMoments:
    """What the subspace statistics provide; the d x d fields are ``None``."""

    mean: Array
    mean_stderr: Array
    replica_means: Array
    subspace: SubspaceStatistics | None
    cov: None = None
    cov_stderr: None = None
    lag1: None = None
    lag1_stderr: None = None
    lag1_antisym_stderr: None = None
