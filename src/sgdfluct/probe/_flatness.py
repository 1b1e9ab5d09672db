"""Loss profiles along directions and the Feng–Tu flatness (docs/theory.md §9, §11).

The flatness of a direction p is the width of the interval of offsets s around 0 on which
``L(w̄ + s p) <= factor · L_0``: a grid widened by doubling until both crossings are bracketed,
then each crossing refined (:func:`refine_crossings`).

Cost (issue 19): the grid is searched outwards from 0 only until the level is crossed on each
side (:data:`GRID_METHOD`; the same grid cells as evaluating every point), and when the layer is an
affine module (``Linear``, ``Conv``) of a top-level ``torch.nn.Sequential`` its input is cached
and its output is linear in the offset, ``Z(s) = Z_0 + s Z_p``, so that each offset runs only the
modules after it (:data:`LOSS_PATH`, :class:`LossAlong`; other models run the whole model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray

from ._params import HVP_CHUNK, PROFILE_CHUNK, memory_chunk, unflatten_layer
from ._select import Layer

if TYPE_CHECKING:
    from ._core import FluctuationProbe


__all__ = [
    "BISECTION_STEPS",
    "CALIBRATED_BISECTIONS",
    "CROSSING_METHOD",
    "GRID_METHOD",
    "ITP_KAPPA2",
    "ITP_N0",
    "LOSS_PATH",
    "MAX_DOUBLINGS",
    "OUTWARD_POINTS",
    "PROFILE_POINTS",
    "ZP_CACHE_BYTES",
    "LossAlong",
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
#: how the grid stage finds the first grid point above the level on either side of 0: "outward"
#: (from 0 outwards, :data:`OUTWARD_POINTS` points a side a round, stopping at the first point
#: above the level; after a doubling, the points of the new range that are points of the old one
#: seen below the level are not evaluated again; the stored profiles are completed on the final
#: grid afterwards) or "full" (every grid point at every range; the reference). Both bracket the
#: same grid cells and give the same flatness: bitwise on the full LOSS_PATH (each evaluation is
#: the same vmapped forward pass); on the affine path up to the round-off of batching the offsets
#: differently (bitwise in tests/probe/test_profile_paths.py); in either case a grid value lying
#: within that round-off (or an ulp of its offset between two ranges) of the level could move
#: the bracket to the neighbouring cell, whose crossing is that grid point within the round-off
GRID_METHOD = "outward"
#: grid points a side evaluated in one round of the outward search (at most this many - 1 are
#: evaluated beyond the first point above the level)
OUTWARD_POINTS = 2
#: how ``L(w̄ + s p)`` is evaluated: "affine" (:class:`LossAlong`: an affine layer of a top-level
#: ``torch.nn.Sequential`` has its input cached and its output ``Z_0 + s Z_p``; only the modules
#: after it run per offset, and the weight-decay term is the quadratic in s) where the model
#: allows it, else "full"; "full": the whole model through ``torch.func.functional_call`` on
#: the moved parameters (the reference). The two differ by the float round-off of the loss
LOSS_PATH = "affine"
#: the affine path keeps each direction's ``Z_p`` (N × the layer's outputs) while they fit this
#: many bytes together, else recomputes them per call
ZP_CACHE_BYTES = 512 * 2**20
#: module types whose output is affine in their own parameters (weight, bias), as computed here
_AFFINE = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


#: module types that act on each sample of a batch alone (in eval mode): the offsets of one
#: chunk then run through the modules after an affine layer as one batch of chunk·N samples
_PER_SAMPLE = (
    *_AFFINE,
    torch.nn.Identity,
    torch.nn.ReLU,
    torch.nn.LeakyReLU,
    torch.nn.ELU,
    torch.nn.GELU,
    torch.nn.SiLU,
    torch.nn.Tanh,
    torch.nn.Sigmoid,
    torch.nn.Softplus,
    torch.nn.Dropout,
)


def _acts_per_sample(module: torch.nn.Module) -> bool:
    if module._forward_hooks or module._forward_pre_hooks:
        return False
    if type(module) is torch.nn.Flatten:
        return module.start_dim >= 1
    if type(module) is torch.nn.Dropout:
        return not module.training
    return type(module) in _PER_SAMPLE


def _child_call(
    child: torch.nn.Module, name: str, params: Mapping[str, torch.Tensor], z: torch.Tensor
) -> torch.Tensor:
    own = {
        local: params[f"{name}.{local}"]
        for local, _ in child.named_parameters()
        if f"{name}.{local}" in params
    }
    return torch.func.functional_call(child, own, (z,))


def _affine_site(model: torch.nn.Module, lay: Layer) -> int | None:
    """The child index of the layer's module when the affine path applies, else None.

    It applies when the model is a plain ``torch.nn.Sequential`` (no hooks), the layer is the
    weight and/or bias of one of its direct children of an :data:`_AFFINE` type (no hooks), and
    no parameter is tied to another name (moving it would move another module too).
    """
    from torch.nn.modules import module as _module

    if type(model) is not torch.nn.Sequential:
        return None
    if model._forward_hooks or model._forward_pre_hooks:
        return None
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return None
    heads = {n.split(".", 1)[0] for n in lay.param_names}
    locals_ = {n.split(".", 1)[-1] for n in lay.param_names}
    if len(heads) != 1 or not locals_ <= {"weight", "bias"} or not lay.param_names:
        return None
    head = heads.pop()
    children = list(model.named_children())
    idx = next((i for i, (n, _) in enumerate(children) if n == head), None)
    if idx is None:
        return None
    module = children[idx][1]
    if type(module) not in _AFFINE or module._forward_hooks or module._forward_pre_hooks:
        return None
    if len(list(model.named_parameters(remove_duplicate=False))) != len(
        list(model.named_parameters())
    ):
        return None
    return idx


class LossAlong:
    """``L(w̄ + s p_i)`` along the rows of p (k, d_l) of one layer, by the cheapest exact path.

    The affine path (:data:`LOSS_PATH`, :func:`_affine_site`): with ``A`` the layer's input at
    ``w̄`` (cached) and ``Z_0`` its output, moving its weight and bias by ``s (D_W, D_b)`` gives
    the output ``Z_0 + s Z_p`` with ``Z_p = A D_Wᵀ + D_b`` (Linear; the convolution of A with
    ``D_W`` plus ``D_b`` for Conv), and the weight-decay term ``R(w̄) + s Σ λ <w̄, D> + s² Σ λ/2
    |D|²``; each offset runs the modules after the layer only. The same function as the full
    path's, evaluated in another order (float round-off). ``site`` is None on the full path.
    """

    def __init__(
        self,
        probe: FluctuationProbe,
        params: Mapping[str, torch.Tensor],
        lay: Layer,
        p: torch.Tensor,
    ) -> None:
        self.probe, self.params, self.lay, self.p = probe, params, lay, p
        self.site = _affine_site(probe.model, lay) if LOSS_PATH == "affine" else None
        if self.site is None:
            return
        children = list(probe.model.named_children())
        self.name, self.module = children[self.site]
        self.suffix = children[self.site + 1 :]
        with torch.no_grad():
            a = probe.x
            for name, child in children[: self.site]:
                a = _child_call(child, name, params, a)
            self.a = a
            self.z0 = _child_call(self.module, self.name, params, a)
            self.reg0 = probe._reg(params)
        k = p.shape[0]
        self.c1 = torch.zeros(k, dtype=p.dtype, device=p.device)
        self.c2 = torch.zeros(k, dtype=p.dtype, device=p.device)
        wd = getattr(probe, "_wd_of", {})
        with torch.no_grad():
            for n, d in unflatten_layer(p, lay).items():
                lam = float(wd.get(n, 0.0))
                if lam > 0:
                    self.c1 += lam * (d.reshape(k, -1) @ params[n].reshape(-1))
                    self.c2 += 0.5 * lam * (d.reshape(k, -1) ** 2).sum(1)
        self.zp: dict[int, torch.Tensor] = {}
        self.cache = k * self.z0.numel() * self.z0.element_size() <= ZP_CACHE_BYTES
        #: the modules after the layer act on each sample alone (:data:`_PER_SAMPLE`)
        self.per_sample = all(_acts_per_sample(child) for _, child in self.suffix)

    def _zp(self, i: int) -> torch.Tensor:
        z = self.zp.get(i)
        if z is not None:
            return z
        parts = unflatten_layer(self.p[i], self.lay)
        w = parts.get(f"{self.name}.weight")
        if w is None:
            w = torch.zeros_like(self.params[f"{self.name}.weight"])
        b = parts.get(f"{self.name}.bias")
        if isinstance(self.module, torch.nn.Linear):
            z = torch.nn.functional.linear(self.a, w, b)
        else:
            z = self.module._conv_forward(self.a, w, b)  # type: ignore[operator]
        if self.cache:
            self.zp[i] = z
        return z

    def restrict(self, keep: NDArray[np.intp]) -> LossAlong:
        """The same evaluator on the rows ``keep`` of p (sharing the cached inputs and ``Z_p``)."""
        out = object.__new__(LossAlong)
        out.__dict__.update(self.__dict__)
        out.p = self.p[torch.as_tensor(keep, device=self.p.device)]
        if self.site is not None:
            ii = torch.as_tensor(keep, device=self.p.device)
            out.c1, out.c2 = self.c1[ii], self.c2[ii]
            out.zp = {j: self.zp[int(i)] for j, i in enumerate(keep) if int(i) in self.zp}
        return out

    def tail_out(self, z: torch.Tensor) -> torch.Tensor:
        """The model's output from the layer's output z (the modules after the layer)."""
        for name, child in self.suffix:
            z = _child_call(child, name, self.params, z)
        return z

    def _tail(self, z: torch.Tensor) -> torch.Tensor:
        """The loss without its weight-decay term from the layer's output z."""
        return self.probe.loss_fn(self.tail_out(z), self.probe.y)

    def zp_rows(self, rows: range | NDArray[np.intp]) -> torch.Tensor:
        """``Z_p`` of the rows ``rows`` of p, stacked: (n, N, *outputs)."""
        return torch.stack([self._zp(int(i)) for i in rows])

    def curvature(self) -> torch.Tensor | None:
        """``p_iᵀ H p_i`` (k,) on the affine path, None on the full path.

        The second derivative of ``s -> L(w̄ + s p_i)`` at 0 (``torch.func.jvp`` of ``jvp``):
        that of the modules after the layer along ``Z_p`` plus ``2 Σ λ/2 |D|²``; the same number
        as the Hessian-vector product's (the output is affine in the layer's parameters),
        without the backward pass through the whole model.
        """
        if self.site is None:
            return None
        z0 = self.z0

        def second(zp: torch.Tensor) -> torch.Tensor:
            def first(t: torch.Tensor) -> torch.Tensor:
                one = torch.ones_like(t)
                return torch.func.jvp(lambda u: self._tail(z0 + u * zp), (t,), (one,))[1]

            t0 = torch.zeros((), dtype=z0.dtype, device=z0.device)
            return torch.func.jvp(first, (t0,), (torch.ones_like(t0),))[1]

        k = self.p.shape[0]
        chunk = memory_chunk(HVP_CHUNK, 6 * z0.numel() * z0.element_size())
        out = []
        for c in range(0, k, chunk):
            zp = torch.stack([self._zp(i) for i in range(c, min(k, c + chunk))])
            out.append(torch.func.vmap(second)(zp))
        return torch.cat(out) + 2.0 * self.c2

    def __call__(self, rows: NDArray[np.intp], s: torch.Tensor) -> torch.Tensor:
        """Losses (n·m,) at the offsets s (n, m) along the rows ``rows`` (n,) of p."""
        if self.site is None:
            return _full_path(self.probe, self.params, self.lay, self.p, rows, s)
        n, m = s.shape
        item = np.repeat(rows, m)  # the row of each flat item (n·m)
        t = s.reshape(-1)
        tail = self._tail
        item_bytes = 3 * self.z0.numel() * self.z0.element_size()
        chunk = memory_chunk(PROFILE_CHUNK, item_bytes)
        shape = (-1,) + (1,) * self.z0.ndim
        out = []
        z0, probe = self.z0, self.probe
        with torch.no_grad():
            for c in range(0, n * m, chunk):
                idx = item[c : c + chunk]
                tc = t[c : c + chunk]
                ii = torch.as_tensor(idx, device=tc.device)
                reg = self.reg0 + tc * self.c1[ii] + tc * tc * self.c2[ii]
                if not self.per_sample:  # vmap over the offsets: each a batch of N samples
                    zp = torch.stack([self._zp(int(i)) for i in idx])
                    out.append(torch.func.vmap(tail)(z0 + tc.reshape(shape) * zp) + reg)
                    continue
                # the modules after the layer act on each sample alone: one batch of c·N samples
                z = torch.empty((idx.size, *z0.shape), dtype=z0.dtype, device=z0.device)
                for j, (i, tj) in enumerate(zip(idx.tolist(), tc.tolist(), strict=True)):
                    torch.add(z0, self._zp(int(i)), alpha=tj, out=z[j])
                o = self.tail_out(z.reshape(-1, *z0.shape[1:]))
                o = o.reshape(idx.size, z0.shape[0], *o.shape[1:])
                loss = torch.stack([probe.loss_fn(o[j], probe.y) for j in range(idx.size)])
                out.append(loss + reg)
        return torch.cat(out)


