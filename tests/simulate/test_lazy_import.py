"""``import sgdfluct.simulate`` stays light: numba loads only when the numba engine first runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sgdfluct.simulate import _kernels

HEAVY = ("numba", "llvmlite", "torch", "jax", "matplotlib", "xarray")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys; {code}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_simulate_loads_no_heavy_module() -> None:
    assert _loaded_after("import sgdfluct.simulate") == []


@pytest.mark.skipif(not _kernels.HAVE_NUMBA, reason="numba not installed")
def test_numba_loads_when_the_numba_engine_runs() -> None:
    code = (
        "import numpy as np; from sgdfluct.simulate import simulate; "
        "x = np.eye(4); simulate(x, x[:, :1], [(1, 4)], np.zeros(4), learning_rate=0.1, "
        "batch_size=2, steps=20, burn_in=2, replicas=2, n_batches=2, engine='numpy'); "
        "assert 'numba' not in sys.modules; "
        "simulate(x, x[:, :1], [(1, 4)], np.zeros(4), learning_rate=0.1, "
        "batch_size=2, steps=20, burn_in=2, replicas=2, n_batches=2, engine='numba')"
    )
    assert "numba" in _loaded_after(code)
