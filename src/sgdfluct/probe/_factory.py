"""A user's model and data for ``sgdfluct probe``: ``[model] factory = "package.module:function"``.

docs/architecture.md ("sgdfluct probe"). The function is imported with the config file's folder
first on ``sys.path`` (so a ``models.py`` beside the config is found), called with no arguments,
and must return ``(model, (x, y))`` or ``(model, (x, y), (x_test, y_test))``: a
``torch.nn.Module`` and tensors with one sample per row of ``x``. Every way this can go wrong is
a :class:`ConfigError` naming ``model.factory``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import torch

from sgdfluct.errors import ConfigError

__all__ = ["load_factory"]


def _resolve(spec: str, base_dir: Path | None) -> Any:
    module_name, _, attr_path = spec.partition(":")
    added = base_dir is not None and str(base_dir) not in sys.path
    if added:
        sys.path.insert(0, str(base_dir))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module's own error at import
        raise ConfigError(
            f"model.factory = {spec!r}: cannot import {module_name!r} "
            f"({type(exc).__name__}: {exc}); expected a module importable from the config file's "
            "folder or the installed packages"
        ) from None
    finally:
        if added:
            sys.path.remove(str(base_dir))
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"model.factory = {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model.factory = {spec!r}: {attr_path!r} is not callable")
    return obj


def _pair(spec: str, what: str, value: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(t, torch.Tensor) for t in value)
    ):
        raise ConfigError(
            f"model.factory = {spec!r} returned {what} = {type(value).__name__}: expected a pair "
            "of tensors (inputs, targets)"
        )
    x, y = value
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ConfigError(
            f"model.factory = {spec!r} returned {what} with inputs {tuple(x.shape)} and targets "
            f"{tuple(y.shape)}: expected one sample per row of both"
        )
    return x, y


def load_factory(
    spec: str, device: torch.device, base_dir: Path | None = None
) -> tuple[torch.nn.Module, Any]:
    """Call the factory; returns the model and a :class:`~sgdfluct.probe._builtin.ProbeData`.

    Raises
    ------
    ConfigError
        The module cannot be imported, the attribute is missing or not callable, the call
        raises, or it returns anything but ``(module, (x, y)[, (x_test, y_test)])``.
    """
    from ._builtin import ProbeData

    fn = _resolve(spec, base_dir)
    try:
        out = fn()
    except Exception as exc:
        raise ConfigError(f"model.factory = {spec!r} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(out, tuple | list) or len(out) not in (2, 3):
        raise ConfigError(
            f"model.factory = {spec!r} returned {type(out).__name__}: expected (model, (x, y)) "
            "or (model, (x, y), (x_test, y_test))"
        )
    model = out[0]
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            f"model.factory = {spec!r} returned {type(model).__name__} as the model: expected a "
            "torch.nn.Module"
        )
    x, y = _pair(spec, "the training data", out[1])
    xt, yt = _pair(spec, "the test data", out[2]) if len(out) == 3 else (x[:0], y[:0])
    task = "classification" if not torch.is_floating_point(y) and y.ndim == 1 else "regression"
    data = ProbeData(
        x=x.to(device), y=y.to(device), x_test=xt.to(device), y_test=yt.to(device), task=task
    )
    return model.to(device), data
