"""Every code block of the README runs (or, for an install line, is checked) as written.

Each fenced block in README.md is named by the comment line above it,
``<!-- readme-example: NAME -->``; a block without a name, or a name without a handler here,
fails :func:`test_every_block_is_named_and_handled`. One test per block, its id the block's name
(``pytest tests/test_readme_examples.py -v`` lists them). Long commands run at smoke size: the
placeholders of the synopsis are filled with tiny configs, ``reproduce`` runs ``--smoke`` on one
claim, ``sweep_example.toml`` runs on a shortened base, the probe snippet on a small MLP. The
install block is not executed (it downloads torch and installs into the environment); its pins,
index and extras are checked against the Makefile and pyproject.toml instead.

The exit codes listed in the README are the generated list of :mod:`sgdfluct.errors`, and
``sgdfluct --help`` prints the same.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgdfluct.cli import main
from sgdfluct.errors import exit_code_descriptions, exit_codes_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"(?:<!-- readme-example: ([\w-]+) -->\n)?```(\w*)\n(.*?)```", re.S)
BLOCKS = {m.group(1): (m.group(2), m.group(3)) for m in BLOCK.finditer(README) if m.group(1)}

#: the library example compares a 6.4M-step simulation with the exact theory: its printed relative
#: error is a few noise floors at most (noise floor ~1 % at this length, see tests/theory)
README_ERROR_MAX = 0.05

#: a single-layer run of a second or so (the smoke stand-in for CONFIG.toml)
TINY_RUN = """
[data]
n_in = 5
n_out = 1
n_samples = 20
seed = 0
[model]
depth = 1
[sgd]
learning_rate = 0.05
batch_size = 4
steps = 20000
burn_in = 2000
record_every = 5
replicas = 4
seed = 1
"""

#: a probe of a single linear layer on teacher-student data (a few seconds)
TINY_PROBE = """
[data]
dataset = "teacher_student"
n_in = 5
n_out = 1
n_samples = 30
seed = 0
[model]
kind = "linear"
hidden = []
bias = false
loss = "mse"
[sgd]
learning_rate = 0.05
batch_size = 5
steps = 12000
record_every = 2
seed = 1
[probe]
top_k = 3
window = 4000
bootstrap = 20
"""


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, f"sgdfluct {' '.join(args)}: {result.output}"
    return result.output


def _commands(body: str) -> list[list[str]]:
    """The block's lines as argument lists (comments, ``&`` and ``[...]`` options dropped)."""
    out = []
    for line in body.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line:
            out.append(shlex.split(re.sub(r"\[[^\]]*\]", "", line)))
    return out


def _smoke_sweep(tmp_path: Path) -> Path:
    """configs/sweep_example.toml (same grid) on a base of the shipped name with short runs."""
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    shutil.copy(ROOT / "configs" / "sweep_example.toml", folder / "sweep_example.toml")
    (folder / "single_layer.toml").write_text(TINY_RUN)
    return folder / "sweep_example.toml"


@contextlib.contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


# --- the blocks ---------------------------------------------------------------------------------


