"""Train the arm models a run lacks side by side, one spawned process per model, each on its share of the threads.

On a shared machine, processes of one thread each keep going where one model's threads would wait for each other:
benchmarks/parallel_train.py trained 2 quick models 1.4-3x sooner side by side than one after another on 2 loaded
cores, and in the same time on 2 idle ones (more cores are unmeasured). The processes store each model in the cache
through :func:`benchmark.models.train.get_trained_model` (under its file lock, written atomically), and the caller then
loads them all from there, as it loads a model another run trained. A model's weights depend on the thread count it
trained with, which its card records (``train_threads``); the cache key leaves it out, so cached and pinned models
keep their names.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmark.data import DataSpec, World, build_world
from benchmark.errors import BenchmarkError, CacheError
from benchmark.models.train import get_trained_model, model_dir_for
from benchmark.profiles import Profile
from benchmark.running.threads import child_env, process_threads

Job = tuple[str, int]  # (arm, training seed)
Then = Callable[[Job, bool], Iterable[Job]]  # a stored job, and whether this pool trained it -> the jobs it lets start
# Set (not "0"): every model trains in the calling process, on its threads (benchmarks/retrain_repro.py trains a build
# on exactly N threads; a pool would train some arms on N / processes).
SEQUENTIAL_ENV = "SHORTCUT_BENCH_SEQUENTIAL_TRAINING"


def missing_jobs(world: World, profile: Profile, jobs: Iterable[Job], cache_dir: Path | str,
                 device: torch.device | str) -> list[Job]:
    """The jobs whose model the cache lacks (no card.json, written last: a damaged entry is found and retrained by
    get_trained_model), each once, in order."""
    return [(arm, seed) for arm, seed in dict.fromkeys(jobs)
            if not (model_dir_for(world, arm, profile, seed, cache_dir, device) / "card.json").is_file()]


def train_missing(world: World, profile: Profile, jobs: Iterable[Job], cache_dir: Path | str,
                  device: torch.device | str, *, progress: bool = False, then: Then | None = None) -> set[Job]:
    """Train the models of ``jobs`` the cache lacks side by side in spawned processes, when two or more would run;
    return the jobs whose model they trained (not those another process stored meanwhile). ``then``, called here as
    each job's model is stored (and told whether this pool trained it), names further jobs for the same pool (what it
    raises stops the pool)."""
    device = torch.device(device)
    if device.type != "cpu":
        # One accelerator runs one model's steps at a time anyway: the caller's sequential path trains them there.
        return set()
    if os.environ.get(SEQUENTIAL_ENV, "0") not in ("", "0") or multiprocessing.current_process().daemon:
        return set()  # asked for, or inside a multiprocessing.Pool worker, which may not start processes
    todo = missing_jobs(world, profile, jobs, cache_dir, device)
    workers = min(len(todo), process_threads())  # an xdist worker's share, not the machine's cores
    if workers < 2:
        return set()  # the caller's sequential path trains the one model (or none) on all of this process's threads
    follow = None if then is None else (
        lambda job, here: missing_jobs(world, profile, then(job, here), cache_dir, device))
    return _run_pool(world, profile, todo, Path(cache_dir), workers, progress, follow)


def _run_pool(world: World, profile: Profile, todo: list[Job], cache_dir: Path, workers: int,
              progress: bool, then: Then | None = None) -> set[Job]:
    """Train ``todo``, and what ``then`` adds as each job ends, in ``workers`` spawned processes (the jobs they
    trained); re-raise a worker's error, or warn when a worker died."""
    threads = max(1, process_threads() // workers)
    # Spawn, not fork: a forked child inherits the parent's torch thread pools and locks mid-state.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(threads, os.getpid()))
    bar = tqdm(total=len(todo), desc=f"training {len(todo)} models in {workers} processes of {threads} thread(s)",
               unit="model", disable=None if progress else True, leave=False)
    trained: set[Job] = set()
    submitted = set(todo)

    def submit(job: Job) -> Future:
        return pool.submit(_train, world.spec, world.path.parent, world.key, profile, *job, cache_dir)

    try:
        pending = {submit(job): job for job in todo}
        while pending:
            # One pool for every job, with no barrier between them: a job ``then`` adds queues as soon as the job it
            # follows ends, rather than after the slowest of that job's kind.
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                here = _result(future, *job)  # False: another process stored it meanwhile
                if here:
                    trained.add(job)
                bar.update(1)
                for added in (then(job, here) if then is not None else ()):
                    if added not in submitted:
                        submitted.add(added)
                        pending[submit(added)] = added
                        bar.total += 1
    except BrokenProcessPool as exc:
        # Killed (out of memory, say): what it wrote is complete or absent, so the caller trains what is absent.
        warnings.warn(f"a model-training process died ({exc}); the models it did not store train in this process",
                      stacklevel=3)
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)  # on an error the models in training finish and are kept
    return trained


def _result(future: Future, arm: str, seed: int) -> bool:
    """A worker's result; its exception raised as its own type, saying which model it was training."""
    exc = future.exception()
    if exc is None or isinstance(exc, BrokenProcessPool):
        return future.result()
    exc.add_note(f"(raised while training the {arm} model of training seed {seed} in a worker process)")
    if isinstance(exc, BenchmarkError):
        raise exc from None  # a message written for the user: the worker's traceback would only bury it
    raise exc  # a bug: its __cause__ holds the worker's traceback


def _start_worker(threads: int, parent: int) -> None:
    """Tie a worker's life to the process that started it, and hold it, and anything it starts, to ``threads``
    threads."""
    die_with(parent)
    os.environ.update(child_env(threads))
    torch.set_num_threads(threads)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with(parent: int) -> None:
    """End this process when ``parent`` ends (Linux; elsewhere nothing is done)."""
    # A parent killed outright (SIGTERM, SIGKILL, a CI timeout) runs no cleanup, and its pool's workers would train on
    # as orphans, holding the cores from whatever runs next (seen: two orphans slowed a timed build).
    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # no libc to ask: the worker merely outlives a killed parent, as before
        return
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


def _train(spec: DataSpec, datasets: Path, world_key: str, profile: Profile, arm: str, seed: int,
           cache_dir: Path) -> bool:
    """In a worker: load the run's world from the dataset cache and train (and store) one model; False when another
    process stored it first."""
    world = build_world(spec, datasets)
    if world.key != world_key:
        raise CacheError(f"the training process loaded world {world.key} from {datasets}, not the run's {world_key}")
    return not get_trained_model(world, arm, profile, seed=seed, cache_dir=cache_dir, device="cpu",
                                 progress=False).cache_hit
