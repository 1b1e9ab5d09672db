"""Figures. Every function takes ``ax=None``, draws, and returns the Axes; none saves.

:func:`polish_figure` makes any finished figure readable (ticks, clipped intervals, legends).
"""

from sgdfluct.plotting.landscape import (
    plot_curvature_variance,
    plot_loss_profiles,
    plot_variance_flatness,
)
from sgdfluct.plotting.polish import polish_figure
from sgdfluct.plotting.single_layer import (
    plot_covariance_comparison,
    plot_covariance_spectrum,
    plot_hessian_noise_spectra,
)
from sgdfluct.plotting.two_layer import plot_imbalance, plot_layer_spectra

__all__ = [
    "plot_covariance_comparison",
    "plot_covariance_spectrum",
    "plot_curvature_variance",
    "plot_hessian_noise_spectra",
    "plot_imbalance",
    "plot_layer_spectra",
    "plot_loss_profiles",
    "plot_variance_flatness",
    "polish_figure",
]
