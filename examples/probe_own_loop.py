"""The probe in your own training loop: an MLP on scikit-learn's bundled digits (offline).

Run it from a clone (``pip install -e '.[probe]'``)::

    python examples/probe_own_loop.py                      # F.mse_loss on one-hot targets, float64
    python examples/probe_own_loop.py --dtype float32      # the same in float32
    python examples/probe_own_loop.py --loss cross_entropy # F.cross_entropy on integer labels
    python examples/probe_own_loop.py --smoke              # a small model and short window (tests)

What the loop must agree on with :class:`sgdfluct.probe.FluctuationProbe` (docs/theory.md §11):

* **the batch draw matches ``sampling``**: the probe's noise covariance and temperatures use the
  batch factor of that sampling mode, so ``"with_replacement"`` means ``torch.randint`` (below);
  ``"without_replacement"`` means ``torch.randperm(n)[:batch_size]`` every step; and
  ``"epoch_shuffle"`` means one permutation per epoch, cut into batches;
* **the optimizer is plain SGD** (``torch.optim.SGD`` without momentum; its ``lr`` and
  ``weight_decay`` are read from it), stepped once per :meth:`~FluctuationProbe.observe`;
* **``task``** says what accuracy means: integer labels are classification (the default);
  one-hot targets need ``task="one_hot"`` (accuracy compares argmaxes; without it the targets
  look like a regression and the accuracy is undefined);
* **a stationary state exists**: cross-entropy on separable data has none (the weights grow for
  ever), so it needs weight decay; MSE on one-hot targets with weight decay is what the built-in
  ``sgdfluct probe`` uses.

Threads: a model this small (a few thousand weights) trains many times faster on one thread than
on torch's default (one per core): each step is dominated by per-call overhead, and thread
hand-offs cost more than they save, most of all on a busy machine (measured for issue 21: a
user's loop was still training after 971 s with the default, 47 s on one thread, on a loaded
2-core machine). The built-in ``sgdfluct probe`` sets one thread below
``sgdfluct.probe._builtin.SINGLE_THREAD_PARAMS`` (200 000) parameters; do the same here.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sgdfluct.probe import FluctuationProbe


def digits(n_train: int, dtype: torch.dtype, one_hot: bool, seed: int = 0) -> tuple:
    """Standardized digits: (x_train, y_train), (x_test, y_test) as tensors."""
    bunch = load_digits()
    x_tr, x_te, l_tr, l_te = train_test_split(
        bunch.data, bunch.target, train_size=n_train, stratify=bunch.target, random_state=seed
    )
    mu, sd = x_tr.mean(0), x_tr.std(0)
    sd = np.where(sd > 0, sd, 1.0)  # constant border pixels stay 0
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd

    def targets(labels: np.ndarray) -> torch.Tensor:
        lab = torch.as_tensor(labels, dtype=torch.int64)
        return F.one_hot(lab, 10).to(dtype) if one_hot else lab

    xt = torch.as_tensor(x_tr, dtype=dtype), targets(l_tr)
    xe = torch.as_tensor(x_te, dtype=dtype), targets(l_te)
    return xt, xe


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", choices=["mse", "cross_entropy"], default="mse")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--smoke", action="store_true", help="small model, short run (tests)")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    if args.smoke:
        n_train, hidden, steps, window, top_k, every = 400, 8, 12_000, 1_500, 4, 5
    else:
        n_train, hidden, steps, window, top_k, every = 1000, 32, 40_000, 8_000, 30, 5

    one_hot = args.loss == "mse"
    (x, y), (x_test, y_test) = digits(n_train, dtype, one_hot)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    ).to(dtype)
    if sum(p.numel() for p in model.parameters()) < 200_000:
        torch.set_num_threads(1)  # small model: one thread is much faster (module docstring)

    # F.mse_loss averages over the 10 outputs too, so its gradient is 1/5 of ½||f - y||²'s: the
    # learning rate is 5x the built-in probe's 0.2 for the same dynamics
    loss_fn = F.mse_loss if one_hot else F.cross_entropy
    opt = torch.optim.SGD(model.parameters(), lr=1.0 if one_hot else 0.1, weight_decay=0.01)
    batch_size = 32
    probe = FluctuationProbe(
        model,
        loss_fn,
        (x, y),
        optimizer=opt,
        batch_size=batch_size,
        sampling="with_replacement",  # must match the draw below
        top_k=top_k,
        window=window,
        every=every,
        steps=steps,
        test_data=(x_test, y_test),
        task="one_hot" if one_hot else "classification",
        bootstrap=200 if args.smoke else 1000,
    )
    gen = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (batch_size,), generator=gen)  # with replacement
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
        probe.observe()  # once per optimizer step
        if probe.done:  # the recording window is complete
            break
    t_train = time.perf_counter() - t0
    run = probe.analyze()
    summary = run.to_summary()
    print(
        f"{args.loss} {args.dtype}: plateau at step {probe.plateau_step}, window done at step "
        f"{probe.step} ({t_train:.1f} s training, {time.perf_counter() - t0 - t_train:.1f} s "
        f"analysis); test accuracy {run.test_accuracy:.3f}"
    )
    for name, fit in summary["ivfr"].items():
        if fit["psi"] is None:  # too few directions with a finite flatness for a fit
            print(f"  {name}: psi undefined ({fit['n_directions']} directions)")
            continue
        lo, hi = fit["psi_ci"]
        print(
            f"  {name}: psi = {fit['psi']:.3f} [{lo:.3f}, {hi:.3f}], Spearman {fit['spearman']:.2f}"
        )
    return summary


if __name__ == "__main__":
    main()
