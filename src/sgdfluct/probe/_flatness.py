"""Loss profiles along directions and the Feng–Tu flatness (docs/theory.md §9, §11).

The flatness of a direction p is the width of the interval of offsets s around 0 on which
``L(w̄ + s p) <= factor · L_0``: a grid widened by doubling until both crossings are bracketed,
then bisections of each crossing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray

from ._params import PROFILE_CHUNK, memory_chunk, unflatten_layer
from ._select import Layer

if TYPE_CHECKING:
    from ._core import FluctuationProbe


__all__ = [
    "BISECTION_STEPS",
    "CALIBRATED_BISECTIONS",
    "MAX_DOUBLINGS",
    "PROFILE_POINTS",
    "flatness",
    "profiles",
]


Array = NDArray[np.float64]

#: grid points of each stored loss profile (odd: the grid contains s = 0)
PROFILE_POINTS = 41
#: bisection steps refining each flatness crossing (grid spacing / 2^30)
BISECTION_STEPS = 30
#: bisections of the calibrated estimate's flatness: the bracket is 1/20 of the grid's half-range,
#: so 12 halvings fix F to ~1e-5 of it, far below the ~1e-2 noise of log σ (each one costs a
#: full-data loss evaluation per direction and side)
CALIBRATED_BISECTIONS = 12
#: doublings of a profile's range before a direction is declared flat (flatness unbounded)
MAX_DOUBLINGS = 40


def profiles(
    probe: FluctuationProbe,
    params: Mapping[str, torch.Tensor],
    lay: Layer,
    p: torch.Tensor,
    s: torch.Tensor,
) -> Array:
    """``L(w̄ + s_ij p_i)`` for directions p (k, d_l) and offsets s (k, m); returns (k, m)."""
    k, m = s.shape
    rows = torch.arange(k, device=p.device).repeat_interleave(m)
    s_flat = s.reshape(-1)

    def at(delta: torch.Tensor) -> torch.Tensor:
        moved = dict(params)
        for n, v in unflatten_layer(delta, lay).items():
            moved[n] = params[n] + v
        return probe._full_loss(moved)

    out = []
    chunk = memory_chunk(PROFILE_CHUNK, lay.dim * p.element_size())
    with torch.no_grad():
        for c in range(0, k * m, chunk):  # the (chunk, d_l) offsets, one chunk at a time
            deltas = s_flat[c : c + chunk, None] * p[rows[c : c + chunk]]
            out.append(torch.func.vmap(at)(deltas))
    return torch.cat(out).reshape(k, m).to(torch.float64).cpu().numpy()


def flatness(
    probe: FluctuationProbe,
    params: Mapping[str, torch.Tensor],
    lay: Layer,
    p: torch.Tensor,
    loss0: float,
    curv: Array,
    var: Array,
    bisections: int = BISECTION_STEPS,
) -> tuple[Array, Array, Array]:
    """Flatness (k,), profile offsets (k, m) and profiles (k, m) along the rows of p."""
    k = p.shape[0]
    level = probe.flatness_factor * loss0
    grid = np.linspace(-1.0, 1.0, PROFILE_POINTS)
    mid = PROFILE_POINTS // 2
    # initial half-range: 1.5 x the quadratic crossing (slope ignored), else 10 sigma
    quad = np.sqrt(2.0 * (probe.flatness_factor - 1.0) * loss0 / np.where(curv > 0, curv, 1.0))
    scale = np.where(curv > 0, 1.5 * quad, 10.0 * np.sqrt(np.maximum(var, 1e-300)))
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    prof = np.full((k, PROFILE_POINTS), np.nan)
    todo = np.arange(k)
    for _ in range(MAX_DOUBLINGS):
        if todo.size == 0:
            break
        s = torch.as_tensor(
            scale[todo, None] * grid[None, :], dtype=probe.x.dtype, device=probe.x.device
        )
        vals = profiles(probe, params, lay, p[todo], s)
        prof[todo] = vals
        above = vals > level
        ok = above[:, :mid].any(1) & above[:, mid + 1 :].any(1)
        scale[todo[~ok]] *= 2.0
        todo = todo[~ok]
    flat = np.full(k, np.nan)
    good = np.setdiff1d(np.arange(k), todo)
    if good.size:
        lo_in = np.zeros(good.size)
        hi_in = np.zeros(good.size)
        lo_out = np.zeros(good.size)
        hi_out = np.zeros(good.size)
        for j, i in enumerate(good):
            above = prof[i] > level
            r = mid + 1 + int(np.argmax(above[mid + 1 :]))
            left = mid - 1 - int(np.argmax(above[:mid][::-1]))
            hi_in[j], hi_out[j] = grid[r - 1] * scale[i], grid[r] * scale[i]
            lo_in[j], lo_out[j] = grid[left + 1] * scale[i], grid[left] * scale[i]
        pg = p[good]
        for _ in range(bisections):
            mids = np.stack([0.5 * (hi_in + hi_out), 0.5 * (lo_in + lo_out)], 1)
            vals = profiles(
                probe,
                params,
                lay,
                pg,
                torch.as_tensor(mids, dtype=probe.x.dtype, device=probe.x.device),
            )
            up = vals[:, 0] > level
            hi_out = np.where(up, mids[:, 0], hi_out)
            hi_in = np.where(up, hi_in, mids[:, 0])
            up = vals[:, 1] > level
            lo_out = np.where(up, mids[:, 1], lo_out)
            lo_in = np.where(up, lo_in, mids[:, 1])
        flat[good] = 0.5 * (hi_in + hi_out) - 0.5 * (lo_in + lo_out)
    return flat, scale[:, None] * grid[None, :], prof
