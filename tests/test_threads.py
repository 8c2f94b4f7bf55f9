"""Thread shares (benchmark/running/threads.py): a child of an xdist worker gets the worker's share of the cores."""

from __future__ import annotations

import os

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.running.threads import (
    ENV_VAR,
    POOL_VARS,
    child_env,
    pin_torch_threads,
    thread_budget,
    threads_per_process,
    worker_child_env,
)


def test_the_budget_is_the_cores_unless_a_parent_handed_down_a_share():
    assert thread_budget({}) == (os.cpu_count() or 1)
    assert thread_budget({ENV_VAR: "3"}) == 3 and thread_budget({ENV_VAR: " "}) == (os.cpu_count() or 1)
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ConfigError, match=rf"\${ENV_VAR} must be a whole number of threads >= 1, got '{bad}'"):
            thread_budget({ENV_VAR: bad})


def test_processes_side_by_side_share_the_budget_and_each_gets_one_at_least():
    assert threads_per_process(2, {ENV_VAR: "8"}) == 4
    assert threads_per_process(2, {ENV_VAR: "2"}) == 1 and threads_per_process(3, {ENV_VAR: "2"}) == 1
    assert threads_per_process(1, {ENV_VAR: "2"}) == 2 and threads_per_process(0, {ENV_VAR: "2"}) == 2


def test_a_child_of_a_worker_is_held_to_the_workers_share():
    assert worker_child_env({ENV_VAR: "2"}) == {}  # not a worker: the child may use what its parent may
    worker = {"PYTEST_XDIST_WORKER": "gw1", "PYTEST_XDIST_WORKER_COUNT": "2", ENV_VAR: "2"}
    assert worker_child_env(worker) == child_env(1) == {ENV_VAR: "1", **{name: "1" for name in POOL_VARS}}
    assert worker_child_env({**worker, ENV_VAR: "16"})[ENV_VAR] == "8"
    assert {"OMP_NUM_THREADS", "MKL_NUM_THREADS"} <= set(POOL_VARS)


def test_pinning_sets_torchs_threads():
    before = torch.get_num_threads()
    try:
        assert pin_torch_threads(2, {ENV_VAR: "2"}) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_tests_child_runner_pins_a_workers_children(run_child, monkeypatch):
    # As inside worker gw0 of `pytest tests/ -n 2` on 2 cores: the child's torch (and any pytest it runs) takes 1.
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv(ENV_VAR, "2")
    probe = "import os, torch; print(torch.get_num_threads(), os.environ['SHORTCUT_BENCH_THREADS'])"
    proc = run_child.python("-c", probe, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "1"]
    # A variable the test sets itself wins over the pinning.
    assert run_child.python("-c", probe, env={ENV_VAR: "2"}, timeout=300).stdout.split() == ["1", "2"]
