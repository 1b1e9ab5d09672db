"""Run the ``>>>`` examples in the public modules' docstrings, and check the docs' citations.

The examples illustrate the equations of ``docs/theory.md`` with small, deterministic inputs; this
test keeps them true. To cover a module, give its public functions ``Examples`` sections and
append its dotted name to :data:`DOCTEST_MODULES`. A listed module without a single example fails
(so the list cannot silently test nothing).

Docstrings cite the science as ``docs/theory.md §N``; every cited section must exist there.
"""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

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


ROOT = Path(__file__).parents[1]
THEORY = ROOT / "docs" / "theory.md"
#: a citation of a section: "docs/theory.md §5", "theory.md §8a", "§4-7", "§5.4" (and the
#: specification's "SPEC §N", whose numbers docs/theory.md keeps)
CITATION = re.compile(r"(?:SPEC|theory\.md) §(\d+[a-z]?(?:\.\d+)?)(?:\s*[-–]\s*§?(\d+[a-z]?))?")
#: a section heading of docs/theory.md: "## §5. ...", "### §8a. ...", "### §5.4 ..."
HEADING = re.compile(r"^#{2,4} §(\d+[a-z]?(?:\.\d+)?)[.\s]", re.MULTILINE)


def _theory_sections() -> set[str]:
    return set(HEADING.findall(THEORY.read_text(encoding="utf-8")))


def _citations() -> dict[str, set[str]]:
    """Cited section -> files citing it, over the package sources and the docs."""
    files = [
        *sorted((ROOT / "src" / "sgdfluct").rglob("*.py")),
        *sorted((ROOT / "docs").glob("*.md")),
    ]
    cited: dict[str, set[str]] = {}
    for path in files:
        for first, last in CITATION.findall(path.read_text(encoding="utf-8")):
            for section in (first, last):
                if section:
                    cited.setdefault(section, set()).add(str(path.relative_to(ROOT)))
    return cited


def test_theory_has_every_specification_section():
    # the fixed numbering docstrings rely on: §1 ... §11 with §8a and §8b
    expected = {str(n) for n in range(1, 12)} | {"8a", "8b"}
    assert expected <= _theory_sections()


def test_every_cited_section_exists():
    sections = _theory_sections()
    cited = _citations()
    assert cited, "no citations found: the pattern no longer matches the docstrings"
    missing = {s: sorted(f) for s, f in cited.items() if s not in sections}
    assert not missing, f"cited sections missing from docs/theory.md: {missing}"
