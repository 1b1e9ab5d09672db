"""Streaming statistics of the probe: bounded memory, independent of the training length.

* :class:`NystromSketch` — streaming randomized PCA of one layer's thinned weights (docs/theory.md
  §11): memory O(ℓ d) for a sketch of ℓ columns, never O(d²) (exact PCA when d <= ℓ).
* :class:`SubspaceMoments` — exact covariance of the weights projected on k fixed directions.
* :class:`CoordinateMoments` — exact covariance of a stream of k-vectors (the joint probed
  coordinates of all layers).
* :class:`PlateauMonitor` / :func:`plateau_test` / :func:`log_plateau_test` — the stationarity
  test of docs/theory.md §11 (on the loss and on its logarithm: no pass on exponential growth).
* :class:`BoundedTrace` — a loss trace of at most ``max_len`` points (pairwise averaging).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = [
    "PLATEAU_SUB_BLOCKS",
    "PLATEAU_Z",
    "BoundedTrace",
    "CoordinateMoments",
    "NystromSketch",
    "PlateauMonitor",
    "SubspaceMoments",
    "log_plateau_test",
    "plateau_test",
]

Array = NDArray[np.float64]

#: sub-blocks per plateau block: the standard error of a block mean is the (successive-difference)
#: scatter of sub-block means / sqrt(10) (batch means), robust to autocorrelation shorter than a
#: sub-block
PLATEAU_SUB_BLOCKS = 10
#: allowed change of a block mean in standard errors (both consecutive pairs; ~0.9 pass
#: probability per check for a stationary loss). Set after the first measurements: with 1 SE a
#: stationary linear control failed 4 consecutive checks (autocorrelation longer than a sub-block)
PLATEAU_Z = 2.0


#: a sketch of more than this many flops per orthonormalization (d ℓ²; 2e8 is ~0.3 s on one
#: core) is *compact*: float32 test matrix and accumulator, never orthonormalized, snapshots
#: taken in batches (:meth:`NystromSketch.extend`) and its top eigenpairs from ℓ×ℓ Gram
#: matrices (:meth:`NystromSketch.top`). Smaller sketches (the digits MLP's 2080 x 256, 1.4e8)
#: keep the float64 orthonormal test matrix, bitwise as before
DEFER_QR_FLOPS = 2e8
#: columns of a compact sketch's ℓ×d float32 arrays (rows of Y) converted to float64 at once in
#: :meth:`top`: a chunk of the (ℓ+1)×2048 float64 Gram buffer (1 MB) stays in cache
TOP_CHUNK_ROWS = 2**11
#: columns of a snapshot batch (and of Ω, Y) per GEMM in :meth:`NystromSketch.extend_centered`:
#: a 64-row batch chunk (256 kB) stays in cache for the GEMMs that read it
EXTEND_CHUNK = 2**10
#: a compact sketch's core eigen-directions below this fraction of the largest are left out of
#: its Nyström approximation instead of Tropp et al.'s shift ν (whose bias, ~ν d/ℓ, a float32 ν
#: would make ~1e-3 at d = 2·10⁴): the float32 round-off of Y, amplified along a near-null core
#: direction, would otherwise pass for variance. With 1e-9 the top-20 variances of steep and
#: rank-deficient spectra match the float64 sketch to <= 3e-5 (relative) in the tests of
#: tests/probe/test_sketch_precision.py; variances below ~1e-6 of the largest lose digits
CORE_RTOL = 1e-9


class NystromSketch:
    """Streaming single-pass Nyström sketch of the centered covariance of a vector stream.

    Parameters
    ----------
    reference : (d,) tensor
        The first snapshot ``w_0``; deviations ``u_t = w_t - w_0`` are accumulated.
    sketch_size : int
        ``ℓ``, the number of random test vectors (``ℓ >= k``; ``k + p`` with the oversampling
        ``p = k + 20`` by default in the probe, ``probe._recording.default_sketch_size``).
    generator : torch.Generator
        Draws the Gaussian test matrix.

    Notes
    -----
    Tropp, Yurtsever, Udell & Cevher, "Fixed-rank approximation of a positive-semidefinite matrix
    from streaming data" (NeurIPS 2017), Algorithm 3. With a test matrix ``Ω`` (d×ℓ) the stream
    updates ``Y += u_t (u_tᵀ Ω)`` and ``s += u_t`` (O(ℓ d) memory and work per snapshot). The
    centered sample covariance ``Σ = (Σ_t u_t u_tᵀ − n m mᵀ)/(n − 1)`` with ``m = s/n`` is linear
    in the accumulators, so its sketch ``ΣΩ = (Y − n m (mᵀΩ))/(n − 1)`` is exact whatever the
    mean (centering at the window mean, no second pass). The Nyström approximation
    ``Σ̂ = (ΣΩ)(ΩᵀΣΩ)⁺(ΣΩ)ᵀ`` satisfies ``0 ⪯ Σ̂ ⪯ Σ``; its top eigenpairs are the PCA. When
    ``d <= ℓ`` the test matrix is the identity and ``ΣΩ = Σ``: the PCA is exact. Otherwise the
    top variances are underestimated by at most the spectral tail beyond rank ℓ (Tropp et al.,
    Theorem 4.1); reported as ``exact = False``.

    Two storages. A small sketch (``d ℓ² <=`` :data:`DEFER_QR_FLOPS`) streams in float64 on an
    orthonormal ``Ω = qr(G)`` and takes the SVD of the d×ℓ Nyström factor in :meth:`top`. A
    large one is *compact* (``self.compact``): the Nyström approximation depends on ``Ω`` only
    through its range, so ``Ω = G/√d`` stays Gaussian (no QR, neither at the window start nor
    later), ``Ω`` and ``Y`` are float32 (8 ℓ + 12 bytes a parameter instead of 16 ℓ + 16,
    with the reference ``w_0`` in float32 for float32 weights), a
    batch of ``b`` snapshots is one pair of GEMMs (:meth:`extend`: ``P = UΩ`` (b×ℓ),
    ``Y += UᵀP``; ``Ω`` and ``Y`` pass through memory once a batch, not once a snapshot), and
    the ℓ×ℓ core ``ΩᵀΣΩ`` is streamed in float64 from the projections (``Z = Σ_t p_t p_tᵀ``,
    ``p_t = Ωᵀu_t``): with ``P`` the n×ℓ projections, ``J`` the centering and ``U`` the
    snapshots, ``ΣΩ = UᵀJP/(n−1)`` and ``ΩᵀΣΩ = PᵀJP/(n−1)`` hold for the computed ``P``
    whatever its round-off, so the approximation ``UᵀJP(PᵀJP)⁺PᵀJU/(n−1)`` is still a
    projection of the sample covariance (exact when ``n − 1 <= ℓ``). :meth:`top` needs one pass
    over ``Y`` (its ℓ×ℓ Gram matrix, by chunks in float64) and one for the k directions, instead
    of the d×ℓ SVD: with ``R = V_+ M_+^(-1/2)`` from the core's eigenpairs above
    :data:`CORE_RTOL` of the largest, ``F = ΣΩ R``, ``FᵀF = Rᵀ (ΣΩ)ᵀ(ΣΩ) R = V S² Vᵀ`` gives the
    variances ``S²`` and the directions ``F V S⁻¹`` (Tropp et al.'s shift ν is not used: see
    :data:`CORE_RTOL`). The float32 round-off of ``Y`` (~1e-7 of its entries, a random walk over
    the batches) moves the top variances by ~1e-7 of the largest, far below a window's
    statistical error (``tests/probe/test_sketch_precision.py``: a prescribed covariance against
    the float64 path).
    """

    def __init__(
        self, reference: torch.Tensor, sketch_size: int, generator: torch.Generator
    ) -> None:
        ref = reference.detach().to(torch.float64).reshape(-1).clone()
        self.dim = int(ref.numel())
        self.exact = self.dim <= sketch_size
        self.compact = not self.exact and self.dim * sketch_size**2 > DEFER_QR_FLOPS
        if self.compact and reference.dtype == torch.float32:  # w - w_0 rounds alike in float32
            ref = reference.detach().reshape(-1).clone()
        self.reference = ref
        dev = ref.device
        # a compact sketch's Ωᵀ and Yᵀ (ℓ×d, rows contiguous); self.omega, self.y: their views
        self._omega_t: torch.Tensor | None = None
        self._y_t = torch.zeros(0)
        if self.exact:
            self.omega = None
            self.y = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=dev)
        elif self.compact:
            gauss = torch.randn(
                sketch_size, self.dim, generator=generator, dtype=torch.float32, device="cpu"
            ).to(device=dev)
            # drawn and stored as Ωᵀ (ℓ×d: its rows are the test vectors), unit norm on average
            self._omega_t = gauss.mul_(1.0 / math.sqrt(self.dim))
            self.omega = self._omega_t.T
            # Yᵀ (ℓ×d) as well: the batch update Yᵀ += Pᵀ U is a GEMM of contiguous operands
            self._y_t = torch.zeros(sketch_size, self.dim, dtype=torch.float32, device=dev)
            self.y = self._y_t.T
            self.core = torch.zeros(sketch_size, sketch_size, dtype=torch.float64, device=dev)
            self.proj_total = torch.zeros(sketch_size, dtype=torch.float64, device=dev)
        else:
            gauss = torch.randn(
                self.dim, sketch_size, generator=generator, dtype=torch.float64, device="cpu"
            ).to(device=dev)
            self.omega = torch.linalg.qr(gauss)[0]
            self.y = torch.zeros(self.dim, sketch_size, dtype=torch.float64, device=dev)
        self.total = torch.zeros(self.dim, dtype=torch.float64, device=dev)
        self.count = 0

    def update(self, weights: torch.Tensor) -> None:
        """Add one snapshot (d,)."""
        if self.compact:
            self.extend(weights.reshape(1, -1))
            return
        u = weights.detach().to(torch.float64).reshape(-1) - self.reference
        proj = u if self.omega is None else u @ self.omega
        self.y.addr_(u, proj)
        self.total.add_(u)
        self.count += 1

    def extend(self, rows: torch.Tensor) -> torch.Tensor:
        """Add snapshots (b, d) in order; a compact sketch takes them in one pair of GEMMs.

        Returns the sum of the rows (d,) in float64 (the probe's window mean reuses it).
        """
        rows = rows.detach().reshape(-1, self.dim)
        if not self.compact:
            for w in rows:
                self.update(w)
            return rows.to(torch.float64).sum(0)
        u = torch.empty(rows.shape, dtype=torch.float32, device=self.y.device)
        torch.sub(rows, self.reference, out=u)  # w - w_0 rounded once to float32
        return self.extend_centered(u)[0]

    def extend_centered(
        self, u: torch.Tensor, also: Sequence[torch.Tensor] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`extend` of a compact sketch given the float32 deviations ``u = w − w_0`` (b, d)
        from :attr:`reference` (``torch.sub(w, reference, out=u)``, as :meth:`extend` rounds
        them): the probe's snapshot batch stores these.

        Two passes over ``u`` by column chunks of :data:`EXTEND_CHUNK` (each in cache for its
        GEMMs): ``P = UΩ`` together with ``U Aᵀ`` for each float32 matrix ``A`` (m×d) of
        ``also`` (the split recorders' directions), then ``Yᵀ += PᵀU`` and the batch's sum.
        Returns the sum of the snapshots ``w`` (d,) in float64 (the probe's window mean reuses
        it) and the projections ``U Aᵀ`` (b×m, float32).
        """
        assert self._omega_t is not None and u.dtype == torch.float32
        b, step = int(u.shape[0]), EXTEND_CHUNK
        p = u.new_zeros(b, self._omega_t.shape[0])
        extra = [u.new_zeros(b, a.shape[0]) for a in also]
        for i in range(0, self.dim, step):
            part = u[:, i : i + step]
            p.addmm_(part, self._omega_t[:, i : i + step].T)
            for e, a in zip(extra, also, strict=True):
                e.addmm_(part, a[:, i : i + step].T)
        p_t = p.T.contiguous()
        added32 = u.new_empty(self.dim)
        for i in range(0, self.dim, step):
            part = u[:, i : i + step]
            self._y_t[:, i : i + step].addmm_(p_t, part)
            torch.sum(part, 0, out=added32[i : i + step])  # b float32 terms: ~1e-7 of |u|
        p64 = p.to(torch.float64)
        self.core.addmm_(p64.T, p64)
        self.proj_total.add_(p64.sum(0))
        added = added32.to(torch.float64)
        self.total.add_(added)
        self.count += b
        return added.add_(self.reference, alpha=float(b)), extra

    @property
    def mean(self) -> torch.Tensor:
        """Window mean of the stream (d,)."""
        return self.reference + self.total / max(self.count, 1)

    def nbytes(self) -> int:
        item = self.y.element_size()
        n = self.y.numel() + (0 if self.omega is None else self.omega.numel())
        small = 8 * (self.core.numel() + self.proj_total.numel()) if self.compact else 0
        ref = self.reference.numel() * self.reference.element_size()
        return item * n + 8 * self.total.numel() + ref + small

    def top(self, k: int, *, float32: bool = False) -> tuple[Array, NDArray[Any]]:
        """Top-``k`` PCA: ``(variances (k,), directions (k, d))``, decreasing variance.

        With ``float32`` the directions are rounded to float32 (a compact sketch's in its last
        orthonormalization pass: the probe's split recorders project on float32 rows).
        """
        n = self.count
        if n < 2:
            raise ValueError(f"the sketch holds {n} snapshot(s): expected >= 2")
        if self.compact:
            return self._top_compact(k, torch.float32 if float32 else torch.float64)
        if float32:
            var, dirs = self.top(k)
            return var, dirs.astype(np.float32)
        m = self.total / n
        if self.omega is None:
            cov = (self.y - n * torch.outer(m, m)) / (n - 1)
            cov = 0.5 * (cov + cov.T)
            evals, evecs = torch.linalg.eigh(cov)
            evals = evals.flip(0)[:k].clamp_min(0.0)
            evecs = evecs.flip(1)[:, :k]
            return evals.cpu().numpy(), evecs.T.cpu().numpy()
        om = self.omega
        y = (self.y - n * torch.outer(m, m @ om)) / (n - 1)
        nu = math.sqrt(self.dim) * torch.finfo(torch.float64).eps * float(torch.linalg.norm(y))
        y_nu = y + nu * om
        b = om.T @ y_nu
        b = 0.5 * (b + b.T)
        try:
            chol = torch.linalg.cholesky(b, upper=True)
            f = torch.linalg.solve_triangular(chol, y_nu, upper=True, left=False)
        except RuntimeError:  # numerically singular core: pseudo-inverse square root
            ev, vec = torch.linalg.eigh(b)
            keep = ev > ev.max() * 1e-12
            f = y_nu @ vec[:, keep] / torch.sqrt(ev[keep])
        u, s, _ = torch.linalg.svd(f, full_matrices=False)
        lam = (s**2 - nu).clamp_min(0.0)
        return lam[:k].cpu().numpy(), u[:, :k].T.cpu().numpy()

    def _top_compact(self, k: int, dtype: torch.dtype) -> tuple[Array, NDArray[Any]]:
        """:meth:`top` of a compact sketch from ℓ×ℓ Gram matrices (float64, by row chunks)."""
        assert self.omega is not None and self._omega_t is not None
        n, f64, ell = self.count, torch.float64, self._y_t.shape[0]
        m = self.total / n
        c = self.proj_total / n  # Ωᵀm
        step = TOP_CHUNK_ROWS
        chunks = [slice(i, min(i + step, self.dim)) for i in range(0, self.dim, step)]
        core = (self.core - n * torch.outer(c, c)) / (n - 1)  # ΩᵀΣΩ, streamed exactly
        mu, vec = torch.linalg.eigh(0.5 * (core + core.T))
        keep = mu > CORE_RTOL * mu.max().clamp_min(torch.finfo(f64).tiny)
        root = vec[:, keep] / torch.sqrt(mu[keep])  # (ΩᵀΣΩ)^(-1/2) on the kept core, ℓ×r
        r_kept = root.shape[1]

        def times(a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            """``out`` = (ΣΩ a)ᵀ (a.shape[1], d), float64, by chunks: float32 GEMMs (the inner
            dimension is ℓ, their round-off that of the stored Y), the centering in float64."""
            a = a / (n - 1)
            a32, ca = a.T.to(torch.float32), (n * (c @ a)).neg_()
            tmp = torch.empty(a.shape[1], step, dtype=torch.float32, device=a.device)
            for sl in chunks:
                part, o = tmp[:, : sl.stop - sl.start], out[:, sl]
                torch.mm(a32, self._y_t[:, sl], out=part)
                o.copy_(part)
                o.addr_(ca, m[sl])
            return out

        if 2 * r_kept <= ell:  # low rank (n - 1 < ℓ/2): F = ΣΩ·root itself
            ft = times(root, torch.empty(r_kept, self.dim, dtype=f64, device=root.device))  # Fᵀ
            gram = ft @ ft.T
        else:  # FᵀF = rootᵀ (ΣΩ)ᵀ(ΣΩ) root without the d×ℓ F; the d-long sums in float64
            ft = None
            # one float64 Gram pass over [Yᵀ; mᵀ] by cached chunks: YᵀY, Yᵀm and |m|² at once
            buf = torch.empty(ell + 1, step, dtype=f64, device=m.device)
            ext = torch.zeros(ell + 1, ell + 1, dtype=f64, device=m.device)
            for sl in chunks:
                part = buf[:, : sl.stop - sl.start]
                part[:ell].copy_(self._y_t[:, sl])
                part[ell].copy_(m[sl])
                ext.addmm_(part, part.T)
            sq, cy, mm = ext[:ell, :ell], ext[:ell, ell], float(ext[ell, ell])
            # (Y − n m cᵀ)ᵀ(Y − n m cᵀ) = YᵀY − n (Yᵀm)cᵀ − n c(Yᵀm)ᵀ + n² |m|² ccᵀ
            sq -= n * (torch.outer(cy, c) + torch.outer(c, cy))
            sq += n**2 * mm * torch.outer(c, c)
            gram = root.T @ (sq / (n - 1) ** 2) @ root
        if gram.numel():
            s2, v2 = torch.linalg.eigh(0.5 * (gram + gram.T))
        else:  # no variance at all (every snapshot the same)
            s2, v2 = gram.new_zeros(0), gram
        r = min(k, int(s2.numel()))
        s2, v2 = s2.flip(0)[:r].clamp_min(0.0), v2.flip(1)[:, :r]
        scaled = v2 / torch.sqrt(s2.clamp_min(torch.finfo(f64).tiny))  # F V S⁻¹
        dirs = torch.empty(k, self.dim, dtype=f64, device=root.device)
        if ft is not None:
            torch.mm(scaled.T, ft, out=dirs[:r])  # (F V S⁻¹)ᵀ
        else:
            times(root @ scaled, dirs[:r])
        if r < k:  # fewer than k directions carry variance (n - 1 < k): variance 0 for the rest,
            # along Ω v for v in the core's null space: (ΣΩa)ᵀ(Ωv) = aᵀ(ΩᵀΣΩ)v = 0, so these are
            # already orthogonal to the top directions (to round-off)
            null = vec[:, : k - r]  # r < k: at least ℓ - r >= k - r core directions dropped
            dirs[r:] = null.T.to(torch.float32) @ self._omega_t
        lam = torch.zeros(k, dtype=f64)
        lam[:r] = s2.cpu()
        return lam.numpy(), _orthonormal_rows(dirs, dtype).cpu().numpy()


def _orthonormal_rows(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The rows of ``x`` (k×d) orthonormalized in order, in place (CholeskyQR; Householder QR,
    into a new array, if the Gram matrix is numerically singular).

    The rows come close to orthonormal (the top directions ``F V S⁻¹`` and a completion
    orthogonal to them up to round-off): with a Gram matrix within 1e-3 of the identity one
    CholeskyQR round leaves ~1e-15 (its error is ~eps κ²), otherwise a second round follows.
    The top directions keep their span in order; those of tiny variance (whose round-off
    ``S⁻¹`` amplifies) and the completion are made orthonormal to them. With ``dtype`` the
    result is rounded to it (in the last CholeskyQR round, while each chunk is in cache).
    """
    dtype = x.dtype if dtype is None else dtype
    eye = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(3):
        gram = x @ x.T
        off = float((gram - eye).abs().max())
        if off <= 1e-12:
            return x.to(dtype)
        try:
            chol = torch.linalg.cholesky(gram, upper=True)  # x xᵀ = RᵀR
        except RuntimeError:
            q, tri = torch.linalg.qr(x.T)
            sign = torch.where(torch.diagonal(tri) < 0, -1.0, 1.0)
            return (q * sign).T.contiguous().to(dtype)
        # R⁻ᵀ x as GEMMs with the k×k inverse (a k×d triangular solve is ~20x slower), in
        # place by column chunks (no second k×d array), or into the rounded result
        last = off <= 1e-3
        dest = (
            torch.empty(x.shape, dtype=dtype, device=x.device) if last and dtype != x.dtype else x
        )
        inv_t = torch.linalg.solve_triangular(chol, eye, upper=True).T
        tmp = torch.empty(x.shape[0], TOP_CHUNK_ROWS, dtype=x.dtype, device=x.device)
        for i in range(0, x.shape[1], TOP_CHUNK_ROWS):
            cols = x[:, i : i + TOP_CHUNK_ROWS]
            part = tmp[:, : cols.shape[1]]
            torch.mm(inv_t, cols, out=part)
            dest[:, i : i + TOP_CHUNK_ROWS].copy_(part)
        if last:
            return dest
    return x.to(dtype)


class CoordinateMoments:
    """Exact streaming covariance (``ddof = 1``) of a coordinate vector ``z_t`` (k,): O(k²) memory.

    Used for the joint covariance of the probed coordinates of all layers (the cross-layer
    blocks the range projection needs, docs/theory.md §11).
    """

    def __init__(self, k: int, device: torch.device | str = "cpu") -> None:
        self.zsum = torch.zeros(k, dtype=torch.float64, device=device)
        self.zz = torch.zeros(k, k, dtype=torch.float64, device=device)
        self.count = 0

    def update(self, z: torch.Tensor) -> None:
        z = z.to(torch.float64)
        self.zsum.add_(z)
        self.zz.add_(torch.outer(z, z))
        self.count += 1

    def nbytes(self) -> int:
        return 8 * (self.zsum.numel() + self.zz.numel())

    def covariance(self) -> Array:
        n = self.count
        if n < 2:
            raise ValueError(f"the recorder holds {n} snapshot(s): expected >= 2")
        m = self.zsum / n
        cov = (self.zz - n * torch.outer(m, m)) / (n - 1)
        return (0.5 * (cov + cov.T)).cpu().numpy()


class SubspaceMoments:
    """Exact streaming covariance of ``P (w_t − w_0)`` for fixed orthonormal rows ``P`` (k×d).

    Notes
    -----
    Memory O(k d) for ``P`` plus O(d) for the window mean; the k×k covariance is exact
    (``ddof = 1``), so along fixed directions (``directions = "hessian"``) the measured variances
    have no sketch error.
    """

    def __init__(self, reference: torch.Tensor, directions: torch.Tensor) -> None:
        self.reference = reference.detach().to(torch.float64).reshape(-1).clone()
        self.directions = directions.to(torch.float64)
        self.total = torch.zeros_like(self.reference)
        self.moments = CoordinateMoments(directions.shape[0], self.reference.device)

    def update(self, weights: torch.Tensor) -> torch.Tensor:
        """Add one snapshot (d,); returns its coordinates ``P (w_t − w_0)`` (k,)."""
        u = weights.detach().to(torch.float64).reshape(-1) - self.reference
        z = self.directions @ u
        self.total.add_(u)
        self.moments.update(z)
        return z

    @property
    def count(self) -> int:
        return self.moments.count

    @property
    def mean(self) -> torch.Tensor:
        return self.reference + self.total / max(self.count, 1)

    def nbytes(self) -> int:
        return 8 * (self.directions.numel() + 2 * self.reference.numel()) + self.moments.nbytes()

    def covariance(self) -> Array:
        return self.moments.covariance()


def plateau_test(block_means: Array, block_stderrs: Array, *, z: float | None = None) -> bool:
    """The stationarity test of docs/theory.md §11 on the last three blocks of the training loss.

    Parameters
    ----------
    block_means, block_stderrs : (>= 3,) arrays
        Means of consecutive blocks of the recorded training loss and their standard errors
        (batch means: the successive-difference scatter of the :data:`PLATEAU_SUB_BLOCKS`
        sub-block means / sqrt(10), see :class:`PlateauMonitor`).
    z : float, optional
        Allowed change in standard errors (default :data:`PLATEAU_Z`).

    Returns
    -------
    bool
        True iff for both consecutive pairs of the last three blocks the change of the block mean
        is at most ``z`` times its standard error:
        ``|m_{b+1} − m_b| <= z sqrt(se_b² + se_{b+1}²)`` (a loss constant to the last bit, as
        full-batch gradient descent at its minimum, passes).

    Notes
    -----
    For a stationary loss each change is ~N(0, se²): with ``z = 2`` one check passes with
    probability ≈ 0.9 (both pairs), so a stationary run passes at once; a loss still falling
    by more than two standard errors per block fails. :class:`PlateauMonitor` repeats the test
    at every completed sub-block (sliding blocks), together with :func:`log_plateau_test`: on
    its own this test passes on exponential growth (the scatter of growing sub-block means is
    as large as the change of the block means).
    """
    z = PLATEAU_Z if z is None else z
    m = np.asarray(block_means, dtype=float)
    s = np.asarray(block_stderrs, dtype=float)
    if m.shape != s.shape or m.ndim != 1 or m.size < 3:
        raise ValueError(f"plateau_test needs >= 3 blocks, got {m.shape} and {s.shape}")
    m3, s3 = m[-3:], s[-3:]
    for a, b in ((0, 1), (1, 2)):
        if not abs(m3[b] - m3[a]) <= z * math.hypot(s3[a], s3[b]):
            return False
    return True


def log_plateau_test(sub_block_means: Array, *, z: float | None = None) -> bool:
    """:func:`plateau_test` on the logarithm of the loss: it cannot pass on exponential growth.

    Parameters
    ----------
    sub_block_means : (3 · PLATEAU_SUB_BLOCKS,) array
        The sub-block means of the last three blocks, oldest first.
    z : float, optional
        Allowed change in standard errors (default :data:`PLATEAU_Z`).

    Returns
    -------
    bool
        :func:`plateau_test` on the block means of ``log |s_i|`` with the successive-difference
        standard error of the two most recent blocks; True (no verdict) when the sub-block means
        change sign or one is zero (a loss that crosses zero is not growing geometrically).

    Notes
    -----
    Under growth ``s_i ∝ r^i`` (``r > 1``) the log sub-block means rise by ``log r`` per
    sub-block, so consecutive log block means differ by ``10 log r``, while the
    successive-difference standard error of a block mean is ``log r / sqrt(2 · 10)``: the test
    asks ``10 log r <= z sqrt(2) log r / sqrt(20) = z log r / sqrt(10)``, false for any
    ``z < 10 sqrt(10) ≈ 32``. Growth at any rate fails, whatever its level (docs/theory.md §11;
    noise on the logarithms only adds to the scatter when it is comparable with ``log r``). A
    stationary loss has stationary logarithms: the pass
    probability barely changes.
    """
    s = np.asarray(sub_block_means, dtype=float)
    k = PLATEAU_SUB_BLOCKS
    if s.shape != (3 * k,):
        raise ValueError(f"log_plateau_test needs {3 * k} sub-block means, got {s.shape}")
    if np.all(s > 0):
        logs = np.log(s)
    elif np.all(s < 0):
        logs = np.log(-s)
    else:
        return True
    means = logs.reshape(3, k).mean(axis=1)
    return plateau_test(means, np.full(3, _mssd_stderr(logs[k:])), z=z)


@dataclass
class PlateauMonitor:
    """Streaming sliding blocks for :func:`plateau_test` (O(1) memory).

    Parameters
    ----------
    block_records : int
        Loss records per block; a block is :data:`PLATEAU_SUB_BLOCKS` sub-blocks. The test runs
        at every completed sub-block on the last three blocks (30 sub-blocks); the standard error
        of every block mean is the successive-difference scatter of the sub-block means of the
        two most recent blocks / sqrt(10).
    """

    block_records: int

    def __post_init__(self) -> None:
        self.sub_len = max(1, self.block_records // PLATEAU_SUB_BLOCKS)
        self._sub_sum = 0.0
        self._sub_n = 0
        self._subs: deque[float] = deque(maxlen=3 * PLATEAU_SUB_BLOCKS)
        self._n_subs = 0
        self.blocks: list[tuple[float, float]] = []
        self.history: list[tuple[float, float]] = []

    def add(self, loss: float) -> bool:
        """Add one loss record; True when the test passes at a just completed sub-block."""
        self._sub_sum += loss
        self._sub_n += 1
        if self._sub_n < self.sub_len:
            return False
        self._subs.append(self._sub_sum / self._sub_n)
        self._sub_sum, self._sub_n = 0.0, 0
        self._n_subs += 1
        k = PLATEAU_SUB_BLOCKS
        if self._n_subs % k == 0 and len(self.history) < 10_000:
            last = np.asarray(list(self._subs)[-k:])
            self.history.append((float(last.mean()), _mssd_stderr(last)))
        if len(self._subs) < 3 * k:
            return False
        subs = np.asarray(self._subs)
        means = subs.reshape(3, k).mean(axis=1)
        # the scatter of the two most recent blocks serves all three: an early block still in
        # the initial decay must not pass its large scatter off as noise
        ses = np.full(3, _mssd_stderr(subs[k:]))
        self.blocks = list(zip(means.tolist(), ses.tolist(), strict=True))
        return plateau_test(means, ses) and log_plateau_test(subs)


def _mssd_stderr(subs: Array) -> float:
    """Standard error of a block mean of :data:`PLATEAU_SUB_BLOCKS` sub-block means.

    The sub-block scatter is the mean squared successive difference ``Σ (s_{i+1} − s_i)² / (2(n −
    1))`` (von Neumann), which a trend inside the blocks barely inflates (a linear trend adds its
    per-sub-block slope squared / 2), unlike the plain standard deviation: a block still in the
    fast initial decay must not pass for noisy.
    """
    d = np.diff(np.asarray(subs, dtype=float))
    scale = float(np.max(np.abs(d))) if d.size else 0.0
    if not 0 < scale < math.inf:  # constant (0), or non-finite sub-block means
        return scale
    # scaled so that a huge (growing) loss does not overflow when squared
    return float(scale * math.sqrt(np.mean((d / scale) ** 2) / 2.0) / math.sqrt(PLATEAU_SUB_BLOCKS))


class BoundedTrace:
    """``(step, value)`` records, at most ``max_len``: when full, pairs are averaged.

    Memory is O(max_len) whatever the training length; the stride doubles at each halving.
    """

    def __init__(self, max_len: int = 4096) -> None:
        self.max_len = max_len
        self.steps: list[float] = []
        self.values: list[float] = []
        self.stride = 1
        self._pending: list[tuple[float, float]] = []

    def add(self, step: int, value: float) -> None:
        self._pending.append((float(step), float(value)))
        if len(self._pending) < self.stride:
            return
        st, va = zip(*self._pending, strict=True)
        self._pending = []
        self.steps.append(float(np.mean(st)))
        self.values.append(float(np.mean(va)))
        if len(self.values) >= self.max_len:
            self.steps = list(0.5 * (np.asarray(self.steps[0::2]) + np.asarray(self.steps[1::2])))
            self.values = list(
                0.5 * (np.asarray(self.values[0::2]) + np.asarray(self.values[1::2]))
            )
            self.stride *= 2

    def arrays(self) -> tuple[Array, Array]:
        return np.asarray(self.steps), np.asarray(self.values)
