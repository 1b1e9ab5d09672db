"""The probe's window recorders: what one snapshot of the weights updates (docs/theory.md §11).

At the window start every probed layer gets a bounded-memory recorder: a streaming Nyström sketch
of its covariance (``directions = "pca"``) or the moments along its Hessian directions fixed
there (``"hessian"``); a joint recorder of all layers (cross-layer blocks, when it fits); the
running sum of the weights (the window mean); and, from mid-window on, the calibrated estimate's
projections on frozen directions (:class:`sgdfluct.probe._split.SplitRecorder`).

A layer with a compact (large) sketch (``NystromSketch.compact``) collects its snapshots in a
:class:`SnapshotBatch` of :data:`SNAPSHOT_BATCH` rows (float32 deviations from the sketch's
reference) and feeds them to its recorders at once (GEMMs instead of ``b`` rank-1 updates: the
d×ℓ arrays pass through memory once a batch; the split recorders' float32 projections ride in
the sketch's pass over the batch); the batch is also flushed before the quarter- and
half-window PCA and at the window's end, so every recorder sees the same snapshots as
unbatched. Small layers record each snapshot at once, bitwise as before.
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
    "SNAPSHOT_BATCH",
    "SnapshotBatch",
    "default_sketch_size",
    "flush",
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
#: oversampling p = SKETCH_OVERSAMPLING_FACTOR·k + SKETCH_OVERSAMPLING_MIN. Memory a parameter
#: of a probed layer: 16 ℓ + 24 bytes for a float64 sketch (Y, Ω, the reference, the running sum
#: and the window mean), from mid-window on + 16 k + 16 (the frozen float64 directions of the
#: calibrated estimate and their reference, two sets in PCA mode); for a compact one of float32
#: weights (float32 Y, Ω and reference) 8 ℓ + 20 + 4·SNAPSHOT_BATCH (its snapshot batch of
#: float32 deviations), from mid-window on + 8 k (the two sets of directions in float32,
#: projecting the batch's deviations from the sketch's reference). At k = 20, p = 40 (ℓ = 60)
#: and 10⁶ parameters: 480 + 20 + 256 + 160 = 916 <= 16 (k + p) = 960 bytes a parameter
SKETCH_FLOOR_BYTES = 64 * 2**20
SKETCH_OVERSAMPLING_FACTOR = 1
SKETCH_OVERSAMPLING_MIN = 20
#: snapshots a compact sketch's layer collects before it updates its recorders (4 bytes a
#: parameter each, float32 deviations): at 64 the batch GEMMs over Ω, Y and the split directions
#: cost 3.0 ms a snapshot of an 800 k-parameter layer on one core (5.7 at 16: Ω and Y read from
#: memory per batch), within the 16 (k + p) bytes a parameter above
SNAPSHOT_BATCH = 64


class SnapshotBatch:
    """Up to ``size`` snapshots of one layer's flat weights, stored as the float32 deviations
    ``w − w_0`` from its compact sketch's reference (rounded as ``NystromSketch.extend`` rounds
    them): the sketch and the split recorders take them as they are."""

    def __init__(self, size: int, origin: torch.Tensor, layer: Layer) -> None:
        self.origin = origin.reshape(-1)
        self.rows = torch.empty(size, origin.numel(), dtype=torch.float32, device=origin.device)
        self.layer = layer
        self.n = 0

    @property
    def full(self) -> bool:
        return self.n == self.rows.shape[0]

    def add(self, params: Mapping[str, torch.Tensor]) -> None:
        """Add the layer's current weights (its parameters, not flattened first)."""
        row, start = self.rows[self.n], 0
        for name, numel in zip(self.layer.param_names, self.layer.numels, strict=True):
            end = start + numel
            torch.sub(params[name].reshape(-1), self.origin[start:end], out=row[start:end])
            start = end
        self.n += 1

    def take(self) -> torch.Tensor:
        """The rows held (a view, valid until the next :meth:`add`); empties the batch."""
        rows, self.n = self.rows[: self.n], 0
        return rows

    def nbytes(self) -> int:
        return self.rows.numel() * self.rows.element_size()


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
            sketch = NystromSketch(w, probe.sketch_size, probe._gen)
            probe._recorders[lay.index] = sketch
            if sketch.compact:
                probe._pending[lay.index] = SnapshotBatch(SNAPSHOT_BATCH, sketch.reference, lay)
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
    flat: dict[int, torch.Tensor] = {}  # a batched layer's flat weights only when needed

    def flat_of(lay: Layer) -> torch.Tensor:
        if lay.index not in flat:
            flat[lay.index] = flatten_layer(params, lay)
        return flat[lay.index]

    coords = []
    for lay in probe.layers:
        if lay.index in probe._pending:
            probe._pending[lay.index].add(params)
        else:
            coords.append(probe._recorders[lay.index].update(flat_of(lay)))
    if isinstance(probe._joint, CoordinateMoments):
        probe._joint.update(torch.cat(coords))  # type: ignore[arg-type]
    elif probe._joint is not None:
        probe._joint.update(torch.cat([flat_of(lay) for lay in probe.layers]))
    batched = {n for b in probe._pending.values() for n in b.layer.param_names}
    for n, p in params.items():
        if n not in batched:  # a batched layer's window sum: at flush()
            probe._mean_sum[n].add_(p.to(torch.float64))
    probe._mean_count += 1
    elapsed = probe.step - probe._window_start
    quarter = not probe._quarter and elapsed >= probe.window // 4
    half = not probe._split and elapsed >= probe.window // 2
    done = elapsed >= probe.window - probe.every
    for index, batch in probe._pending.items():
        if batch.full or quarter or half or done:
            flush(probe, index)
    if quarter:
        for lay in probe.layers:
            rec = probe._recorders[lay.index]
            if isinstance(rec, NystromSketch):
                # a compact sketch's layer: float32 rows for its split recorder (start_split)
                k = min(probe.top_k, lay.dim)
                probe._quarter[lay.index] = rec.top(k, float32=rec.compact)
    if half:
        start_split(probe, params)
    for lay in probe.layers:
        # batched layers: their recorders had this snapshot from flush(), the new split ones not
        if lay.index in probe._split and (half or lay.index not in probe._pending):
            w = flat_of(lay)
            probe._split[lay.index].update(w)
            if lay.index in probe._split_quarter:
                probe._split_quarter[lay.index].update(w)
    if done:
        probe.phase = "done"


