"""Experiments: sweeps over run configs, the declarative claims of docs/theory.md §10, and the
one-command reproduction.

Public names load their module on first use (this package pulls in xarray and matplotlib):
:func:`run_sweep`, :func:`load_sweep`, :func:`collect_sweep`, :class:`SweepSpec`,
:class:`SweepIncomplete` (:mod:`.sweep`), :func:`reproduce` (:mod:`.reproduce`), :data:`CLAIMS`
(:mod:`.claims`).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SweepIncomplete": "sgdfluct.experiments.sweep",
    "SweepSpec": "sgdfluct.experiments.sweep",
    "collect_sweep": "sgdfluct.experiments.sweep",
    "load_sweep": "sgdfluct.experiments.sweep",
    "run_sweep": "sgdfluct.experiments.sweep",
    "reproduce": "sgdfluct.experiments.reproduce",
    "CLAIMS": "sgdfluct.experiments.claims",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sgdfluct.experiments' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
