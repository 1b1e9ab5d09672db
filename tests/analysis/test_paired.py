"""The paired standard error of a difference of two theories' errors (sgdfluct.analysis.paired)."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct.analysis.paired import error_gap

#: Monte Carlo experiments; the sd of 400 draws is known to ~ 1/sqrt(2 * 400) = 3.5 % relative
N_EXPERIMENTS = 400
#: 5 standard errors of that relative sd estimate
SD_RTOL = 5 / np.sqrt(2 * N_EXPERIMENTS)


def _windows(rng: np.random.Generator, truth: np.ndarray, n: int, noise: float) -> np.ndarray:
    d = truth.shape[0]
    z = noise * rng.standard_normal((n, d, d))
    return truth + 0.5 * (z + z.transpose(0, 2, 1))


def test_paired_stderr_matches_the_scatter_of_the_gap_over_experiments():
    rng = np.random.default_rng(20261202)
    truth = np.diag([1.0, 0.7, 0.4, 0.2])
    a = truth * 1.15 + 0.02  # two theories that miss the truth by correlated amounts
    b = truth * 1.05 + 0.01
    gaps, stderrs = [], []
    for _ in range(N_EXPERIMENTS):
        g = error_gap(a, b, _windows(rng, truth, 40, 0.05))
        gaps.append(g.value)
        stderrs.append(g.stderr)
    observed = float(np.std(gaps, ddof=1))
    assert np.mean(stderrs) == pytest.approx(observed, rel=SD_RTOL)
    # the point of pairing: far below the noise floor of either error alone
    floor = np.linalg.norm(_windows(rng, truth, 40, 0.05).std(axis=0, ddof=1)) / np.sqrt(40)
    assert np.mean(stderrs) < 0.5 * floor / np.linalg.norm(truth)


def test_identical_theories_have_zero_gap_and_error():
    rng = np.random.default_rng(1)
    w = _windows(rng, np.eye(3), 10, 0.1)
    g = error_gap(2 * np.eye(3), 2 * np.eye(3), w)
    assert g.value == 0.0 and g.stderr == pytest.approx(0.0, abs=1e-15)


def test_single_error_stderr_matches_its_scatter():
    rng = np.random.default_rng(7)
    truth = np.diag([1.0, 0.5, 0.25])
    values, stderrs = [], []
    for _ in range(N_EXPERIMENTS):
        e = error_gap(1.3 * truth, None, _windows(rng, truth, 30, 0.05))
        values.append(e.value)
        stderrs.append(e.stderr)
    assert np.mean(values) == pytest.approx(0.3, rel=0.05)
    assert np.mean(stderrs) == pytest.approx(np.std(values, ddof=1), rel=SD_RTOL)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="n_windows, d, d"):
        error_gap(np.eye(2), np.eye(3), np.ones((4, 2, 2)))
    assert np.isnan(error_gap(np.eye(2), np.eye(2), np.ones((1, 2, 2))).stderr)
