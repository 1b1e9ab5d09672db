"""What the probe measures in a user's model: its layers, and which of them to probe.

docs/theory.md §11. A *layer* is, by default, one module's own trainable parameters (a weight
matrix with its bias), numbered from 1 in ``model.named_modules()`` order. ``layers=`` selects
among them, like curvlinops / BackPACK users choose parameters:

* ``"all"`` — every layer;
* an ``int`` — the 1-based layer number;
* a ``str`` — a module name or an :mod:`fnmatch` glob over module names (``"fc*"``, ``"0"``);
  when no module with parameters of its own matches, the pattern is matched against parameter
  names, and each matching parameter is a layer of its own (``"*.weight"``: the weights without
  their biases);
* a :class:`torch.nn.Module` subclass — every module of that type (``torch.nn.Conv2d``);
* a ``tuple`` of the above — everything it matches, as *one* layer (a group of modules).

Entries that select nothing, or select a parameter twice, are refused by name.

Unusual parameters: a parameter shared by two modules (tied weights) belongs to the first module
that owns it (``model.named_parameters()`` order) and is probed once; a parameter that does not
enter the loss (no gradient) is left out of every layer; frozen parameters (``requires_grad =
False``, or in no optimizer parameter group) are not probed; a 0-dim parameter (a learnable
scalar) is a layer of dimension 1.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sgdfluct.errors import ConfigError

__all__ = [
    "Layer",
    "LayerSpec",
    "discover_layers",
    "parameters_without_gradient",
    "select_layers",
]

#: one entry of ``layers=``: a 1-based number, a name or glob, a module type, or a tuple of them
LayerSpec = int | str | type | tuple[Any, ...]


@dataclass(frozen=True)
class Layer:
    """Parameters probed together: ``index`` (1-based, unique), module ``name``, parameter names."""

    index: int
    name: str
    param_names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def numels(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def dim(self) -> int:
        return sum(self.numels)


@dataclass(frozen=True)
class _Owned:
    """A module with its own (untied, trainable, used) parameters."""

    module_name: str
    module: torch.nn.Module
    params: tuple[tuple[str, tuple[int, ...]], ...]


def _owned_modules(
    model: torch.nn.Module, trainable: Callable[[str], bool], notes: list[str]
) -> list[_Owned]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    seen: set[int] = set()
    out: list[_Owned] = []
    for mod_name, mod in model.named_modules():
        own: list[tuple[str, tuple[int, ...]]] = []
        for local, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{local}" if mod_name else local
            canonical = name_of[id(p)]
            if id(p) in seen or canonical != full:
                if canonical != full:
                    notes.append(
                        f"parameter {full!r} is tied to {canonical!r}: probed once, as "
                        f"{canonical!r}"
                    )
                continue
            seen.add(id(p))
            if trainable(full):
                own.append((full, tuple(p.shape)))
        if own:
            out.append(_Owned(mod_name or "model", mod, tuple(own)))
    return out


def discover_layers(
    model: torch.nn.Module, trainable: Callable[[str], bool], notes: list[str] | None = None
) -> list[Layer]:
    """The default layers: each module's own trainable, untied parameters (1-based order).

    Raises
    ------
    ConfigError
        If the model has no trainable parameters.
    """
    notes = [] if notes is None else notes
    owned = _owned_modules(model, trainable, notes)
    if not owned:
        raise ConfigError("the model has no trainable parameters: nothing to probe")
    return [
        Layer(
            index=i + 1,
            name=o.module_name,
            param_names=tuple(n for n, _ in o.params),
            shapes=tuple(s for _, s in o.params),
        )
        for i, o in enumerate(owned)
    ]


def _describe(entry: Any) -> str:
    if isinstance(entry, type):
        return f"{entry.__module__}.{entry.__qualname__}"
    return repr(entry)


def _match_one(
    entry: Any, position: str, all_layers: Sequence[Layer], owned: Sequence[_Owned]
) -> list[Layer]:
    """Layers (whole modules, or single parameters) selected by one non-tuple entry."""
    if isinstance(entry, bool) or not isinstance(entry, int | str | type):
        raise ConfigError(
            f"layers{position} = {entry!r} has the wrong type: expected a layer number (int), "
            "a module or parameter name or glob (str), a torch.nn.Module subclass, or a tuple "
            "of these (one group)"
        )
    if isinstance(entry, int):
        if not 1 <= entry <= len(all_layers):
            raise ConfigError(
                f"layers{position} = {entry} is out of range: expected an integer in "
                f"[1, {len(all_layers)}] (the model's layers with trainable parameters)"
            )
        return [all_layers[entry - 1]]
    if isinstance(entry, type):
        if not issubclass(entry, torch.nn.Module):
            raise ConfigError(
                f"layers{position} = {_describe(entry)} is not a torch.nn.Module subclass"
            )
        found = [
            lay for lay, o in zip(all_layers, owned, strict=True) if isinstance(o.module, entry)
        ]
        if not found:
            kinds = sorted({type(o.module).__name__ for o in owned})
            raise ConfigError(
                f"layers{position} = {_describe(entry)}: no module of that type has trainable "
                f"parameters (types with parameters: {', '.join(kinds)})"
            )
        return found
    found = [lay for lay in all_layers if fnmatch.fnmatchcase(lay.name, entry)]
    if found:
        return found
    params = [
        (lay, n, s)
        for lay in all_layers
        for n, s in zip(lay.param_names, lay.shapes, strict=True)
        if fnmatch.fnmatchcase(n, entry)
    ]
    if not params:
        names = [lay.name for lay in all_layers]
        pnames = [n for lay in all_layers for n in lay.param_names]
        raise ConfigError(
            f"layers{position} = {entry!r} matches no module with trainable parameters and no "
            f"trainable parameter: expected one of the modules {names} or parameters {pnames} "
            "(globs allowed, e.g. 'fc*' or '*.weight')"
        )
    return [Layer(index=lay.index, name=n, param_names=(n,), shapes=(s,)) for lay, n, s in params]


def select_layers(
    model: torch.nn.Module,
    all_layers: Sequence[Layer],
    spec: str | Iterable[LayerSpec],
    trainable: Callable[[str], bool],
) -> list[Layer]:
    """The probed layers for ``layers=spec`` (see the module docstring).

    Raises
    ------
    ConfigError
        An entry of the wrong type, out of range or matching nothing; a parameter selected
        twice; two layers with the same index (parameters of one module selected separately:
        select the module, or group them in a tuple).
    """
    if isinstance(spec, str):
        if spec != "all":
            spec = [spec]
        else:
            return list(all_layers)
    entries = list(spec)
    if not entries:
        raise ConfigError("layers = []: expected 'all' or a non-empty list of layers")
    owned = _owned_modules(model, trainable, [])
    chosen: list[Layer] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, tuple | list) and not isinstance(entry, str):
            if not entry:
                raise ConfigError(f"layers[{i}] = (): expected a non-empty group")
            members: list[Layer] = []
            for j, sub in enumerate(entry):
                members.extend(_match_one(sub, f"[{i}][{j}]", all_layers, owned))
            names = tuple(n for m in members for n in m.param_names)
            shapes = tuple(s for m in members for s in m.shapes)
            label = "+".join(dict.fromkeys(m.name for m in members))
            chosen.append(Layer(members[0].index, label, names, shapes))
        else:
            chosen.extend(_match_one(entry, f"[{i}]", all_layers, owned))
    where: dict[str, str] = {}
    for lay in chosen:
        for n in lay.param_names:
            if n in where:
                raise ConfigError(
                    f"layers selects parameter {n!r} twice (in {where[n]!r} and {lay.name!r}): "
                    "expected each parameter in at most one probed layer"
                )
            where[n] = lay.name
    by_index: dict[int, str] = {}
    for lay in chosen:
        if lay.index in by_index:
            raise ConfigError(
                f"layers selects {by_index[lay.index]!r} and {lay.name!r}, which share layer "
                f"number {lay.index}: select the whole module, or group the parameters in a "
                "tuple (one layer)"
            )
        by_index[lay.index] = lay.name
    return chosen


def parameters_without_gradient(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    names: Iterable[str],
) -> list[str]:
    """Parameters among ``names`` that the loss does not depend on (structurally).

    One forward and backward pass on the first training sample through
    :func:`torch.func.functional_call` with detached copies of the parameters: the model, its
    ``.grad`` fields and its buffers are not touched (its modules must not update buffers in
    their current mode; see ``_contract.check_modes``).
    """
    params = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
    wanted = [n for n in names if n in params]
    with torch.enable_grad():
        out = torch.func.functional_call(model, params, (x[:1],))
        loss = loss_fn(out, y[:1])
        grads = torch.autograd.grad(
            loss, [params[n] for n in wanted], allow_unused=True, materialize_grads=False
        )
    return [n for n, g in zip(wanted, grads, strict=True) if g is None]
