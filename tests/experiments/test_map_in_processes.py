"""The pool of the probe's claim: results in order, errors propagate, and no tracebacks from the
pool's shutdown when the command's SIGTERM handler is installed (seen after a successful
``reproduce --quick``: "Process ForkPoolWorker-4: ... KeyboardInterrupt"). The workers come from
the forkserver, so the functions are importable builtins."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

from sgdfluct.experiments._executors import map_in_processes


def test_results_come_back_in_order():
    assert map_in_processes(abs, list(range(-7, 0)), 2) == list(range(7, 0, -1))
    assert map_in_processes(abs, [-3], 2) == [3]
    assert map_in_processes(abs, [-1, 2], 1) == [1, 2]


def test_an_error_in_a_worker_propagates():
    import pytest

    with pytest.raises(ValueError, match="math domain"):
        map_in_processes(math.sqrt, [1.0, -1.0, 4.0], 2)


def test_shutdown_prints_nothing_under_the_cli_sigterm_handler():
    script = textwrap.dedent(
        """
        import time

        from sgdfluct.cli import _terminate_as_interrupt
        from sgdfluct.experiments._executors import map_in_processes

        _terminate_as_interrupt()
        for _ in range(20):  # the old ``with Pool()`` printed 11-19 tracebacks in 20 shutdowns
            out = map_in_processes(time.sleep, [0.01] * 3, 2)
        print(map_in_processes(abs, [-1, -2, -3, -4, -5], 2))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[1, 2, 3, 4, 5]"
    assert "Traceback" not in run.stderr, run.stderr
