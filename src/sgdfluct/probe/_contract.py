"""The probe never changes the user's model: the checks that make its evaluations side-effect free.

docs/theory.md §11 ("Training"). Every evaluation of the probe (training loss, Hessian-vector
products, per-sample gradients, loss profiles) runs the user's model through
:func:`torch.func.functional_call` on detached copies of the parameters, in the mode the model is
in. That touches nothing (parameters, ``.grad``, buffers, RNG state) as long as no module updates
state in its forward pass. Modules that do are refused by name when they are in training mode:

* batch normalization (and instance normalization) tracking running statistics
  (``track_running_stats = True``): a train-mode forward updates ``running_mean``,
  ``running_var`` and ``num_batches_tracked``, and normalizes by the statistics of the batch at
  hand, so a full-data evaluation is not the loss SGD descends;
* dropout with ``p > 0`` (random output: it draws from the global RNG).

Batch normalization without running statistics (``track_running_stats = False``) is refused in
every mode: it always normalizes by the batch at hand, so a sample's loss depends on its batch.

Call ``model.eval()`` for the probe's evaluations: train with the model in eval mode (frozen
statistics: then the probe's loss is exactly the loss SGD descends), or switch to eval mode around
``probe.observe()`` / ``probe.analyze()``.

Also refused up front: parameters and data of different floating dtypes or on different devices
(the probe's tangents and directions take the data's dtype and device).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from sgdfluct.errors import ConfigError

__all__ = [
    "check_dtypes_devices",
    "check_modes",
    "check_recorder_memory",
    "recorder_estimate",
]

_NORM_TYPES: tuple[type, ...] = (
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
)
_DROPOUT_TYPES: tuple[type, ...] = (torch.nn.modules.dropout._DropoutNd,)
_BATCH_NORM = torch.nn.modules.batchnorm._BatchNorm


def check_modes(model: torch.nn.Module, where: str) -> None:
    """Refuse modules that change state or draw random numbers in their forward pass.

    Parameters
    ----------
    model : torch.nn.Module
    where : str
        Which call is checking (``"FluctuationProbe(...)"``, ``"observe()"``, ``"analyze()"``),
        for the message.

    Raises
    ------
    ConfigError
        Naming the first such module in training mode and what to do.
    """
    for name, mod in model.named_modules():
        label = f"{name or 'model'!r} ({type(mod).__name__})"
        if isinstance(mod, _BATCH_NORM) and not getattr(mod, "track_running_stats", True):
            raise ConfigError(
                f"{where}: module {label} has track_running_stats = False: it normalizes by the "
                "statistics of the batch at hand in every mode, so the loss of a sample depends "
                "on its batch and the probe's full-data evaluations measure another loss than "
                "SGD descends. Use track_running_stats = True and call model.eval() for the "
                "probe's evaluations"
            )
        if not mod.training:
            continue
        if isinstance(mod, _NORM_TYPES) and getattr(mod, "track_running_stats", False):
            raise ConfigError(
                f"{where}: module {label} is in training mode: every forward pass would update "
                "its running statistics (running_mean, running_var, num_batches_tracked) and "
                "normalize by the batch at hand, so the probe's full-data evaluations would "
                "change your model and measure another loss. Call model.eval() for the probe's "
                "evaluations (train in eval mode with frozen statistics, or switch to eval mode "
                "around observe() and analyze())"
            )
        rate = float(getattr(mod, "p", 0.0))
        if isinstance(mod, _DROPOUT_TYPES) and rate > 0:
            raise ConfigError(
                f"{where}: module {label} is in training mode with p = {rate:g}: its output is "
                "random (it draws from torch's global RNG), so the probe's evaluations would "
                "change your RNG state and measure a random loss. Call model.eval() for the "
                "probe's evaluations"
            )


def check_dtypes_devices(
    named_params: Mapping[str, torch.Tensor], x: torch.Tensor, names: list[str]
) -> None:
    """Every probed parameter must share the training inputs' floating dtype and device.

    Raises
    ------
    ConfigError
        Naming the first parameter that differs.
    """
    if not torch.is_floating_point(x):
        raise ConfigError(
            f"train_data inputs have dtype {x.dtype}: expected a floating dtype (the model's)"
        )
    for n in names:
        p = named_params[n]
        if p.dtype != x.dtype:
            raise ConfigError(
                f"parameter {n!r} has dtype {p.dtype} but the training inputs have {x.dtype}: "
                "expected one floating dtype (convert the model or the data, e.g. "
                "model.to(x.dtype))"
            )
        if p.device != x.device:
            raise ConfigError(
                f"parameter {n!r} is on {p.device} but the training inputs are on {x.device}: "
                "expected one device (move the model or the data)"
            )


def recorder_estimate(
    dims: dict[str, int], sketch_size: int, top_k: int, directions: str, d_total: int
) -> tuple[int, str]:
    """Bytes the window's recorders will hold, and the largest contributor (for the message).

    Per probed layer of ``d`` parameters: an exact PCA (``d <= sketch_size``) holds ``8 d² +
    16 d``; a sketch ``8 d (2 ℓ + 2)`` (Y, Ω, reference, running sum); Hessian directions
    ``8 d (k + 2)``. Plus the float64 window mean of every parameter (``8 d_total``) and, for the
    analysis, a split-half recorder of the frozen directions (``8 d (k + 1)``).
    """
    total = 8 * d_total
    worst, worst_bytes = "", -1
    for name, d in dims.items():
        if directions == "hessian":
            b = 8 * d * (min(top_k, d) + 2)
        elif d <= sketch_size:
            b = 8 * d * d + 16 * d
        else:
            b = 8 * d * (2 * sketch_size + 2)
        b += 8 * d * (min(top_k, d) + 1)
        total += b
        if b > worst_bytes:
            worst, worst_bytes = f"layer {name!r}: {d} parameters", b
    return total, worst


def check_recorder_memory(
    dims: dict[str, int], sketch_size: int, top_k: int, directions: str, d_total: int
) -> None:
    """Refuse, before any training, recorders that cannot fit (``sgdfluct.config.memory_limit``).

    Raises
    ------
    ConfigError
        With the estimate, the limit, the largest layer and what to change.
    """
    from sgdfluct.config import MEMORY_LIMIT_ENV, memory_limit

    need, worst = recorder_estimate(dims, sketch_size, top_k, directions, d_total)
    limit = memory_limit()
    if need > limit // 2:  # the model, the data and the analysis need the rest
        raise ConfigError(
            f"the probe's recorders would need about {need / 2**30:.3g} GiB ({worst} is the "
            f"largest; sketch_size = {sketch_size}, top_k = {top_k}) but half the memory limit "
            f"is {limit / 2**31:.3g} GiB: lower top_k or sketch_size, probe fewer layers "
            f"(layers=...), or raise {MEMORY_LIMIT_ENV}"
        )