def _full_path(
    probe: FluctuationProbe,
    params: Mapping[str, torch.Tensor],
    lay: Layer,
    p: torch.Tensor,
    rows: NDArray[np.intp],
    s: torch.Tensor,
) -> torch.Tensor:
    """The reference: ``functional_call`` of the whole model on the moved parameters."""
    n, m = s.shape
    rows_t = torch.as_tensor(rows, device=p.device).repeat_interleave(m)
    s_flat = s.reshape(-1)

    def at(delta: torch.Tensor) -> torch.Tensor:
        moved = dict(params)
        for name, v in unflatten_layer(delta, lay).items():
            moved[name] = params[name] + v
        return probe._full_loss(moved)

    out = []
    chunk = memory_chunk(PROFILE_CHUNK, lay.dim * p.element_size())
    with torch.no_grad():
        for c in range(0, n * m, chunk):  # the (chunk, d_l) offsets, one chunk at a time
            deltas = s_flat[c : c + chunk, None] * p[rows_t[c : c + chunk]]
            out.append(torch.func.vmap(at)(deltas))
    return torch.cat(out)


def profiles(
    probe: FluctuationProbe,
    params: Mapping[str, torch.Tensor],
    lay: Layer,
    p: torch.Tensor,
    s: torch.Tensor,
    *,
    rows: NDArray[np.intp] | None = None,
    along: LossAlong | None = None,
) -> Array:
    """``L(w̄ + s_ij p_{r_i})`` for directions p (k, d_l), rows ``r`` (n,) of p (default all) and
    offsets s (n, m); returns (n, m). ``along``: a :class:`LossAlong` of p (its cached inputs)."""
    if rows is None:
        rows = np.arange(p.shape[0])
    if along is None:
        along = LossAlong(probe, params, lay, p)
    n, m = s.shape
    return along(np.asarray(rows), s).reshape(n, m).to(torch.float64).cpu().numpy()


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
    *,
    profile: bool = True,
    along: LossAlong | None = None,
) -> tuple[Array, Array, Array]:
    """Flatness (k,), profile offsets (k, m) and profiles (k, m) along the rows of p.

    Crossings refined by ``method`` (default :data:`CROSSING_METHOD`) to the resolution of
    ``bisections`` halvings of the grid cell (:func:`refine_crossings`). ``profile=False``: only
    the flatness is wanted, and the outward search (:data:`GRID_METHOD`) leaves the grid points it
    did not need NaN in the returned profiles. ``along``: a :class:`LossAlong` of p to reuse.
    """
    k = p.shape[0]
    level = probe.flatness_factor * loss0
    grid = np.linspace(-1.0, 1.0, PROFILE_POINTS)
    mid = PROFILE_POINTS // 2
    # initial half-range: 1.5 x the quadratic crossing (slope ignored), else 10 sigma
    quad = np.sqrt(2.0 * (probe.flatness_factor - 1.0) * loss0 / np.where(curv > 0, curv, 1.0))
    scale = np.where(curv > 0, 1.5 * quad, 10.0 * np.sqrt(np.maximum(var, 1e-300)))
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    if along is None:
        along = LossAlong(probe, params, lay, p)

    def ev(rows: NDArray[np.intp], offsets: Array) -> Array:
        s = torch.as_tensor(offsets, dtype=probe.x.dtype, device=probe.x.device)
        return profiles(probe, params, lay, p, s, rows=rows, along=along)

    if GRID_METHOD == "full":
        prof, todo = _grid_full(ev, scale, grid, level)
    elif GRID_METHOD == "outward":
        prof, todo = _grid_outward(ev, scale, grid, level, profile)
    else:
        raise ValueError(f"GRID_METHOD = {GRID_METHOD!r}: expected 'outward' or 'full'")
    flat = np.full(k, np.nan)
    good = np.setdiff1d(np.arange(k), todo)
    if good.size:
        # each direction's two crossings: (inside, outside) offsets and their L - level; a grid
        # point the outward search did not evaluate (NaN) lies below the level
        inside = np.zeros((good.size, 2))
        outside = np.zeros((good.size, 2))
        f_in = np.zeros((good.size, 2))
        f_out = np.zeros((good.size, 2))
        cells = np.zeros((good.size, 2, 2), dtype=int)
        for j, i in enumerate(good):
            above = prof[i] > level
            r = mid + 1 + int(np.argmax(above[mid + 1 :]))
            left = mid - 1 - int(np.argmax(above[:mid][::-1]))
            cells[j] = (r - 1, left + 1), (r, left)
        # the inside points skipped after a doubling (seen below the level on the coarser grid)
        miss_j, miss_side = np.nonzero(np.isnan(prof[good[:, None], cells[:, 0]]))
        if miss_j.size:
            cols = cells[miss_j, 0, miss_side]
            vals = ev(good[miss_j], (scale[good[miss_j]] * grid[cols])[:, None])[:, 0]
            prof[good[miss_j], cols] = vals
        for j, i in enumerate(good):
            (ri, li), (ro, lo) = cells[j]
            inside[j] = grid[ri] * scale[i], grid[li] * scale[i]
            outside[j] = grid[ro] * scale[i], grid[lo] * scale[i]
            f_in[j] = prof[i, ri] - level, prof[i, li] - level
            f_out[j] = prof[i, ro] - level, prof[i, lo] - level

        def evaluate(rows: NDArray[np.intp], offsets: Array) -> Array:
            return ev(good[rows], offsets[:, None])[:, 0] - level

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


