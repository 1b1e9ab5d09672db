"""Cost of the probe on a million-parameter MLP against plain SGD, in one process (issue 19).

The 784-1024-256-10 MLP (1 068 810 parameters, float32, ReLU, cross-entropy, weight decay 1e-4)
on Gaussian inputs with random labels, trained by ``torch.optim.SGD`` with the probe attached
(``probe.attach(optimizer)``). Measured, one torch thread:

* ``plain_step_s`` — a plain SGD step (batch 32), no probe;
* ``burn_in_step_s`` — a step with the probe in its burn-in (training loss every ``every`` steps on
  at most ``TRAIN_LOSS_SAMPLES`` samples);
* ``window_start_s`` — the stall when the window opens (sketch test matrices);
* ``window_step_s`` — a step inside the window (a snapshot into the sketch every ``every`` steps);
* ``recorder_bytes_per_param`` and the sketch size ℓ;
* ``analyze_s`` and ``analyze_peak_rss_mb`` (growth of the process's peak resident memory during
  ``analyze()``, a lower bound of its peak above the model) unless ``--no-analyze``.

The window is opened directly after ``--burn-in`` steps (the private ``_start_window``: the cost
of the plateau test's wait is not what is measured). Run::

    .venv/bin/python benchmarks/probe_cost.py --out /tmp/probe_cost.json [--n-train 2000]

Timings on a shared machine vary with its load: report the load with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch

from sgdfluct.probe import FluctuationProbe

WIDTHS = (784, 1024, 256, 10)


def _model(seed: int, widths: tuple[int, ...] = WIDTHS) -> torch.nn.Module:
    torch.manual_seed(seed)
    mods: list[torch.nn.Module] = []
    for i in range(len(widths) - 1):
        mods.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    widths = tuple(int(w) for w in args.widths.split("-"))
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.n_train, widths[0], generator=gen, dtype=dtype)
    y = torch.randint(widths[-1], (args.n_train,), generator=gen)
    probe: Any = None  # observed by its optimizer hook, or by hand (a probe without attach())
    manual = False
    loss_fn = torch.nn.functional.cross_entropy

    def steps(model: torch.nn.Module, opt: Any, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            idx = torch.randint(args.n_train, (args.batch,), generator=gen)
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            if manual:
                probe.observe()
        return (time.perf_counter() - t0) / n

    model = _model(1, widths).to(dtype)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=1e-4)
    steps(model, opt, 5)  # warm-up
    plain = steps(model, opt, args.plain_steps)

    model = _model(1, widths).to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=1e-4)
    kw: dict[str, Any] = {}
    if args.sketch_size:
        kw["sketch_size"] = args.sketch_size
    probe = FluctuationProbe(
        model,
        loss_fn,
        (x, y),
        optimizer=opt,
        batch_size=args.batch,
        top_k=args.top_k,
        window=args.window,
        every=args.every,
        plateau_block=20 * args.every,
        bootstrap=50,
        **kw,
    )
    if hasattr(probe, "attach"):
        probe.attach(opt)
    else:
        manual = True
    steps(model, opt, 5)
    burn = steps(model, opt, args.burn_in)
    t0 = time.perf_counter()
    probe._start_window()
    stall = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_window = 0
    while not probe.done:
        steps(model, opt, 1)
        n_window += 1
    window = (time.perf_counter() - t0) / n_window
    out: dict[str, Any] = {
        "model": args.widths,
        "n_params": n_params,
        "dtype": args.dtype,
        "threads": args.threads,
        "n_train": args.n_train,
        "batch_size": args.batch,
        "every": args.every,
        "top_k": args.top_k,
        "sketch_size": probe.sketch_size,
        "load_average": os.getloadavg(),
        "plain_step_s": plain,
        "burn_in_step_s": burn,
        "burn_in_ratio": burn / plain,
        "window_start_s": stall,
        "window_step_s": window,
        "window_ratio": window / plain,
        "window_steps": n_window,
        "recorder_bytes": probe.recorder_bytes(),
        "recorder_bytes_per_param": probe.recorder_bytes() / n_params,
        "rss_before_analyze_mb": _rss_mb(),
    }
    if args.analyze:
        before = _rss_mb()
        t0 = time.perf_counter()
        run = probe.analyze()
        out["analyze_s"] = time.perf_counter() - t0
        out["analyze_peak_rss_growth_mb"] = _rss_mb() - before
        out["layers"] = [
            {"name": lr.name, "k": lr.k, "exact": lr.sketch_exact} for lr in run.layers
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--widths", default="-".join(map(str, WIDTHS)))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--burn-in", type=int, default=100)
    parser.add_argument("--plain-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sketch-size", type=int, default=0, help="0: the probe's default")
    parser.add_argument("--no-analyze", dest="analyze", action="store_false")
    args = parser.parse_args()
    result = measure(args)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
