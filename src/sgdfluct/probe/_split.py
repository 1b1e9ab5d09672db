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
    """

    def __init__(
        self, directions: Array, selection_eigenvalues: Array | None, reference: torch.Tensor
    ) -> None:
        ref = reference.detach().to(torch.float64).reshape(-1).clone()
        self.directions = np.ascontiguousarray(directions, dtype=float)
        self.selection_eigenvalues = (
            None if selection_eigenvalues is None else np.asarray(selection_eigenvalues, float)
        )
        self._p = torch.as_tensor(self.directions, dtype=torch.float64, device=ref.device)
        self._ref = ref
        self._p_ref: torch.Tensor | None = None  # P w_ref, for extend()
        self.moments = SeriesMoments(self.directions.shape[0])

    def update(self, weights: torch.Tensor) -> None:
        """Add one snapshot (d,)."""
        u = weights.detach().to(torch.float64).reshape(-1) - self._ref
        self.moments.update((self._p @ u).cpu().numpy())

    def extend(self, rows: torch.Tensor) -> None:
        """Add snapshots (b, d) in order: ``P w − P w_ref``, one GEMM that reads ``P`` once
        (give float64 rows: ``probe._recording.flush`` converts a batch once for both sets)."""
        rows = rows.detach().reshape(-1, self._ref.numel()).to(torch.float64)
        if self._p_ref is None:
            self._p_ref = self._p @ self._ref
        self.moments.extend((rows @ self._p.T - self._p_ref).cpu().numpy())

    @property
    def count(self) -> int:
        return self.moments.n

    def nbytes(self) -> int:
        """Bytes held: the directions, the reference and the streaming moments (bounded)."""
        return 8 * (self._p.numel() + self._ref.numel()) + self.moments.nbytes()
