"""Curvature of the probed loss by Hessian-vector products (``torch.func.jvp`` of ``grad``).

H is the Hessian of the full training loss with its weight-decay term (docs/theory.md §11):
batched HVPs, a layer's block as a matrix-free operator (:func:`layer_matmat`, also behind the
trace and spectral density of ``probe._spectrum``), the top eigenvectors of a layer's block (block
Krylov), λ_max of the whole model (Lanczos), and the Hessian projected on the probed directions of
all layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray

from ._params import HVP_CHUNK, unflatten_layer
from ._select import Layer

if TYPE_CHECKING:
    from ._core import FluctuationProbe


__all__ = [
    "hvp_batch",
    "joint_projected_hessian",
    "lambda_max",
    "lanczos_layer",
    "layer_matmat",
    "layer_tangents",
]


Array = NDArray[np.float64]


def hvp_batch(
    probe: FluctuationProbe,
    params: Mapping[str, torch.Tensor],
    tangents: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    tangents = {n: tangents[n] for n in params}  # jvp needs the primals' key order
    if not torch.is_floating_point(probe.y):  # labels (cross-entropy): no tangent to carry
        grad_fn = torch.func.grad(probe._full_loss)

        def one(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return torch.func.jvp(grad_fn, (dict(params),), (t,))[1]

        return torch.func.vmap(one)(dict(tangents))
    # a real target enters as a primal with a materialized zero tangent: torch's forward-mode
    # formula of mse_loss_backward writes into the target's tangent, which is an immutable
    # ZeroTensor for a constant ("ZeroTensors are immutable" with F.mse_loss); the zero
    # tangent adds exact zeros, so the product is the same Hessian-vector product
    grad_y = torch.func.grad(probe._full_loss, argnums=0)
    zero = torch.zeros_like(probe.y)

    def one_y(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return torch.func.jvp(grad_y, (dict(params), probe.y), (t, zero))[1]

    return torch.func.vmap(one_y)(dict(tangents))


def layer_tangents(
    probe: FluctuationProbe, params: Mapping[str, torch.Tensor], lay: Layer, vecs: torch.Tensor
) -> dict[str, torch.Tensor]:
    b = vecs.shape[0]
    tangents = {
        n: torch.zeros((b, *p.shape), dtype=p.dtype, device=p.device) for n, p in params.items()
    }
    tangents.update(unflatten_layer(vecs.to(probe.x.dtype), lay))
    return tangents


def layer_matmat(
    probe: FluctuationProbe, params: Mapping[str, torch.Tensor], lay: Layer
) -> Callable[[Array], Array]:
    """``V (d_l, b) -> H_ll V (d_l, b)``: the layer's Hessian block on columns (float64 numpy).

    ``b`` HVPs in chunks of :data:`HVP_CHUNK` (one vectorized call each); the matrix-free
    operator of the layer Lanczos and of the trace and spectral density (``probe._spectrum``).
    """

    def matmat(v: Array) -> Array:
        vt = torch.as_tensor(np.asarray(v).T, dtype=probe.x.dtype, device=probe.x.device)
        out = []
        for c in range(0, vt.shape[0], HVP_CHUNK):
            hv = hvp_batch(probe, params, layer_tangents(probe, params, lay, vt[c : c + HVP_CHUNK]))
            out.append(torch.cat([hv[n].reshape(hv[n].shape[0], -1) for n in lay.param_names], 1))
        return torch.cat(out).T.to(torch.float64).cpu().numpy()

    return matmat


def lanczos_layer(
    probe: FluctuationProbe, params: Mapping[str, torch.Tensor], lay: Layer, k: int
) -> Array:
    """Top-k eigenvectors (k, d_l) of the layer's Hessian block (block Krylov on HVPs).

    A block method (:func:`sgdfluct._eigs.top_eigenpairs`) because single-vector Lanczos
    misses copies of repeated eigenvalues: an MSE output layer repeats every eigenvalue of its
    activation Gram matrix ``N_o`` times (block size ``max(2k, k + 10, N_o)``).
    """
    from sgdfluct._eigs import top_eigenpairs

    d = lay.dim
    matmat = layer_matmat(probe, params, lay)
    n_out = 1
    if lay.param_names:
        first = probe._params()[lay.param_names[0]]
        n_out = int(first.shape[0]) if first.ndim >= 1 else 1
    block = min(d, max(2 * k, k + 10, n_out))
    tol = 1e-4 if probe.x.dtype == torch.float32 else 1e-8  # residuals at HVP round-off
    _, evecs = top_eigenpairs(matmat, d, k, rng=probe.seed, block=block, tol=tol, max_restarts=50)
    return evecs.T.copy()


def lambda_max(probe: FluctuationProbe, params: Mapping[str, torch.Tensor]) -> float:
    """Largest Hessian eigenvalue (all parameters), by Lanczos (dense for small models)."""
    import scipy.sparse.linalg as spla

    names = [n for lay in probe.all_layers for n in lay.param_names]
    shapes = [params[n].shape for n in names]
    sizes = [math.prod(s) for s in shapes]
    d = sum(sizes)

    def matmat(v: Array) -> Array:
        vt = torch.as_tensor(np.asarray(v).T, dtype=probe.x.dtype, device=probe.x.device)
        out = []
        for c in range(0, vt.shape[0], HVP_CHUNK):
            chunk = vt[c : c + HVP_CHUNK]
            parts = torch.split(chunk, sizes, dim=1)
            tangents = {
                n: p.reshape(chunk.shape[0], *s)
                for n, p, s in zip(names, parts, shapes, strict=True)
            }
            for n, p in params.items():
                tangents.setdefault(
                    n, torch.zeros((chunk.shape[0], *p.shape), dtype=p.dtype, device=p.device)
                )
            hv = hvp_batch(probe, params, tangents)
            out.append(torch.cat([hv[n].reshape(chunk.shape[0], -1) for n in names], 1))
        return torch.cat(out).T.to(torch.float64).cpu().numpy()

    if d <= 64:
        hmat = matmat(np.eye(d))
        return float(np.linalg.eigvalsh(0.5 * (hmat + hmat.T))[-1])
    op = spla.LinearOperator(
        (d, d), matvec=lambda v: matmat(v[:, None])[:, 0], matmat=matmat, dtype=float
    )
    v0 = np.random.default_rng(probe.seed + 1).standard_normal(d)
    return float(spla.eigsh(op, k=1, which="LA", v0=v0, tol=1e-4, ncv=min(d, 24))[0][0])


def joint_projected_hessian(
    probe: FluctuationProbe,
    params: Mapping[str, torch.Tensor],
    p_t: Mapping[int, torch.Tensor],
    offsets: Array,
) -> Array:
    """``H_K = Pᵀ H P`` (K, K) over the probed directions of all layers, from HVPs (symmetrized).

    ``p_t[layer.index]`` holds a layer's directions (k_l, d_l) as rows; ``offsets`` (n_layers + 1,)
    the first row of each layer's block.
    """
    big_k = int(offsets[-1])
    h_k = np.zeros((big_k, big_k))
    for a, lay in enumerate(probe.layers):
        pa = p_t[lay.index]
        for c in range(0, pa.shape[0], HVP_CHUNK):
            chunk = pa[c : c + HVP_CHUNK]
            hv = hvp_batch(probe, params, layer_tangents(probe, params, lay, chunk))
            for b, lb in enumerate(probe.layers):
                flat = torch.cat([hv[n].reshape(chunk.shape[0], -1) for n in lb.param_names], 1)
                rows = slice(offsets[a] + c, offsets[a] + c + chunk.shape[0])
                h_k[rows, offsets[b] : offsets[b + 1]] = (
                    (flat @ p_t[lb.index].T).to(torch.float64).cpu().numpy()
                )
    h_k = 0.5 * (h_k + h_k.T)
    return h_k
