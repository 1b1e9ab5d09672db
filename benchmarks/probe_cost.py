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
  ``analyze()``, a lower bound of its peak above the model) unless ``--no-analyze``;
* with ``--crossings itp,bisection``: ``analyze()`` once per way of refining the flatness
  crossings (``probe._flatness.CROSSING_METHOD``) on the same window, each with the seconds and
  full-data loss evaluations spent in the loss profiles (``profile_s``, ``profile_evaluations``),
  and their ratios (``analyze_ratio``: first over second) measured in the same process.

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

import numpy as np
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
    if args.crossings:
        out["crossings"] = _crossings(probe, args.crossings.split(","))
    return out


def _crossings(probe: Any, methods: list[str]) -> dict[str, Any]:
    """``analyze()`` once per crossing method on the same window, with the profiles' share."""
    from sgdfluct.probe import _flatness

    plain_profiles = _flatness.profiles
    spent = {"s": 0.0, "evaluations": 0}

    def timed(probe: Any, params: Any, lay: Any, p: Any, s: Any) -> Any:
        t0 = time.perf_counter()
        out = plain_profiles(probe, params, lay, p, s)
        spent["s"] += time.perf_counter() - t0
        spent["evaluations"] += int(s.numel())
        return out

    rows: dict[str, Any] = {}
    runs = {}
    _flatness.profiles = timed
    try:
        for method in methods:
            _flatness.CROSSING_METHOD = method
            spent.update(s=0.0, evaluations=0)
            t0 = time.perf_counter()
            runs[method] = probe.analyze()
            rows[method] = {
                "analyze_s": time.perf_counter() - t0,
                "profile_s": spent["s"],
                "profile_evaluations": spent["evaluations"],
            }
    finally:
        _flatness.profiles = plain_profiles
        _flatness.CROSSING_METHOD = methods[0]
    a, b = methods[0], methods[-1]
    rows["analyze_ratio"] = rows[a]["analyze_s"] / rows[b]["analyze_s"]
    rows["profile_ratio"] = rows[a]["profile_s"] / rows[b]["profile_s"]
    rows["evaluation_ratio"] = rows[a]["profile_evaluations"] / rows[b]["profile_evaluations"]
    # the two flatness vectors differ within the crossings' resolution (grid cell / 2^bisections)
    rows["flatness_max_rel_diff"] = max(
        float(np.nanmax(np.abs(x.flatness - y.flatness) / np.abs(y.flatness), initial=0.0))
        for x, y in zip(runs[a].layers, runs[b].layers, strict=True)
    )
    return rows


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
    parser.add_argument(
        "--crossings",
        default="",
        help="e.g. 'itp,bisection': analyze() once per crossing method, with ratios",
    )
    args = parser.parse_args()
    result = measure(args)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
