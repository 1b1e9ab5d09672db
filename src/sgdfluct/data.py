"""Teacher-student data sets (SPEC §1).

Inputs ``x_mu ∈ R^{N_i}`` are drawn i.i.d. with covariance ``Λ``; the teacher ``W_0`` has entries
``N(0, 1/N_i)``; labels are ``y_mu = W_0 x_mu + eps_mu`` with ``eps_mu ~ N(0, sigma^2 I)``.
Everything is determined by ``DataConfig.seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sgdfluct.config import DataConfig

__all__ = ["Dataset", "input_covariance", "make_dataset", "sample_inputs"]

Array = NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A teacher-student data set.

    Attributes
    ----------
    inputs : (P, N_i) array
        Design matrix ``X`` (one sample per row).
    targets : (P, N_o) array
        Labels ``y``.
    teacher : (N_o, N_i) array
        Teacher ``W_0``.
    input_cov : (N_i, N_i) array
        Population input covariance ``Λ`` (the one the inputs are drawn from).
    test_inputs, test_targets : (P_test, N_i), (P_test, N_o) arrays
        Independent test set from the same distribution and teacher (possibly empty).
    """

    inputs: Array
    targets: Array
    teacher: Array
    input_cov: Array
    test_inputs: Array
    test_targets: Array

    @property
    def n_samples(self) -> int:
        return int(self.inputs.shape[0])


def input_covariance(config: DataConfig) -> Array:
    """Population input covariance ``Λ`` of shape (N_i, N_i), with mean eigenvalue 1."""
    n = config.n_in
    if config.inputs == "powerlaw":
        spectrum = np.arange(1, n + 1, dtype=float) ** (-config.powerlaw_exponent)
        return np.diag(spectrum / spectrum.mean())
    if config.inputs == "correlated":
        k = np.arange(n)
        return config.correlation ** np.abs(k[:, None] - k[None, :]).astype(float)
    return np.eye(n)


def sample_inputs(config: DataConfig, n: int, rng: np.random.Generator) -> Array:
    """Draw ``n`` input vectors (rows) of the kind ``config.inputs``; shape (n, N_i)."""
    d = config.n_in
    if config.inputs == "student_t":
        nu = config.student_t_dof
        # unit variance per entry: Var(t_nu) = nu / (nu - 2)
        return rng.standard_t(nu, size=(n, d)) * np.sqrt((nu - 2.0) / nu)
    z = rng.standard_normal((n, d))
    if config.inputs == "gaussian":
        return z
    cov = input_covariance(config)
    return z @ np.linalg.cholesky(cov).T


def make_dataset(config: DataConfig, *, n_test: int = 0) -> Dataset:
    """Generate the teacher-student data set of ``config`` (deterministic in ``config.seed``).

    Parameters
    ----------
    config : DataConfig
    n_test : int
        Size of an independent test set (same teacher); 0 for none.
    """
    data_seq, teacher_seq, noise_seq, test_seq = np.random.SeedSequence(config.seed).spawn(4)
    x = sample_inputs(config, config.n_samples, np.random.default_rng(data_seq))
    teacher = np.random.default_rng(teacher_seq).standard_normal(
        (config.n_out, config.n_in)
    ) / np.sqrt(config.n_in)
    noise = config.label_noise * np.random.default_rng(noise_seq).standard_normal(
        (config.n_samples, config.n_out)
    )
    y = x @ teacher.T + noise
    test_rng = np.random.default_rng(test_seq)
    x_test = sample_inputs(config, n_test, test_rng)
    y_test = x_test @ teacher.T + config.label_noise * test_rng.standard_normal(
        (n_test, config.n_out)
    )
    return Dataset(
        inputs=x,
        targets=y,
        teacher=teacher,
        input_cov=input_covariance(config),
        test_inputs=x_test,
        test_targets=y_test,
    )
