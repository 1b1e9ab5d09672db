"""The gradient-noise covariance projected on the probed directions (docs/theory.md §3, §11)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray

from ._params import SAMPLE_CHUNK, memory_chunk

if TYPE_CHECKING:
    from ._core import FluctuationProbe


__all__ = ["projected_noise"]


Array = NDArray[np.float64]


def projected_noise(
    probe: FluctuationProbe,
    params: dict[str, torch.Tensor],
    p_t: Mapping[int, torch.Tensor],
    big_k: int,
) -> Array:
    """``C_K = Pᵀ C P`` (K, K): the per-sample gradient covariance over the probed directions.

    ``C = (1/N) Σ_n g_n g_nᵀ − ḡ ḡᵀ`` (not divided by S; docs/theory.md §3, §11), the per-sample
    gradients ``g_n`` by ``torch.func.vmap(grad)`` in memory-bounded chunks of samples.
    """

    def sample_loss(p: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor) -> Any:
        out = torch.func.functional_call(probe.model, p, (xs.unsqueeze(0),))
        return probe.loss_fn(out, ys.unsqueeze(0))

    ps_grad = torch.func.vmap(torch.func.grad(sample_loss), in_dims=(None, 0, 0))
    gsum = np.zeros(big_k)
    ggt = np.zeros((big_k, big_k))
    n_chunk = memory_chunk(
        SAMPLE_CHUNK, sum(lay.dim for lay in probe.all_layers) * probe.x.element_size()
    )
    for c in range(0, probe.n_train, n_chunk):
        g = ps_grad(params, probe.x[c : c + n_chunk], probe.y[c : c + n_chunk])
        proj = (
            torch.cat(
                [
                    torch.cat([g[n].reshape(g[n].shape[0], -1) for n in lay.param_names], 1)
                    @ p_t[lay.index].T
                    for lay in probe.layers
                ],
                1,
            )
            .to(torch.float64)
            .cpu()
            .numpy()
        )
        gsum += proj.sum(0)
        ggt += proj.T @ proj
    gbar = gsum / probe.n_train
    c_k = ggt / probe.n_train - np.outer(gbar, gbar)
    c_k = 0.5 * (c_k + c_k.T)
    return c_k
