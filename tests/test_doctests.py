"""Run the ``>>>`` examples in the public modules' docstrings.

The examples illustrate the equations of ``docs/theory.md`` with small, deterministic inputs; this
test keeps them true. To cover a module, give its public functions ``Examples`` sections and
append its dotted name to :data:`DOCTEST_MODULES`. A listed module without a single example fails
(so the list cannot silently test nothing).
"""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

#: modules whose docstring examples are run (append yours; keep each example fast, < 1 s)
DOCTEST_MODULES: tuple[str, ...] = (
    "sgdfluct.experiments.verdicts",
    "sgdfluct.landscape",
    "sgdfluct.networks",
    "sgdfluct.registry",
    "sgdfluct.theory.detailed_balance",
    "sgdfluct.theory.lyapunov",
    "sgdfluct.theory.problem",
    "sgdfluct.theory.spectra",
    "sgdfluct.theory.stability",
    "sgdfluct.theory.symmetry",
)

#: NORMALIZE_WHITESPACE: numpy's array printing pads columns; ELLIPSIS: "..." in tracebacks
OPTION_FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    n_examples = sum(len(t.examples) for t in tests)
    assert n_examples > 0, f"{name} has no docstring examples: add some or drop it from the list"
    runner = doctest.DocTestRunner(optionflags=OPTION_FLAGS)
    report: list[str] = []
    # numpy's default print options, whatever another test may have set
    with np.printoptions(precision=8, threshold=1000, linewidth=75, suppress=False, legacy=False):
        for test in tests:
            runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} examples failed:\n" + "".join(report)
    )
