"""A layer's parameters as one vector and back; the sizes of vectorized chunks.

A layer (:class:`sgdfluct.probe._select.Layer`) is one module's own trainable parameters or a
selection; its flat vector concatenates them in ``layer.param_names`` order.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ._select import Layer

__all__ = [
    "CHUNK_BYTES",
    "HVP_CHUNK",
    "PROFILE_CHUNK",
    "SAMPLE_CHUNK",
    "flatten_layer",
    "memory_chunk",
    "unflatten_layer",
]

#: directions (HVPs) and samples (per-sample gradients) evaluated per vectorized call
HVP_CHUNK = 16
SAMPLE_CHUNK = 256
PROFILE_CHUNK = 128
#: ... fewer when the per-item copies (a layer's moved weights, a sample's gradient) would pass
#: this many bytes: the analysis of a 10⁶-parameter layer holds 64 copies, not 256
CHUNK_BYTES = 256 * 2**20


def memory_chunk(default: int, item_bytes: int) -> int:
    """Items per vectorized call: ``default``, or fewer so that they hold <= CHUNK_BYTES."""
    return max(1, min(default, CHUNK_BYTES // max(item_bytes, 1)))


def flatten_layer(params: Mapping[str, torch.Tensor], layer: Layer) -> torch.Tensor:
    return torch.cat([params[n].reshape(-1) for n in layer.param_names])


def unflatten_layer(vec: torch.Tensor, layer: Layer) -> dict[str, torch.Tensor]:
    """(..., d_l) -> {name: (..., *shape)}."""
    lead = vec.shape[:-1]
    parts = torch.split(vec, layer.numels, dim=-1)
    return {
        n: p.reshape(tuple(lead) + tuple(s))  # a tuple: a 0-dim parameter has no sizes
        for n, p, s in zip(layer.param_names, parts, layer.shapes, strict=True)
    }


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------
