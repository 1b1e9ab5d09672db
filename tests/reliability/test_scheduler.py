"""Scheduler addresses are checked before anything starts; a lost scheduler is named (issue 22).

Malformed addresses are refused without touching the network; connect, distributed's handshake
and an ``identity`` request share one deadline (``--scheduler-timeout``); a server that is not a
Dask scheduler is named as such. A scheduler killed mid-sweep is reported as gone, and a re-run
on a new scheduler resumes the missing cells.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from reliability_helpers import PROCESS_TIMEOUT_S, TINY, cli_command

from sgdfluct.cli import main
from sgdfluct.errors import ConfigError
from sgdfluct.experiments._executors import _schemes, check_scheduler

distributed = pytest.importorskip("distributed")

MALFORMED = {
    "http_scheme": ("http://127.0.0.1:8786", "unknown address scheme 'http'"),
    "empty": ("", "is empty"),
    "blank": ("   ", "is empty"),
    "no_port": ("tcp://127.0.0.1", "expected HOST:PORT"),
    "port_out_of_range": ("tcp://127.0.0.1:99999", "port in [1, 65535]"),
    "bare_host": ("localhost", "expected HOST:PORT"),
    "ws_no_port": ("ws://host", "expected HOST:PORT"),
}


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    (tmp_path / "base.toml").write_text(TINY)
    path = tmp_path / "sweep.toml"
    path.write_text('base = "base.toml"\n[grid]\n"data.seed" = [0]\n')
    return path


def _sweep(sweep_file: Path, address: str, *extra: str):  # type: ignore[no-untyped-def]
    out = sweep_file.parent / "out"
    args = ["sweep", str(sweep_file), "--out", str(out), "-q", "--scheduler", address, *extra]
    result = CliRunner().invoke(main, args)
    lines = [line for line in result.output.splitlines() if line.startswith("error")]
    return result, (lines[0] if lines else ""), out


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_address_is_refused_before_anything(sweep_file, record, case) -> None:
    address, expected = MALFORMED[case]
    result, message, out = _sweep(sweep_file, address)
    record.update(exit=result.exit_code, expected=2, traceback=False, message=message)
    assert result.exit_code == 2, result.output
    assert expected in message
    assert not out.exists()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says anything."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in held:
        conn.close()


@pytest.fixture
def http_port() -> Iterator[int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_silent_port_fails_within_the_scheduler_timeout(sweep_file, record, silent_port) -> None:
    """The port accepts and never answers: one deadline covers connect and handshake."""
    t0 = time.monotonic()
    result, message, out = _sweep(
        sweep_file, f"tcp://127.0.0.1:{silent_port}", "--scheduler-timeout", "1"
    )
    record.update(exit=result.exit_code, expected=2, traceback=False, message=message,
                  seconds=round(time.monotonic() - t0, 2))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "within --scheduler-timeout = 1 s" in message
    assert not out.exists()


def test_http_server_is_named_as_such(sweep_file, record, http_port) -> None:
    result, message, _ = _sweep(sweep_file, f"tcp://127.0.0.1:{http_port}")
    record.update(exit=result.exit_code, expected=2, traceback=False, message=message)
    assert result.exit_code == 2, result.output
    assert "is not a Dask scheduler: it is an HTTP server" in message
    assert "memory" not in message


def test_closed_port_is_unreachable(sweep_file, record) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    result, message, _ = _sweep(sweep_file, f"tcp://127.0.0.1:{port}")
    record.update(exit=result.exit_code, expected=2, traceback=False, message=message)
    assert result.exit_code == 2, result.output
    assert "cannot reach a Dask scheduler" in message


def test_bad_scheduler_timeout_is_refused(sweep_file) -> None:
    result, _, _ = _sweep(sweep_file, "tcp://127.0.0.1:1", "--scheduler-timeout", "0")
    assert result.exit_code == 2 and "--scheduler-timeout" in result.output


def test_schemes_are_distributed_s() -> None:
    from distributed.comm.registry import backends

    assert set(backends) <= set(_schemes())


def test_a_real_scheduler_passes_and_a_worker_is_named() -> None:
    with distributed.LocalCluster(
        n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        assert check_scheduler(cluster.scheduler_address, 10) == cluster.scheduler_address
        (worker,) = cluster.scheduler_info["workers"]
        with pytest.raises(ConfigError, match="not a Dask scheduler: it identifies as 'Worker'"):
            check_scheduler(worker, 10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_cluster(port: int, log: Path) -> tuple[subprocess.Popen, subprocess.Popen]:
    address = f"tcp://127.0.0.1:{port}"
    with log.open("a") as fh:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", str(port), "--no-dashboard"], stdout=fh, stderr=fh,
        )  # fmt: skip
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
             "--nworkers", "1", "--no-dashboard", "--memory-limit", "0"], stdout=fh, stderr=fh,
        )  # fmt: skip
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while True:
        try:
            check_scheduler(address, 5)
            break
        except ConfigError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
    return scheduler, worker


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=PROCESS_TIMEOUT_S)


@pytest.mark.slow
def test_scheduler_killed_mid_sweep_is_reported_and_a_rerun_resumes(tmp_path, record) -> None:
    """A real scheduler process SIGKILLed while a cell computes: the sweep ends naming the lost
    scheduler (not 'NoneType: None'); a re-run on a fresh scheduler completes every cell."""
    (tmp_path / "base.toml").write_text(TINY.replace("steps = 2000", "steps = 3000000"))
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('base = "base.toml"\n[grid]\n"data.seed" = [0, 1]\n')
    out = tmp_path / "out"
    port = _free_port()
    scheduler, worker = _start_cluster(port, tmp_path / "cluster.log")
    command = cli_command("sweep", str(sweep), "--out", str(out), "-q",
                          "--scheduler", f"tcp://127.0.0.1:{port}")  # fmt: skip
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not list((out / "cells").glob(".resume-*")):  # a cell is computing
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        scheduler.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=PROCESS_TIMEOUT_S)
    finally:
        _stop(scheduler, worker)
    message = [line for line in stderr.splitlines() if line.startswith("error")]
    record.update(exit=proc.returncode, expected=1, traceback="Traceback" in stderr,
                  message=message[0] if message else "")  # fmt: skip
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert message and "went away" in message[0] and "a re-run resumes" in message[0]
    assert "NoneType" not in message[0]
    port = _free_port()
    scheduler, worker = _start_cluster(port, tmp_path / "cluster.log")
    try:
        rerun = subprocess.run(
            [*command[:-1], f"tcp://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, env=os.environ.copy(),
        )  # fmt: skip
    finally:
        _stop(scheduler, worker)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in (out / "cells").iterdir()) == [
        "data.seed=0__rep=0",
        "data.seed=1__rep=0",
    ]
