"""A pytest plugin for benchmarks/worker_time.py: each process's clock readings as JSON lines in $SHORTCUT_BENCH_CLOCK.

One file per process (``controller.jsonl``, or the xdist worker's id, ``gw0.jsonl``): when pytest configured, each test's start and
finish (``pytest_runtest_logstart``/``logfinish``, setup to teardown), and when it unconfigured. Outside that variable
the plugin writes nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

ENV_VAR = "SHORTCUT_BENCH_CLOCK"
_state: dict = {}


def _write(event: str, **fields) -> None:
    out = _state.get("out")
    if out is not None:
        out.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
        out.flush()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    folder = os.environ.get(ENV_VAR)
    if folder:
        # The worker's id from xdist's own handle on it: $PYTEST_XDIST_WORKER is inherited by any pytest an xdist
        # worker starts, which is no worker itself.
        name = getattr(config, "workerinput", {}).get("workerid", "controller")
        _state["out"] = open(Path(folder) / f"{name}.jsonl", "w", encoding="utf-8")  # noqa: SIM115 (closed at unconfigure)
        _write("configure")


def pytest_runtest_logstart(nodeid: str, location) -> None:
    _write("begin", id=nodeid)


def pytest_runtest_logfinish(nodeid: str, location) -> None:
    _write("end", id=nodeid)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    _write("unconfigure")
    out = _state.pop("out", None)
    if out is not None:
        out.close()
