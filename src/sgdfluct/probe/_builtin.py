"""Built-in data, models and training loop of ``sgdfluct probe CONFIG --out DIR`` (docs §11)."""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgdfluct.errors import ConfigError

from ._config import ProbeConfig, load_probe_config, probe_config_to_toml
from ._core import FluctuationProbe, ProbeRun

__all__ = ["ProbeData", "build_model", "load_data", "run_probe", "run_probe_config"]


@dataclass(frozen=True, kw_only=True)
class ProbeData:
    """Training and test set as float64 tensors (targets: labels, one-hot or real values)."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str  # "classification" | "one_hot" | "regression"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("probe.device = 'cuda' is not available here: expected 'auto' or 'cpu'")
    return torch.device(name)


def load_data(config: ProbeConfig, device: torch.device | str = "cpu") -> ProbeData:
    """Digits (stratified ``n_train`` subset, standardized by the training statistics) or the
    teacher-student data of ``run`` (:func:`sgdfluct.data.make_dataset`, not standardized by
    default)."""
    d = config.data
    if d.dataset == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        x = np.asarray(bunch.data, dtype=float)
        labels = np.asarray(bunch.target, dtype=np.int64)
        x_tr, x_te, l_tr, l_te = train_test_split(
            x, labels, train_size=d.n_train, stratify=labels, random_state=d.seed
        )
        if d.standardized:
            mu = x_tr.mean(0)
            sd = x_tr.std(0)
            sd = np.where(sd > 0, sd, 1.0)  # constant (border) pixels stay 0
            x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
        if config.model.loss == "mse":
            eye = np.eye(10)
            y_tr, y_te, task = eye[l_tr], eye[l_te], "one_hot"
        else:
            y_tr, y_te, task = l_tr, l_te, "classification"
    else:
        from sgdfluct.data import make_dataset

        ds = make_dataset(d.run_data_config(), n_test=d.n_test)
        x_tr, y_tr, x_te, y_te = ds.inputs, ds.targets, ds.test_inputs, ds.test_targets
        if d.standardized:
            mu, sd = x_tr.mean(0), x_tr.std(0)
            sd = np.where(sd > 0, sd, 1.0)
            x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
        task = "regression"

    def t(a: np.ndarray) -> torch.Tensor:
        a = np.asarray(a)
        dt = torch.int64 if a.dtype.kind in "iu" else torch.float64
        return torch.as_tensor(a, dtype=dt, device=device)

    return ProbeData(x=t(x_tr), y=t(y_tr), x_test=t(x_te), y_test=t(y_te), task=task)


def build_model(config: ProbeConfig, n_in: int, n_out: int) -> torch.nn.Module:
    """MLP (ReLU/tanh) or deep linear network; ``W ~ N(0, scale²/fan_in)``, biases 0."""
    m = config.model
    widths = [n_in, *m.hidden, n_out]
    mods: list[torch.nn.Module] = []
    for i in range(len(widths) - 1):
        mods.append(torch.nn.Linear(widths[i], widths[i + 1], bias=m.has_bias))
        if m.kind == "mlp" and i < len(widths) - 2:
            mods.append(torch.nn.ReLU() if m.activation == "relu" else torch.nn.Tanh())
    model = torch.nn.Sequential(*mods).to(torch.float64)
    gen = torch.Generator().manual_seed(config.init.seed)
    with torch.no_grad():
        for mod in model:
            if isinstance(mod, torch.nn.Linear):
                fan_in = mod.weight.shape[1]
                mod.weight.copy_(
                    torch.randn(mod.weight.shape, generator=gen, dtype=torch.float64)
                    * (config.init.scale / math.sqrt(fan_in))
                )
                if mod.bias is not None:
                    mod.bias.zero_()
    return model


def _loss_fn(kind: str) -> Any:
    if kind == "cross_entropy":
        return torch.nn.functional.cross_entropy

    def half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``½||f(x) − y||²`` per sample, averaged over the batch (the loss of ``run``)."""
        return 0.5 * ((out - y) ** 2).sum(-1).mean()

    return half_mse


