"""The probe's calibrated IVFR estimate: directions fixed at mid-window, second-half variances.

docs/theory.md §9 ("Estimating ψ") and §11. At the middle of the recording window the directions
are frozen — the top-k PCA of the first half (the streaming sketch at that moment), or the Hessian
eigenvectors fixed at the window start — and every later snapshot is projected on them. The
projected series (k numbers a record, kept as streaming moments of bounded memory) give
selection-free variances with AR(1) errors, a drift test per direction and the
errors-in-variables fit of :mod:`sgdfluct.ivfr_estimator`, the same fit that ``sgdfluct run``
uses.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from sgdfluct.ivfr_estimator import SeriesMoments

__all__ = ["SplitRecorder"]

Array = NDArray[np.float64]

#: columns of a compact layer's float32 directions converted to float64 at once
_CHUNK = 2**13


class SplitRecorder:
    """Projections of one layer's snapshots on directions frozen at mid-window.

    Parameters
    ----------
    directions : (k, d) array
        Orthonormal rows.
    selection_eigenvalues : (k,) array or None
        The directions' PCA eigenvalues on the first half (``None`` for directions not chosen by
        variance, e.g. Hessian eigenvectors); used by
        :func:`sgdfluct.ivfr_estimator.out_of_sample_stable`.
    reference : (d,) tensor
        Subtracted before projecting (round-off only; the statistics are about the series mean).
    origin : (d,) tensor, optional
        A compact sketch's reference ``w_0`` (``NystromSketch.compact``): the recorder then
        keeps its directions in float32 (``4 k`` bytes a parameter instead of ``8 k + 8``) and
        takes the sketch's float32 deviations ``u = w − w_0``: ``P u`` in float32
        (:meth:`extend_centered`, or projected in the sketch's own pass over a snapshot batch,
        :meth:`extend_projected`), less ``P (w_ref − w_0)`` (float64, once). Without it (small
        layers) the directions and projections are float64, bitwise as before.

    Notes
    -----
    The float32 projection ``P u`` is a d-long float32 dot product: its round-off ``δz`` is
    ~1e-7 of ``|u|`` per record and varies from record to record, so a projected variance
    ``σ²`` moves by at most ~``2 σ δz``, far below its standard error; rounding the directions to
    float32 moves them by ~1e-7 (they stay orthonormal to ~1e-7, and :attr:`directions` are the
    rows actually projected on). ``tests/probe/test_sketch_precision.py`` holds the float32
    split statistics to the float64 ones on a prescribed covariance (variances within ~5e-8,
    relative).
    """

    def __init__(
        self,
        directions: Array,
        selection_eigenvalues: Array | None,
        reference: torch.Tensor,
        origin: torch.Tensor | None = None,
    ) -> None:
        ref = reference.detach().to(torch.float64).reshape(-1).clone()
        self.selection_eigenvalues = (
            None if selection_eigenvalues is None else np.asarray(selection_eigenvalues, float)
        )
        self._origin = origin
        self._ref: torch.Tensor | None
        self._dirs: Array | None
        if origin is None:
            self._dirs = np.ascontiguousarray(directions, dtype=float)
            self._p = torch.as_tensor(self._dirs, dtype=torch.float64, device=ref.device)
            self._ref = ref
            self._p_ref: torch.Tensor | None = None  # P w_ref, for extend()
        else:
            self._dirs = None
            p32 = torch.as_tensor(np.asarray(directions), device=ref.device).to(torch.float32)
            self._p = p32.contiguous()
            self._ref = None
            shift = ref.sub_(origin.detach().reshape(-1))  # w_ref − w_0 in float64
            self._p_ref = torch.zeros(self._p.shape[0], dtype=torch.float64, device=ref.device)
            for i in range(0, shift.numel(), _CHUNK):  # P (w_ref − w_0), float64 by chunks
                part = self._p[:, i : i + _CHUNK].to(torch.float64)
                self._p_ref.addmv_(part, shift[i : i + _CHUNK])
        self.moments = SeriesMoments(int(self._p.shape[0]))

    @property
    def directions(self) -> Array:
        """The frozen rows (k, d) in float64 (a compact layer's: its float32 rows, converted)."""
        if self._dirs is not None:
            return self._dirs
        return self._p.to(torch.float64).cpu().numpy()

    def update(self, weights: torch.Tensor) -> None:
        """Add one snapshot (d,)."""
        if self._origin is not None:
            u = torch.empty(1, self._origin.numel(), dtype=torch.float32, device=self._p.device)
            torch.sub(weights.detach().reshape(1, -1), self._origin.reshape(1, -1), out=u)
            self.extend_centered(u)
            return
        assert self._ref is not None
        u = weights.detach().to(torch.float64).reshape(-1) - self._ref
        self.moments.update((self._p @ u).cpu().numpy())

    def extend(self, rows: torch.Tensor) -> None:
        """Add snapshots (b, d) in order: ``P w − P w_ref``, one GEMM that reads ``P`` once
        (give float64 rows to a float64 recorder)."""
        if self._origin is not None:
            u = torch.empty(
                rows.shape[0], self._origin.numel(), dtype=torch.float32, device=self._p.device
            )
            torch.sub(rows.detach().reshape(u.shape), self._origin.reshape(1, -1), out=u)
            self.extend_centered(u)
            return
        assert self._ref is not None
        rows = rows.detach().reshape(-1, self._ref.numel()).to(torch.float64)
        if self._p_ref is None:
            self._p_ref = self._p @ self._ref
        self.moments.extend((rows @ self._p.T - self._p_ref).cpu().numpy())

    def extend_centered(self, deviations: torch.Tensor) -> None:
        """Add a compact layer's float32 deviations ``w − w_0`` (b, d) from the sketch's
        reference ``origin``, in order."""
        self.extend_projected(deviations @ self._p.T)

    @property
    def rows32(self) -> torch.Tensor:
        """A compact layer's float32 directions (k, d): ``NystromSketch.extend_centered``
        projects a batch on them in its own pass (:meth:`extend_projected`)."""
        assert self._origin is not None
        return self._p

    def extend_projected(self, proj: torch.Tensor) -> None:
        """Add a compact layer's projections ``P (w − w_0)`` (b, k, float32), in order."""
        assert self._origin is not None and self._p_ref is not None
        self.moments.extend((proj.to(torch.float64) - self._p_ref).cpu().numpy())

    @property
    def count(self) -> int:
        return self.moments.n

    def nbytes(self) -> int:
        """Bytes held: the directions, the reference and the streaming moments (bounded); a
        compact layer's recorder shares the sketch's reference."""
        ref = 0 if self._ref is None else 8 * self._ref.numel()
        return self._p.numel() * self._p.element_size() + ref + self.moments.nbytes()
