"""Teacher-student data sets (docs/theory.md §1).

Inputs ``x_mu ∈ R^{N_i}`` are drawn i.i.d. with covariance ``Λ``; the teacher ``W_0`` has entries
``N(0, 1/N_i)``; labels are ``y_mu = W_0 x_mu + eps_mu`` with ``eps_mu ~ N(0, sigma^2 I)``.
Everything is determined by ``DataConfig.seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sgdfluct.config import DataConfig
from sgdfluct.registry import Registry

__all__ = [
    "INPUT_KINDS",
    "Dataset",
    "InputKind",
    "input_covariance",
    "make_dataset",
    "sample_inputs",
]

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


@dataclass(frozen=True, kw_only=True)
class InputKind:
    """One input distribution: how to draw inputs and (optionally) their population covariance.

    Attributes
    ----------
    sample : callable ``(config, n, rng) -> (n, N_i) array``
        Draws ``n`` input vectors (rows).
    covariance : callable ``(config) -> (N_i, N_i) array`` or None
        Population covariance ``Λ`` with mean eigenvalue 1; None means ``Λ = I``.
    """

    sample: Callable[[DataConfig, int, np.random.Generator], Array]
    covariance: Callable[[DataConfig], Array] | None = None


#: the input kinds selectable as ``data.inputs`` (register more with
#: ``INPUT_KINDS.register(name, InputKind(...))``; the config validates against this registry)
INPUT_KINDS: Registry[InputKind] = Registry("data.inputs")


def _gaussian_with(config: DataConfig, n: int, rng: np.random.Generator) -> Array:
    """Gaussian inputs with covariance :func:`input_covariance` (Cholesky factor)."""
    z = rng.standard_normal((n, config.n_in))
    return np.asarray(z @ np.linalg.cholesky(input_covariance(config)).T)


def _powerlaw_cov(config: DataConfig) -> Array:
    spectrum = np.arange(1, config.n_in + 1, dtype=float) ** (-config.powerlaw_exponent)
    return np.diag(spectrum / spectrum.mean())


def _correlated_cov(config: DataConfig) -> Array:
    k = np.arange(config.n_in)
    return np.asarray(config.correlation ** np.abs(k[:, None] - k[None, :]).astype(float))


def _student_t(config: DataConfig, n: int, rng: np.random.Generator) -> Array:
    nu = config.student_t_dof
    # unit variance per entry: Var(t_nu) = nu / (nu - 2)
    return np.asarray(rng.standard_t(nu, size=(n, config.n_in)) * np.sqrt((nu - 2.0) / nu))


INPUT_KINDS.register(
    "gaussian", InputKind(sample=lambda c, n, rng: rng.standard_normal((n, c.n_in)))
)
INPUT_KINDS.register("powerlaw", InputKind(sample=_gaussian_with, covariance=_powerlaw_cov))
INPUT_KINDS.register("student_t", InputKind(sample=_student_t))
INPUT_KINDS.register("correlated", InputKind(sample=_gaussian_with, covariance=_correlated_cov))


def input_covariance(config: DataConfig) -> Array:
    """Population input covariance ``Λ`` of shape (N_i, N_i), with mean eigenvalue 1."""
    kind = INPUT_KINDS.get(config.inputs)
    return np.eye(config.n_in) if kind.covariance is None else kind.covariance(config)


def sample_inputs(config: DataConfig, n: int, rng: np.random.Generator) -> Array:
    """Draw ``n`` input vectors (rows) of the kind ``config.inputs``; shape (n, N_i)."""
    return INPUT_KINDS.get(config.inputs).sample(config, n, rng)


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
