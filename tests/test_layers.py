"""The house's layering: a light root, a core that loads no presentation stack, no cycles.

Checked in fresh interpreters (``sys.modules`` after the import) and on the source (AST), so lazy
imports inside functions count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "sgdfluct"
#: the numerical core (docs/architecture.md): never imports the layers above it
CORE = (
    "config",
    "data",
    "networks",
    "_smallmat",
    "_eigs",
    "simulate",
    "theory",
    "landscape",
    "ivfr_estimator",
    "analysis",
    "errors",
    "registry",
    "results",
    "_version",
)
#: the layers above the core
UPPER = ("runner", "experiments", "plotting", "report", "cli", "probe", "bench", "io")
HEAVY = ("matplotlib", "xarray", "dask", "torch", "jax")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_root_loads_nothing_heavy():
    loaded = _loaded_after("import sgdfluct")
    assert not {m for m in loaded if m.split(".")[0] in (*HEAVY, "numba", "scipy")}
    assert not {m for m in loaded if m.startswith(("sgdfluct.runner", "sgdfluct.experiments"))}


def test_core_loads_no_presentation_stack():
    statement = "import sgdfluct as sf; " + "; ".join(
        f"sf.{name}"
        for name in (
            "simulate",
            "stationary_covariance",
            "ivfr_analysis",
            "make_dataset",
            "measure_layered_covariance",
            "load_config",
        )
    )
    loaded = {m.split(".")[0] for m in _loaded_after(statement)}
    assert not loaded & set(HEAVY)


@pytest.mark.parametrize(
    "module",
    [
        "sgdfluct.cli",
        "sgdfluct.runner",
        "sgdfluct.experiments.reproduce",
        "sgdfluct.theory",
        "sgdfluct.simulate",
        "sgdfluct.analysis",
    ],
)
def test_every_layer_imports_on_its_own(module):
    # a fresh interpreter importing the module first finds no half-initialised cycle
    _loaded_after(f"import {module}")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("core", CORE)
def test_core_never_imports_upper_layers(core):
    path = PACKAGE / core
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    assert files and all(f.exists() for f in files)
    for f in files:
        bad = {
            m for m in _imports(f) if m.split(".")[:2][-1] in UPPER and m.startswith("sgdfluct.")
        }
        assert not bad, f"{f.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_nothing_imports_back_from_the_root():
    for f in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "sgdfluct":
                names = {a.name for a in node.names}
                # submodules are fine ("from sgdfluct import networks"); names defined in the
                # root are not (they would need the half-initialised root)
                assert not names & {"__version__", "run_experiment", "reproduce", "load_config"}, (
                    f"{f.relative_to(PACKAGE)} imports {sorted(names)} from the root"
                )


def test_public_simulate_stays_the_function_after_its_subpackage_loads():
    # `sgdfluct.simulate` names both the engine subpackage and its entry point; importing the
    # subpackage (the runner does) must not turn the public name into a module
    import sgdfluct as sf
    import sgdfluct.runner  # loads sgdfluct.simulate
    from sgdfluct.simulate import simulate

    assert sf.simulate is simulate
