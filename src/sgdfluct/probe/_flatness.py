"""Loss profiles along directions and the Feng–Tu flatness (docs/theory.md §9, §11).

The flatness of a direction p is the width of the interval of offsets s around 0 on which
``L(w̄ + s p) <= factor · L_0``: a grid widened by doubling until both crossings are bracketed,
then each crossing refined (:func:`refine_crossings`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    "CROSSING_METHOD",
    "ITP_KAPPA2",
    "ITP_N0",
    "MAX_DOUBLINGS",
    "PROFILE_POINTS",
    "flatness",
    "profiles",
    "refine_crossings",
]


Array = NDArray[np.float64]

#: grid points of each stored loss profile (odd: the grid contains s = 0)
PROFILE_POINTS = 41
#: resolution of each flatness crossing: the width of this many bisections (grid spacing / 2^30)
BISECTION_STEPS = 30
#: bisections of the calibrated estimate's flatness: the bracket is 1/20 of the grid's half-range,
#: so 12 halvings fix F to ~1e-5 of it, far below the ~1e-2 noise of log σ (each round of the
#: refinement costs a full-data loss evaluation per direction and side)
CALIBRATED_BISECTIONS = 12
#: how each crossing is refined to the resolution of its bisections: "itp" (interpolate,
#: truncate, project, :func:`refine_crossings`: a few full-data loss evaluations per crossing,
#: never more than the bisections + ITP_N0) or "bisection" (the reference; one per halving)
CROSSING_METHOD = "itp"
#: the ITP method's slack over the bisection count and its truncation exponent (the defaults of
#: Oliveira & Takahashi, ACM TOMS 47, 2021)
ITP_N0 = 1
ITP_KAPPA2 = 2.0
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
    method: str | None = None,
) -> tuple[Array, Array, Array]:
    """Flatness (k,), profile offsets (k, m) and profiles (k, m) along the rows of p.

    Crossings refined by ``method`` (default :data:`CROSSING_METHOD`) to the resolution of
    ``bisections`` halvings of the grid cell (:func:`refine_crossings`).
    """
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
        # each direction's two crossings: (inside, outside) offsets and their L - level
        inside = np.zeros((good.size, 2))
        outside = np.zeros((good.size, 2))
        f_in = np.zeros((good.size, 2))
        f_out = np.zeros((good.size, 2))
        for j, i in enumerate(good):
            above = prof[i] > level
            r = mid + 1 + int(np.argmax(above[mid + 1 :]))
            left = mid - 1 - int(np.argmax(above[:mid][::-1]))
            inside[j] = grid[r - 1] * scale[i], grid[left + 1] * scale[i]
            outside[j] = grid[r] * scale[i], grid[left] * scale[i]
            f_in[j] = prof[i, r - 1] - level, prof[i, left + 1] - level
            f_out[j] = prof[i, r] - level, prof[i, left] - level
        pg = p[good]

        def evaluate(rows: NDArray[np.intp], offsets: Array) -> Array:
            s = torch.as_tensor(offsets[:, None], dtype=probe.x.dtype, device=probe.x.device)
            return profiles(probe, params, lay, pg[torch.as_tensor(rows)], s)[:, 0] - level

        rows = np.repeat(np.arange(good.size), 2)
        cross = refine_crossings(
            lambda idx, s: evaluate(rows[idx], s),
            inside.reshape(-1),
            outside.reshape(-1),
            f_in.reshape(-1),
            f_out.reshape(-1),
            bisections,
            method=CROSSING_METHOD if method is None else method,
        ).reshape(good.size, 2)
        flat[good] = cross[:, 0] - cross[:, 1]
    return flat, scale[:, None] * grid[None, :], prof


def refine_crossings(
    evaluate: Callable[[NDArray[np.intp], Array], Array],
    inside: Array,
    outside: Array,
    f_inside: Array,
    f_outside: Array,
    bisections: int,
    *,
    method: str = "itp",
) -> Array:
    """Crossings of ``f(s) = 0`` in brackets ``[inside, outside]`` to the width of ``bisections``.

    Parameters
    ----------
    evaluate : callable ``(indices (n,), offsets (n,)) -> f (n,)``
        ``f`` of the brackets ``indices`` at the given offsets (one vectorized call per round).
    inside, outside : (m,) arrays
        Bracket ends with ``f(inside) <= 0 < f(outside)`` (either order on the line).
    f_inside, f_outside : (m,) arrays
        ``f`` at them.
    bisections : int
        The resolution: each bracket is refined until its width is at most the initial width
        ``/ 2**bisections`` (what ``bisections`` halvings give).
    method : {"itp", "bisection"}
        ``"bisection"``: exactly ``bisections`` halvings (the reference). ``"itp"``: the ITP
        method (interpolate, truncate, project; Oliveira & Takahashi, ACM TOMS 47, 2021),
        superlinear on smooth ``f`` and never more than ``bisections + 1`` rounds; a bracket
        stops at the target width.

    Returns
    -------
    (m,) array
        The midpoint of each final bracket: within half the target width of a crossing of
        ``f`` in the initial bracket (the same guarantee for both methods). A point with
        ``f = 0`` counts as inside, as in the bisection.

    Notes
    -----
    With ``a < b`` the bracket, ``ε`` half the target width, ``n_max = bisections + n_0`` and
    round ``j``: the regula-falsi point ``x_f = (y_b a − y_a b) / (y_b − y_a)`` is moved towards
    the midpoint ``x_½`` by ``δ = κ_1 (b − a)^κ_2`` and projected into the ball of radius
    ``r = ε 2^(n_max − j) − (b − a)/2`` around ``x_½``; the projection bounds the rounds by
    ``n_max``, the truncation makes the bracket close from both sides on smooth ``f``
    (``κ_1 = 0.2 / (b − a)_0``, ``κ_2 = 2``, ``n_0 = 1``, the authors' defaults). For the
    flatness the loss profile is smooth at its crossings, so a few rounds replace the 30 (12)
    halvings of the bisection: one full-data loss evaluation a round per crossing.
    """
    inside, outside = inside.astype(float).copy(), outside.astype(float).copy()
    if method == "bisection":
        for _ in range(bisections):
            mids = 0.5 * (inside + outside)
            up = evaluate(np.arange(inside.size), mids) > 0
            outside = np.where(up, mids, outside)
            inside = np.where(up, inside, mids)
        return 0.5 * (inside + outside)
    if method != "itp":
        raise ValueError(f"method = {method!r}: expected 'itp' or 'bisection'")
    f_in, f_out = f_inside.astype(float).copy(), f_outside.astype(float).copy()
    width0 = np.abs(outside - inside)
    # half the target width, and two ulps of the offsets: in exact arithmetic ITP ends at
    # <= 2 eps after n_max rounds; offsets rounded to their ulps may leave it a few ulps above
    ulp = np.spacing(np.maximum(np.abs(inside), np.abs(outside)))
    eps = 0.5 * width0 * 2.0**-bisections + 2.0 * ulp
    kappa1 = 0.2 / np.where(width0 > 0, width0, 1.0)
    n_max = bisections + ITP_N0
    active = np.flatnonzero(width0 > 2 * eps)
    for j in range(n_max + 1):
        if active.size == 0:
            break
        left = inside[active] < outside[active]  # is inside the lower end a?
        a = np.where(left, inside[active], outside[active])
        b = np.where(left, outside[active], inside[active])
        ya = np.where(left, f_in[active], f_out[active])
        yb = np.where(left, f_out[active], f_in[active])
        half = 0.5 * (a + b)
        r = eps[active] * 2.0 ** (n_max - j) - 0.5 * (b - a)
        delta = kappa1[active] * (b - a) ** ITP_KAPPA2
        with np.errstate(divide="ignore", invalid="ignore"):
            x_f = (yb * a - ya * b) / (yb - ya)
        x_f = np.where(np.isfinite(x_f), x_f, half)
        sigma = np.sign(half - x_f)
        x_t = np.where(delta <= np.abs(half - x_f), x_f + sigma * delta, half)
        x = np.where(np.abs(x_t - half) <= r, x_t, half - sigma * r)
        x = np.clip(x, a, b)
        y = evaluate(active, x)
        up = y > 0
        out_idx, in_idx = active[up], active[~up]
        outside[out_idx], f_out[out_idx] = x[up], y[up]
        inside[in_idx], f_in[in_idx] = x[~up], y[~up]
        active = active[np.abs(outside[active] - inside[active]) > 2 * eps[active]]
    return 0.5 * (inside + outside)
