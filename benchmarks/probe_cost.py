"""Cost of the probe on a million-parameter MLP against plain SGD, in one process (issue 19).

The 784-1024-256-10 MLP (1 068 810 parameters, float32, ReLU, cross-entropy, weight decay 1e-4)
on Gaussian inputs with random labels, trained by ``torch.optim.SGD`` with the probe attached
(``probe.attach(optimizer)``). Measured on one thread (torch's, and numpy's BLAS through
threadpoolctl: on a loaded machine a multi-threaded BLAS can spin for tens of seconds in the
stability check's ARPACK iteration):

* ``plain_step_s`` — a plain SGD step (batch 32), no probe;
* ``burn_in_step_s`` — a step with the probe in its burn-in (training loss every ``every`` steps on
  at most ``probe._core.default_loss_samples(n_params)`` samples: 256 at 1.07 M parameters);
* ``window_start_s`` — the stall when the window opens (sketch test matrices);
* ``window_step_s`` — a step inside the window (a snapshot into the sketch every ``every`` steps);
* ``recorder_bytes_per_param`` and the sketch size ℓ;
* with ``--interleaved``: ``interleaved_plain_step_s``, plain SGD steps in blocks of ``every``
  alternating with the window's blocks (the plain model trained on), and
  ``interleaved_window_ratio`` = ``window_step_s`` over it: on a loaded machine the plain and
  window phases measured one after the other see different loads, the alternating blocks the
  same;
* ``analyze_s`` and ``analyze_peak_rss_mb`` (growth of the process's peak resident memory during
  ``analyze()``, a lower bound of its peak above the model) unless ``--no-analyze``;
* with ``--crossings itp,bisection``: ``analyze()`` once per way of refining the flatness
  crossings (``probe._flatness.CROSSING_METHOD``) on the same window, each with the seconds and
  full-data loss evaluations spent in the loss profiles (``profile_s``, ``profile_evaluations``),
  and their ratios (``analyze_ratio``: first over second) measured in the same process;
* with ``--paths exact,fast``: ``analyze()`` once per evaluation path (:data:`PATHS`) on the
  same window, in that order: ``exact`` is the reference (every grid point of every doubling, each
  by a forward pass of the whole model; the calibrated sets' curvature by HVPs), ``outward`` only
  the outward grid search, ``fast`` the defaults (``probe._flatness.GRID_METHOD = "outward"``,
  ``LOSS_PATH = "affine"``, ``probe._fitting.CURVATURE_PATH = "directional"``); each with its
  stage timers (below), and the largest relative differences of the measured numbers from
  ``exact``;
* with ``--eval-cost 64``: the seconds of one full-data loss evaluation of each layer by the
  full path and by the affine path (64 evaluations each);
* with ``--stages``: the inclusive seconds and calls of each stage of ``analyze()`` (λ_max, the
  joint projected Hessian, the stability check, the noise, the per-layer results with their
  flatness, the calibrated sets with their HVPs and flatness, the loss profiles and their
  evaluations, of which those of the crossings' refinement).

The window is opened directly after ``--burn-in`` steps (the private ``_start_window``: the cost
of the plateau test's wait is not what is measured). Run::

    .venv/bin/python benchmarks/probe_cost.py --out /tmp/probe_cost.json [--n-train 2000]
    .venv/bin/python benchmarks/probe_cost.py --out /tmp/w2000.json --no-analyze --interleaved \
        --window 2000
    .venv/bin/python benchmarks/probe_cost.py --out /tmp/paths.json --widths 784-128-64-10 \
        --no-analyze --paths exact,outward,fast

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
    try:  # numpy's BLAS (ARPACK of the stability check, eigendecompositions) on as many threads
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
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
    plain_model, plain_opt = model, opt  # --interleaved: its blocks alternate with the window's

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
    n_window, window_s, plain_s = 0, 0.0, 0.0
    while not probe.done:
        if args.interleaved and n_window % args.every == 0:  # a block of plain steps first
            plain_s += steps(plain_model, plain_opt, args.every) * args.every
        window_s += steps(model, opt, 1)
        n_window += 1
    window = window_s / n_window
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
    if args.interleaved:
        n_blocks = -(-n_window // args.every)
        out["interleaved_plain_step_s"] = plain_s / (n_blocks * args.every)
        out["interleaved_window_ratio"] = window / out["interleaved_plain_step_s"]
    if args.analyze:
        before = _rss_mb()
        t0 = time.perf_counter()
        with _stage_timers(args.stages) as stages:
            run = probe.analyze()
        out["analyze_s"] = time.perf_counter() - t0
        out["analyze_peak_rss_growth_mb"] = _rss_mb() - before
        out["layers"] = [
            {"name": lr.name, "k": lr.k, "exact": lr.sketch_exact} for lr in run.layers
        ]
        if args.stages:
            out["stages"] = stages
        if args.save_arrays:
            _save_arrays(run, args.save_arrays)
    if args.eval_cost:
        out["eval_cost"] = _eval_cost(probe, args.eval_cost)
    if args.paths:
        out["paths"] = _paths(probe, args.paths.split(","))
    if args.crossings:
        out["crossings"] = _crossings(probe, args.crossings.split(","))
    out["load_average_end"] = os.getloadavg()
    return out


#: the evaluation paths of ``--paths``: module attributes of ``sgdfluct.probe`` set for each run
PATHS: dict[str, dict[str, Any]] = {
    "exact": {
        "_flatness.GRID_METHOD": "full",
        "_flatness.LOSS_PATH": "full",
        "_fitting.CURVATURE_PATH": "hvp",
        "_noise.NOISE_PATH": "grad",
        "_stability.JVP_PATH": "full",
    },
    "outward": {
        "_flatness.GRID_METHOD": "outward",
        "_flatness.LOSS_PATH": "full",
        "_fitting.CURVATURE_PATH": "hvp",
        "_noise.NOISE_PATH": "grad",
        "_stability.JVP_PATH": "full",
    },
    # the reference's grid and every other stage, each loss evaluation by the affine path: the
    # reference's evaluation count at a fraction of its cost (with --eval-cost, an estimate of the
    # reference's seconds where running it is too long)
    "exact_affine": {
        "_flatness.GRID_METHOD": "full",
        "_flatness.LOSS_PATH": "affine",
        "_fitting.CURVATURE_PATH": "hvp",
        "_noise.NOISE_PATH": "grad",
        "_stability.JVP_PATH": "full",
    },
    "fast": {
        "_flatness.GRID_METHOD": "outward",
        "_flatness.LOSS_PATH": "affine",
        "_fitting.CURVATURE_PATH": "directional",
        "_noise.NOISE_PATH": "affine",
        "_stability.JVP_PATH": "affine",
    },
}

#: the stages of ``--stages`` (module of ``sgdfluct.probe``, attribute): inclusive timers
STAGES = (
    ("_curvature", "lambda_max"),
    ("_core", "joint_projected_hessian"),
    ("_core", "check_window_stability"),
    ("_stability", "_sample_factors"),
    ("_stability", "subspace_spectral_radius"),
    ("_core", "projected_noise"),
    ("_core", "drift_share"),
    ("_core", "range_projected"),
    ("_core", "layer_result"),
    ("_theory", "flatness"),
    ("_core", "calibrated"),
    ("_fitting", "hvp_batch"),
    ("_fitting", "flatness"),
    ("_flatness", "refine_crossings"),
    ("_flatness", "profiles"),
)


class _stage_timers:
    """Inclusive wall-clock seconds and calls of the :data:`STAGES` during a block (a no-op when
    off); ``profiles`` also counts its full-data loss evaluations (all, and those inside
    ``refine_crossings``)."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.stages: dict[str, Any] = {}
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> dict[str, Any]:
        if not self.on:
            return self.stages
        import importlib

        refining = [False]
        for mod_name, attr in STAGES:
            mod = importlib.import_module(f"sgdfluct.probe.{mod_name}")
            if not hasattr(mod, attr):
                continue
            fn = getattr(mod, attr)
            key = f"{mod_name}.{attr}"
            row = self.stages.setdefault(key, {"s": 0.0, "calls": 0})
            if attr == "profiles":
                row.update(evaluations=0, refinement_evaluations=0)

            def timed(*a: Any, _fn: Any = fn, _row: Any = row, _attr: str = attr, **kw: Any) -> Any:
                if _attr == "refine_crossings":
                    refining[0] = True
                t0 = time.perf_counter()
                try:
                    return _fn(*a, **kw)
                finally:
                    _row["s"] += time.perf_counter() - t0
                    _row["calls"] += 1
                    if _attr == "refine_crossings":
                        refining[0] = False
                    if _attr == "profiles":
                        n = int(a[4].numel()) if len(a) > 4 else int(kw["s"].numel())
                        _row["evaluations"] += n
                        if refining[0]:
                            _row["refinement_evaluations"] += n

            self._saved.append((mod, attr, fn))
            setattr(mod, attr, timed)
        return self.stages

    def __exit__(self, *exc: Any) -> None:
        for mod, attr, fn in reversed(self._saved):
            setattr(mod, attr, fn)


