"""The probe's per-layer Hessian trace and spectral density against curvlinops (issue 19, item 5).

On the digits MLP of ``configs/probe_digits.toml`` (64-32-32-10, ReLU, ½‖f − y‖² on one-hot
targets, weight decay 0.05), trained by plain SGD past its measured plateau (step 8200), each
layer's Hessian block ``H_ll`` (with its weight-decay term, as in the probe) three ways:

* the probe (``probe._spectrum.layer_spectrum`` on the probe's HVPs: Hutch++ with 60 HVPs, SLQ
  with 4 starts × 40 steps and full reorthogonalization — what ``analyze()`` adds);
* curvlinops (``curvlinops-for-pytorch``, the ``crosscheck`` extra): ``hutchpp_trace`` and
  ``hutchinson_trace`` with the same 60 matvecs, and ``LanczosApproximateSpectrumCached`` (4
  repeats of 40 Lanczos vectors, no reorthogonalization; κ = 3, margin 0.05, and the probe's
  Ritz range as its boundaries, so both densities lie on one grid with one width σ) of
  ``(n_out/2) · HessianLinearOperator(MSELoss(mean)) + λ I`` on the layer's parameters (the
  probe's loss is ``n_out/2`` times torch's mean MSE);
* dense: the block from ``d_l`` probe HVPs, its exact trace and ``eigvalsh`` (checked against
  curvlinops' dense block: relative Frobenius difference printed).

Densities are compared with the exact eigenvalues broadened by the same Gaussians (L1 distance
on the grid); moments are ``Σ w θ^k`` of the probe's quadrature and grid integrals of the
densities (these include the broadening σ² in the second moment, the same for all three).
Run::

    .venv/bin/pip install curvlinops-for-pytorch   # or pip install -e '.[crosscheck]'
    .venv/bin/python benchmarks/curvature_crosscheck.py --out /tmp/curvature_crosscheck.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgdfluct.probe import FluctuationProbe, SpectrumSettings, load_probe_config
from sgdfluct.probe._builtin import _Batches, _loss_fn, build_model, load_data
from sgdfluct.probe._curvature import layer_matmat
from sgdfluct.probe._spectrum import SPECTRUM_SEED, broadened_density, layer_spectrum

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "probe_digits.toml"


def _identity_operator(shapes: list[tuple[int, ...]], dtype: torch.dtype) -> Any:
    from curvlinops._torch_base import PyTorchLinearOperator

    class Identity(PyTorchLinearOperator):
        SELF_ADJOINT = True

        def _matmat(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
            return [t.clone() for t in x]

        @property
        def device(self) -> torch.device:
            return torch.device("cpu")

        @property
        def dtype(self) -> torch.dtype:
            return dtype

    return Identity(shapes, shapes)


def _train(args: argparse.Namespace) -> tuple[Any, torch.nn.Module, Any, Any]:
    config = load_probe_config(args.config)
    data = load_data(config, "cpu")
    model = build_model(config, data.x.shape[1], 10)
    loss_fn = _loss_fn(config.model.loss)
    s = config.sgd
    batches = _Batches(data.x.shape[0], s.batch_size, s.sampling, s.seed)
    params = list(model.parameters())
    t0 = time.perf_counter()
    for _ in range(args.steps):  # the update of probe._builtin.run_probe
        idx = batches()
        loss = loss_fn(model(data.x[idx]), data.y[idx])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for w, g in zip(params, grads, strict=True):
                w.sub_(g.add(w, alpha=s.weight_decay), alpha=s.learning_rate)
    print(f"trained {args.steps} steps in {time.perf_counter() - t0:.1f} s")
    return config, model, data, loss_fn


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import curvlinops

    torch.set_num_threads(args.threads)
    config, model, data, loss_fn = _train(args)
    s, p = config.sgd, config.probe
    probe = FluctuationProbe(
        model,
        loss_fn,
        (data.x, data.y),
        learning_rate=s.learning_rate,
        weight_decay=s.weight_decay,
        batch_size=s.batch_size,
        top_k=p.top_k,
        window=p.window,
        every=s.record_every,
        seed=s.seed,
    )
    params = probe._params()
    named = dict(model.named_parameters())
    st = SpectrumSettings()
    n_out = int(data.y.shape[1])
    lam = s.weight_decay
    first = probe.layers[0]  # warm-up: analyze() has run HVPs before its spectra
    layer_matmat(probe, params, first)(np.zeros((first.dim, st.starts)))
    rows = []
    spectra_s = 0.0
    for lay in probe.layers:
        d = lay.dim
        matmat = layer_matmat(probe, params, lay)
        rng = np.random.default_rng([probe.seed, SPECTRUM_SEED, lay.index])  # as in analyze()
        t0 = time.perf_counter()
        spec = layer_spectrum(matmat, d, st, rng)
        t_probe = time.perf_counter() - t0
        spectra_s += t_probe
        t0 = time.perf_counter()
        h = matmat(np.eye(d))
        t_dense = time.perf_counter() - t0
        h = 0.5 * (h + h.T)
        evals = np.linalg.eigvalsh(h)
        tr_exact = float(np.trace(h))

        # curvlinops on the same block: (n_out / 2) H[MSELoss(mean)] + lam I
        ps = [named[n] for n in lay.param_names]
        h_cl = curvlinops.HessianLinearOperator(
            model, torch.nn.MSELoss(reduction="mean"), ps, [(data.x, data.y)]
        )
        eye_op = _identity_operator([tuple(q.shape) for q in ps], ps[0].dtype)
        op = 0.5 * n_out * h_cl + lam * eye_op
        dense_cl = (op @ torch.eye(d, dtype=torch.float64)).numpy()
        block_diff = float(np.linalg.norm(dense_cl - h) / np.linalg.norm(h))
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        tr_cl_pp = float(curvlinops.hutchpp_trace(op, st.trace_matvecs))
        tr_cl_h = float(curvlinops.hutchinson_trace(op, st.trace_matvecs))
        lanczos = curvlinops.LanczosApproximateSpectrumCached(op, st.steps, boundaries=spec.support)
        grid_cl, dens_cl = lanczos.approximate_spectrum(
            num_repeats=st.starts, num_points=st.grid_points, kappa=st.kappa, margin=st.margin
        )
        t_cl = time.perf_counter() - t0
        grid_cl, dens_cl = grid_cl.numpy(), dens_cl.numpy()
        assert np.allclose(grid_cl, spec.grid, rtol=1e-12, atol=1e-12 * abs(spec.grid).max())
        _, dens_exact, sigma = broadened_density(
            evals,
            np.full(d, 1.0 / d),
            steps=st.steps,
            grid_points=st.grid_points,
            kappa=st.kappa,
            margin=st.margin,
            support=spec.support,
        )
        assert math.isclose(sigma, spec.broadening, rel_tol=1e-12)
        g = spec.grid

        def integ(f: np.ndarray, g: np.ndarray = g) -> float:
            return float(np.trapezoid(f, g))

        def grid_moments(dens: np.ndarray, g: np.ndarray = g) -> tuple[float, float, float]:
            return integ(dens), integ(g * dens), integ(g**2 * dens)

        m_probe, m_cl, m_exact = (
            grid_moments(spec.density),
            grid_moments(dens_cl),
            grid_moments(dens_exact),
        )
        mean_exact, second_exact = float(evals.mean()), float(np.mean(evals**2))
        # exact standard errors of the SLQ moments: the mean of `starts` Rademacher forms
        # zᵀ A z / d has variance 2 (||A||_F² − Σ a_ii²) / (starts d²), A = H or H²
        h2 = h @ h
        se1, se2 = (
            math.sqrt(2.0 * (np.sum(a**2) - np.sum(np.diag(a) ** 2)) / st.starts) / d
            for a in (h, h2)
        )
        rows.append(
            {
                "layer": lay.index,
                "n_params": d,
                "method": spec.method,
                "hvps_probe": spec.matvecs,
                "seconds_probe": t_probe,
                "seconds_curvlinops": t_cl,
                "seconds_dense": t_dense,
                "dense_block_rel_diff_vs_curvlinops": block_diff,
                "trace_exact": tr_exact,
                "trace_probe": spec.trace,
                "trace_probe_se": spec.trace_se,
                "trace_probe_z": (spec.trace - tr_exact) / spec.trace_se
                if spec.trace_se > 0
                else 0.0,
                "trace_curvlinops_hutchpp": tr_cl_pp,
                "trace_curvlinops_hutchinson": tr_cl_h,
                "trace_rel_err_probe": _rel(spec.trace, tr_exact),
                "trace_rel_err_curvlinops_hutchpp": _rel(tr_cl_pp, tr_exact),
                "trace_rel_err_curvlinops_hutchinson": _rel(tr_cl_h, tr_exact),
                "trace_rel_diff_probe_vs_curvlinops": _rel(spec.trace, tr_cl_pp),
                "lambda_min_exact": float(evals[0]),
                "lambda_max_exact": float(evals[-1]),
                "ritz_min": spec.support[0],
                "ritz_max": spec.support[1],
                "broadening": spec.broadening,
                "slq_mean": spec.mean,
                "slq_second_moment": spec.moment(2),
                "mean_exact": mean_exact,
                "second_moment_exact": second_exact,
                "slq_mean_rel_err": _rel(spec.mean, mean_exact),
                "slq_second_moment_rel_err": _rel(spec.moment(2), second_exact),
                "slq_mean_z": (spec.mean - mean_exact) / se1,
                "slq_second_moment_z": (spec.moment(2) - second_exact) / se2,
                "density_mass": {"probe": m_probe[0], "curvlinops": m_cl[0], "exact": m_exact[0]},
                "density_mean_rel_err": {
                    "probe": _rel(m_probe[1], m_exact[1]),
                    "curvlinops": _rel(m_cl[1], m_exact[1]),
                },
                "density_second_moment_rel_err": {
                    "probe": _rel(m_probe[2], m_exact[2]),
                    "curvlinops": _rel(m_cl[2], m_exact[2]),
                },
                "density_l1_vs_exact": {
                    "probe": integ(np.abs(spec.density - dens_exact)),
                    "curvlinops": integ(np.abs(dens_cl - dens_exact)),
                },
                "density_l1_probe_vs_curvlinops": integ(np.abs(spec.density - dens_cl)),
            }
        )
    return {
        "config": str(args.config),
        "steps": args.steps,
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "curvlinops_version": getattr(curvlinops, "__version__", "3.x"),
        "torch_version": torch.__version__,
        "settings": {
            "trace_matvecs": st.trace_matvecs,
            "starts": st.starts,
            "steps": st.steps,
            "hvps_per_layer": st.matvecs,
        },
        "spectra_seconds_total": spectra_s,
        "layers": rows,
    }


def _table(res: dict[str, Any]) -> str:
    lines = [
        "layer  d_l   HVPs  tr dense    tr probe ± SE          z     tr curvlinops++  "
        "rel(probe,dense) rel(cl++,dense) rel(probe,cl++)",
    ]
    for r in res["layers"]:
        lines.append(
            f"{r['layer']:>5} {r['n_params']:>5} {r['hvps_probe']:>5}  {r['trace_exact']:<10.5g} "
            f"{r['trace_probe']:<10.5g} ± {r['trace_probe_se']:<9.3g} {r['trace_probe_z']:>6.2f}  "
            f"{r['trace_curvlinops_hutchpp']:<15.5g}  {r['trace_rel_err_probe']:<16.2e} "
            f"{r['trace_rel_err_curvlinops_hutchpp']:<15.2e} "
            f"{r['trace_rel_diff_probe_vs_curvlinops']:.2e}"
        )
    lines.append("")
    lines.append(
        "layer  SLQ mean rel.err (z)  SLQ 2nd mom. rel.err (z)  Ritz [min, max] vs exact "
        "[λmin, λmax]   density L1 vs exact: probe / curvlinops   L1 probe-vs-cl  mass p/cl"
    )
    for r in res["layers"]:
        l1, mass = r["density_l1_vs_exact"], r["density_mass"]
        lines.append(
            f"{r['layer']:>5}  {r['slq_mean_rel_err']:.2e} ({r['slq_mean_z']:+.2f})    "
            f"{r['slq_second_moment_rel_err']:.2e} ({r['slq_second_moment_z']:+.2f})        "
            f"[{r['ritz_min']:.4g}, {r['ritz_max']:.5g}] vs [{r['lambda_min_exact']:.4g}, "
            f"{r['lambda_max_exact']:.5g}]   "
            f"{l1['probe']:.3f} / {l1['curvlinops']:.3f}"
            f"                       {r['density_l1_probe_vs_curvlinops']:.3f}"
            f"           {mass['probe']:.4f}/{mass['curvlinops']:.4f}"
        )
    lines.append("")
    lines.append(
        "density moments by grid integral, rel. err vs the exact broadened density (probe / "
        "curvlinops): mean "
        + ", ".join(
            f"{r['density_mean_rel_err']['probe']:.1e}/{r['density_mean_rel_err']['curvlinops']:.1e}"
            for r in res["layers"]
        )
        + "; second "
        + ", ".join(
            f"{r['density_second_moment_rel_err']['probe']:.1e}/"
            f"{r['density_second_moment_rel_err']['curvlinops']:.1e}"
            for r in res["layers"]
        )
    )
    lines.append(
        "seconds per layer (probe spectra / curvlinops trace+density / dense block): "
        + ", ".join(
            f"{r['seconds_probe']:.2f}/{r['seconds_curvlinops']:.2f}/{r['seconds_dense']:.2f}"
            for r in res["layers"]
        )
    )
    lines.append(
        f"probe spectra (what analyze() adds): {res['spectra_seconds_total']:.2f} s for "
        f"{sum(r['hvps_probe'] for r in res['layers'])} HVPs on {res['threads']} thread(s), "
        f"load {res['load_average'][0]:.1f}; dense blocks vs curvlinops' dense blocks: "
        + ", ".join(f"{r['dense_block_rel_diff_vs_curvlinops']:.1e}" for r in res["layers"])
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--steps", type=int, default=10_000, help="SGD steps (plateau at 8200)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="torch seed of curvlinops' draws")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    res = measure(args)
    print(_table(res))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
