"""Smoke tests of the single-layer figures (they draw, take ax=None, return Axes, never save)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from sgdfluct.plotting.single_layer import (
    plot_covariance_comparison,
    plot_covariance_spectrum,
    plot_hessian_noise_spectra,
)


def test_plots(rng: np.random.Generator) -> None:
    x = rng.standard_normal((80, 20))
    r = rng.standard_normal(80)
    he = np.linalg.eigvalsh(x.T @ x / 80)
    ce = np.linalg.eigvalsh((x * r[:, None] ** 2).T @ x / 80)
    ax = plot_hessian_noise_spectra(he, ce, 0.25)
    assert len(ax.lines) == 2 and len(ax.patches) > 0
    a = rng.standard_normal((5, 5))
    m = a @ a.T
    _, ax2 = plt.subplots()
    assert (
        plot_covariance_comparison(m, m + 0.01, simulated_stderr=np.full((5, 5), 0.01), ax=ax2)
        is ax2
    )
    ax3 = plot_covariance_spectrum(
        np.linalg.eigvalsh(m), reference_eigs=np.linalg.eigvalsh(m) * 1.1
    )
    assert len(ax3.lines) == 2
    plt.close("all")
