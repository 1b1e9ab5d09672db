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


__all__ = ["NOISE_PATH", "projected_noise"]


Array = NDArray[np.float64]

#: how the per-sample gradients are projected: "affine" (every probed layer an affine layer of a
#: ``torch.nn.Sequential``, ``probe._flatness.LossAlong``: ``g_n · p = δ_nᵀ Z_p[n]`` with
#: ``δ_n = ∂ℓ_n/∂z_n`` the per-sample gradient of the loss in the layer's output, by
#: ``vmap(grad)`` of the modules after the layer; else the full path) or "grad" (the reference:
#: ``vmap(grad)`` of the whole model per sample, every parameter's gradient projected)
NOISE_PATH = "affine"


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

    proj_all = _affine_projections(probe, params, p_t) if NOISE_PATH == "affine" else None
    if proj_all is not None:
        proj64 = proj_all.to(torch.float64).cpu().numpy()
        gbar = proj64.sum(0) / probe.n_train
        c_k = proj64.T @ proj64 / probe.n_train - np.outer(gbar, gbar)
        return np.asarray(0.5 * (c_k + c_k.T))

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


def _affine_projections(
    probe: FluctuationProbe, params: dict[str, torch.Tensor], p_t: Mapping[int, torch.Tensor]
) -> torch.Tensor | None:
    """``g_n · p_i`` (N, K) over the probed directions of all layers on the affine path, or None
    when a probed layer has no affine site (:data:`NOISE_PATH`).

    With ``z_n`` the layer's output on sample n, ``g_n · p = δ_nᵀ Z_p[n]`` where ``Z_p`` is the
    output's derivative along p (``LossAlong``) and ``δ_n`` the gradient of the per-sample loss
    (``loss_fn`` on a batch of one, as in the full path) in ``z_n``.
    """
    from ._flatness import LossAlong

    alongs = [LossAlong(probe, params, lay, p_t[lay.index]) for lay in probe.layers]
    if any(a.site is None for a in alongs):
        return None
    cols = []
    with torch.no_grad():
        for along in alongs:

            def sample_loss(z: torch.Tensor, ys: torch.Tensor, _a: Any = along) -> Any:
                return probe.loss_fn(_a.tail_out(z.unsqueeze(0)), ys.unsqueeze(0))

            per_sample = torch.func.vmap(torch.func.grad(sample_loss))
            n_chunk = memory_chunk(SAMPLE_CHUNK, 4 * along.z0[0].numel() * along.z0.element_size())
            delta = torch.cat(
                [
                    per_sample(along.z0[c : c + n_chunk], probe.y[c : c + n_chunk])
                    for c in range(0, probe.n_train, n_chunk)
                ]
            ).reshape(probe.n_train, -1)
            k = along.p.shape[0]
            cols.append(
                torch.stack(
                    [(along._zp(i).reshape(probe.n_train, -1) * delta).sum(1) for i in range(k)],
                    1,
                )
            )
    return torch.cat(cols, 1)
