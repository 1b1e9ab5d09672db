"""Read the user's optimizer: per-parameter learning rate and weight decay, checked at every step.

docs/theory.md §11 ("Training"). The probe's theory is plain SGD, ``w ← w − η_g (∇L_B(w) + λ_g w)``
for the parameters ``w`` of parameter group ``g``: every group's ``lr`` (η_g) and
``weight_decay`` (λ_g) are read from ``optimizer.param_groups``, not assumed equal to group 0's.
The settings the theory does not cover are refused by name:

* ``momentum != 0`` (heavy-ball or Nesterov SGD): the stationary covariance of heavy-ball SGD
  differs from plain SGD's at the same η (to leading order it is plain SGD's at η/(1 − β), with
  a different discrete-time correction), and the probe implements only plain SGD;
* ``maximize = True`` (gradient ascent: no stationary state);
* an optimizer other than :class:`torch.optim.SGD` (Adam, RMSprop: preconditioned, state-dependent
  steps);
* a parameter in the optimizer that is not one of the model's.

A change of η or λ between steps (a scheduler) is allowed during the burn-in (the plateau test
restarts, see :class:`OptimizerWatch`) and refused with a :class:`MeasurementError` naming the
group, the old and the new value inside the recording window, where one stationary state is
measured. A change of any other setting (momentum switched on, parameters added) is refused at
the step it is seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sgdfluct.errors import ConfigError, MeasurementError

__all__ = ["GroupSettings", "OptimizerWatch", "SGDSettings", "read_sgd"]


@dataclass(frozen=True)
class GroupSettings:
    """The settings of one parameter group that the theory depends on."""

    lr: float
    weight_decay: float
    momentum: float
    dampening: float
    nesterov: bool
    maximize: bool
    param_ids: tuple[int, ...]


@dataclass(frozen=True)
class SGDSettings:
    """Plain-SGD settings per trainable parameter.

    Attributes
    ----------
    groups : tuple of GroupSettings
    learning_rate, weight_decay : dict name -> float
        η and λ of every parameter in the optimizer (by the model's parameter names).
    group_of : dict name -> int
        Parameter group index of every such parameter.
    """

    groups: tuple[GroupSettings, ...]
    learning_rate: dict[str, float]
    weight_decay: dict[str, float]
    group_of: dict[str, int]

    def describe(self) -> list[dict[str, Any]]:
        """JSON-able ``[{"group", "lr", "weight_decay", "params"}]``."""
        out: list[dict[str, Any]] = []
        for g, grp in enumerate(self.groups):
            names = sorted(n for n, i in self.group_of.items() if i == g)
            out.append(
                {"group": g, "lr": grp.lr, "weight_decay": grp.weight_decay, "params": names}
            )
        return out


def _group_settings(g: int, group: Mapping[str, Any]) -> GroupSettings:
    def num(key: str, default: float = 0.0) -> float:
        value = group.get(key, default)
        if isinstance(value, torch.Tensor):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"optimizer.param_groups[{g}]['{key}'] = {value!r}: expected a number"
            )
        return float(value)

    lr = num("lr")
    wd = num("weight_decay")
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(
            f"optimizer.param_groups[{g}]['lr'] = {lr} is out of range: expected a finite value > 0"
        )
    if not (math.isfinite(wd) and wd >= 0):
        raise ConfigError(
            f"optimizer.param_groups[{g}]['weight_decay'] = {wd} is out of range: expected a "
            "finite value >= 0"
        )
    return GroupSettings(
        lr=lr,
        weight_decay=wd,
        momentum=num("momentum"),
        dampening=num("dampening"),
        nesterov=bool(group.get("nesterov", False)),
        maximize=bool(group.get("maximize", False)),
        param_ids=tuple(id(p) for p in group["params"]),
    )


def _refuse_unsupported(g: int, grp: GroupSettings) -> None:
    if grp.momentum != 0 or grp.nesterov:
        raise ConfigError(
            f"optimizer.param_groups[{g}]['momentum'] = {grp.momentum:g}"
            f"{' (nesterov = True)' if grp.nesterov else ''}: the probe's theory is plain SGD "
            "(docs/theory.md §11); heavy-ball momentum changes the stationary covariance and is "
            "not implemented. Expected momentum = 0 in every parameter group"
        )
    if grp.maximize:
        raise ConfigError(
            f"optimizer.param_groups[{g}]['maximize'] = True: gradient ascent has no stationary "
            "state to probe; expected maximize = False"
        )


def read_sgd(optimizer: Any, named_params: Mapping[str, torch.Tensor]) -> SGDSettings:
    """Read every parameter group of a ``torch.optim.SGD`` (docs/theory.md §11).

    Parameters
    ----------
    optimizer : torch.optim.SGD
    named_params : dict name -> parameter
        The model's parameters (``model.named_parameters()``; tied parameters once).

    Raises
    ------
    ConfigError
        Not a ``torch.optim.SGD``; momentum, Nesterov or ``maximize`` in any group (named);
        an ``lr <= 0`` or ``weight_decay < 0``; a parameter that is not the model's, or one in
        two groups.
    """
    if not isinstance(optimizer, torch.optim.SGD):
        raise ConfigError(
            f"optimizer is {type(optimizer).__module__}.{type(optimizer).__name__}: expected "
            "torch.optim.SGD (the probe's theory is plain SGD; adaptive optimizers such as Adam "
            "precondition every step by state the theory does not model)"
        )
    name_of = {id(p): n for n, p in named_params.items()}
    groups: list[GroupSettings] = []
    lr: dict[str, float] = {}
    wd: dict[str, float] = {}
    group_of: dict[str, int] = {}
    for g, group in enumerate(optimizer.param_groups):
        grp = _group_settings(g, group)
        _refuse_unsupported(g, grp)
        for j, p in enumerate(group["params"]):
            name = name_of.get(id(p))
            if name is None:
                raise ConfigError(
                    f"optimizer.param_groups[{g}]['params'][{j}] (shape {tuple(p.shape)}) is not "
                    "a parameter of the model: give the probe the model the optimizer trains"
                )
            if name in group_of:
                raise ConfigError(
                    f"parameter {name!r} is in optimizer.param_groups[{group_of[name]}] and "
                    f"[{g}]: expected each parameter in one group"
                )
            lr[name], wd[name], group_of[name] = grp.lr, grp.weight_decay, g
        groups.append(grp)
    return SGDSettings(groups=tuple(groups), learning_rate=lr, weight_decay=wd, group_of=group_of)


class OptimizerWatch:
    """Re-reads an optimizer at every step and says what changed (docs/theory.md §11).

    :meth:`check` compares the groups with the settings read last time: ``None`` when nothing
    changed; otherwise a description of the η/λ changes (the caller restarts its plateau test in
    the burn-in and raises :class:`MeasurementError` inside the window: :meth:`refuse_in_window`).
    Any other change (momentum, ``maximize``, the parameters of a group, the number of groups)
    raises :class:`ConfigError` at once.
    """

    def __init__(self, optimizer: Any, named_params: Mapping[str, torch.Tensor]) -> None:
        self.optimizer = optimizer
        self.named_params = dict(named_params)
        self.settings = read_sgd(optimizer, self.named_params)

    def check(self) -> list[str] | None:
        groups = self.optimizer.param_groups
        old = self.settings.groups
        fresh: list[int | None] = []
        for g, group in enumerate(groups):
            if g < len(old) and (
                group.get("lr") == old[g].lr
                and group.get("weight_decay", 0.0) == old[g].weight_decay
                and group.get("momentum", 0.0) == old[g].momentum
                and bool(group.get("maximize", False)) == old[g].maximize
                and len(group["params"]) == len(old[g].param_ids)
            ):
                fresh.append(None)
            else:
                fresh.append(g)
        if len(groups) == len(old) and all(f is None for f in fresh):
            return None
        if len(groups) != len(old):
            raise ConfigError(
                f"the optimizer has {len(groups)} parameter group(s), {len(old)} when the probe "
                "was built: the probed parameters must stay fixed (build the probe after "
                "add_param_group)"
            )
        changes = []
        for g in (f for f in fresh if f is not None):
            new = _group_settings(g, groups[g])
            _refuse_unsupported(g, new)
            if new.param_ids != old[g].param_ids:
                raise ConfigError(
                    f"optimizer.param_groups[{g}]['params'] changed after the probe was built: the "
                    "probed parameters must stay fixed"
                )
            if new.lr != old[g].lr:
                changes.append(f"param_groups[{g}]['lr'] {old[g].lr:g} -> {new.lr:g}")
            if new.weight_decay != old[g].weight_decay:
                changes.append(
                    f"param_groups[{g}]['weight_decay'] {old[g].weight_decay:g} -> "
                    f"{new.weight_decay:g}"
                )
        self.settings = read_sgd(self.optimizer, self.named_params)
        return changes or None

    @staticmethod
    def refuse_in_window(changes: list[str], step: int, window_start: int) -> MeasurementError:
        return MeasurementError(
            f"the optimizer changed inside the recording window (started at step {window_start}) "
            f"at step {step}: {'; '.join(changes)}. The probe measures one stationary state at "
            "constant learning rates and weight decays (docs/theory.md §11): keep them constant "
            "from the plateau to the end of the window (e.g. step the scheduler only before it, "
            "or use a constant schedule)"
        )
