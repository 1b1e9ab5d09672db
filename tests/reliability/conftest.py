"""Shared pieces of the hostile-input and fault table.

Every case records one row (case, exit code, traceback seen, outcome) into the file named by
``$SGDFLUCT_RELIABILITY_TABLE`` when it is set, so the table can be printed after a run::

    SGDFLUCT_RELIABILITY_TABLE=/tmp/table.jsonl pytest tests/reliability
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[dict]:
    """A row of the reliability table; filled by the test, written when it ends."""
    row: dict = {"case": request.node.name}
    yield row
    target = os.environ.get("SGDFLUCT_RELIABILITY_TABLE")
    if target:
        with open(target, "a") as fh:
            fh.write(json.dumps(row) + "\n")


@pytest.fixture(autouse=True)
def _restore_sigterm() -> Iterator[None]:
    """The CLI turns SIGTERM into KeyboardInterrupt in its process; undo that after in-process
    invocations."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)
