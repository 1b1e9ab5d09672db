"""Base configurations of the reproduction's sweeps and the scale rules (docs/theory.md §10).

Each claim module defines its own sweeps (``sweeps(scale)``) from these bases; :func:`shrink`
turns any sweep into its smoke-test version.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ._base import SweepDef

#: the scales of the reproduction: ``quick`` (exploratory), ``full`` (confirmatory), ``smoke``
#: (tiny sizes for the test suite: exercises the pipeline, its verdicts carry no weight)
SCALES = ("quick", "full", "smoke")


#: the confirmatory (full) scale's seeds: every base seed (data, sgd, init) plus this offset, so
#: that no cell of it shares a seed with the exploratory (quick) scale (replicate r >= 1 derives
#: its seeds from the base's by SeedSequence, so distinct bases give distinct streams) nor with
#: claim 3's pilot (data seeds 100-104)
FULL_SEED_OFFSET = 1_000_000


def fresh_seeds(base: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``base`` with every seed (``data.seed``, ``sgd.seed``, ``init.seed``) moved by
    :data:`FULL_SEED_OFFSET`: the confirmatory scale never reuses an exploratory seed."""
    out = copy.deepcopy({k: dict(v) for k, v in base.items()})
    for section in ("data", "sgd", "init"):
        if section in out and "seed" in out[section]:
            out[section]["seed"] = int(out[section]["seed"]) + FULL_SEED_OFFSET
    return out


#: the full scale's length multiplier for sweeps whose verdicts are limited by seeds (the IVFR
#: sweeps of claims 6, 7a-d): with a share I² of the between-seed variance that is between data
#: sets (Higgins' I², reported per grid point), k x longer runs leave sd² ∝ I² + (1 - I²)/k, and the
#: seeds needed for a half-width scale like sd², so the cost k n ∝ k I² + (1 - I²) never falls
#: with k: a longer run buys nothing that seeds do not buy as cheaply (I² = 0 at 7a/7b's quick
#: grid points but 0.42 at N_o = 6 and 0.71 for 7c/d), while 3 x the quick length keeps the
#: windows and the saturation gate well inside each run. The seeds stay those planned from the
#: quick (1 x) sd, which is conservative at 3 x (issue 18: "fewer, better-chosen cells")
SEED_LIMITED_FULL_FACTOR = 3


def length_factor(scale: str, *, seed_limited: bool = False) -> int:
    """Simulation length multiplier of ``scale``: 10 at ``full`` (3 for a ``seed_limited`` sweep,
    :data:`SEED_LIMITED_FULL_FACTOR`), else 1."""
    if scale != "full":
        return 1
    return SEED_LIMITED_FULL_FACTOR if seed_limited else 10


_SINGLE: dict[str, dict[str, Any]] = {
    "data": {"n_in": 10, "n_out": 1, "n_samples": 20, "label_noise": 1.0, "seed": 0},
    "model": {"depth": 1},
    "sgd": {
        "learning_rate": 0.05,
        "batch_size": 4,
        "sampling": "with_replacement",
        "steps": 100_000,
        "burn_in": 5_000,
        "record_every": 5,
        "replicas": 32,
        "seed": 1,
    },
    "analysis": {"bootstrap": 300},
}


# depth >= 2 sweeps start from the paper's random start (init.kind = "auto" -> "random")
_TWO: dict[str, dict[str, Any]] = {
    "data": {"n_in": 6, "n_out": 2, "n_samples": 60, "label_noise": 1.0, "seed": 0},
    "model": {"depth": 2, "hidden": 3},
    "sgd": {
        "learning_rate": 0.05,
        "batch_size": 10,
        "sampling": "with_replacement",
        "steps": 200_000,
        "burn_in": 20_000,
        "record_every": 10,
        "replicas": 8,
        "seed": 1,
    },
    "init": {"kind": "auto", "scale": 1.0, "seed": 0},
    "analysis": {"bootstrap": 300},
}


_WIDE: dict[str, dict[str, Any]] = {
    "data": {"n_in": 20, "n_out": 5, "n_samples": 200, "label_noise": 1.0, "seed": 0},
    "model": {"depth": 2, "hidden": 5},
    "sgd": {
        "learning_rate": 0.05,
        "batch_size": 10,
        "sampling": "with_replacement",
        "steps": 300_000,
        "burn_in": 30_000,
        "record_every": 10,
        "replicas": 8,
        "seed": 1,
    },
    "init": {"kind": "auto", "scale": 1.0, "seed": 0},
    "analysis": {"bootstrap": 300},
}


def _merge(base: Mapping[str, Mapping[str, Any]], **sections: Mapping[str, Any]) -> dict:
    out = copy.deepcopy({k: dict(v) for k, v in base.items()})
    for name, values in sections.items():
        out.setdefault(name, {}).update(values)
    return out


def shrink(sweep: SweepDef) -> SweepDef:
    """Smoke-test version of a sweep: short simulations, few cells (two values per axis)."""
    deep = sweep.base["model"].get("depth", 1) >= 2
    sgd = (
        {"steps": 60_000, "burn_in": 5_000, "replicas": 2}
        if deep
        else {"steps": 3_000, "burn_in": 500, "replicas": 2, "record_every": 5}
    )
    base = _merge(sweep.base, sgd=sgd, analysis={"bootstrap": 20})
    if not deep:
        base["data"]["n_in"] = min(base["data"]["n_in"], 20)
    grid = {k: (v[0], v[-1]) if len(v) > 2 else v for k, v in sweep.grid.items()}
    if "data.n_samples" in grid and not deep:
        # keep alpha = P / N_i: the grid was built for the unshrunk N_i
        ratio = base["data"]["n_in"] / sweep.base["data"]["n_in"]
        grid["data.n_samples"] = tuple(max(2, round(p * ratio)) for p in grid["data.n_samples"])
    return SweepDef(name=sweep.name, base=base, grid=grid, replicates=min(sweep.replicates, 2))
