"""The dense autograd Hessian the probe's HVP tests compare against (importable from every test
folder: pytest puts tests/, the folder of its conftest.py, on sys.path). Import it only from
modules that already need torch."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch


def dense_hessian(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    decay: float | Mapping[str, float] = 0.0,
) -> np.ndarray:
    """Hessian of ``loss_fn(model(x), y) + Σ_n λ_n/2 ||w_n||²`` over every named parameter,
    flattened in ``model.named_parameters()`` order; ``decay`` is one λ for all or one per name."""
    named = list(model.named_parameters())
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    lam = dict(decay) if isinstance(decay, Mapping) else dict.fromkeys(names, float(decay))
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        out = torch.func.functional_call(model, params, (x,))
        reg = sum(0.5 * lam.get(n, 0.0) * (params[n] ** 2).sum() for n in names)
        return loss_fn(out, y) + reg

    return torch.autograd.functional.hessian(loss_of, theta0, vectorize=True).numpy()
