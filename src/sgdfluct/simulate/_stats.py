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

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: Records buffered per replica before a GEMM flush (fixed: bitwise chunk invariance).
FLUSH_RECORDS = 256
#: Memory budget of the per-(replica group) batch accumulators (two (d, d) float64 arrays each).
GROUP_BYTES = 256 * 2**20
#: Memory budget of the record buffer (R x records x d, twice).
BUFFER_BYTES = 64 * 2**20


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
            self.bA[g] += vg.T @ vg
            self.bB[g] += vg.T @ wg
            self.ba[g] += sv[lo:hi].sum(axis=0)
            self.bw[g] += sw[lo:hi].sum(axis=0)
        self.nbuf = 0

    def _end_batch(self) -> None:
        sizes = np.diff(self.group_bounds).astype(float)
        nb = (self.bounds[self.batch + 1] - self.bounds[self.batch]) * sizes
        nb2 = nb[:, None, None]
        big_a = self.bA / nb2
        big_b = self.bB / nb2
        a = self.ba / nb[:, None]
        w = self.bw / nb[:, None]
        self.sA += big_a.sum(axis=0)
        self.sB += big_b.sum(axis=0)
        self.sa += a.sum(axis=0)
        self.sw += w.sum(axis=0)
        self.sA2 += np.einsum("rij,rij->ij", big_a, big_a)
        self.sB2 += np.einsum("rij,rij->ij", big_b, big_b)
        self.sBBt += np.einsum("rij,rji->ij", big_b, big_b)
        self.sa2 += np.einsum("ri,ri->i", a, a)
        self.sw2 += np.einsum("ri,ri->i", w, w)
        self.sAa += np.einsum("rij,ri->ij", big_a, a)
        self.sBa += np.einsum("rij,ri->ij", big_b, a)
        self.sBw += np.einsum("rij,rj->ij", big_b, w)
        self.saa += a.T @ a
        self.saw += a.T @ w
        self.tot_A += self.bA.sum(axis=0)
        self.tot_B += self.bB.sum(axis=0)
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