Evaluate = Callable[[NDArray[np.intp], Array], Array]


def _grid_full(
    ev: Evaluate, scale: Array, grid: Array, level: float
) -> tuple[Array, NDArray[np.intp]]:
    """Every grid point at every range (the reference); doubles ``scale`` in place until both
    sides of each direction have a point above ``level``. Returns the profiles and the
    directions never bracketed."""
    k, mid = scale.size, grid.size // 2
    prof = np.full((k, grid.size), np.nan)
    todo = np.arange(k)
    for _ in range(MAX_DOUBLINGS):
        if todo.size == 0:
            break
        vals = ev(todo, scale[todo, None] * grid[None, :])
        prof[todo] = vals
        above = vals > level
        ok = above[:, :mid].any(1) & above[:, mid + 1 :].any(1)
        scale[todo[~ok]] *= 2.0
        todo = todo[~ok]
    return prof, todo


def _grid_outward(
    ev: Evaluate, scale: Array, grid: Array, level: float, complete: bool
) -> tuple[Array, NDArray[np.intp]]:
    """The grid searched outwards from 0 (:data:`GRID_METHOD`): the same first point above
    ``level`` on each side, the same doublings of ``scale`` (in place), as :func:`_grid_full`.

    Step j of a side is grid point ``mid ± j``. After a doubling, step j of the new range is step
    2j of the old one, so the steps below half the old first point above the level (all steps up
    to ``mid / 2`` on a side that never rose above it) are known to be below and are skipped.
    ``complete``: every grid point of the final range is then evaluated (the stored profiles,
    equal to :func:`_grid_full`'s); else the profiles hold NaN where nothing was evaluated.
    """
    k, mid = scale.size, grid.size // 2
    prof = np.full((k, grid.size), np.nan)
    centre = ev(np.arange(k), np.zeros((k, 1)))[:, 0]  # s = 0 at every range
    prof[:, mid] = centre
    start = np.ones((k, 2), dtype=int)  # first step to evaluate: side 0 is +, side 1 is -
    prof_scale = scale.copy()  # the range each profile was evaluated at
    todo = np.arange(k)
    sign = np.array([1, -1])
    for _ in range(MAX_DOUBLINGS):
        if todo.size == 0:
            break
        prof[todo] = np.nan
        prof[todo, mid] = centre[todo]
        prof_scale[todo] = scale[todo]
        first = np.zeros((todo.size, 2), dtype=int)  # first step above the level, 0: none
        step = start[todo].copy()
        active = step <= mid
        while active.any():
            ii, side = np.nonzero(active)
            j = step[ii, side][:, None] + np.arange(OUTWARD_POINTS)[None, :]
            ai, bi = np.nonzero(j <= mid)
            rows = todo[ii[ai]]
            cols = mid + sign[side[ai]] * j[ai, bi]
            vals = ev(rows, (scale[rows] * grid[cols])[:, None])[:, 0]
            prof[rows, cols] = vals
            above = np.zeros(j.shape, dtype=bool)
            above[ai, bi] = vals > level
            hit = above.any(1)
            first[ii[hit], side[hit]] = j[np.flatnonzero(hit), np.argmax(above[hit], 1)]
            step[ii, side] += OUTWARD_POINTS
            done = hit | (step[ii, side] > mid)
            active[ii[done], side[done]] = False
        ok = (first > 0).all(1)
        bad = todo[~ok]
        # the new range's step j is the old range's step 2j
        start[bad] = np.where(first[~ok] > 0, (first[~ok] + 1) // 2, mid // 2 + 1)
        scale[bad] *= 2.0
        todo = bad
    if complete:
        miss_r, miss_c = np.nonzero(np.isnan(prof))
        if miss_r.size:
            prof[miss_r, miss_c] = ev(miss_r, (prof_scale[miss_r] * grid[miss_c])[:, None])[:, 0]
    return prof, todo


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