def _eval_cost(probe: Any, n: int) -> dict[str, Any]:
    """Seconds per full-data loss evaluation ``L(w̄ + s p)`` of each layer, by the full path
    (a forward pass of the whole model) and by the affine path, ``n`` evaluations each (random
    unit directions; the affine path's one-off ``Z_p`` of its n directions included)."""
    from sgdfluct.probe import _flatness

    params = {k: (v / probe._mean_count).to(probe.x.dtype) for k, v in probe._mean_sum.items()}
    gen = torch.Generator().manual_seed(9)
    rows: dict[str, Any] = {}
    saved = _flatness.LOSS_PATH
    try:
        for lay in probe.layers:
            p = torch.randn(4, lay.dim, generator=gen, dtype=probe.x.dtype)
            p /= p.norm(dim=1, keepdim=True)
            s = torch.linspace(-1e-2, 1e-2, max(1, n // 4), dtype=probe.x.dtype).repeat(4, 1)
            row = {}
            for path in ("full", "affine"):
                _flatness.LOSS_PATH = path
                t0 = time.perf_counter()
                _flatness.profiles(probe, params, lay, p, s)
                row[f"{path}_s"] = (time.perf_counter() - t0) / s.numel()
            rows[lay.name] = row
    finally:
        _flatness.LOSS_PATH = saved
    return rows


#: the per-direction numbers of a ``LayerResult`` compared between paths
_FIELDS = ("flatness", "loss_profile", "profile_offsets", "curvature", "variances", "noise_var")


def _save_arrays(run: Any, path: Path) -> None:
    """The measured numbers of one ``analyze()`` (``.npz``), to compare runs of two processes
    (the training is deterministic at one thread, so two processes record the same window)."""
    arrays: dict[str, Any] = {"loss0": run.loss0, "lambda_max": run.lambda_max}
    for i, lr in enumerate(run.layers):
        for field in (*_FIELDS, "hessian_proj", "window_mean"):
            arrays[f"{i}.{field}"] = getattr(lr, field)
        for field in ("flatness", "curvature"):
            arrays[f"{i}.calibrated_{field}"] = np.asarray(lr.ivfr_calibrated.get(field, []))
        arrays[f"{i}.psi_all"] = np.nan if lr.ivfr_all["psi"] is None else lr.ivfr_all["psi"]
        psi = lr.ivfr_calibrated.get("psi")
        arrays[f"{i}.psi_calibrated"] = np.nan if psi is None else psi
    np.savez(path, **arrays)


def _max_rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        return float("inf")
    both = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    if not both.any():
        return 0.0
    den = np.maximum(np.abs(b[both]), 1e-300)
    return float(np.max(np.abs(a[both] - b[both]) / den))


def _paths(probe: Any, names: list[str]) -> dict[str, Any]:
    """``analyze()`` once per evaluation path (:data:`PATHS`) on the same window, in the order
    named, with stage timers, and the largest relative differences of the results from the
    reference (``exact`` when named, else the last path named)."""
    import importlib

    rows: dict[str, Any] = {}
    runs = {}
    saved = {}
    for name in names:
        for key in PATHS[name]:
            mod_name, attr = key.split(".")
            mod = importlib.import_module(f"sgdfluct.probe.{mod_name}")
            saved.setdefault(key, getattr(mod, attr, None))
    try:
        for name in names:
            for key, value in PATHS[name].items():
                mod_name, attr = key.split(".")
                setattr(importlib.import_module(f"sgdfluct.probe.{mod_name}"), attr, value)
            before = _rss_mb()
            t0 = time.perf_counter()
            with _stage_timers(True) as stages:
                runs[name] = probe.analyze()
            prof = stages.get("_flatness.profiles", {})
            rows[name] = {
                "analyze_s": time.perf_counter() - t0,
                "peak_rss_growth_mb": _rss_mb() - before,
                "profile_s": prof.get("s"),
                "profile_evaluations": prof.get("evaluations"),
                "refinement_evaluations": prof.get("refinement_evaluations"),
                "load_average": os.getloadavg(),
                "stages": stages,
            }
    finally:
        for key, value in saved.items():
            mod_name, attr = key.split(".")
            setattr(importlib.import_module(f"sgdfluct.probe.{mod_name}"), attr, value)
    ref_name = "exact" if "exact" in names else names[-1]
    ref = runs[ref_name]
    for name in names:
        if name == ref_name:
            continue
        run = runs[name]
        diffs: dict[str, float] = {}
        for field in (*_FIELDS, "temperature"):
            diffs[field] = max(
                _max_rel(getattr(x, field), getattr(y, field))
                for x, y in zip(run.layers, ref.layers, strict=True)
            )
        for field in ("flatness", "curvature"):
            diffs[f"calibrated_{field}"] = max(
                _max_rel(x.ivfr_calibrated.get(field, []), y.ivfr_calibrated.get(field, []))
                for x, y in zip(run.layers, ref.layers, strict=True)
            )
        # matrices: relative to their largest entry; ψ: absolute differences
        for field in ("noise_proj", "hessian_proj"):
            diffs[field + "_rel_to_max"] = max(
                float(np.max(np.abs(getattr(x, field) - getattr(y, field))))
                / max(float(np.max(np.abs(getattr(y, field)))), 1e-300)
                for x, y in zip(run.layers, ref.layers, strict=True)
            )

        def psi(fit: dict[str, Any]) -> float:
            return np.nan if fit.get("psi") is None else float(fit["psi"])

        diffs["psi_all_abs"] = max(
            abs(psi(x.ivfr_all) - psi(y.ivfr_all))
            for x, y in zip(run.layers, ref.layers, strict=True)
        )
        diffs["psi_calibrated_abs"] = max(
            abs(psi(x.ivfr_calibrated) - psi(y.ivfr_calibrated))
            for x, y in zip(run.layers, ref.layers, strict=True)
        )
        rows[name]["max_rel_diff_vs_" + ref_name] = diffs
        rows[name]["analyze_ratio_vs_" + ref_name] = (
            rows[name]["analyze_s"] / rows[ref_name]["analyze_s"]
        )
    return rows


def _crossings(probe: Any, methods: list[str]) -> dict[str, Any]:
    """``analyze()`` once per crossing method on the same window, with the profiles' share."""
    from sgdfluct.probe import _flatness

    plain_profiles = _flatness.profiles
    spent = {"s": 0.0, "evaluations": 0}

    def timed(probe: Any, params: Any, lay: Any, p: Any, s: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = plain_profiles(probe, params, lay, p, s, **kw)
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
        "--interleaved",
        action="store_true",
        help="plain SGD blocks of `every` steps alternate with the window's (load drift cancels)",
    )
    parser.add_argument("--stages", action="store_true", help="stage timers of analyze()")
    parser.add_argument(
        "--eval-cost",
        type=int,
        default=0,
        help="seconds per loss evaluation of each layer, full and affine path (this many each)",
    )
    parser.add_argument(
        "--save-arrays", type=Path, default=None, help="the measured numbers of analyze() (.npz)"
    )
    parser.add_argument(
        "--paths",
        default="",
        help="e.g. 'fast,exact': analyze() once per evaluation path (PATHS), with differences",
    )
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