def flush(probe: FluctuationProbe, index: int) -> None:
    """Feed a batched layer's pending snapshots to its sketch and its split recorders."""
    batch = probe._pending[index]
    if not batch.n:
        return
    rows = batch.take()
    sketch = probe._recorders[index]
    assert isinstance(sketch, NystromSketch)  # batched: a compact sketch
    # the split recorders' float32 projections of the same deviations, in the sketch's passes
    splits = [d[index] for d in (probe._split, probe._split_quarter) if index in d]
    total, projections = sketch.extend_centered(rows, [r.rows32 for r in splits])
    lay = batch.layer
    for n, part in zip(lay.param_names, torch.split(total, lay.numels), strict=True):
        probe._mean_sum[n].add_(part.reshape(probe._mean_sum[n].shape))
    for rec, proj in zip(splits, projections, strict=True):
        rec.extend_projected(proj)


def start_split(probe: FluctuationProbe, params: Mapping[str, torch.Tensor]) -> None:
    """Freeze each layer's directions for the calibrated estimate (docs/theory.md §9): the
    first half's top-k PCA (the sketch now), or the Hessian directions fixed at the start."""
    for lay in probe.layers:
        rec = probe._recorders[lay.index]
        w = flatten_layer(params, lay)
        if isinstance(rec, NystromSketch):
            # a compact sketch's layer: float32 directions, projections of its deviations
            var, p = rec.top(min(probe.top_k, lay.dim), float32=rec.compact)
            origin = rec.reference if rec.compact else None
            probe._split[lay.index] = SplitRecorder(p, var, w, origin)
            if lay.index in probe._quarter:
                var_q, p_q = probe._quarter[lay.index]
                probe._split_quarter[lay.index] = SplitRecorder(p_q, var_q, w, origin)
        else:
            probe._split[lay.index] = SplitRecorder(rec.directions.cpu().numpy(), None, w)


def recorder_bytes(probe: FluctuationProbe) -> int:
    """Memory of the streaming recorders and window means (bytes)."""
    joint = 0 if probe._joint is None else probe._joint.nbytes()
    return (
        sum(r.nbytes() for r in probe._recorders.values())
        + sum(b.nbytes() for b in probe._pending.values())
        + joint
        + sum(r.nbytes() for r in probe._split.values())
        + sum(r.nbytes() for r in probe._split_quarter.values())
        + 8 * sum(t.numel() for t in probe._mean_sum.values())
    )
