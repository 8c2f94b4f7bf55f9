"""How many CPU threads a process may use: the machine's cores, or the share a parent process handed down.

A parent that runs several processes side by side on the same cores (pytest-xdist workers that each start a
``pytest suites/`` child, say) sets ``$SHORTCUT_BENCH_THREADS`` in each child's environment to that child's share.
The child, and any xdist workers it starts in turn, then divide that share instead of the machine's cores, so the
processes of the whole tree never ask for more threads than there are cores (oversubscribed torch threads on a small
box run many times slower).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from benchmark.errors import ConfigError

ENV_VAR = "SHORTCUT_BENCH_THREADS"
# Thread pools that read their size from the environment when they start: torch's intra-op pool (OpenMP or MKL)
# and NumPy's BLAS.
POOL_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_budget(environ: Mapping[str, str] | None = None) -> int:
    """The threads this process may use: ``$SHORTCUT_BENCH_THREADS`` when a parent set it, else the CPU count."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_VAR, "").strip()
    if not value:
        return os.cpu_count() or 1
    try:
        budget = int(value)
    except ValueError:
        budget = 0
    if budget < 1:
        raise ConfigError(f"${ENV_VAR} must be a whole number of threads >= 1, got {value!r}")
    return budget


def threads_per_process(processes: int, environ: Mapping[str, str] | None = None) -> int:
    """Each one's share of the budget when ``processes`` processes run side by side (at least 1)."""
    return max(1, thread_budget(environ) // max(1, processes))


def child_env(threads: int) -> dict[str, str]:
    """Environment variables that hold a child process, and every process it starts, to ``threads`` threads."""
    return {ENV_VAR: str(threads), **{name: str(threads) for name in POOL_VARS}}


def process_threads(environ: Mapping[str, str] | None = None) -> int:
    """This process's threads: in a pytest-xdist worker its share of the budget (divided by
    ``$PYTEST_XDIST_WORKER_COUNT``), else the whole budget."""
    environ = os.environ if environ is None else environ
    if not environ.get("PYTEST_XDIST_WORKER"):
        return thread_budget(environ)
    return threads_per_process(int(environ.get("PYTEST_XDIST_WORKER_COUNT") or 1), environ)


def worker_child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables for a child started from a pytest-xdist worker: the worker's share of the threads (see
    :func:`process_threads`). Empty outside a worker, where a child may use what its parent may."""
    environ = os.environ if environ is None else environ
    if not environ.get("PYTEST_XDIST_WORKER"):
        return {}
    return child_env(process_threads(environ))


def pin_torch_threads(processes: int = 1, environ: Mapping[str, str] | None = None) -> int:
    """Set torch's intra-op threads to this process's share (see :func:`threads_per_process`); return it."""
    import torch

    threads = threads_per_process(processes, environ)
    torch.set_num_threads(threads)
    return threads
