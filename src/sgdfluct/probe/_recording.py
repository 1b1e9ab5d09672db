"""The probe's window recorders: what one snapshot of the weights updates (docs/theory.md §11).

At the window start every probed layer gets a bounded-memory recorder: a streaming Nyström sketch
of its covariance (``directions = "pca"``) or the moments along its Hessian directions fixed
there (``"hessian"``); a joint recorder of all layers (cross-layer blocks, when it fits); the
running sum of the weights (the window mean); and, from mid-window on, the calibrated estimate's
projections on frozen directions (:class:`sgdfluct.probe._split.SplitRecorder`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from ._curvature import lanczos_layer
from ._params import flatten_layer
from ._select import Layer
from ._split import SplitRecorder
from ._stream import CoordinateMoments, NystromSketch, SubspaceMoments

if TYPE_CHECKING:
    from ._core import FluctuationProbe


__all__ = [
    "MIN_SKETCH_SIZE",
    "SKETCH_FLOOR_BYTES",
    "SKETCH_OVERSAMPLING_FACTOR",
    "SKETCH_OVERSAMPLING_MIN",
    "default_sketch_size",
    "record",
    "recorder_bytes",
    "start_split",
    "start_window",
]


#: smallest default sketch (columns) while it fits SKETCH_FLOOR_BYTES: layers up to this size
#: get the exact PCA, larger ones a sketch of O(MIN_SKETCH_SIZE d) memory, top-k variances tight
#: unless the spectrum is flat
MIN_SKETCH_SIZE = 256
#: the MIN_SKETCH_SIZE floor applies while the largest probed layer's sketch (Y and Ω, float64:
#: 16 ℓ bytes a parameter) fits in this many bytes; above, the default is ℓ = k + p with the
#: oversampling p = SKETCH_OVERSAMPLING_FACTOR·k + SKETCH_OVERSAMPLING_MIN (memory 16 (k + p) + 24
#: bytes a parameter: Y, Ω, the reference, the running sum and the window mean)
SKETCH_FLOOR_BYTES = 64 * 2**20
SKETCH_OVERSAMPLING_FACTOR = 1
SKETCH_OVERSAMPLING_MIN = 20


def default_sketch_size(layers: Sequence[Layer], top_k: int) -> int:
    """``k + p`` columns (``p = SKETCH_OVERSAMPLING_FACTOR·k + SKETCH_OVERSAMPLING_MIN``),
    at least ``MIN_SKETCH_SIZE`` while the largest layer's sketch fits SKETCH_FLOOR_BYTES."""
    k_plus_p = top_k + SKETCH_OVERSAMPLING_FACTOR * top_k + SKETCH_OVERSAMPLING_MIN
    d_max = max(lay.dim for lay in layers)
    floor = min(MIN_SKETCH_SIZE, SKETCH_FLOOR_BYTES // (16 * d_max))
    return max(k_plus_p, floor)


def start_window(probe: FluctuationProbe) -> None:
    probe.phase = "window"
    probe.plateau_step = probe.step
    probe._window_start = probe.step
    params = probe._params()
    for lay in probe.layers:
        w = flatten_layer(params, lay)
        if probe.directions == "pca":
            probe._recorders[lay.index] = NystromSketch(w, probe.sketch_size, probe._gen)
        else:
            dirs = lanczos_layer(probe, params, lay, min(probe.top_k, lay.dim))
            probe._recorders[lay.index] = SubspaceMoments(
                w, torch.as_tensor(dirs, dtype=torch.float64, device=w.device)
            )
    w_all = torch.cat([flatten_layer(params, lay) for lay in probe.layers])
    if probe.directions == "hessian":
        big_k = 0
        for rec in probe._recorders.values():
            assert isinstance(rec, SubspaceMoments)  # directions = "hessian" records these
            big_k += int(rec.directions.shape[0])
        probe._joint = CoordinateMoments(big_k, w_all.device)
    elif w_all.numel() <= probe.sketch_size:
        probe._joint = NystromSketch(w_all, probe.sketch_size, probe._gen)  # exact: no draws
    probe._mean_sum = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    record(probe)


def record(probe: FluctuationProbe) -> None:
    params = probe._params()
    coords = [
        probe._recorders[lay.index].update(flatten_layer(params, lay)) for lay in probe.layers
    ]
    if isinstance(probe._joint, CoordinateMoments):
        probe._joint.update(torch.cat(coords))  # type: ignore[arg-type]
    elif probe._joint is not None:
        probe._joint.update(torch.cat([flatten_layer(params, lay) for lay in probe.layers]))
    for n, p in params.items():
        probe._mean_sum[n].add_(p.to(torch.float64))
    probe._mean_count += 1
    if not probe._quarter and probe.step - probe._window_start >= probe.window // 4:
        for lay in probe.layers:
            rec = probe._recorders[lay.index]
            if isinstance(rec, NystromSketch):
                probe._quarter[lay.index] = rec.top(min(probe.top_k, lay.dim))
    if not probe._split and probe.step - probe._window_start >= probe.window // 2:
        start_split(probe, params)
    for lay in probe.layers:
        if lay.index in probe._split:
            w = flatten_layer(params, lay)
            probe._split[lay.index].update(w)
            if lay.index in probe._split_quarter:
                probe._split_quarter[lay.index].update(w)
    if probe.step - probe._window_start >= probe.window - probe.every:
        probe.phase = "done"


def start_split(probe: FluctuationProbe, params: Mapping[str, torch.Tensor]) -> None:
    """Freeze each layer's directions for the calibrated estimate (docs/theory.md §9): the
    first half's top-k PCA (the sketch now), or the Hessian directions fixed at the start."""
    for lay in probe.layers:
        rec = probe._recorders[lay.index]
        w = flatten_layer(params, lay)
        if isinstance(rec, NystromSketch):
            var, p = rec.top(min(probe.top_k, lay.dim))
            probe._split[lay.index] = SplitRecorder(p, var, w)
            if lay.index in probe._quarter:
                var_q, p_q = probe._quarter[lay.index]
                probe._split_quarter[lay.index] = SplitRecorder(p_q, var_q, w)
        else:
            probe._split[lay.index] = SplitRecorder(rec.directions.cpu().numpy(), None, w)


def recorder_bytes(probe: FluctuationProbe) -> int:
    """Memory of the streaming recorders and window means (bytes)."""
    joint = 0 if probe._joint is None else probe._joint.nbytes()
    return (
        sum(r.nbytes() for r in probe._recorders.values())
        + joint
        + sum(r.nbytes() for r in probe._split.values())
        + sum(r.nbytes() for r in probe._split_quarter.values())
        + 8 * sum(t.numel() for t in probe._mean_sum.values())
    )
