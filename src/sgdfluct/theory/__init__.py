"""Stationary theory of SGD weight fluctuations (never imports :mod:`sgdfluct.simulate`).

The front door is :func:`stationary_covariance` with a :class:`StationaryProblem` and a method
of the :data:`METHODS` registry (:mod:`sgdfluct.theory.problem`).

Single layer (docs/theory.md §4-7): noise covariance and Hessian, continuum Lyapunov and exact
discrete-time
stationary covariance, detailed balance, random-matrix spectra. Depth >= 2 (docs/theory.md §8, §8a):
linearization, symmetry null space, noise equilibrium, layer-wise covariance theories.
"""

from sgdfluct.theory.detailed_balance import (
    DetailedBalance,
    detailed_balance,
    entropy_production,
    probability_current,
    relative_commutator,
)
from sgdfluct.theory.discrete import (
    DENSE_MAX_PARAMS,
    StationaryCovariance,
    UnstableError,
    benchmark_exact_solver,
    discrete_residual,
    mean_square_spectral_radius,
)
from sgdfluct.theory.layered import LayeredCovariance, layered_covariance
from sgdfluct.theory.linearization import (
    Linearization,
    linearize,
    live_range,
    product_jacobian,
)
from sgdfluct.theory.lyapunov import (
    continuum_covariance,
    discrete_additive_covariance,
    lyapunov_residual,
)
from sgdfluct.theory.noise import (
    SAMPLING_MODES,
    batch_factor,
    least_squares_residuals,
    sampling_note,
    single_layer_hessian,
    single_layer_noise_covariance,
)
from sgdfluct.theory.problem import METHODS, Solution, StationaryProblem, stationary_covariance
from sgdfluct.theory.spectra import (
    SingleLayerSpectra,
    chi2_weighted_mp_stieltjes,
    coefficient_of_variation,
    curvature_along_eigenvectors,
    generalized_mp_cdf,
    generalized_mp_density,
    ks_distance,
    marchenko_pastur_cdf,
    marchenko_pastur_density,
    marchenko_pastur_support,
    normalized_spectrum,
    normalized_variance,
    single_layer_spectra,
    spectral_distance,
)
from sgdfluct.theory.stability import check_learning_rate
from sgdfluct.theory.symmetry import (
    NoiseEquilibrium,
    NullSpaceCheck,
    check_null_space,
    imbalance_eigenvalues,
    noise_equilibrium,
    symmetry_directions,
)

__all__ = [
    "DENSE_MAX_PARAMS",
    "METHODS",
    "SAMPLING_MODES",
    "DetailedBalance",
    "LayeredCovariance",
    "Linearization",
    "NoiseEquilibrium",
    "NullSpaceCheck",
    "SingleLayerSpectra",
    "Solution",
    "StationaryCovariance",
    "StationaryProblem",
    "UnstableError",
    "batch_factor",
    "benchmark_exact_solver",
    "check_learning_rate",
    "check_null_space",
    "chi2_weighted_mp_stieltjes",
    "coefficient_of_variation",
    "continuum_covariance",
    "curvature_along_eigenvectors",
    "detailed_balance",
    "discrete_additive_covariance",
    "discrete_residual",
    "entropy_production",
    "generalized_mp_cdf",
    "generalized_mp_density",
    "imbalance_eigenvalues",
    "ks_distance",
    "layered_covariance",
    "least_squares_residuals",
    "linearize",
    "live_range",
    "lyapunov_residual",
    "marchenko_pastur_cdf",
    "marchenko_pastur_density",
    "marchenko_pastur_support",
    "mean_square_spectral_radius",
    "noise_equilibrium",
    "normalized_spectrum",
    "normalized_variance",
    "probability_current",
    "product_jacobian",
    "relative_commutator",
    "sampling_note",
    "single_layer_hessian",
    "single_layer_noise_covariance",
    "single_layer_spectra",
    "spectral_distance",
    "stationary_covariance",
    "symmetry_directions",
]