def _make_targets(body: str, tmp_path: Path) -> None:
    """`make reproduce` / `make test`: the targets run the commands the comments name (``make -n``);
    the reproduction itself runs at smoke size; CI runs exactly `make test`."""
    for args in _commands(body):
        assert args[0] == "make"
        plan = subprocess.run(
            ["make", "-n", args[1]], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        if args[1] == "reproduce":
            assert "sgdfluct reproduce --quick --out results" in plan
        else:
            assert args[1] == "test" and "pytest" in plan
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    _cli("reproduce", "--smoke", "--only", "1", "--out", str(tmp_path / "rep"), "--workers", "1")
    assert (tmp_path / "rep" / "report.html").exists()


def _install_from_clone(body: str, tmp_path: Path) -> None:
    """Not executed (it downloads torch and installs): the torch pin is the Makefile's, the index
    is PyTorch's CPU index, the extras exist in pyproject.toml, the last line is a command."""
    makefile = (ROOT / "Makefile").read_text()
    pin = re.search(r"^TORCH_PIN := (\S+)$", makefile, re.M).group(1)  # type: ignore[union-attr]
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    lines = body.splitlines()
    torch_line = next(ln for ln in lines if "torch==" in ln)
    assert pin in torch_line and "--index-url https://download.pytorch.org/whl/cpu" in torch_line
    named = set(re.findall(r"'\.\[([\w,]+)\]'", body))
    assert named, "the block installs the package from the clone"
    assert {e for group in named for e in group.split(",")} <= extras
    assert "pip install 'sgdfluct" not in README  # the package is not on PyPI
    assert lines[-1].startswith("sgdfluct reproduce")


def _command_line(body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The synopsis: each line with its placeholders filled at smoke size."""
    run_cfg = tmp_path / "run.toml"
    run_cfg.write_text(TINY_RUN)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'base = "{run_cfg.name}"\n[grid]\n"data.n_samples" = [20, 30]\n')
    probe_cfg = tmp_path / "probe.toml"
    probe_cfg.write_text(TINY_PROBE)
    seen = set()
    for args in _commands(body):
        assert args[0] == "sgdfluct"
        command = args[1]
        seen.add(command)
        out = str(tmp_path / f"out_{command.strip('-')}")
        filled = [out if a == "DIR" else a for a in args[1:]]
        if command == "run":
            filled = [str(run_cfg) if a == "CONFIG.toml" else a for a in filled]
            _cli(*filled)
            _cli(*filled, "--overwrite")  # the optional flag of the synopsis
        elif command == "sweep":
            _cli(*[str(sweep) if a == "SWEEP.toml" else a for a in filled], "--workers", "1")
        elif command == "reproduce":
            _cli(*filled, "--smoke", "--only", "1", "--workers", "1")
        elif command == "probe":
            pytest.importorskip("torch")
            pytest.importorskip("sklearn")
            _cli(*[str(probe_cfg) if a == "CONFIG.toml" else a for a in filled], "--quiet")
        elif command == "bench":
            import sgdfluct.bench as bench

            pytest.importorskip("torch")
            # smoke size: one tiny problem, short timings (as tests/test_bench.py)
            tiny = {"name": "tiny", "shapes": [(1, 6)], "n_samples": 12, "batch_size": 3}
            monkeypatch.setattr(bench, "PROBLEMS", [{**tiny, "learning_rate": 0.05}])
            monkeypatch.setattr(bench, "WORK_FLOPS", 2e6)
            monkeypatch.setattr(bench, "RECORD_EVERY", 20)
            monkeypatch.setattr(bench, "PEER_SECONDS", 0.02)
            monkeypatch.setattr(bench, "QUICK_REPLICAS", (1,))
            small_peak = functools.partial(bench.gemm_peak_gflops, size=64, repeats=1)
            monkeypatch.setattr(bench, "gemm_peak_gflops", small_peak)
            _cli(*[str(tmp_path / "bench.json") if a == "FILE.json" else a for a in filled])
            assert (tmp_path / "bench.json").exists()
        else:
            assert command == "--version"
            assert _cli(*filled).startswith("sgdfluct, version")
    assert seen == {"run", "sweep", "reproduce", "probe", "bench", "--version"}


def _progress_sample(body: str, tmp_path: Path) -> None:
    """The sample lines have the format sgdfluct.progress writes (tests/test_progress.py)."""
    line = re.compile(
        r"^\[[\w ]+\] \d+/\d+ (cell|claim)s, \d+:\d\d elapsed(, ETA ~?[\d:]+( \(prior\))?)?: "
        r"(finished|started|working) "
    )
    lines = body.strip().splitlines()
    assert lines and all(line.match(ln) for ln in lines), lines


def _experiment_config(body: str, tmp_path: Path) -> None:
    """A config, not a command: it loads (every key valid) and says what the comments say."""
    from sgdfluct.config import load_config

    path = tmp_path / "config.toml"
    path.write_text(body)
    cfg = load_config(path)
    assert cfg.data.n_in == 50 and cfg.sgd.batch_size == 10 and cfg.model.depth == 1


def _sweep_file(body: str, tmp_path: Path) -> None:
    from sgdfluct.experiments.sweep import cells, load_sweep

    (tmp_path / "single_layer.toml").write_text(TINY_RUN)
    path = tmp_path / "sweep.toml"
    path.write_text(body)
    assert len(cells(load_sweep(path))) == 3 * 2


def _sweep_local(body: str, tmp_path: Path) -> None:
    """`sgdfluct sweep configs/sweep_example.toml --out sweep/ --workers 2`, short runs."""
    (args,) = _commands(body)
    smoke = _smoke_sweep(tmp_path)
    with _in_dir(tmp_path):
        _cli(*args[1:])
    assert smoke.exists() and (tmp_path / "sweep" / "sweep.nc").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sweep_dask(body: str, tmp_path: Path) -> None:
    """The three lines on this machine: a scheduler, one worker, the sweep (short runs)."""
    pytest.importorskip("distributed")
    port = _free_port()
    text = body.replace("8786", str(port)).replace("HOST", "127.0.0.1")
    text = text.replace("/shared/sweep", str(tmp_path / "shared_sweep"))
    _smoke_sweep(tmp_path)
    dask = shutil.which("dask", path=str(Path(sys.executable).parent)) or "dask"
    started: list[subprocess.Popen[bytes]] = []
    try:
        for args in _commands(text):
            if args[-1] == "&":
                argv = [dask if args[0] == "dask" else args[0], *args[1:-1]]
                started.append(
                    subprocess.Popen(
                        argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                    )
                )
                time.sleep(3 if args[1] == "scheduler" else 1)
            else:
                with _in_dir(tmp_path):
                    _cli(*args[1:], "--quiet")
        assert (tmp_path / "shared_sweep" / "sweep.nc").exists()
    finally:
        for process in started:  # only the processes this test started
            process.terminate()
        for process in started:
            process.wait(timeout=30)


def _library(body: str, tmp_path: Path) -> None:
    """The library example as written (full size: a few seconds), its printed relative error."""
    code = body.replace('"out/"', repr(str(tmp_path / "out")))
    printed = io.StringIO()
    with _in_dir(ROOT), contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md:library", "exec"), {})
    assert 0 < float(printed.getvalue().strip().splitlines()[-1]) < README_ERROR_MAX


def _probe_own_loop(body: str, tmp_path: Path) -> None:
    """The complete own-loop snippet at smoke size (its size line replaced)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    size_line = "N_TRAIN, HIDDEN, STEPS, WINDOW, TOP_K = 1000, 32, 40_000, 8_000, 30"
    assert size_line in body
    code = body.replace(
        size_line, "N_TRAIN, HIDDEN, STEPS, WINDOW, TOP_K = 400, 8, 12_000, 1_500, 4"
    )
    threads = torch.get_num_threads()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md:probe-own-loop", "exec"), {})
    finally:
        torch.set_num_threads(threads)
    accuracy = float(printed.getvalue().split()[0])
    assert accuracy > 0.5  # 10 classes: chance is 0.1; the smoke size reaches ~0.8


HANDLERS = {
    "make-targets": _make_targets,
    "install-from-clone": _install_from_clone,
    "command-line": _command_line,
    "progress-sample": _progress_sample,
    "experiment-config": _experiment_config,
    "probe-own-loop": _probe_own_loop,
    "sweep-file": _sweep_file,
    "sweep-local": _sweep_local,
    "sweep-dask": _sweep_dask,
    "library": _library,
}
#: blocks that run for more than ~10 s (smoke reproduction, sweeps, the probe, the library run)
SLOW = {"make-targets", "command-line", "sweep-local", "sweep-dask", "library", "probe-own-loop"}


def test_every_block_is_named_and_handled() -> None:
    unnamed = [m.group(3)[:60] for m in BLOCK.finditer(README) if not m.group(1)]
    assert not unnamed, f"README code blocks without <!-- readme-example: NAME -->: {unnamed}"
    names = [m.group(1) for m in BLOCK.finditer(README)]
    assert len(names) == len(set(names)), "two README blocks share a name"
    assert set(names) == set(HANDLERS), set(names) ^ set(HANDLERS)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in BLOCKS],
)
def test_readme_block(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, body = BLOCKS[name]
    handler = HANDLERS[name]
    if handler is _command_line:
        handler(body, tmp_path, monkeypatch)
    else:
        handler(body, tmp_path)  # type: ignore[call-arg]


def test_readme_exit_codes_are_the_generated_list() -> None:
    block = re.search(r"<!-- exit-codes:[^\n]*-->\n(.*?)\n<!-- /exit-codes -->", README, re.S)
    assert block, "the README lists the exit codes between <!-- exit-codes --> markers"
    assert block.group(1) == exit_codes_markdown()


def test_help_prints_every_exit_code() -> None:
    help_text = " ".join(_cli("--help").split())
    for code, text in exit_code_descriptions():
        assert f"{code} {' '.join(text.split())}" in help_text, code


def test_no_install_hint_points_at_pypi() -> None:
    """sgdfluct installs from its clone: no message or document says `pip install 'sgdfluct[`."""
    from sgdfluct.errors import install_hint

    files = [*(ROOT / "src").rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    offending = [str(f) for f in files if re.search(r"pip install[^\n]*sgdfluct\[", f.read_text())]
    assert not offending
    assert "--index-url https://download.pytorch.org/whl/cpu" in install_hint("probe")
    assert install_hint("dask").endswith("pip install -e '.[dask]'")


def test_measured_times_agree_across_help_makefile_and_readme() -> None:
    """`reproduce --help`, the Makefile's comments and the README quote the same measurements,
    each with its machine and load."""
    help_text = " ".join(_cli("reproduce", "--help").split())
    makefile = " ".join((ROOT / "Makefile").read_text().split())
    readme = " ".join(README.split())
    reproduce_times = re.findall(r"(\d+) s on a (quiet|loaded)", help_text)
    assert {kind for _, kind in reproduce_times} == {"quiet", "loaded"}, help_text
    for seconds, _ in reproduce_times:
        assert f"{seconds} s" in makefile and f"{seconds} s" in readme
    assert "load 5-7" in help_text and "load 5-7" in makefile and "load 5–7" in readme
    test_times = re.findall(r"(\d+) min", makefile)
    for minutes in ("13", "35"):
        assert minutes in test_times and f"{minutes} min" in readme
    assert "about 6 minutes" not in help_text and "about 2 minutes" not in makefile