class _Batches:
    """Batch indices for the three sampling modes of docs §3 (explicit torch Generator)."""

    def __init__(self, n: int, size: int, sampling: str, seed: int) -> None:
        self.n, self.size, self.sampling = n, size, sampling
        self.gen = torch.Generator().manual_seed(seed)
        self._epoch: list[torch.Tensor] = []

    def __call__(self) -> torch.Tensor:
        if self.sampling == "with_replacement":
            return torch.randint(self.n, (self.size,), generator=self.gen)
        if self.sampling == "without_replacement":
            return torch.randperm(self.n, generator=self.gen)[: self.size]
        if not self._epoch:
            perm = torch.randperm(self.n, generator=self.gen)
            self._epoch = list(perm[: (self.n // self.size) * self.size].split(self.size))[::-1]
        return self._epoch.pop()


def run_probe(
    config: ProbeConfig, *, progress: bool = False, base_dir: str | Path | None = None
) -> tuple[ProbeRun, dict[str, Any]]:
    """Train the built-in model with plain SGD and probe it; returns the run and timing info.

    The update is ``w <- w - η (∇L_B + λ w)``, what ``torch.optim.SGD(lr=η, weight_decay=λ)``
    does without momentum (written out: it skips torch.optim's import of torch._dynamo).

    Training stops as soon as the probe's window is complete (``sgd.steps`` is the maximum).

    ``base_dir`` is the folder searched first for the module of ``model.factory`` (the config
    file's folder for ``sgdfluct probe``).

    Raises
    ------
    MeasurementError
        No plateau by ``sgd.steps − probe.window`` (the message says what to change).
    DivergenceError
        Non-finite training loss.
    """
    threads = torch.get_num_threads()
    try:
        folder = None if base_dir is None else Path(base_dir).resolve()
        return _run_probe(config, progress=progress, base_dir=folder)
    finally:
        torch.set_num_threads(threads)


#: on the CPU, models below this many parameters train on one thread: a step of a small model is
#: dominated by per-call overhead, and thread hand-offs on a shared machine cost more than they
#: save (measured: 2 threads on a loaded 2-core machine were ~10x slower than 1)
SINGLE_THREAD_PARAMS = 200_000


def _run_probe(
    config: ProbeConfig, *, progress: bool, base_dir: Path | None = None
) -> tuple[ProbeRun, dict[str, Any]]:
    t0 = time.perf_counter()
    device = _device(config.probe.device)
    if config.model.factory is not None:  # the user's model and data (probe._factory)
        from ._factory import load_factory

        model, data = load_factory(config.model.factory, device, base_dir)
    else:
        data = load_data(config, device)
        n_out = 10 if config.data.dataset == "digits" else config.data.n_out
        model = build_model(config, data.x.shape[1], n_out).to(device)
    if device.type == "cpu" and sum(p.numel() for p in model.parameters()) < SINGLE_THREAD_PARAMS:
        torch.set_num_threads(1)
    loss_fn = _loss_fn(config.model.loss)
    s, p = config.sgd, config.probe
    params = [w for w in model.parameters() if w.requires_grad]
    probe = FluctuationProbe(
        model,
        loss_fn,
        (data.x, data.y),
        learning_rate=s.learning_rate,
        weight_decay=s.weight_decay,
        batch_size=s.batch_size,
        sampling=s.sampling,
        layers="all" if isinstance(p.layers, str) else list(p.layers),
        top_k=p.top_k,
        window=p.window,
        every=s.record_every,
        directions=p.directions,
        steps=s.steps,
        flatness_factor=p.flatness_factor,
        plateau_block=p.plateau_block,
        sketch_size=p.sketch_size,
        test_data=(data.x_test, data.y_test),
        task=data.task,
        bootstrap=p.bootstrap,
        near_null_rtol=p.near_null_rtol,
        seed=s.seed,
        start=p.start,
        hessian_spectrum=p.hessian_spectrum,
    )
    batches = _Batches(data.x.shape[0], s.batch_size, s.sampling, s.seed)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=s.steps, desc="probe", unit="step", mininterval=1.0)
    for _ in range(s.steps):
        idx = batches().to(device)
        loss = loss_fn(model(data.x[idx]), data.y[idx])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():  # plain SGD, as torch.optim.SGD(lr, weight_decay) without momentum
            for w, g in zip(params, grads, strict=True):
                if s.weight_decay:
                    g = g.add(w, alpha=s.weight_decay)
                w.sub_(g, alpha=s.learning_rate)
        probe.observe()
        if bar is not None:
            bar.update(1)
        if probe.done:
            break
    if bar is not None:
        bar.close()
    t_train = time.perf_counter() - t0
    run = probe.analyze()
    info = {
        "device": str(device),
        "train_seconds": t_train,
        "total_seconds": time.perf_counter() - t0,
        "steps_run": probe.step,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    return run, info


def run_probe_config(path: str | Path, out_dir: str | Path, *, progress: bool = False) -> dict:
    """``sgdfluct probe CONFIG --out DIR``: read the TOML, run, write the outputs atomically.

    Outputs: ``DIR/config.toml`` (resolved), ``DIR/summary.json``, ``DIR/result.nc``,
    ``DIR/figures/*.png`` (docs/architecture.md, "sgdfluct probe").

    Returns
    -------
    dict
        The summary (with ``"headline"``).
    """
    from sgdfluct.io import (
        atomic_save_figure,
        atomic_write_dataset,
        atomic_write_json,
        atomic_write_text,
    )

    config = load_probe_config(path)
    out = Path(out_dir)
    run, info = run_probe(config, progress=progress, base_dir=Path(path).parent)
    summary = run.to_summary()
    summary["run"] = info
    summary["config"] = str(Path(path))
    atomic_write_text(out / "config.toml", probe_config_to_toml(config))
    atomic_write_dataset(out / "result.nc", run.to_dataset())
    for name, fig in run.figures().items():  # pyplot-free Figures: no global backend switch
        atomic_save_figure(fig, out / "figures" / f"{name}.png")
        fig.clear()
    atomic_write_json(out / "summary.json", summary)
    return summary
