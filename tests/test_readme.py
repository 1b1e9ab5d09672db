"""The README's Python example runs as written (from the repository root)."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]

# the example compares a 6.4M-step simulation with the exact theory: its printed relative error is
# a few noise floors at most (noise floor ~1 % at this length, see tests/theory)
README_ERROR_MAX = 0.05


def test_readme_python_example(tmp_path, capsys):
    text = (ROOT / "README.md").read_text()
    # the library example (the probe snippet is a fragment of a user's training loop)
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "sf." in b]
    assert blocks, "the README has a Python example"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        code = blocks[0].replace('"out/"', repr(str(tmp_path / "out")))
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < printed < README_ERROR_MAX
