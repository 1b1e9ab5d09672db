"""Calibration table of the IVFR estimators on processes with a known ψ (issue 17).

    .venv/bin/python benchmarks/calibration.py [--repetitions 20] [--out calibration.json]

Prints, per truth (none / equilibrium / IVFR) × window (10, 100, 1000 relaxation times of the
slowest fitted direction) × estimator: the mean ψ, its bias, the coverage of the 95 % interval (of
the reported intervals), the wrong-sign exclusion rate and the share not identified
(``sgdfluct.calibration``; d = 272, top-k = 20, η = 0.2, curvatures log-uniform in [0.05, 1],
10 records per relaxation time), and on the exact linear SGD of ``sgdfluct run`` (one layer
10 -> 2, P = 40, eta = 0.05, S = 4; truth: the psi of the exact stationary covariance).
"""

from __future__ import annotations

import argparse
import json
import time

from sgdfluct.calibration import calibration_table, linear_sgd_table


def _fmt(v: object) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:+.3f}" if abs(v) < 10 else f"{v:.3g}"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repetitions", type=int, default=20)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = calibration_table(repetitions=args.repetitions)
    rows += linear_sgd_table(repetitions=args.repetitions)
    cols = [
        "truth",
        "window_relaxations",
        "estimator",
        "psi_true",
        "mean_psi",
        "bias",
        "coverage",
        "wrong_sign",
        "not_identified",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    print(f"\n{args.repetitions} repetitions per cell, {time.perf_counter() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
