"""Two-layer (and depth-3) covariance: every theory of SPEC §8a against the §8a measurement.

Usage::

    .venv/bin/python benchmarks/two_layer_covariance.py --n-in 6 --hidden 3 --n-out 2 \
        --n-samples 60 --learning-rate 0.05 [--depth 3] [--out result.json]

Simulates SGD with a small vectorized NumPy loop (replicas as a leading axis; independent of
``sgdfluct.theory``), measures the covariance with
:func:`sgdfluct.analysis.alignment.measure_layered_covariance`, and prints the per-layer relative
Frobenius error of each theory with the noise floor, and the imbalance eigenvalues (predicted vs
simulated).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from sgdfluct import networks as nw
from sgdfluct.analysis.alignment import detect_saturation, measure_layered_covariance
from sgdfluct.config import DataConfig
from sgdfluct.data import make_dataset
from sgdfluct.theory.layered import layered_covariance
from sgdfluct.theory.symmetry import imbalance_eigenvalues, noise_equilibrium

Array = NDArray[np.float64]


def numpy_sgd(
    inputs: Array,
    targets: Array,
    shapes: Sequence[tuple[int, int]],
    theta0: Array,
    *,
    learning_rate: float,
    batch_size: int,
    steps: int,
    record_every: int,
    replicas: int,
    rng: np.random.Generator,
) -> tuple[Array, Array]:
    """Plain mini-batch SGD (with replacement) for depth-L linear nets; returns (R, T, d), (T,)."""
    ws = [np.broadcast_to(w, (replicas, *w.shape)).copy() for w in nw.unflatten(theta0, shapes)]
    n_rec = steps // record_every + 1
    traj = np.empty((replicas, n_rec, nw.n_params(shapes)))
    rec_steps = np.arange(n_rec) * record_every
    p = inputs.shape[0]
    for k in range(steps + 1):
        if k % record_every == 0:
            traj[:, k // record_every] = np.concatenate([w.reshape(replicas, -1) for w in ws], 1)
            if not np.all(np.isfinite(traj[:, k // record_every])):
                raise FloatingPointError(f"SGD diverged at step {k}")
        if k == steps:
            break
        idx = rng.integers(0, p, size=(replicas, batch_size))
        acts = [inputs[idx]]  # (R, S, N_i)
        for w in ws:
            acts.append(acts[-1] @ np.swapaxes(w, 1, 2))
        back = acts[-1] - targets[idx]  # (R, S, N_o)
        grads = []
        for l in range(len(ws) - 1, -1, -1):
            grads.append(np.swapaxes(back, 1, 2) @ acts[l] / batch_size)
            back = back @ ws[l]
        for w, g in zip(ws, grads[::-1], strict=True):
            w -= learning_rate * g
    return traj, rec_steps


def run_case(
    *,
    n_in: int,
    hidden: int,
    n_out: int,
    n_samples: int,
    learning_rate: float,
    depth: int = 2,
    batch_size: int = 10,
    label_noise: float = 1.0,
    replicas: int = 32,
    windows_per_replica: int = 4,
    burn_in: int = 0,
    record_every: int = 10,
    data_seed: int = 0,
    seed: int = 1,
    start: str = "equilibrium",
    methods: Sequence[str] = ("continuum", "discrete", "multiplicative", "renormalized"),
) -> dict[str, object]:
    """Simulate, measure and compare; returns a JSON-ready dict."""
    ds = make_dataset(
        DataConfig(
            n_in=n_in, n_out=n_out, n_samples=n_samples, label_noise=label_noise, seed=data_seed
        )
    )
    x, y = ds.inputs, ds.targets
    dims = [n_in] + [hidden] * (depth - 1) + [n_out]
    shapes = [(dims[i + 1], dims[i]) for i in range(depth)]
    if depth == 2:
        eq = noise_equilibrium(x, y, hidden)
        predicted = eq.imbalance_eigenvalues
        theta0 = eq.theta if start == "equilibrium" else nw.balanced_minimum(x, y, shapes)
    else:
        predicted = None
        theta0 = nw.balanced_minimum(x, y, shapes)
    h = np.linalg.eigvalsh(nw.hessian(theta0, shapes, x, y))
    h_min = h[h > 1e-7 * h[-1]].min()
    window = int(np.ceil(100.0 / (learning_rate * h_min)))
    steps = burn_in + windows_per_replica * window + record_every
    t0 = time.perf_counter()
    traj, rec = numpy_sgd(
        x,
        y,
        shapes,
        theta0,
        learning_rate=learning_rate,
        batch_size=batch_size,
        steps=steps,
        record_every=record_every,
        replicas=replicas,
        rng=np.random.default_rng(seed),
    )
    t_sim = time.perf_counter() - t0
    imb = imbalance_eigenvalues(traj, shapes)
    sat = detect_saturation(rec, imb, n_blocks=20)
    meas = measure_layered_covariance(
        traj,
        rec,
        shapes,
        x,
        y,
        learning_rate=learning_rate,
        burn_in_step=burn_in if burn_in > 0 else 0,
        window_steps=window,
    )
    out: dict[str, object] = {
        "shapes": shapes,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "sampling": "with_replacement",
        "replicas": replicas,
        "steps": steps,
        "window_steps": meas.window_steps,
        "n_windows": meas.n_windows,
        "simulation_seconds": round(t_sim, 1),
        "noise_floor": [meas.noise_floor(l) for l in range(1, depth + 1)],
        "null_variance": meas.null_variance,
        "range_variance": meas.range_variance,
        "saturation_step": sat.step,
        "saturated": sat.saturated,
        "imbalance_simulated": imb[:, rec >= burn_in].mean(axis=(0, 1)).tolist(),
        "imbalance_predicted": None if predicted is None else predicted.tolist(),
    }
    for m in methods:
        t0 = time.perf_counter()
        th = layered_covariance(
            meas.theta_ref,
            shapes,
            x,
            y,
            learning_rate=learning_rate,
            batch_size=batch_size,
            sampling="with_replacement",
            method=m,  # type: ignore[arg-type]
            rng=np.random.default_rng(seed + 100),
            n_monte_carlo=128,
        )
        out[m] = {
            "error": [meas.relative_error(th.cov, l) for l in range(1, depth + 1)],
            "residual": th.residual,
            "converged": th.converged,
            "seconds": round(time.perf_counter() - t0, 1),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-in", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=3)
    ap.add_argument("--n-out", type=int, default=2)
    ap.add_argument("--n-samples", type=int, default=60)
    ap.add_argument("--learning-rate", type=float, default=0.05)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--replicas", type=int, default=32)
    ap.add_argument("--windows-per-replica", type=int, default=4)
    ap.add_argument("--burn-in", type=int, default=0)
    ap.add_argument("--start", choices=["equilibrium", "balanced"], default="equilibrium")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=str, default="")
    a = ap.parse_args()
    res = run_case(
        n_in=a.n_in,
        hidden=a.hidden,
        n_out=a.n_out,
        n_samples=a.n_samples,
        learning_rate=a.learning_rate,
        depth=a.depth,
        batch_size=a.batch_size,
        replicas=a.replicas,
        windows_per_replica=a.windows_per_replica,
        burn_in=a.burn_in,
        start=a.start,
        seed=a.seed,
    )
    text = json.dumps(res, indent=1, default=float)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
