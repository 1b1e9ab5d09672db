"""Claim 8's decision rule can say holds, fails and inconclusive (synthetic measurements)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sgdfluct.probe.claims import (
    MIN_SEEDS,
    PSI_EQUIV,
    RULE,
    RULE_HISTORY,
    claim8_verdict,
    t_interval,
)


def _layers(*psis: list[float]) -> dict:
    return {f"layer_{i + 1}": {"psi": t_interval(v)} for i, v in enumerate(psis)}


def test_t_interval_matches_student_t() -> None:
    v = [0.1, 0.3, 0.2, 0.4, 0.25]
    t = t_interval(v)
    half = 2.7764451051977987 * np.std(v, ddof=1) / np.sqrt(5)  # t_{0.975, 4}
    assert t["ci"] == pytest.approx([np.mean(v) - half, np.mean(v) + half], rel=1e-12)


def test_verdicts() -> None:
    pos = [0.5, 0.6, 0.55, 0.52, 0.58]
    neg = [-0.5, -0.6, -0.55, -0.52, -0.58]
    spread = [-1.0, 1.0, -0.5, 0.8, 0.1]
    assert claim8_verdict(_layers(neg, pos)) == "holds"
    assert claim8_verdict(_layers(neg, neg)) == "fails"
    assert claim8_verdict(_layers(neg, spread)) == "inconclusive"
    assert claim8_verdict(_layers(neg, pos[: MIN_SEEDS - 1])) == "inconclusive"
    near = [PSI_EQUIV / 2 + 0.01 * i for i in range(5)]  # positive but below the margin
    assert claim8_verdict(_layers(neg, near)) == "holds"
    small = [PSI_EQUIV / 4 + 0.3 * (-1) ** i for i in range(5)]  # straddles 0 and PSI_EQUIV
    assert claim8_verdict(_layers(neg, small)) == "inconclusive"


def test_rule_is_stated() -> None:
    assert "holds" in RULE and "fails" in RULE
    assert all(set(h) == {"date", "change", "after_seeing_data"} for h in RULE_HISTORY)
