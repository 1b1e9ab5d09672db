"""live_range at a nearly dead surplus unit (random starts: units decay but stay nonzero)."""

from __future__ import annotations

import numpy as np

from sgdfluct import networks as nw
from sgdfluct.theory.linearization import live_range


def test_nearly_dead_unit_gives_the_range_of_the_dead_one():
    rng = np.random.default_rng(0)
    shapes = [(3, 6), (2, 3)]  # N_h = 3 > rank 2: one surplus unit
    x = rng.normal(size=(60, 6))
    y = x @ rng.normal(size=(6, 2)) + rng.normal(size=(60, 2))
    theta = nw.balanced_minimum(x, y, shapes)  # the surplus unit is exactly zero
    w1, w2 = nw.unflatten(theta, shapes)
    w1, w2 = w1.copy(), w2.copy()
    w1[2] = 1e-4 * rng.normal(size=6)  # relative Gram eigenvalue ~1e-8: dead
    w2[:, 2] = 1e-4 * rng.normal(size=2)
    near = nw.flatten([w1, w2])
    h_dead, _, _ = live_range(theta, shapes, nw.hessian(theta, shapes, x, y))
    h_near, _, _ = live_range(near, shapes, nw.hessian(near, shapes, x, y))
    # d = 24, null space of the fiber 12 (docs/theory.md §8b): range 12 in both cases
    assert h_dead.size == 12
    assert h_near.size == h_dead.size
