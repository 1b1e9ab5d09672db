"""Theory and simulation are independent implementations: neither imports the other.

Their agreement is the project's main evidence, and only evidence if they share no code beyond the
network definitions. Checked on the source (AST), so that lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "sgdfluct"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(("package", "forbidden"), [("theory", "simulate"), ("simulate", "theory")])
def test_no_cross_imports(package, forbidden):
    files = sorted((PACKAGE / package).glob("*.py"))
    assert files
    for path in files:
        bad = {m for m in _imported_modules(path) if m.startswith(f"sgdfluct.{forbidden}")}
        assert not bad, f"{path.name} imports {sorted(bad)}"
