"""The fluctuation probe: weight fluctuations, curvature, noise and the IVFR of any PyTorch model.

docs/theory.md §11 (Feng & Tu's protocol, our analysis) and §9 (flatness, IVFR). Usage::

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = FluctuationProbe(model, loss_fn, (x, y), optimizer=opt, batch_size=32,
                             sampling="with_replacement", top_k=20, window=5000, every=10)
    probe.attach(opt)              # observes every opt.step(); or call probe.observe() after it
    for step in range(steps):
        ...  # one SGD step: loss.backward(); opt.step()
        if probe.done:
            break
    run = probe.analyze()          # frozen ProbeRun
    run.to_summary(); run.to_dataset(); run.figures()

``observe()`` evaluates the training loss every ``every`` steps, runs the plateau test
(:func:`sgdfluct.probe._stream.plateau_test`) and, once it passes, records the weights every
``every`` steps for ``window`` steps into bounded-memory streaming recorders.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from sgdfluct.errors import ConfigError, MeasurementError
from sgdfluct.theory.noise import batch_factor

from . import _curvature, _recording
from ._contract import check_dtypes_devices, check_modes, check_recorder_memory
from ._curvature import joint_projected_hessian
from ._fitting import calibrated
from ._noise import projected_noise
from ._optim import OptimizerWatch
from ._recording import default_sketch_size
from ._result import (
    DRIFT_SHARE_MAX,
    NEAR_NULL_RTOL,
    WELL_ABOVE_ZERO_RTOL,
    WINDOW_RELAXATIONS,
    LayerResult,
    ProbeRun,
)
from ._select import Layer, LayerSpec, discover_layers, parameters_without_gradient, select_layers
from ._spectrum import SpectrumSettings, hessian_spectra
from ._split import SplitRecorder
from ._stability import check_loss_growth, check_window_stability
from ._stream import (
    BoundedTrace,
    CoordinateMoments,
    NystromSketch,
    PlateauMonitor,
    SubspaceMoments,
)
from ._theory import drift_share, layer_result, range_projected

__all__ = [
    "DRIFT_SHARE_MAX",
    "NEAR_NULL_RTOL",
    "WELL_ABOVE_ZERO_RTOL",
    "WINDOW_RELAXATIONS",
    "FluctuationProbe",
    "LayerResult",
    "ProbeRun",
]

Array = NDArray[np.float64]

#: the recorded training loss (plateau test, trace) is on all samples up to this many, else on a
#: fixed random subset of this size (seeded by ``seed``), so that one record costs one forward
#: pass of at most 2048 samples whatever N. The subset loss is a fixed function of the weights, so
#: its stationarity is the weights' as well (the plateau test is as valid); it differs from the
#: full-set loss by ~ std(per-sample loss) / sqrt(2048). The analysis (profiles, H, C) always
#: uses the full set
TRAIN_LOSS_SAMPLES = 2048
#: ... and on a model of more than this many parameters on fewer samples, so that a record costs
#: no more than on this model, TRAIN_LOSS_SAMPLES · TRAIN_LOSS_FULL_PARAMS / n_params (at least
#: TRAIN_LOSS_MIN_SAMPLES): at 10⁶ parameters a 2048-sample forward pass every ``every`` = 10
#: steps costs more than the 10 steps of batch 32 it watches (issue 19). Smaller models keep
#: 2048, bitwise as before
TRAIN_LOSS_FULL_PARAMS = 100_000
TRAIN_LOSS_MIN_SAMPLES = 256


def default_loss_samples(n_params: int) -> int:
    """Samples of the recorded training loss of a model of ``n_params`` parameters (at most)."""
    if n_params <= TRAIN_LOSS_FULL_PARAMS:
        return TRAIN_LOSS_SAMPLES
    return max(TRAIN_LOSS_MIN_SAMPLES, TRAIN_LOSS_SAMPLES * TRAIN_LOSS_FULL_PARAMS // n_params)


class FluctuationProbe:
    """Bounded-memory fluctuation probe of a PyTorch model trained by plain SGD (docs §11).

    Parameters
    ----------
    model : torch.nn.Module
        The trained model (never modified by the probe).
    loss_fn : callable ``(outputs, targets) -> scalar``
        Mean loss over a batch (e.g. ``torch.nn.functional.cross_entropy``); the per-sample
        loss is ``loss_fn`` on a batch of one.
    train_data : (inputs, targets) tensors
        The full training set (the loss profiles, Hessian and noise use all of it).
    learning_rate : float, optional
        ``η`` of every trained parameter; or give ``optimizer`` (a ``torch.optim.SGD`` without
        momentum): every parameter group's ``lr`` and ``weight_decay`` are then read at every
        step (``probe._optim``; changes inside the window are refused).
    optimizer : torch.optim.SGD, optional
        The user's optimizer (see :meth:`attach` to have it call :meth:`observe` itself).
    batch_size : int
        ``S``.
    sampling : {"with_replacement", "without_replacement", "epoch_shuffle"}
        How the training loop draws batches (sets ``f_S``, docs §3).
    layers : "all" or sequence
        Layers by 1-based number, module name or glob (``"fc*"``), module type
        (``torch.nn.Conv2d``), parameter name or glob (``"*.weight"``: weights without
        biases), or tuples of these (one layer); see ``probe._select``. A default layer is one
        module's own parameters (weight and bias).
    top_k : int
        Directions per layer (all of a smaller layer), >= 3.
    window : int
        Recording window after the plateau (steps).
    every : int
        Record the weights and the training loss every ``every`` steps.
    directions : {"pca", "hessian"}
        PCA of the window (streaming Nyström sketch), or the top Lanczos eigenvectors of the
        layer's Hessian block at the window start (then the window covariance along them is exact).
    weight_decay : float
        ``λ`` of ``torch.optim.SGD(weight_decay=λ)``: the loss is ``L + λ/2 ||w||²`` (with
        ``learning_rate`` only; an optimizer's groups give per-group ``λ_g``).
    steps : int, optional
        The training length; if the plateau test has not passed by ``steps − window``,
        :meth:`observe` raises :class:`MeasurementError`.
    flatness_factor : float
        Level ``factor · L_0`` of the flatness (e by default, Feng & Tu).
    plateau_block : int, optional
        Block length of the plateau test in steps (default ``window // 4``).
    sketch_size : int, optional
        Columns ``ℓ`` of the streaming sketch. Default ``k + p`` with the oversampling
        ``p = top_k + 20`` (:data:`SKETCH_OVERSAMPLING_MIN`), raised to :data:`MIN_SKETCH_SIZE`
        while the largest probed layer's sketch fits :data:`SKETCH_FLOOR_BYTES` (64 MiB: layers
        up to ~16 000 parameters); memory ``16 ℓ + 24`` bytes per probed parameter, ``8 ℓ + 20``
        (float32 sketch) plus the snapshot batch for a large layer (``d ℓ² > 2·10⁸``,
        ``probe._stream.NystromSketch.compact``; ``probe._recording.SKETCH_FLOOR_BYTES``).
    loss_samples : int, optional
        Samples of the recorded training loss (plateau test, ``train_loss``): all of them up to
        :data:`TRAIN_LOSS_SAMPLES`, else a fixed random subset of that many (``seed``); fewer on
        a model of more than :data:`TRAIN_LOSS_FULL_PARAMS` parameters
        (:func:`default_loss_samples`: 256 at 10⁶ parameters).
    test_data : (inputs, targets) tensors, optional
        For the test loss and accuracy at the window mean.
    task : {"auto", "classification", "one_hot", "regression"}
        How accuracy is defined: integer targets (auto: classification) are labels; "one_hot"
        compares argmaxes; regression has no accuracy.
    bootstrap : int
        Bootstrap replicates of the ψ intervals.
    seed : int
        Seed of the sketch test matrices, Lanczos start vectors and the bootstrap.
    near_null_rtol : float
        An eigenvalue θ of the Hessian compressed to the probed subspace is near-null when
        ``|θ| <= near_null_rtol · λ_max(H)`` (default :data:`NEAR_NULL_RTOL`); set it inside the
        gap of ``ProbeRun.subspace_hessian_eigenvalues`` when the default cuts through a cluster.
    hessian_spectrum : {"auto", True, False}
        Per-layer Hessian trace (Hutch++, with its standard error) and spectral density
        (stochastic Lanczos quadrature) at the window mean, ``LayerResult.hessian_spectrum``
        (``probe._spectrum``): ``spectrum.matvecs`` HVPs per layer (220 by default; a layer of
        at most that many parameters: its dense block, exact). "auto" runs it on models of up
        to ``spectrum.max_model_params`` (10⁵) parameters and notes the skip above.
    spectrum : SpectrumSettings, optional
        Its budget (HVPs of the trace, SLQ starts and steps, the density's grid and width).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        train_data: tuple[torch.Tensor, torch.Tensor],
        *,
        learning_rate: float | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        batch_size: int,
        sampling: str = "with_replacement",
        layers: str | Sequence[int] = "all",
        top_k: int = 20,
        window: int = 5000,
        every: int = 10,
        directions: str = "pca",
        weight_decay: float = 0.0,
        steps: int | None = None,
        flatness_factor: float = math.e,
        plateau_block: int | None = None,
        sketch_size: int | None = None,
        test_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        task: str = "auto",
        bootstrap: int = 1000,
        seed: int = 0,
        near_null_rtol: float = NEAR_NULL_RTOL,
        loss_samples: int | None = None,
        start: str | int = "plateau",
        hessian_spectrum: bool | str = "auto",
        spectrum: SpectrumSettings | None = None,
    ) -> None:
        if (learning_rate is None) == (optimizer is None):
            raise ConfigError("give exactly one of learning_rate and optimizer")
        if optimizer is not None and weight_decay != 0.0:
            raise ConfigError(
                f"weight_decay = {weight_decay} given with optimizer: the weight decay is read "
                "from optimizer.param_groups; expected weight_decay unset"
            )
        if learning_rate is not None:
            if not (isinstance(learning_rate, int | float) and math.isfinite(learning_rate)):
                raise ConfigError(
                    f"learning_rate = {learning_rate!r} is out of range: expected a finite "
                    "value > 0"
                )
            if not learning_rate > 0:
                raise ConfigError(f"learning_rate = {learning_rate} is out of range: expected > 0")
            if not (math.isfinite(weight_decay) and weight_decay >= 0):
                raise ConfigError(f"weight_decay = {weight_decay} is out of range: expected >= 0")
        if directions not in ("pca", "hessian"):
            raise ConfigError(f"directions = {directions!r}: expected 'pca' or 'hessian'")
        if top_k < 3:
            raise ConfigError(f"top_k = {top_k} is out of range: expected an integer >= 3")
        if every < 1 or window < every:
            raise ConfigError(f"every = {every}, window = {window}: expected 1 <= every <= window")
        if task not in ("auto", "classification", "one_hot", "regression"):
            raise ConfigError(
                f"task = {task!r}: expected 'auto', 'classification', 'one_hot' or 'regression'"
            )
        self.model = model
        self.loss_fn = loss_fn
        x, y = train_data
        self.x, self.y = x, y
        self.test_data = test_data
        self.n_train = int(x.shape[0])
        self._x_loss, self._y_loss = self._loss_subset(loss_samples, int(seed))
        try:
            self.f_s = batch_factor(batch_size, self.n_train, sampling)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.batch_size = int(batch_size)
        self.sampling = sampling
        self.window = int(window)
        self.every = int(every)
        self.top_k = int(top_k)
        self.directions = directions
        self.steps = steps
        self.flatness_factor = float(flatness_factor)
        if not self.flatness_factor > 1:
            raise ConfigError(f"flatness_factor = {flatness_factor}: expected > 1")
        self.task = task
        if task == "auto":
            self.task = (
                "classification" if not torch.is_floating_point(y) and y.ndim == 1 else "regression"
            )
        self.bootstrap = int(bootstrap)
        if not 0 < near_null_rtol < 1:
            raise ConfigError(f"near_null_rtol = {near_null_rtol}: expected 0 < value < 1")
        self.near_null_rtol = float(near_null_rtol)
        #: when the window opens: "plateau" (the plateau test) or a fixed step (Feng & Tu's
        #: protocol, for losses without a plateau: cross-entropy without weight decay)
        if start != "plateau" and not (
            isinstance(start, int) and not isinstance(start, bool) and start >= 1
        ):
            raise ConfigError(
                f"start = {start!r} is not allowed: expected 'plateau' or a step (integer >= 1)"
            )
        if isinstance(start, int) and steps is not None and start + window > steps:
            raise ConfigError(
                f"start = {start} is out of range: expected an integer in [1, {steps - window}] "
                f"(start + window <= steps = {steps})"
            )
        self.start = start
        if not (isinstance(hessian_spectrum, bool) or hessian_spectrum == "auto"):
            raise ConfigError(
                f"hessian_spectrum = {hessian_spectrum!r} is not allowed: expected 'auto', True "
                "or False"
            )
        if spectrum is not None and not isinstance(spectrum, SpectrumSettings):
            raise ConfigError(f"spectrum = {spectrum!r}: expected a SpectrumSettings")
        self.hessian_spectrum = hessian_spectrum
        self.spectrum_settings = spectrum if spectrum is not None else SpectrumSettings()
        self.seed = int(seed)
        self._setup_model(model, optimizer, learning_rate, weight_decay, layers)
        block = plateau_block if plateau_block is not None else window // 4
        block_records = block // every
        if block_records < 2 * 10:
            raise ConfigError(
                f"plateau_block = {block} steps holds {block_records} loss records of every = "
                f"{every}: expected >= 20 (plateau_block >= {20 * every})"
            )
        self.sketch_size = (
            sketch_size if sketch_size is not None else self._default_sketch_size(top_k)
        )
        if self.sketch_size < top_k:
            raise ConfigError(f"sketch_size = {sketch_size}: expected >= top_k = {top_k}")
        check_recorder_memory(
            {lay.name: lay.dim for lay in self.layers},
            self.sketch_size,
            self.top_k,
            directions,
            sum(p.numel() for p in model.parameters()),
        )
        self.plateau = PlateauMonitor(block_records)
        self.trace = BoundedTrace()
        self.step = 0
        self.phase = "burn_in"
        self.plateau_step = -1
        self._window_start = -1
        self._recorders: dict[int, NystromSketch | SubspaceMoments] = {}
        #: joint covariance of all probed layers (cross-layer blocks, for the range projection):
        #: the coordinates along the fixed Hessian directions, or an exact joint sketch in PCA
        #: mode when the probed layers together have at most ``sketch_size`` parameters
        self._joint: CoordinateMoments | NystromSketch | None = None
        self._mean_sum: dict[str, torch.Tensor] = {}
        self._mean_count = 0
        #: the calibrated estimate's projections on directions frozen at mid-window (issue 17)
        self._split: dict[int, SplitRecorder] = {}
        #: PCA mode: the first quarter's directions (frozen at a quarter of the window) and their
        #: second-half recorders, for the direction-noise correction (ivfr_estimator.richardson_fit)
        self._quarter: dict[int, tuple[Array, NDArray[Any]]] = {}
        self._split_quarter: dict[int, SplitRecorder] = {}
        #: layers with a compact sketch: their snapshots not yet given to the recorders
        self._pending: dict[int, _recording.SnapshotBatch] = {}
        self._gen = torch.Generator(device="cpu").manual_seed(self.seed)

    def _default_sketch_size(self, top_k: int) -> int:
        """``k + p`` columns, at least ``MIN_SKETCH_SIZE`` while it fits (``probe._recording``)."""
        return default_sketch_size(self.layers, top_k)

    def _loss_subset(
        self, loss_samples: int | None, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples of the recorded training loss: all, or a fixed random subset."""
        n = self.n_train
        if loss_samples is None:
            n_params = sum(p.numel() for p in self.model.parameters())
            loss_samples = min(n, default_loss_samples(n_params))
        if isinstance(loss_samples, bool) or not isinstance(loss_samples, int):
            raise ConfigError(f"loss_samples = {loss_samples!r}: expected an integer in [1, {n}]")
        if not 1 <= loss_samples <= n:
            raise ConfigError(
                f"loss_samples = {loss_samples} is out of range: expected an integer in [1, {n}] "
                "(the training set size)"
            )
        self.loss_samples = loss_samples
        if loss_samples == n:
            return self.x, self.y
        pick = np.sort(np.random.default_rng([seed, 7]).choice(n, loss_samples, replace=False))
        idx = torch.as_tensor(pick, device=self.x.device)
        return self.x[idx], self.y[idx]

    def _setup_model(
        self,
        model: torch.nn.Module,
        optimizer: Any,
        learning_rate: float | None,
        weight_decay: float,
        layers: str | Sequence[LayerSpec],
    ) -> None:
        """Trained parameters, their η and λ, and the layers (docs/theory.md §11).

        The trained parameters are those with ``requires_grad`` in an optimizer parameter group
        (every parameter with ``requires_grad`` when only ``learning_rate`` is given); of these,
        the ones the loss depends on are probed (``probe._select``).
        """
        check_modes(model, "FluctuationProbe(...)")
        named = dict(model.named_parameters())
        self._hook: Any = None
        self._watch = OptimizerWatch(optimizer, named) if optimizer is not None else None
        self._setup_notes: list[str] = []
        self._restarts: list[str] = []
        if self._watch is not None:
            lr_of = self._watch.settings.learning_rate
            frozen = [n for n, p in named.items() if p.requires_grad and n not in lr_of]
            if frozen:
                self._setup_notes.append(
                    f"parameter(s) {frozen} are in no optimizer parameter group: frozen, not probed"
                )
        else:
            self._lr_given = float(learning_rate)  # type: ignore[arg-type]
            lr_of = {n: self._lr_given for n, p in named.items() if p.requires_grad}
        #: names of the trained parameters, in model order
        self._trained = [n for n, p in named.items() if p.requires_grad and n in lr_of]
        self._read_settings(float(weight_decay))
        check_dtypes_devices(named, self.x, self._trained)
        unused = parameters_without_gradient(model, self.loss_fn, self.x, self.y, self._trained)
        if unused:
            self._setup_notes.append(
                f"parameter(s) {unused} do not enter the loss (no gradient): not probed"
            )
        probed = set(self._trained) - set(unused)
        all_layers = discover_layers(model, probed.__contains__, self._setup_notes)
        self.layers = select_layers(model, all_layers, layers, probed.__contains__)
        self.all_layers = all_layers
        self._trainable_names = {n for lay in all_layers for n in lay.param_names}
        self.learning_rate = max(self._layer_lr(lay, strict=False) for lay in self.layers)

    def _read_settings(self, weight_decay: float = 0.0) -> None:
        """η and λ per trained parameter, from the optimizer (or the constructor's values)."""
        if self._watch is not None:
            st = self._watch.settings
            self._lr_of = {n: st.learning_rate[n] for n in self._trained}
            self._wd_of = {n: st.weight_decay[n] for n in self._trained}
        else:  # learning_rate= (no optimizer): one η and λ for every trained parameter
            self._lr_of = {n: self._lr_given for n in self._trained}
            self._wd_of = {n: weight_decay for n in self._trained}
        decays: dict[float, list[str]] = {}
        for n in self._trained:
            if self._wd_of[n] > 0:
                decays.setdefault(self._wd_of[n], []).append(n)
        self._decay_groups = [(lam, tuple(ns)) for lam, ns in decays.items()]
        values = set(self._wd_of.values())
        self.weight_decay = values.pop() if len(values) == 1 else math.nan
        if hasattr(self, "layers"):
            self.learning_rate = max(self._layer_lr(lay, strict=False) for lay in self.layers)

    def _layer_lr(self, lay: Layer, *, strict: bool = True) -> float:
        """η of a layer: NaN when its parameters have different learning rates (``strict``;
        the largest otherwise)."""
        values = {self._lr_of[n] for n in lay.param_names}
        if len(values) == 1:
            return values.pop()
        return math.nan if strict else max(values)

    def param_groups(self) -> list[dict[str, Any]]:
        """``[{"group", "lr", "weight_decay", "params"}]`` of the trained parameters."""
        if self._watch is not None:
            return self._watch.settings.describe()
        return [
            {
                "group": 0,
                "lr": self.learning_rate,
                "weight_decay": self.weight_decay,
                "params": list(self._trained),
            }
        ]

    def _check_optimizer(self) -> None:
        """Re-read the optimizer (every step): η/λ changes restart the burn-in's plateau test
        and are refused inside the window (``probe._optim.OptimizerWatch``)."""
        if self._watch is None:
            return
        changes = self._watch.check()
        if not changes:
            return
        if self.phase == "window":
            raise OptimizerWatch.refuse_in_window(changes, self.step, self._window_start)
        self._read_settings()
        self.plateau = PlateauMonitor(self.plateau.block_records)
        self._restarts.append(f"step {self.step}: {'; '.join(changes)}")

    def _restarts_note(self) -> str:
        if not self._restarts:
            return ""
        return (
            f". The optimizer's learning rate or weight decay changed {len(self._restarts)} "
            f"time(s) during the burn-in (last at {self._restarts[-1]}), and every change "
            "restarts the plateau test: keep them constant for the last "
            f"{3 * self.plateau.block_records * self.every} steps before the window"
        )

    def attach(self, optimizer: Any) -> FluctuationProbe:
        """Observe every step of ``optimizer`` (``register_step_post_hook``); returns the probe.

        Replaces the manual :meth:`observe` calls. The hook re-reads every parameter group at
        every step (η and λ changes: see :meth:`observe`) and is removed when the window is
        complete (or by :meth:`detach`). A probe built with ``learning_rate=`` checks that the
        optimizer trains the same parameters with that η and its ``weight_decay``.

        Raises
        ------
        ConfigError
            Already attached; steps already observed; not a plain ``torch.optim.SGD``; or the
            optimizer disagrees with the probe's ``learning_rate`` / ``weight_decay`` (named).
        """
        if self._hook is not None:
            raise ConfigError("probe.attach(): the probe is already attached to an optimizer")
        if self.step:
            raise ConfigError(
                f"probe.attach() after {self.step} observed step(s): attach before the first step"
            )
        if self._watch is None:
            watch = OptimizerWatch(optimizer, dict(self.model.named_parameters()))
            st = watch.settings
            for n in self._trained:
                if n not in st.learning_rate:
                    raise ConfigError(
                        f"parameter {n!r} is trained (requires_grad) but in no parameter group "
                        "of the attached optimizer: build the probe with optimizer= instead of "
                        "learning_rate="
                    )
                if (st.learning_rate[n], st.weight_decay[n]) != (self._lr_of[n], self._wd_of[n]):
                    g = st.group_of[n]
                    raise ConfigError(
                        f"optimizer.param_groups[{g}] trains {n!r} with lr = "
                        f"{st.learning_rate[n]:g}, weight_decay = {st.weight_decay[n]:g}, but the "
                        f"probe was built with learning_rate = {self._lr_of[n]:g}, weight_decay "
                        f"= {self._wd_of[n]:g}: build the probe with optimizer= (it reads every "
                        "group)"
                    )
            self._watch = watch
        elif self._watch.optimizer is not optimizer:
            raise ConfigError("probe.attach(optimizer): not the optimizer the probe was built with")

        def post_step(opt: Any, args: Any, kwargs: Any) -> None:
            self._observe()
            if self.done:
                self.detach()

        self._hook = optimizer.register_step_post_hook(post_step)
        return self

    def detach(self) -> None:
        """Remove the optimizer hook of :meth:`attach` (no-op when not attached)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # -------------------------------------------------------------------- training-time interface

    @property
    def done(self) -> bool:
        """Whether the window is complete (further :meth:`observe` calls are ignored)."""
        return self.phase == "done"

    def _params(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters()}

    def _reg(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``Σ_g (λ_g/2) ||w_g||²`` over the trained parameters (per parameter group)."""
        if not self._decay_groups:
            return torch.zeros((), dtype=self.x.dtype, device=self.x.device)
        total: Any = 0
        for lam, names in self._decay_groups:
            total = total + 0.5 * lam * sum((params[n] ** 2).sum() for n in names)
        return torch.as_tensor(total)

    def _trainable(self, name: str) -> bool:
        return name in self._trainable_names

    def _full_loss(
        self, params: Mapping[str, torch.Tensor], target: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = torch.func.functional_call(self.model, dict(params), (self.x,))
        return self.loss_fn(out, self.y if target is None else target) + self._reg(params)

    def train_loss(self) -> float:
        """Training loss (with the weight-decay term) at the current weights.

        On the full training set, or on its fixed subset of ``loss_samples`` samples when the
        set is larger (``ProbeRun.train_loss_samples``); the model is run through
        :func:`torch.func.functional_call` on detached parameters (nothing of it is changed).
        """
        with torch.no_grad():
            params = self._params()
            out = torch.func.functional_call(self.model, params, (self._x_loss,))
            return float(self.loss_fn(out, self._y_loss) + self._reg(params))

    def observe(self) -> None:
        """Call once after every optimizer step.

        Raises
        ------
        MeasurementError
            If the plateau test has not passed by ``steps − window`` (when ``steps`` is given),
            or the optimizer's learning rate or weight decay changed inside the window.
        ConfigError
            If the probe is attached to the optimizer (:meth:`attach` calls this itself), a
            module updates state in its forward pass (BatchNorm or dropout in training mode,
            ``probe._contract``), or the optimizer gained momentum.
        """
        if self._hook is not None:
            raise ConfigError(
                "probe.observe() called while the probe is attached to the optimizer, which "
                "observes every step itself: remove the observe() calls (or call detach())"
            )
        self._observe()

    def _observe(self) -> None:
        if self.phase == "done":
            return
        self.step += 1
        self._check_optimizer()
        if self.step % self.every:
            return
        check_modes(self.model, "observe()")
        loss = self.train_loss()
        if not math.isfinite(loss):
            from sgdfluct.errors import DivergenceError

            raise DivergenceError(
                f"the training loss is {loss} at step {self.step}: SGD diverged; lower the "
                "learning rate"
            )
        self.trace.add(self.step, loss)
        if self.phase == "burn_in":
            passed = self.plateau.add(loss)
            if self.start != "plateau":
                if self.step >= int(self.start):
                    self._start_window()
                return
            if passed:
                self._start_window()
            elif self.steps is not None and self.step > self.steps - self.window:
                check_loss_growth(self)  # a growing loss is divergence (exit 3), not drift
                blocks = [(round(m, 6), round(e, 6)) for m, e in self.plateau.blocks]
                raise MeasurementError(
                    f"no plateau of the training loss by step {self.step} = steps - window "
                    f"(last block means and standard errors: {blocks}"
                    "): the loss is still drifting. Raise sgd.steps, lower the learning rate, or, "
                    "for cross-entropy on separable data (no stationary state: the weights grow "
                    "for ever), add sgd.weight_decay or use model.loss = 'mse'"
                    + self._restarts_note()
                )
            return
        self._record()

    # -------------------------------------------------------------------- the window recorders

    def _start_window(self) -> None:
        _recording.start_window(self)

    def _record(self) -> None:
        _recording.record(self)

    def recorder_bytes(self) -> int:
        """Memory of the streaming recorders and window means (bytes)."""
        return _recording.recorder_bytes(self)

    # -------------------------------------------------------------------- Hessian machinery

    def _hvp_batch(
        self, params: Mapping[str, torch.Tensor], tangents: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return _curvature.hvp_batch(self, params, tangents)

    def _layer_tangents(
        self, params: Mapping[str, torch.Tensor], lay: Layer, vecs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return _curvature.layer_tangents(self, params, lay, vecs)

    def _lanczos_layer(self, params: Mapping[str, torch.Tensor], lay: Layer, k: int) -> Array:
        return _curvature.lanczos_layer(self, params, lay, k)

    def _lambda_max(self, params: Mapping[str, torch.Tensor]) -> float:
        return _curvature.lambda_max(self, params)

    def projected_hessian(self, layer: int, directions: Array) -> Array:
        """``P H_ll Pᵀ`` (k, k) at the current weights for rows ``P`` (k, d_l) of one layer.

        H is the Hessian of the full training loss with its weight-decay term, by
        Hessian-vector products (``torch.func.jvp`` of ``torch.func.grad``).
        """
        lay = self._layer(layer)
        params = self._params()
        p = torch.as_tensor(np.atleast_2d(directions), dtype=self.x.dtype, device=self.x.device)
        if p.shape[1] != lay.dim:
            raise ConfigError(f"directions have {p.shape[1]} columns: layer {layer} has {lay.dim}")
        hv = self._hvp_batch(params, self._layer_tangents(params, lay, p))
        flat = torch.cat([hv[n].reshape(p.shape[0], -1) for n in lay.param_names], 1)
        return (flat @ p.T).to(torch.float64).cpu().numpy()

    def _layer(self, layer: int) -> Layer:
        for lay in [*self.layers, *self.all_layers]:  # a probed selection first (e.g. "*.weight")
            if lay.index == layer:
                return lay
        raise ConfigError(f"layer = {layer}: expected an integer in [1, {len(self.all_layers)}]")

    # -------------------------------------------------------------------- analysis

    def analyze(self) -> ProbeRun:
        """Analyse the window at its mean ``w̄`` (docs/theory.md §11).

        Per layer along its k directions: variances; curvature ``k_i = p_iᵀ H p_i`` (HVP,
        ``torch.func``; H of the loss with its weight-decay term); loss profiles on the full
        training set and the Feng–Tu flatness (grid of :data:`PROFILE_POINTS` points widened by
        doubling until both crossings of ``factor · L_0`` are bracketed, then each crossing
        refined to the resolution of :data:`BISECTION_STEPS` bisections by the ITP method,
        ``probe._flatness.refine_crossings``; the first crossing on either side of 0 on the grid);
        projected noise ``C_k`` from per-sample gradients (``torch.func.vmap(grad)``);
        temperature; ψ on all directions and on the sharp ones (:func:`sgdfluct.landscape.fit_ivfr`,
        bootstrap over directions); the drift share; the subspace theory.

        Drift share: with ``P`` the probed directions of all layers (orthonormal, K columns) and
        ``H_K = Pᵀ H P = E diag(θ) Eᵀ``, the near-null eigenvectors are those with
        ``|θ_j| <= near_null_rtol · λ_max(H)``; the share of direction i is
        ``Σ_{j near-null} E_ij²`` — the Rayleigh–Ritz estimate of its weight in the null space of
        H (symmetry orbits of deep linear nets or ReLU rescalings span several layers, which the
        joint ``H_K`` sees).

        Range projection: with ``M_K`` the joint measured covariance of the probed coordinates
        of all layers (recorded in ``directions = "hessian"`` mode, and in PCA mode when the
        probed layers have at most ``sketch_size`` parameters together) and ``E_0`` the
        near-null eigenvectors above, ``range_cov = Π M_K Π`` with ``Π = I − E_0 E_0ᵀ``: the
        fluctuations with the drift along the symmetry orbit removed to first order (docs §8a
        step 4 without the Procrustes alignment, which is specific to deep linear nets). Both
        rest on ``w̄`` lying close to the minimum manifold: a window over which the orbit drift
        is large compared with the fluctuations (hidden units rotating by O(1) angles) puts
        ``w̄`` inside the curved orbit, where the orbit directions carry curvatures
        ``O(|∇L(w̄)|)`` of either sign well above the near-null level; then no direction is
        near-null and the drift share reads 0 although the raw PCs are drift (docs §11).

        Subspace theory (docs §5 in the subspace): the additive discrete-time equation
        ``H_k M + M H_k − η H_k M H_k = f_S η C_k`` with the projected k×k blocks
        (:func:`sgdfluct.theory.lyapunov.discrete_additive_covariance`; the multiplicative term
        ``K(M) − HMH`` of the exact single-layer equation has no general form for a nonlinear
        network and is dropped), compared with the measured covariance in the same basis.

        Raises
        ------
        MeasurementError
            If the window is not complete.
        """
        if self.phase != "done":
            need = (
                "the plateau test has not passed yet"
                if self.phase == "burn_in"
                else f"the window has {self.step - self._window_start} of {self.window} steps"
            )
            raise MeasurementError(
                f"probe.analyze(): {need} (at step {self.step}); train longer before analysing"
            )
        check_modes(self.model, "analyze()")
        t0 = time.perf_counter()
        notes: list[str] = list(self._setup_notes)
        if self.start != "plateau":
            notes.append(
                f"the window opened at the fixed step {self.start} (probe.start), not by the "
                "plateau test: stationarity was not tested; the calibrated estimate's drift test "
                "per direction decides which directions count (docs §9)"
            )
        if self._restarts:
            notes.append(
                f"the optimizer's learning rate or weight decay changed {len(self._restarts)} "
                f"time(s) during the burn-in (last at {self._restarts[-1]}): the plateau test "
                "restarted at each change; the window ran at constant settings"
            )
        if self.loss_samples < self.n_train:
            notes.append(
                f"the recorded training loss (plateau test, train_loss) is on a fixed random "
                f"subset of {self.loss_samples} of the {self.n_train} training samples"
            )
        dtype = self.x.dtype
        params = {n: (s / self._mean_count).to(dtype) for n, s in self._mean_sum.items()}
        with torch.no_grad():
            loss0 = float(self._full_loss(params))
        lam_max = self._lambda_max(params)

        # directions and measured covariances
        dirs: dict[int, Array] = {}
        meas: dict[int, Array] = {}
        exact: dict[int, bool] = {}
        for lay in self.layers:
            rec = self._recorders[lay.index]
            k = min(self.top_k, lay.dim)
            if isinstance(rec, NystromSketch):
                var, p = rec.top(k)
                dirs[lay.index], meas[lay.index] = p, np.diag(var)
                exact[lay.index] = rec.exact
            else:
                dirs[lay.index] = rec.directions.cpu().numpy()
                meas[lay.index] = rec.covariance()
                exact[lay.index] = True
        order = [lay.index for lay in self.layers]
        sizes = [dirs[i].shape[0] for i in order]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        big_k = int(offsets[-1])

        # joint projected Hessian H_K (K x K) from HVPs
        p_t = {i: torch.as_tensor(dirs[i], dtype=dtype, device=self.x.device) for i in order}
        h_k = joint_projected_hessian(self, params, p_t, offsets)
        # exit 3 unless SGD is stable at the window mean (eta lambda_max < 2, mean square)
        check_window_stability(self, params, p_t, h_k, lam_max)

        # joint projected noise C_K (K x K) from per-sample gradients
        c_k = projected_noise(self, params, p_t, big_k)

        # drift share from the joint compressed Hessian
        theta, evec, drift, null = drift_share(h_k, lam_max, self.near_null_rtol, notes)
        range_cov = range_projected(self, dirs, order, evec[:, null], big_k, notes)

        gen = np.random.default_rng(self.seed)
        results = []
        for a, lay in enumerate(self.layers):
            sl = slice(offsets[a], offsets[a + 1])
            results.append(
                layer_result(
                    self,
                    lay,
                    params,
                    loss0,
                    lam_max,
                    dirs[lay.index],
                    meas[lay.index],
                    h_k[sl, sl],
                    c_k[sl, sl],
                    drift[sl],
                    range_cov[sl, sl],
                    exact[lay.index],
                    gen,
                )
            )

        results = [
            replace(r, ivfr_calibrated=calibrated(self, lay, params, loss0))
            for r, lay in zip(results, self.layers, strict=True)
        ]
        # per-layer trace (Hutch++) and spectral density (SLQ) of H_ll: probe._spectrum
        spectra = hessian_spectra(self, params, notes)
        results = [
            replace(r, hessian_spectrum=spectra[lay.index])
            for r, lay in zip(results, self.layers, strict=True)
        ]
        test_loss, test_acc = self._test_metrics(params)
        if self.sampling == "epoch_shuffle":
            notes.append(
                "sampling = 'epoch_shuffle': f_S is the without-replacement value, an "
                "approximation (docs §3)"
            )
        steps_arr, loss_arr = self.trace.arrays()
        blocks = np.asarray(self.plateau.history, dtype=float).reshape(-1, 2)
        return ProbeRun(
            layers=tuple(results),
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            sampling=self.sampling,
            batch_factor=self.f_s,
            weight_decay=self.weight_decay,
            window=self.window,
            every=self.every,
            directions=self.directions,
            flatness_factor=self.flatness_factor,
            plateau_step=self.plateau_step,
            plateau_blocks=blocks,
            steps_observed=self.step,
            loss0=loss0,
            lambda_max=lam_max,
            subspace_hessian_eigenvalues=theta,
            near_null_rtol=self.near_null_rtol,
            train_steps=steps_arr,
            train_loss=loss_arr,
            test_loss=test_loss,
            test_accuracy=test_acc,
            inputs=self.x.detach().cpu().numpy(),
            targets=self.y.detach().cpu().numpy(),
            recorder_bytes=self.recorder_bytes(),
            analysis_seconds=time.perf_counter() - t0,
            notes=tuple(notes),
            param_groups=tuple(self.param_groups()),
            train_loss_samples=self.loss_samples,
        )

    def _test_metrics(self, params: Mapping[str, torch.Tensor]) -> tuple[float, float]:
        if self.test_data is None or self.test_data[0].shape[0] == 0:
            return math.nan, math.nan
        xt, yt = self.test_data
        with torch.no_grad():
            out = torch.func.functional_call(self.model, dict(params), (xt,))
            loss = float(self.loss_fn(out, yt))
            if self.task == "classification":
                acc = float((out.argmax(-1) == yt).to(torch.float64).mean())
            elif self.task == "one_hot":
                acc = float((out.argmax(-1) == yt.argmax(-1)).to(torch.float64).mean())
            else:
                acc = math.nan
        return loss, acc
